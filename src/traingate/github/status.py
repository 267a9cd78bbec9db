"""The gate as a commit status, and the validation-failure commit comment.

A PR opened with GITHUB_TOKEN triggers no workflows (GitHub's rule against recursive runs), so a
required check that lives in a `pull_request` workflow never reports and auto-merge waits
forever (field report 2). The gate already ran in the training job, so traingate posts its
verdict as a commit status on the PR head with the same token; branch protection can require
that context (`pr.status_context`, default `traingate/gate`). See docs/github.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate import report as reports
from traingate.errors import GitHubError, UsageError
from traingate.gha import ActionsContext
from traingate.github.forge import (
    CommentInfo,
    Forge,
    ForgeFactory,
    open_forge,
    require_repo,
    require_token,
)
from traingate.result import StepResult
from traingate.state import reports_dir

if TYPE_CHECKING:
    from traingate.config import Config


def gate_status_description(gate_report: Mapping[str, Any]) -> str:
    """At most 140 characters (GitHub's limit): the verdict and each metric's delta."""
    verdict = "improved" if gate_report.get("improved") else "not improved"
    parts = []
    for m in gate_report.get("metrics") or []:
        if isinstance(m, Mapping) and m.get("name") is not None:
            cand = reports.format_number(m.get("candidate"))
            delta = m.get("delta")
            if isinstance(delta, int | float) and not isinstance(delta, bool):
                parts.append(f"{m['name']} {cand} ({'+' if delta > 0 else ''}{delta:.4g})")
            else:
                parts.append(f"{m['name']} {cand}")
    baseline = gate_report.get("baseline")
    against = "no champion yet" if baseline in (None, "", "none") else f"vs v{baseline}"
    text = f"{verdict} {against}: " + ", ".join(parts) if parts else f"{verdict} {against}"
    return text if len(text) <= 140 else text[:139] + "…"


def post_gate_status(
    forge: Forge, sha: str, gate_report: Mapping[str, Any], *, context: str, target_url: str = ""
) -> str:
    """Post success/failure for the gate on `sha`; returns the state posted."""
    state = "success" if gate_report.get("improved") else "failure"
    forge.create_status(
        sha,
        state=state,
        context=context,
        description=gate_status_description(gate_report),
        target_url=target_url,
    )
    return state


def post_validation_comment(forge: Forge, sha: str, body: str) -> tuple[CommentInfo, str]:
    """Create the comment, or update ours when this commit already has one (a re-run)."""
    for comment in forge.list_commit_comments(sha):
        if reports.VALIDATION_COMMENT_MARKER in comment.body:
            return forge.update_commit_comment(comment.id, body), "updated"
    return forge.create_commit_comment(sha, body), "created"


@dataclass(frozen=True)
class CommentResult:
    """What `pr comment` did: the comment on `sha`, created or (on a re-run) updated."""

    url: str
    operation: str  # created | updated
    sha: str

    def outputs(self) -> dict[str, Any]:
        return {"comment_url": self.url, "operation": self.operation}


def comment_step(
    cfg: Config,
    token: str | None,
    repo: str | None,
    sha: str | None,
    report: Path | None,
    *,
    actions: ActionsContext,
    forge_factory: ForgeFactory | None = None,
) -> StepResult[CommentResult]:
    """`traingate pr comment`: post the validation errors of a failed `data merge` on the commit."""
    repo_name = require_repo(repo, actions, purpose="to comment in")
    sha = sha or actions.sha
    if not sha:
        raise UsageError(
            "no commit to comment on: --sha was not given and GITHUB_SHA is not set",
            hint="pass --sha with the commit of the data push",
        )
    token = require_token(token, repo_name)
    data_report = reports.load_json_report(_validation_report(cfg, report), "data report")
    body = reports.render_validation_comment(
        data_report, max_errors=cfg.data.max_errors_in_summary, run_url=actions.run_url()
    )
    forge = open_forge(token, repo_name, actions, forge_factory)
    comment, operation = post_validation_comment(forge, sha, reports.cap_body(body))
    if not comment.url:
        raise GitHubError(f"GitHub returned no URL for the comment on {sha[:12]}")
    value = CommentResult(url=comment.url, operation=operation, sha=sha)
    return StepResult(
        outputs=value.outputs(),
        summary=f"Validation errors {operation} as a [commit comment]({comment.url}) on `{sha[:12]}`.\n",
        message=f"commit comment {operation}: {comment.url}",
        value=value,
    )


def _validation_report(cfg: Config, report: Path | None) -> Path:
    """`--report`, else the merge's data report, else (an older layout) validate's report."""
    path = report or reports_dir(cfg.workspace_dir) / "data-report.json"
    if not path.exists():
        fallback = reports_dir(cfg.workspace_dir) / "validation-report.json"
        if report is None and fallback.exists():
            path = fallback
    return path
