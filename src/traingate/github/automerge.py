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

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from traingate.errors import GitHubError, TraingateError, UsageError
from traingate.github.forge import (
    AUTO_MERGE_SETTING,
    AutoMergeRefusedError,
    Forge,
    ForgeFactory,
    PullInfo,
    make_forge,
    require_repo,
    require_token,
)
from traingate.result import StepResult
from traingate.state import read_state

if TYPE_CHECKING:
    from traingate.config import Config


def automerge_step(
    cfg: Config,
    token: str | None,
    repo: str | None,
    pr_number: int | None,
    method: str | None,
    delete_branch: bool | None,
    *,
    forge_factory: ForgeFactory | None = None,
    env: Mapping[str, str] | None = None,
) -> StepResult:
    env = dict(os.environ) if env is None else dict(env)
    chosen = str(method or cfg.pr.auto_merge.value).lower()
    if chosen not in ("squash", "merge", "rebase", "off"):
        raise UsageError(f"unknown merge method {chosen!r}", hint="use squash, merge, rebase or off")
    if chosen == "off":
        return StepResult(
            outputs={"pr_number": pr_number or "", "merge_state": "off", "method": "off"},
            summary="Auto-merge is off (`pr.auto_merge: off`); the pull request waits for a person.\n",
            message="auto-merge is off (pr.auto_merge: off); nothing to do",
        )
    repo_name = require_repo(repo, env)
    if pr_number is None:
        stored = read_state(cfg.workspace_dir).pr_number
        pr_number = int(stored) if isinstance(stored, int | str) and str(stored).isdigit() else None
    if pr_number is None:
        raise UsageError(
            "no pull request number: --pr was not given and no `pr create` ran in this workspace",
            hint="pass --pr ${{ needs.create-pr.outputs.pr_number }} (env TRAINGATE_PR_NUMBER)",
        )
    token = require_token(token, repo_name)
    want_delete = cfg.pr.delete_branch if delete_branch is None else delete_branch
    forge = (forge_factory or make_forge)(token, repo_name)

    pull = forge.get_pull(pr_number)
    warnings: list[str] = []
    if pull.merged:
        if want_delete:
            _delete(forge, pull, warnings)
        return _result(
            pull, "already_merged", chosen, warnings, f"pull request #{pull.number} is already merged"
        )
    if pull.state != "open":
        raise GitHubError(
            f"pull request #{pull.number} is {pull.state}, not open: nothing to merge",
            hint="re-open it, or let the next data push open a new one",
        )

    if pull.auto_merge_method == chosen:
        # A re-run: GitHub already waits to merge this PR with this method.
        return _result(
            pull,
            "auto_merge_enabled",
            chosen,
            warnings,
            f"auto-merge ({chosen}) was already enabled on pull request #{pull.number}",
        )
    try:
        forge.enable_automerge(pull, method=chosen)
    except AutoMergeRefusedError as err:
        if err.reason == "disabled":
            raise GitHubError(
                f"auto-merge is disabled in {repo_name}: {err.message}",
                hint=f"enable it in {AUTO_MERGE_SETTING}, or set `pr.auto_merge: off` to merge by hand",
            ) from None
        if not cfg.pr.merge_when_clean:
            raise GitHubError(
                f"pull request #{pull.number} is already mergeable, so GitHub will not schedule an "
                f"auto-merge ({err.message}), and pr.merge_when_clean is false",
                hint="merge it by hand, set `pr.merge_when_clean: true`, or require the "
                "status check in branch protection so there is something to wait for",
            ) from None
        sha = forge.merge_pull(pull, method=chosen)
        if want_delete:
            _delete(forge, pull, warnings)
        return _result(
            pull,
            "merged",
            chosen,
            warnings,
            f"pull request #{pull.number} was already clean: merged directly ({chosen}) as {sha[:12]}",
        )
    if want_delete:
        warnings.append(
            "auto-merge is scheduled, so traingate cannot delete the branch after the merge; turn on "
            'Settings → General → "Automatically delete head branches" for that'
        )
    return _result(
        pull,
        "auto_merge_enabled",
        chosen,
        warnings,
        f"auto-merge ({chosen}) enabled on pull request #{pull.number}; GitHub merges it when the "
        "required checks pass",
    )


def _delete(forge: Forge, pull: PullInfo, warnings: list[str]) -> None:
    try:
        forge.delete_branch(pull.head_ref)
    except TraingateError as err:
        low = err.message.lower()
        if "reference does not exist" in low or "404" in low:
            return  # the repository deletes head branches on merge already
        # The merge, which is what the step is for, happened; the leftover branch is loud.
        warnings.append(f"merged, but could not delete branch {pull.head_ref!r}: {err.message}")


def _result(pull: PullInfo, state: str, method: str, warnings: list[str], message: str) -> StepResult:
    return StepResult(
        outputs={"pr_number": pull.number, "merge_state": state, "method": method},
        summary=f"### Auto-merge: {state.replace('_', ' ')}\n\n{message} ([#{pull.number}]({pull.url})).\n",
        message=message,
        warnings=warnings,
    )
