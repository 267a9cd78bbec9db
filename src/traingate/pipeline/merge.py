"""`traingate data merge`: the data stage's merge, and on a refused batch the commit comment.

The merge (data/merge.py) hands back a refused batch as a value instead of posting anything:
commenting is the github stage's job, and stages do not call stages. Here the two meet. A
comment that could not be posted is a warning carried on the merge's own error, because the
validation errors are what must reach the user and decide the exit code.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from traingate.errors import TraingateError

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.data.merge import MergeResult
    from traingate.data.store import Store
    from traingate.gha import ActionsContext
    from traingate.github.forge import ForgeFactory
    from traingate.result import StepResult

_NOT_POSTED = "could not post the validation comment"


def data_merge_step(
    cfg: Config,
    source: Path | None = None,
    on_conflict: str | None = None,
    push: bool = True,
    commit: bool = True,
    message: str | None = None,
    comment: bool = False,
    *,
    token: str | None = None,
    actions: ActionsContext,
    store: Store | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> StepResult[MergeResult]:
    """Merge SOURCE; when the batch is refused and `comment` is set, post its errors as a
    commit comment, then raise the refusal (with a warning if the comment failed)."""
    from traingate.data.merge import MergeRejected, run_merge

    outcome = run_merge(
        cfg, source, on_conflict, push, commit, message, actions=actions, store=store, sleep=sleep
    )
    if not isinstance(outcome, MergeRejected):
        return outcome.step_result()
    err = outcome.error()
    if comment:
        err.add_warnings(post_validation_comment(cfg, outcome.report_path, token=token, actions=actions))
    raise err


def post_validation_comment(
    cfg: Config,
    report_path: Path,
    *,
    token: str | None,
    actions: ActionsContext,
    forge_factory: ForgeFactory | None = None,
) -> list[str]:
    """Post the report's errors on the pushed commit; the warnings of a comment not posted.

    Never raises: the merge's own validation error is what must reach the user.
    """
    if not (actions.repository and actions.sha):
        return [f"{_NOT_POSTED}: not running in GitHub Actions (no GITHUB_REPOSITORY/GITHUB_SHA)"]
    from traingate.github.status import comment_step

    token = token or os.environ.get("GITHUB_TOKEN")
    try:
        comment_step(
            cfg,
            token,
            actions.repository,
            actions.sha,
            report_path,
            actions=actions,
            forge_factory=forge_factory,
        )
    except TraingateError as err:
        return [f"{_NOT_POSTED}: {err.message}" + (f" ({err.hint})" if err.hint else "")]
    except ImportError as err:  # PyGithub missing: the validation errors must still be shown
        return [f"{_NOT_POSTED}: {err} (install traingate[github]; actions/merge-and-validate installs it)"]
    return []


__all__ = ["data_merge_step", "post_validation_comment"]
