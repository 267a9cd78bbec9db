"""`traingate pr create` as a composition: the github stage, with data.trust between its phases.

A PR that an auto-merge may land changes data only. The github stage renders the PR and decides
where it goes (`prepare_pr`); before it opens anything (`send_pr`), this module asks the forge
for the PR's diff as GitHub sees it (head since it left base) and has data.trust check every
path: data.incoming, the dataset pointers and data.allowed_paths, nothing else. The two stages
never import each other; this is the one place that knows both.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from traingate.errors import TraingateError, UntrustedChangeError
from traingate.gha import ActionsContext

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.github.forge import Forge, ForgeFactory
    from traingate.github.pr import PrResult
    from traingate.result import StepResult


def create_step(
    cfg: Config,
    token: str | None,
    repo: str | None,
    head: str | None,
    base: str | None,
    data_report: Path | None,
    gate_report: Path | None,
    metrics_log: Path | None,
    render_only: bool = False,
    *,
    actions: ActionsContext | None = None,
    forge_factory: ForgeFactory | None = None,
) -> StepResult[PrResult]:
    """Render the PR; when it is to be sent, check its diff is data only, then open or update it.

    `actions` is the run's context (`cli.Options.actions`); None reads it from the environment
    (a composer boundary: `traingate run`)."""
    from traingate.github.forge import open_forge
    from traingate.github.pr import finish_unsent, prepare_pr, send_pr

    actions = actions if actions is not None else ActionsContext.from_env()
    plan = prepare_pr(
        cfg, token, repo, head, base, data_report, gate_report, metrics_log, render_only, actions=actions
    )
    if plan.target is None:
        return finish_unsent(cfg, plan)
    target = plan.target
    forge = open_forge(target.token, target.repo, actions, forge_factory)
    try:
        refuse_untrusted_diff(cfg, forge, target.head, target.base)
    except TraingateError as err:
        err.add_warnings(plan.warnings)
        raise
    return send_pr(cfg, plan, forge)


def refuse_untrusted_diff(cfg: Config, forge: Forge, head: str, base: str) -> None:
    """Raise UntrustedChangeError unless the PR head → base changes data only (and GitHub listed
    the whole diff: past its 300-file limit the rest cannot be checked)."""
    from traingate.data.trust import Change, check_paths

    files, complete = forge.changed_files(base, head)
    what = f"the pull request {head} → {base}"
    check_paths(cfg, [Change(f.status, f.path) for f in files], what=what, base=base)
    if not complete:
        raise UntrustedChangeError(
            f"untrusted_change: {what} changes more files than GitHub lists ({len(files)} shown): "
            "the rest cannot be checked",
            hint="a data branch carries only the dataset pointer after its merge; push code changes to "
            f"{base} through a reviewed pull request",
        )


__all__ = ["create_step", "refuse_untrusted_diff"]
