"""`traingate promote --reconcile [--pr N]`: promote every merged traingate PR not yet promoted.

A composition of two stages: GitHub (`github.forge`) says which PRs were merged, what their body
claims (the promotion marker) and which dataset pointer their head commits; the data stage
(`data.trust`) reads that pointer; the registry side (`tracking.promote`) checks the claim and
moves the alias. Neither stage knows the other: tracking takes the PR as plain values
(`MergedPull`).

Works with GITHUB_TOKEN alone: a merge made with it starts no workflow, so the auto-merge job
(after a direct merge) and a scheduled sweep call this instead of waiting for
`pull_request: closed`. When MLflow lives on the shared instance (`infra.mlflow_url`) and no
`--tracking-uri` is given, the instance is stopped: report what waits and let the workflow
that borrows the instance promote it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from traingate.errors import GateError, TrackingError, TraingateError
from traingate.gha import ActionsContext
from traingate.result import StepResult
from traingate.tracking.promote import (
    BY_HAND,
    MergedPull,
    PromoteResult,
    Sweep,
    claimed_version,
    promote_merged,
)

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.contracts import Tracking
    from traingate.github.forge import Forge, ForgeFactory, PullInfo

# On the PR too, so a sweep skips handled PRs without asking MLflow (and people can see it).
LABEL_PROMOTED = "traingate-promoted"
LABEL_SUPERSEDED = "traingate-superseded"
_LABELS = {"promoted": LABEL_PROMOTED, "superseded": LABEL_SUPERSEDED}
# Merged PRs a sweep looks at (most recently updated first): one page of GitHub's list.
RECONCILE_LOOKBACK = 100


@dataclass(frozen=True)
class _Waiting:
    pull: PullInfo
    marker: dict[str, str]


def _get_merged_pull(forge: Forge, pr_number: int) -> PullInfo:
    from traingate.report import parse_promotion_marker

    pull = forge.get_pull(pr_number)
    if not pull.merged:
        raise GateError(
            f"pull request #{pr_number} is not merged ({pull.state}): nothing to promote",
            hint="promotion follows the merge; run this after the PR is merged",
        )
    if parse_promotion_marker(pull.body) is None:
        raise GateError(
            f"pull request #{pr_number} has no traingate marker in its body "
            "(<!-- traingate: {...} -->): it does not say which model version to promote",
            hint="only PRs opened by `traingate pr create` can be promoted on merge; "
            "use `traingate promote --version N` for others",
        )
    return pull


def _waiting(forge: Forge, cfg: Config, pr_number: int | None) -> list[_Waiting]:
    """Merged traingate PRs whose on-merge version is not handled yet, oldest merge first."""
    from traingate.report import parse_promotion_marker

    if pr_number is not None:
        pulls = [_get_merged_pull(forge, pr_number)]
    else:
        pulls = forge.list_merged_pulls(cfg.pr.base, limit=RECONCILE_LOOKBACK)
    waiting = []
    for pull in pulls:
        marker = parse_promotion_marker(pull.body)
        if marker is None or marker["promote"] != "on-merge":
            continue  # not ours, or the gate promoted it already (on-gate)
        if LABEL_PROMOTED in pull.labels or LABEL_SUPERSEDED in pull.labels:
            continue
        waiting.append(_Waiting(pull, marker))
    waiting.sort(key=lambda item: (item.pull.merged_at, item.pull.number))
    return waiting


def _pointer_in_repo(cfg: Config, pr: str) -> str:
    """`<data.root>.dvc` as a repository path, the file that records a data version in git."""
    from traingate.data.manifest import pointer_path
    from traingate.data.store import find_repo_root

    if cfg.store.kind != "dvc":
        raise GateError(
            f"{pr}: cannot tell which data it merged: store.kind is {cfg.store.kind!r}, and only a "
            "DVC pointer (<data.root>.dvc) records a data version in git; not promoted",
            hint=f"use store.kind: dvc with gate.promote: on-merge, or {BY_HAND}",
        )
    repo_root = find_repo_root(cfg.base_dir)
    try:
        return pointer_path(cfg.data_root).resolve().relative_to(repo_root).as_posix()
    except ValueError:
        raise GateError(
            f"{pr}: the dataset pointer {pointer_path(cfg.data_root)} is outside the repository "
            f"{repo_root}; cannot read it at the PR's head; not promoted",
            hint=f"set data.root to a folder inside the repository, or {BY_HAND}",
        ) from None


def _merged_data(cfg: Config, forge: Forge, pull: PullInfo) -> MergedPull:
    """The data version the PR merged: the md5 in the dataset pointer at its head sha (read
    through the forge, so the sweep needs no checkout of the data branch)."""
    from traingate.data.trust import verify_pointer_text

    pr, head = f"PR #{pull.number}", pull.head_sha[:12]
    rel = _pointer_in_repo(cfg, pr)
    try:
        text = forge.read_file(rel, pull.head_sha)
    except TraingateError as err:
        raise GateError(
            f"{pr}: could not read {rel} at its head {head}: {err.message}; not promoted",
            hint="re-run `traingate promote --reconcile` when GitHub answers (the token needs "
            "`contents: read`)",
        ) from None
    if text is None:
        raise GateError(
            f"{pr} merged head {head}, which has no {rel}: it merged no dataset "
            f"version, so no model version is tied to it; not promoted",
            hint=f"only data PRs opened by `traingate pr create` are promoted on merge; {BY_HAND}",
        )
    try:
        merged = verify_pointer_text(text, cfg.data_root.name, f"{rel} at {head}")
    except TraingateError as err:
        raise GateError(f"{pr}: {err.message}; not promoted", hint=f"{err.hint}; {BY_HAND}") from None
    return MergedPull(pull.number, pull.merged_at, pull.head_sha, rel, merged)


def _promote_one(tracking: Tracking, cfg: Config, forge: Forge, item: _Waiting, sweep: Sweep) -> str:
    """Check the PR's claim against the registry, then against what it merged; promote. The label."""
    record = claimed_version(tracking, cfg, item.marker, f"PR #{item.pull.number}")
    merged = _merged_data(cfg, forge, item.pull)
    return _LABELS[promote_merged(tracking, cfg, record, merged, sweep)]


