"""`traingate pr create`, the GitHub half: render the PR that explains itself, open or update it.

Runs after the training job, from files and job outputs only (the MLflow server is already
stopped): the data report from `data merge`, the gate report from `gate`, metrics.jsonl for the
learning curves. Idempotent: an open PR for head → base is updated, not duplicated, so a re-run
or a retried POST never opens a second PR. The gate verdict goes on the PR head as a commit
status, because the PR's own workflows never run when GITHUB_TOKEN opened it.

Two phases, so a composer can put a check between them (`traingate.pipeline.pr` checks the PR's
diff with data.trust before anything is opened): `prepare_pr` checks the configuration, reads
the reports, renders and writes the body and decides where it goes; `send_pr` opens or updates
the PR, posts the status and labels it. Without a token and a repository (or with
--render-only) nothing is sent: the body is only written to `pr.render_to` (`finish_unsent`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate import report as reports
from traingate.contracts import GateReport
from traingate.errors import CredentialsError, GitHubError, TraingateError, UsageError
from traingate.github.forge import (
    PERMISSIONS_HINT,
    Forge,
    PullExistsError,
    PullInfo,
    resolve_repo,
)
from traingate.github.status import post_gate_status
from traingate.result import StepResult
from traingate.state import atomic_write_text, reports_dir, update_state

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.gha import ActionsContext


@dataclass(frozen=True)
class PrResult:
    """What `pr create` did. `operation`: created | updated (sent), rendered (body only),
    skipped (the run is on the base branch: nothing to merge)."""

    operation: str
    body_path: Path
    title: str = ""
    number: int | None = None
    url: str = ""
    head_sha: str = ""
    # The gate status posted on the head (success | failure), "" when nothing was sent.
    status: str = ""

    def outputs(self) -> dict[str, Any]:
        return {
            "pr_number": "" if self.number is None else self.number,
            "pr_url": self.url,
            "operation": self.operation,
            "head_sha": self.head_sha,
            "body_path": str(self.body_path),
        }


@dataclass(frozen=True)
class PrTarget:
    """Where the PR goes: both credentials checked, head and base resolved and different."""

    token: str
    repo: str
    head: str
    base: str


@dataclass
class PrPlan:
    """What `prepare_pr` found and rendered; `target` is None when nothing is sent."""

    title: str
    body: str
    body_path: Path
    gate: Mapping[str, Any]
    facts: GateReport
    run_url: str
    status_context: str
    target: PrTarget | None = None
    # Why nothing is sent: "rendered" (no credentials, --render-only) or "skipped" (head is base).
    unsent: str = ""
    unsent_why: str = ""
    base: str = ""
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ phase 1: prepare
def prepare_pr(
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
    actions: ActionsContext,
) -> PrPlan:
    """Check the configuration, read the reports, refuse a model that did not improve, render and
    write the body, and say where it goes. Calls no API."""
    repo_name = resolve_repo(repo, actions)
    send = not render_only and bool(token or repo_name)
    # Configuration first: a missing token is exit 2 before any report is read.
    if send:
        _require_credentials(token, repo_name)
    plan = _render(cfg, data_report, gate_report, metrics_log, actions)
    if not send:
        plan.unsent = "rendered"
        plan.unsent_why = "--render-only" if render_only else "no GITHUB_TOKEN and no repository given"
        return plan
    head_ref = _head_branch(head, actions)
    if not head_ref:
        raise UsageError(
            "no head branch: --head was not given and GITHUB_REF_NAME is not set",
            hint="pass --head with the branch the data commit was pushed to",
        )
    plan.base = base or cfg.pr.base
    if head_ref == plan.base:
        plan.unsent = "skipped"
        return plan
    assert token and repo_name  # send is true: both were checked before any report was read
    plan.target = PrTarget(token=token, repo=repo_name, head=head_ref, base=plan.base)
    return plan


def _require_credentials(token: str | None, repo_name: str | None) -> None:
    if not repo_name:
        raise UsageError(
            "a token was given but no repository: --repo was not given and GITHUB_REPOSITORY is not set",
            hint="pass --repo owner/name (or --render-only to write the body only)",
        )
    if not token:
        raise CredentialsError(
            f"cannot open a pull request in {repo_name}: GITHUB_TOKEN is not set and --token was not given",
            hint=PERMISSIONS_HINT + " (or pass --render-only to write the body without GitHub)",
        )


def _head_branch(head: str | None, actions: ActionsContext) -> str | None:
    # On a pull_request event the ref name is "<n>/merge"; the head ref is the branch.
    value = head or actions.branch
    if not value:
        return None
    value = value.removeprefix("refs/heads/")
    if value.startswith("-") or any(c in value for c in " \t\n\r\0~^:?*[\\") or ".." in value:
        raise UsageError(
            f"invalid head branch name {value!r}",
            hint="pass --head with the branch the data commit was pushed to, e.g. data/2024-05-01",
        )
    return value


def _render(
    cfg: Config,
    data_report: Path | None,
    gate_report: Path | None,
    metrics_log: Path | None,
    actions: ActionsContext,
) -> PrPlan:
    """Read the reports, refuse a model that did not improve, write title + body to pr.render_to."""
    data, gate, rows, skipped, warnings = _load_inputs(cfg, data_report, gate_report, metrics_log)
    facts = GateReport.from_json(gate)
    _refuse_not_improved(facts)
    run_url = actions.run_url()
    title = reports.render_pr_title(cfg.pr.title, data, facts, project=cfg.project)
    body = reports.render_pr_body(
        data_report=data,
        gate_report=facts,
        metrics_rows=rows,
        skipped_metric_lines=skipped,
        run_url=run_url,
        max_errors=cfg.data.max_errors_in_summary,
        status_context=cfg.pr.status_context,
    )
    body_path = cfg.path(cfg.pr.render_to)
    atomic_write_text(body_path, f"# {title}\n\n{body}")
    return PrPlan(
        title=title,
        body=body,
        body_path=body_path,
        gate=gate,
        facts=facts,
        run_url=run_url,
        status_context=cfg.pr.status_context,
        warnings=warnings,
    )


def _load_inputs(
    cfg: Config, data_report: Path | None, gate_report: Path | None, metrics_log: Path | None
) -> tuple[dict[str, Any] | None, dict[str, Any], list[dict[str, Any]], int, list[str]]:
    warnings: list[str] = []
    rdir = reports_dir(cfg.workspace_dir)
    gate = reports.load_json_report(gate_report or rdir / "gate-report.json", "gate report")
    data_path = data_report or rdir / "data-report.json"
    data: dict[str, Any] | None = None
    if data_report is not None or data_path.exists():
        data = reports.load_json_report(data_path, "data report")
    else:
        warnings.append(f"no data report at {data_path}: the PR body has no dataset counts")
    rows, skipped = reports.load_metrics_log(metrics_log or rdir / "metrics.jsonl")
    if metrics_log is not None and not metrics_log.exists():
        warnings.append(f"metrics log {metrics_log} not found: the PR body has no learning curves")
    if skipped:
        warnings.append(f"{skipped} line(s) of the metrics log were not JSON objects and were skipped")
    return data, gate, rows, skipped, warnings


def _refuse_not_improved(facts: GateReport) -> None:
    if facts.improved:
        return
    reason = facts.reason or "the candidate did not beat the champion"
    raise GitHubError(
        f"not opening a pull request: the gate report says improved={str(facts.improved).lower()} ({reason})",
        hint="a PR is opened only when the model improved; in the workflow run this step under "
        "`if: needs.train.outputs.improved == 'true'`",
    )


# ------------------------------------------------------------------------------ unsent
def finish_unsent(cfg: Config, plan: PrPlan) -> StepResult[PrResult]:
    """The result when `prepare_pr` found nothing to send: body rendered only, or on the base."""
    if plan.unsent == "skipped":
        return _on_the_base_branch(cfg, plan)
    value = PrResult(operation="rendered", body_path=plan.body_path, title=plan.title)
    return StepResult(
        outputs=value.outputs(),
        summary=(
            f"### Pull request (rendered only)\n\n{plan.unsent_why}: the body is in `{plan.body_path}`.\n"
        ),
        message=f"PR body rendered to {plan.body_path} ({plan.unsent_why}); no GitHub API was called",
        warnings=plan.warnings,
        value=value,
    )


def _on_the_base_branch(cfg: Config, plan: PrPlan) -> StepResult[PrResult]:
    """A retrain run on the base branch itself (`manual-train.yml` dispatched on main).

    There is nothing to merge, so no PR is attempted and the step succeeds; what happened to the
    model is the gate's business, and this says it: with `on-gate` the candidate is @champion
    already, with `on-merge` it waits as @challenger and only a person can promote it.
    """
    facts, base, warnings = plan.facts, plan.base, plan.warnings
    version = facts.model_version or ""
    promoted = facts.promoted_alias or ("" if not facts.promoted else cfg.gate.alias)
    why = f"retrained on the base branch {base!r}: no pull request (head and base are the same branch)"
    if version and promoted == cfg.gate.alias:
        outcome = f"version {version} is already @{promoted}"
    elif version and promoted:
        outcome = (
            f"version {version} is @{promoted}; with no PR to merge nothing promotes it: run "
            f"`traingate promote --version {version}` to make it @{cfg.gate.alias}"
        )
        warnings.append(f"{why}; {outcome}")
    else:
        outcome = f"nothing was promoted (gate promote mode: {facts.promote_mode or 'unknown'})"
    message = f"{why}; {outcome}"
    value = PrResult(operation="skipped", body_path=plan.body_path, title=plan.title)
    return StepResult(
        outputs=value.outputs(),
        summary=(
            f"### Pull request: none\n\n{message}. The body it would have had is in `{plan.body_path}`.\n"
        ),
        message=message,
        warnings=warnings,
        value=value,
    )


# ------------------------------------------------------------------------------ phase 2: send
def send_pr(cfg: Config, plan: PrPlan, forge: Forge) -> StepResult[PrResult]:
    """Open or update the PR, post the gate status on its head, label it, remember its number."""
    target = plan.target
    if target is None:  # pragma: no cover - the composer sends only a plan with a target
        raise TraingateError("internal error: send_pr was given a plan with nothing to send")
    pull, operation = _open_or_update(forge, target.head, target.base, plan.title, plan.body)
    sent = PrResult(
        operation=operation,
        body_path=plan.body_path,
        title=plan.title,
        number=pull.number,
        url=pull.url,
        head_sha=pull.head_sha,
    )
    state = _post_status(forge, plan, sent)
    value = replace(sent, status=state)
    _label(forge, pull.number, list(cfg.pr.labels), plan.warnings)
    update_state(cfg.workspace_dir, pr_number=pull.number)
    summary = (
        f"### Pull request {operation}: [#{pull.number}]({pull.url})\n\n"
        f"`{reports.escape_cell(plan.status_context)}` = **{state}** on `{pull.head_sha[:12]}`.\n\n"
        + reports.render_gate_markdown(plan.gate, heading=4)
    )
    return StepResult(
        outputs=value.outputs(),
        summary=summary,
        message=f"pull request #{pull.number} {operation}: {pull.url} (status {plan.status_context}={state})",
        warnings=plan.warnings,
        data={"title": plan.title},
        value=value,
    )


def _post_status(forge: Forge, plan: PrPlan, sent: PrResult) -> str:
    try:
        return post_gate_status(
            forge,
            sent.head_sha,
            plan.gate,
            context=plan.status_context,
            target_url=plan.run_url or reports.safe_url(plan.facts.run_url),
        )
    except TraingateError as err:
        # The PR exists; say so, so nobody opens a second one by hand. Re-running is safe.
        err.message = f"pull request #{sent.number} was {sent.operation} ({sent.url}), but " + err.message
        err.hint = (err.hint or "") + "; the status is what branch protection waits for: re-run this step"
        err.outputs = {**sent.outputs(), **err.outputs}
        err.add_warnings(plan.warnings)
        raise


def _label(forge: Forge, number: int, labels: list[str], warnings: list[str]) -> None:
    try:
        forge.add_labels(number, labels)
    except TraingateError as err:
        # Labels are for people; the PR and its status are what the pipeline needs.
        warnings.append(f"could not label pull request #{number}: {err.message}")


def _open_or_update(forge: Forge, head: str, base: str, title: str, body: str) -> tuple[PullInfo, str]:
    existing = forge.find_open_pull(head, base)
    if existing is not None:
        return forge.update_pull(existing.number, title=title, body=body), "updated"
    try:
        return forge.create_pull(head=head, base=base, title=title, body=body), "created"
    except PullExistsError:
        # Opened between our look-up and the POST (or by a retried POST whose answer was lost).
        existing = forge.find_open_pull(head, base)
        if existing is None:
            raise GitHubError(
                f"GitHub says a pull request {head} → {base} already exists, but no open one was found",
                hint="it may be closed or from a fork with the same branch name; "
                "close it or push to a new branch",
            ) from None
        return forge.update_pull(existing.number, title=title, body=body), "updated"
