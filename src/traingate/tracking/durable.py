"""Does the tracking store outlive the job? A verdict against `@champion` needs one that does.

A GitHub-hosted runner's disk is thrown away with the job. An MLflow store on it (the embedded
`sqlite:///.traingate/mlflow.db`, a `file:` store, an `mlruns/` folder) is empty at the start
of every job, so every candidate finds "no champion yet" and is promoted: a model with dice
0.01 gets a pull request and auto-merge. Locally (`traingate run`, the demo) the same store
lives on, so it is only refused where the job ends with the machine: in GitHub Actions.

The check reads the URI only; whether the server answers is `doctor`'s and `train`'s business.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from traingate.errors import ConfigError
from traingate.gha import in_actions

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.gha import ActionsContext

# URIs MLflow accepts without `://` that name a hosted store.
_REMOTE_WORDS = frozenset({"databricks", "databricks-uc", "uc"})


def local_store_kind(uri: str) -> str | None:
    """What kind of runner-local store `uri` names ("an SQLite file", ...), or None when the
    store is elsewhere (http(s)://, databricks, a database server).

    Only a path counts (`locality.names_local_path`): a loopback `http://` server is "elsewhere"
    here, deliberately, unlike for `store.remote` (it may be a tunnel or a self-hosted runner's
    own lasting server; `doctor` checks that it answers)."""
    from traingate.locality import names_local_path

    text = uri.strip()
    if not text:
        return "MLflow's default ./mlruns folder"
    if text.lower().split(":", 1)[0] in _REMOTE_WORDS or not names_local_path(text):
        return None
    if text.lower().startswith("sqlite:"):
        return "an SQLite file"
    return "a local folder (file store)"


def in_ci(env: Mapping[str, str]) -> bool:
    """GitHub Actions or any CI that sets `CI` (where machines are as short-lived)."""
    return in_actions(env) or env.get("CI", "").strip().lower() in {"true", "1", "yes"}


def require_lasting_registry(
    cfg: Config,
    *,
    command: str,
    actions: ActionsContext | None = None,
    env: Mapping[str, str] | None = None,
) -> None:
    """Refuse (ConfigError, exit 2) to judge a model in Actions against a store on the runner.

    Whether this is Actions comes from `actions` (what `cli.py` read once); without it, from
    `env` (default os.environ), for callers that do not pass the context yet."""
    running = actions.in_actions if actions is not None else in_actions(os.environ if env is None else env)
    if not running:
        return
    uri = cfg.tracking.uri
    kind = local_store_kind(uri)
    if kind is None:
        return
    raise ConfigError(
        f"tracking.uri {uri!r} is {kind} on this runner, which is deleted when the job ends: "
        f"`traingate {command}` would find no @{cfg.gate.alias} every time and promote any model",
        hint="set tracking.uri in traingate.yml (or the train action's `tracking-uri` input, e.g. "
        "the `mlflow_url` output of start-infra) to an MLflow server that outlives the job "
        "(http(s)://... or databricks); `traingate doctor` checks it",
        file=str(cfg.source) if cfg.source else None,
    )


__all__ = ["in_ci", "local_store_kind", "require_lasting_registry"]