def _sweep(tracking: Tracking, cfg: Config, forge: Forge, waiting: list[_Waiting]) -> Sweep:
    """Promote in merge order; a refused PR does not hold back the ones merged after it, but the
    sweep fails (exit 1) at the end, saying what it did promote."""
    sweep = Sweep()
    refused: list[GateError] = []
    for item in waiting:
        number = item.pull.number
        try:
            label = _promote_one(tracking, cfg, forge, item, sweep)
        except TrackingError as err:
            done = (
                f" (already promoted in this sweep: PR {', '.join(sweep.promoted)})" if sweep.promoted else ""
            )
            raise GateError(
                f"promoting the version of PR #{number} failed: {err.message}{done}",
                hint="re-run `traingate promote --reconcile` when the server answers: handled PRs "
                "are skipped",
                warnings=sweep.warnings,
            ) from err
        except GateError as err:
            refused.append(err)
            continue
        try:
            forge.add_labels(number, [label])
        except TraingateError as err:
            # The registry tag is what makes the sweep idempotent; the label saves a look-up.
            sweep.warnings.append(f"could not label pull request #{number} {label!r}: {err.message}")
    if refused:
        done = f"; promoted in this sweep: PR {', '.join(sweep.promoted)}" if sweep.promoted else ""
        raise GateError(
            "; ".join(err.message for err in refused) + done,
            hint=(f"{refused[0].hint}; then " if refused[0].hint else "")
            + f"label the PR {LABEL_PROMOTED!r} so the sweep stops retrying it",
            outputs={"promoted": " ".join(sweep.promoted)},
            warnings=sweep.warnings,
        )
    return sweep


def _nothing_to_do(
    cfg: Config, waiting: list[_Waiting], tracking: Tracking | None, tracking_uri: str | None
) -> StepResult[PromoteResult] | None:
    """The result when nothing can be promoted here: no PR waits, or MLflow is on the stopped
    instance and no --tracking-uri was given (None when the sweep should run)."""
    alias = cfg.gate.alias
    if not waiting:
        message = "no merged traingate pull request waits for promotion"
        value = PromoteResult("", alias, pending=0)
        summary = f"### 🏆 Promotion on merge\n\n{message}.\n"
        return StepResult(outputs=value.outputs(), summary=summary, message=message, value=value)
    if tracking is None and not tracking_uri and cfg.infra.mlflow_url:
        numbers = ", ".join(f"#{item.pull.number}" for item in waiting)
        message = (
            f"{len(waiting)} merged pull request(s) wait for promotion ({numbers}), but MLflow lives "
            "on the shared instance (infra.mlflow_url) and no --tracking-uri was given: nothing "
            "promoted here; the workflow that starts the instance runs `traingate promote "
            "--reconcile --tracking-uri <its mlflow_url>` (promote-on-merge.yml, reap-instances.yml)"
        )
        value = PromoteResult("", alias, pending=len(waiting))
        summary = f"### 🏆 Promotion on merge: deferred\n\n{message}\n"
        return StepResult(outputs=value.outputs(), summary=summary, message=message, value=value)
    return None


def _open_forge(
    token: str | None, repo: str | None, actions: ActionsContext, forge_factory: ForgeFactory | None
) -> Forge:
    from traingate.github.forge import open_forge, require_repo, require_token

    repo_name = require_repo(repo, actions)
    return open_forge(require_token(token, repo_name), repo_name, actions, forge_factory)


def reconcile_step(
    cfg: Config,
    token: str | None,
    repo: str | None,
    pr_number: int | None = None,
    tracking_uri: str | None = None,
    *,
    actions: ActionsContext | None = None,
    tracking: Tracking | None = None,
    forge_factory: ForgeFactory | None = None,
) -> StepResult[PromoteResult]:
    """`traingate promote --reconcile [--pr N]` (module docstring). `actions` names the
    repository when --repo is not given (default: read from the environment, as the CLI does)."""
    forge = _open_forge(token, repo, actions or ActionsContext.from_env(), forge_factory)
    waiting = _waiting(forge, cfg, pr_number)
    idle = _nothing_to_do(cfg, waiting, tracking, tracking_uri)
    if idle is not None:
        return idle
    if tracking_uri:
        cfg.tracking.uri = tracking_uri
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    sweep = _sweep(tracking, cfg, forge, waiting)
    champion = (tracking.get_aliases(cfg.gate.model) or {}).get(cfg.gate.alias, "")
    value = PromoteResult(champion, cfg.gate.alias, promoted=tuple(sweep.promoted), pending=0)
    return StepResult(
        outputs=value.outputs(),
        summary="### 🏆 Promotion on merge\n\n" + "".join(f"- {line}\n" for line in sweep.lines),
        message="; ".join(sweep.lines),
        warnings=sweep.warnings,
        value=value,
    )


__all__ = ["LABEL_PROMOTED", "LABEL_SUPERSEDED", "RECONCILE_LOOKBACK", "reconcile_step"]
