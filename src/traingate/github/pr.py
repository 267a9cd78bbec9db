"""`traingate pr create`: open or update the pull request that explains itself.

Runs after the training job, from files and job outputs only (the MLflow server is already
stopped): the data report from `data merge`, the gate report from `gate`, metrics.jsonl for the
learning curves. Idempotent: an open PR for head → base is updated, not duplicated, so a re-run
or a retried POST never opens a second PR. The gate verdict goes on the PR head as a commit
status, because the PR's own workflows never run when GITHUB_TOKEN opened it.

Without a token and a repository (or with --render-only) the body is only written to
`pr.render_to`: that is what the embedded demo does, and it calls no API.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate import report as reports
from traingate.errors import CredentialsError, GitHubError, TraingateError, UsageError
from traingate.github.forge import (
    PERMISSIONS_HINT,
    Forge,
    ForgeFactory,
    PullExistsError,
    PullInfo,
    make_forge,
    resolve_repo,
)
from traingate.github.status import post_gate_status
from traingate.result import StepResult
from traingate.state import atomic_write_text, reports_dir, update_state

if TYPE_CHECKING:
    from traingate.config import Config


def _head_branch(head: str | None, env: Mapping[str, str]) -> str | None:
    # On a pull_request event GITHUB_REF_NAME is "<n>/merge"; GITHUB_HEAD_REF is the branch.
    value = head or env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME")
    if not value:
        return None
    value = value.removeprefix("refs/heads/")
    if value.startswith("-") or any(c in value for c in " \t\n\r\0~^:?*[\\") or ".." in value:
        raise UsageError(
            f"invalid head branch name {value!r}",
            hint="pass --head with the branch the data commit was pushed to, e.g. data/2024-05-01",
        )
    return value


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


def _refuse_not_improved(gate: Mapping[str, Any]) -> None:
    if gate.get("improved") is True:
        return
    reason = gate.get("reason") or "the candidate did not beat the champion"
    improved = str(gate.get("improved")).lower()
    raise GitHubError(
        f"not opening a pull request: the gate report says improved={improved} ({reason})",
        hint="a PR is opened only when the model improved; in the workflow run this step under "
        "`if: needs.train.outputs.improved == 'true'`",
    )


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
    forge_factory: ForgeFactory | None = None,
    env: Mapping[str, str] | None = None,
) -> StepResult:
    env = dict(os.environ) if env is None else dict(env)
    repo_name = resolve_repo(repo, env)
    send = not render_only and bool(token or repo_name)
    # Configuration first: a missing token is exit 2 before any report is read.
    if send and not repo_name:
        raise UsageError(
            "a token was given but no repository: --repo was not given and GITHUB_REPOSITORY is not set",
            hint="pass --repo owner/name (or --render-only to write the body only)",
        )
    if send and not token:
        raise CredentialsError(
            f"cannot open a pull request in {repo_name}: GITHUB_TOKEN is not set and --token was not given",
            hint=PERMISSIONS_HINT + " (or pass --render-only to write the body without GitHub)",
        )
    data, gate, rows, skipped, warnings = _load_inputs(cfg, data_report, gate_report, metrics_log)
    _refuse_not_improved(gate)

    run_url = reports.actions_run_url(env)
    context = cfg.pr.status_context
    title = reports.render_pr_title(cfg.pr.title, data, gate, project=cfg.project)
    body = reports.render_pr_body(
        data_report=data,
        gate_report=gate,
        metrics_rows=rows,
        skipped_metric_lines=skipped,
        run_url=run_url,
        max_errors=cfg.data.max_errors_in_summary,
        status_context=context,
    )
    body_path = cfg.path(cfg.pr.render_to)
    atomic_write_text(body_path, f"# {title}\n\n{body}")

    if not send:
        why = "--render-only" if render_only else "no GITHUB_TOKEN and no repository given"
        return StepResult(
            outputs={
                "pr_number": "",
                "pr_url": "",
                "operation": "rendered",
                "head_sha": "",
                "body_path": str(body_path),
            },
            summary=f"### Pull request (rendered only)\n\n{why}: the body is in `{body_path}`.\n",
            message=f"PR body rendered to {body_path} ({why}); no GitHub API was called",
            warnings=warnings,
        )
    head_ref = _head_branch(head, env)
    if not head_ref:
        raise UsageError(
            "no head branch: --head was not given and GITHUB_REF_NAME is not set",
            hint="pass --head with the branch the data commit was pushed to",
        )
    base_ref = base or cfg.pr.base
    if head_ref == base_ref:
        return _on_the_base_branch(cfg, gate, base_ref, body_path, warnings)

    assert token and repo_name  # send is true: both were checked before any report was read
    forge = (forge_factory or make_forge)(token, repo_name)
    _refuse_untrusted_diff(cfg, forge, head_ref, base_ref)
    pull, operation = _open_or_update(forge, head_ref, base_ref, title, body)
    outputs: dict[str, Any] = {
        "pr_number": pull.number,
        "pr_url": pull.url,
        "operation": operation,
        "head_sha": pull.head_sha,
        "body_path": str(body_path),
    }
    try:
        state = post_gate_status(
            forge,
            pull.head_sha,
            gate,
            context=context,
            target_url=run_url or reports.safe_url(gate.get("run_url")),
        )
    except TraingateError as err:
        # The PR exists; say so, so nobody opens a second one by hand. Re-running is safe.
        err.message = f"pull request #{pull.number} was {operation} ({pull.url}), but " + err.message
        err.hint = (err.hint or "") + "; the status is what branch protection waits for: re-run this step"
        err.outputs = {**outputs, **err.outputs}
        raise
    try:
        forge.add_labels(pull.number, list(cfg.pr.labels))
    except TraingateError as err:
        # Labels are for people; the PR and its status are what the pipeline needs.
        warnings.append(f"could not label pull request #{pull.number}: {err.message}")
    update_state(cfg.workspace_dir, pr_number=pull.number)

    summary = (
        f"### Pull request {operation}: [#{pull.number}]({pull.url})\n\n"
        f"`{reports.escape_cell(context)}` = **{state}** on `{pull.head_sha[:12]}`.\n\n"
        + reports.render_gate_markdown(gate, heading=4)
    )
    return StepResult(
        outputs=outputs,
        summary=summary,
        message=f"pull request #{pull.number} {operation}: {pull.url} (status {context}={state})",
        warnings=warnings,
        data={"title": title},
    )


def _refuse_untrusted_diff(cfg: Config, forge: Forge, head: str, base: str) -> None:
    """A PR that an auto-merge may land changes data only: its diff on GitHub (head since it left
    base) may touch data.incoming, the dataset pointers and data.allowed_paths, nothing else."""
    from traingate.data.trust import Change, check_paths
    from traingate.errors import UntrustedChangeError

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


def _on_the_base_branch(
    cfg: Config, gate: Mapping[str, Any], base: str, body_path: Path, warnings: list[str]
) -> StepResult:
    """A retrain run on the base branch itself (`manual-train.yml` dispatched on main).

    There is nothing to merge, so no PR is attempted and the step succeeds; what happened to the
    model is the gate's business, and this says it: with `on-gate` the candidate is @champion
    already, with `on-merge` it waits as @challenger and only a person can promote it.
    """
    version = gate.get("model_version")
    promoted = gate.get("promoted_alias") or ("" if not gate.get("promoted") else cfg.gate.alias)
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
        outcome = f"nothing was promoted (gate promote mode: {gate.get('promote_mode') or 'unknown'})"
    message = f"{why}; {outcome}"
    return StepResult(
        outputs={
            "pr_number": "",
            "pr_url": "",
            "operation": "skipped",
            "head_sha": "",
            "body_path": str(body_path),
        },
        summary=f"### Pull request: none\n\n{message}. The body it would have had is in `{body_path}`.\n",
        message=message,
        warnings=warnings,
    )


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
