"""`traingate pr automerge`: enable auto-merge, or merge when already clean, or say exactly why not.

Field report 3: `gh pr merge --auto ... || echo "could not"` turned every failure into a green
step. Here each refusal GitHub gives has its own outcome:

- auto-merge enabled (GraphQL `enablePullRequestAutoMerge`, pinned to the head SHA the gate
  judged) → `merge_state=auto_merge_enabled`;
- "Pull request is in clean status" (nothing left to wait for, so GitHub refuses to *schedule*
  a merge) → merge now with the same method and the same head SHA when `pr.merge_when_clean`
  (default), else exit 1 saying so;
- auto-merge disabled on the repository → exit 1 naming the setting;
- anything else → exit 1 with GitHub's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from traingate.errors import GitHubError, TraingateError, UsageError
from traingate.github.forge import (
    AUTO_MERGE_SETTING,
    AutoMergeRefusedError,
    Forge,
    ForgeFactory,
    PullInfo,
    open_forge,
    require_repo,
    require_token,
)
from traingate.result import StepResult
from traingate.state import read_state

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.gha import ActionsContext

METHODS = ("squash", "merge", "rebase", "off")


@dataclass(frozen=True)
class AutomergeResult:
    """What `pr automerge` did. `merge_state`: auto_merge_enabled | merged | already_merged | off."""

    merge_state: str
    method: str
    number: int | None = None
    url: str = ""
    # The merge commit when traingate merged directly ("" otherwise).
    merged_sha: str = ""

    def outputs(self) -> dict[str, Any]:
        return {
            "pr_number": "" if self.number is None else self.number,
            "merge_state": self.merge_state,
            "method": self.method,
        }


@dataclass
class _Merge:
    """What flows between the phases: the PR, how to merge it, and what was noticed so far."""

    cfg: Config
    forge: Forge
    repo: str
    pull: PullInfo
    method: str
    delete: bool
    warnings: list[str]


def automerge_step(
    cfg: Config,
    token: str | None,
    repo: str | None,
    pr_number: int | None,
    method: str | None,
    delete_branch: bool | None,
    *,
    actions: ActionsContext,
    forge_factory: ForgeFactory | None = None,
) -> StepResult[AutomergeResult]:
    chosen = _method(cfg, method)
    if chosen == "off":
        value = AutomergeResult(merge_state="off", method="off", number=pr_number)
        return StepResult(
            outputs=value.outputs(),
            summary="Auto-merge is off (`pr.auto_merge: off`); the pull request waits for a person.\n",
            message="auto-merge is off (pr.auto_merge: off); nothing to do",
            value=value,
        )
    repo_name = require_repo(repo, actions)
    number = _pr_number(cfg, pr_number)
    token = require_token(token, repo_name)
    forge = open_forge(token, repo_name, actions, forge_factory)
    job = _Merge(
        cfg=cfg,
        forge=forge,
        repo=repo_name,
        pull=forge.get_pull(number),
        method=chosen,
        delete=cfg.pr.delete_branch if delete_branch is None else delete_branch,
        warnings=[],
    )
    if job.pull.merged:
        return _already_merged(job)
    if job.pull.state != "open":
        raise GitHubError(
            f"pull request #{job.pull.number} is {job.pull.state}, not open: nothing to merge",
            hint="re-open it, or let the next data push open a new one",
        )
    if job.pull.auto_merge_method == chosen:
        # A re-run: GitHub already waits to merge this PR with this method.
        return _result(
            job,
            "auto_merge_enabled",
            f"auto-merge ({chosen}) was already enabled on pull request #{job.pull.number}",
        )
    return _enable(job)


def _method(cfg: Config, method: str | None) -> str:
    chosen = str(method or cfg.pr.auto_merge.value).lower()
    if chosen not in METHODS:
        raise UsageError(f"unknown merge method {chosen!r}", hint="use squash, merge, rebase or off")
    return chosen


def _pr_number(cfg: Config, pr_number: int | None) -> int:
    """`--pr`, else the PR `pr create` opened in this workspace."""
    if pr_number is None:
        stored = read_state(cfg.workspace_dir).pr_number
        pr_number = int(stored) if isinstance(stored, int | str) and str(stored).isdigit() else None
    if pr_number is None:
        raise UsageError(
            "no pull request number: --pr was not given and no `pr create` ran in this workspace",
            hint="pass --pr ${{ needs.create-pr.outputs.pr_number }} (env TRAINGATE_PR_NUMBER)",
        )
    return pr_number


def _already_merged(job: _Merge) -> StepResult[AutomergeResult]:
    if job.delete:
        _delete(job)
    return _result(job, "already_merged", f"pull request #{job.pull.number} is already merged")


def _enable(job: _Merge) -> StepResult[AutomergeResult]:
    """Ask GitHub to merge when the checks pass; when it says the PR is clean, merge now."""
    try:
        job.forge.enable_automerge(job.pull, method=job.method)
    except AutoMergeRefusedError as err:
        return _merge_now(job, err)
    if job.delete:
        job.warnings.append(
            "auto-merge is scheduled, so traingate cannot delete the branch after the merge; turn on "
            'Settings → General → "Automatically delete head branches" for that'
        )
    return _result(
        job,
        "auto_merge_enabled",
        f"auto-merge ({job.method}) enabled on pull request #{job.pull.number}; GitHub merges it when "
        "the required checks pass",
    )


def _merge_now(job: _Merge, refusal: AutoMergeRefusedError) -> StepResult[AutomergeResult]:
    """GitHub would not schedule the merge: disabled is an error; clean merges directly (same
    method, same head SHA) when `pr.merge_when_clean`."""
    number = job.pull.number
    if refusal.reason == "disabled":
        raise GitHubError(
            f"auto-merge is disabled in {job.repo}: {refusal.message}",
            hint=f"enable it in {AUTO_MERGE_SETTING}, or set `pr.auto_merge: off` to merge by hand",
        ) from None
    if not job.cfg.pr.merge_when_clean:
        raise GitHubError(
            f"pull request #{number} is already mergeable, so GitHub will not schedule an "
            f"auto-merge ({refusal.message}), and pr.merge_when_clean is false",
            hint="merge it by hand, set `pr.merge_when_clean: true`, or require the "
            "status check in branch protection so there is something to wait for",
        ) from None
    sha = job.forge.merge_pull(job.pull, method=job.method)
    if job.delete:
        _delete(job)
    return _result(
        job,
        "merged",
        f"pull request #{number} was already clean: merged directly ({job.method}) as {sha[:12]}",
        merged_sha=sha,
    )


def _delete(job: _Merge) -> None:
    try:
        job.forge.delete_branch(job.pull.head_ref)
    except TraingateError as err:
        low = err.message.lower()
        if "reference does not exist" in low or "404" in low:
            return  # the repository deletes head branches on merge already
        # The merge, which is what the step is for, happened; the leftover branch is loud.
        job.warnings.append(f"merged, but could not delete branch {job.pull.head_ref!r}: {err.message}")


def _result(job: _Merge, state: str, message: str, *, merged_sha: str = "") -> StepResult[AutomergeResult]:
    pull = job.pull
    value = AutomergeResult(
        merge_state=state, method=job.method, number=pull.number, url=pull.url, merged_sha=merged_sha
    )
    return StepResult(
        outputs=value.outputs(),
        summary=f"### Auto-merge: {state.replace('_', ' ')}\n\n{message} ([#{pull.number}]({pull.url})).\n",
        message=message,
        warnings=job.warnings,
        value=value,
    )
