"""The `traingate` command line: parses, wires, and maps errors to exit codes. No logic.

Every stage module is imported inside the command that needs it, so `traingate --help` costs
little more than importing click and never imports mlflow, boto3, github, dvc, PIL or numpy.

This is the only place that turns a TraingateError into an exit code and an `::error::`
annotation, and the only place that writes $GITHUB_OUTPUT: outputs are written after the stage
returned, so a failed step never leaves `improved=true` behind.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from traingate import __version__, gha
from traingate.errors import TraingateError, UsageError

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.result import StepResult

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Options:
    """The global options, plus the one Actions context every command passes down."""

    def __init__(
        self, config: str | None, as_json: bool, verbose: int, actions: gha.ActionsContext | None = None
    ) -> None:
        self.config_path = config
        self.as_json = as_json
        self.verbose = verbose
        # Built once here; stages take it as an argument instead of reading GITHUB_* themselves.
        self.actions = actions if actions is not None else gha.ActionsContext.from_env()


def _command_name() -> str | None:
    """The command as typed after `traingate` (`data merge`), from click's context; None outside it."""
    ctx = click.get_current_context(silent=True)
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) or None


def _declared_only(command: str | None, outputs: dict[str, Any]) -> dict[str, Any]:
    from traingate.outputs import OUTPUTS, outputs_of

    if command is None or command not in OUTPUTS:
        return outputs
    return {k: v for k, v in outputs.items() if k in outputs_of(command, gate=True)}


def check_outputs(command: str | None, outputs: dict[str, Any]) -> None:
    """Hold a step's outputs to the registry (`traingate.outputs`) before anything is written.

    An undeclared name is invisible to the workflow that calls the action, and an enumerated
    output with a value nobody declared is an `if:` that silently never holds: both are bugs in
    traingate, so they fail the step loudly instead of writing something a caller misreads.
    """
    from traingate.outputs import OUTPUTS, outputs_of, values_of

    if command is None or command not in OUTPUTS:
        return
    unknown = sorted(set(outputs) - set(outputs_of(command, gate=True)))
    bad = []
    for name, value in outputs.items():
        allowed = values_of(command, name)
        if allowed is not None and gha.format_value(value) not in allowed:
            bad.append(f"{name}={gha.format_value(value)!r}")
    if unknown or bad:
        raise TraingateError(
            f"internal error: `traingate {command}` produced outputs outside its declaration: "
            + ", ".join([*(f"undeclared {n}" for n in unknown), *(f"undeclared value {b}" for b in bad)]),
            hint="this is a traingate bug (src/traingate/outputs.py is the registry): report it",
        )


def _configure_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)  # again when `-v` comes after the command


def _safe_failure_outputs(outputs: dict[str, Any]) -> dict[str, Any]:
    """Outputs an error may still write: never a `true` success flag."""
    return {k: v for k, v in outputs.items() if v is not True and str(v).lower() != "true"}


def _emit_error(err: TraingateError, as_json: bool) -> int:
    # What the step learned before it failed is still true: annotate it first.
    for text in err.warnings:
        gha.warning(text)
    context = "".join(f" (while {c})" for c in err.context)
    gha.error(
        err.message + context + (f" — next step: {err.hint}" if err.hint else ""),
        file=err.file,
        line=err.line,
        title=err.title,
    )
    summary = err.summary or f"### ❌ {err.title}\n\n{err.message}\n" + (
        "".join(f"\n- while {c}" for c in err.context)
        + (f"\n\n**Next step:** {err.hint}\n" if err.hint else "")
    )
    if err.warnings:
        summary += "\n**Warnings before the failure:**\n" + "".join(f"\n- {w}" for w in err.warnings) + "\n"
    gha.append_summary(summary)
    safe = _safe_failure_outputs(err.outputs)
    gha.write_outputs(safe)
    if as_json:
        _echo_envelope(err.exit_code, err, safe, err.data)
    return err.exit_code


def _echo_envelope(
    exit_code: int, err: TraingateError | None, outputs: dict[str, Any], extra: dict[str, Any]
) -> None:
    """The one `--json` shape of every command, pass or fail (docs/cli.md): `ok`, `exit_code`,
    `error` (null on success), `outputs`, plus what the stage adds (e.g. `report`)."""
    payload: dict[str, Any] = {
        **extra,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "error": None
        if err is None
        else {
            "type": type(err).__name__,
            "message": err.message,
            "hint": err.hint,
            "file": err.file,
            "context": err.context,
            "warnings": err.warnings,
        },
        "outputs": outputs,
    }
    click.echo(json.dumps(payload, sort_keys=True, default=str))


def run_step(
    opts: Options,
    action: Callable[[Config], StepResult],
    *,
    needs_config: bool = True,
    command: str | None = None,
) -> None:
    """Load config, run the stage, check its outputs against the registry, write
    outputs/summary/JSON, exit with the documented code."""
    command = command or _command_name()
    try:
        cfg: Any = None
        if needs_config:
            from traingate.config import load_config

            cfg = load_config(opts.config_path)
        result = action(cfg)
        check_outputs(command, result.outputs)
    except TraingateError as err:
        # An error raised inside a composed command (`run`) carries the inner stage's outputs:
        # only the names this command declares are written; their values are still checked.
        err.outputs = _declared_only(command, err.outputs)
        try:
            check_outputs(command, _safe_failure_outputs(err.outputs))
        except TraingateError as bug:
            err = bug.add_warnings(err.warnings)
        sys.exit(_emit_error(err, opts.as_json))
    except KeyboardInterrupt as err:
        # traingate.interrupt.Interrupted says what it stopped and which signal (130/143).
        line = getattr(err, "line", None)
        gha.error(line() if callable(line) else "interrupted")
        sys.exit(getattr(err, "exit_code", 130))
    except Exception as exc:
        # A bug, not a user error: still one clear line (and the JSON envelope), never a bare
        # traceback; -vv logs it for the bug report.
        logging.getLogger("traingate").debug("unexpected error", exc_info=True)
        internal = TraingateError(
            f"internal error: {type(exc).__name__}: {exc}",
            hint="this is a traingate bug: re-run with -vv for the traceback and report it",
        )
        sys.exit(_emit_error(internal, opts.as_json))
    for text in result.warnings:
        gha.warning(text)
    gha.write_outputs(result.outputs)
    gha.append_summary(result.summary)
    if result.message:
        click.echo(result.message, err=opts.as_json)
    if opts.as_json:
        extra = result.as_json()
        _echo_envelope(0, None, extra.pop("outputs", result.outputs), extra)


pass_opts = click.make_pass_decorator(Options)


@click.group(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--config",
    "-c",
    type=click.Path(dir_okay=False),
    envvar="TRAINGATE_CONFIG",
    help="traingate.yml to use (default: ./traingate.yml; env TRAINGATE_CONFIG).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON object on stdout, pass or fail (docs/cli.md)."
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@click.version_option(__version__, prog_name="traingate")
@click.pass_context
def cli(ctx: click.Context, config: str | None, as_json: bool, verbose: int) -> None:
    """Continuous training on GitHub Actions: validate data, borrow an instance, train,
    gate against the champion, and open a PR only when the model improved."""
    _configure_logging(verbose)
    ctx.obj = Options(config, as_json, verbose)


# ---------------------------------------------------------------------------------------- data
@cli.group()
def data() -> None:
    """Validate new training data and merge it into the DVC-tracked dataset."""


@data.command("validate")
@click.argument("path", required=False, type=click.Path(file_okay=False))
@click.option("--no-cache", is_flag=True, help="Ignore the content-hash validation cache.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="Write the JSON report here.")
@pass_opts
def data_validate(opts: Options, path: str | None, no_cache: bool, report_path: str | None) -> None:
    """Check an images/ + masks/ dataset at PATH (default: data.root). Exit 1 when invalid."""

    def action(cfg: Config) -> StepResult:
        from traingate.data.validate import validate_step

        return validate_step(
            cfg,
            Path(path) if path else None,
            use_cache=not no_cache,
            report_path=Path(report_path) if report_path else None,
        )

    run_step(opts, action)


@data.command("merge")
@click.argument("source", required=False, envvar="TRAINGATE_SOURCE", type=click.Path(file_okay=False))
@click.option(
    "--on-conflict",
    type=click.Choice(["fail", "replace"]),
    default=None,
    envvar="TRAINGATE_ON_CONFLICT",
    help="A stored name with different content: fail (default) or replace (recorded in the commit).",
)
@click.option(
    "--no-push",
    is_flag=True,
    envvar="TRAINGATE_NO_PUSH",
    help="Do not push the git commit (the data is still pushed first).",
)
@click.option(
    "--no-commit",
    is_flag=True,
    envvar="TRAINGATE_NO_COMMIT",
    help="Push the data but do not commit the pointers.",
)
@click.option("--message", "-m", envvar="TRAINGATE_MESSAGE", help="Commit message for the pointer commit.")
@click.option(
    "--comment",
    is_flag=True,
    envvar="TRAINGATE_COMMENT",
    help="On failure in Actions, post the errors as a commit comment.",
)
@click.option(
    "--github-token",
    envvar=["TRAINGATE_GITHUB_TOKEN", "GITHUB_TOKEN"],
    help="Token for --comment (default: $TRAINGATE_GITHUB_TOKEN, then $GITHUB_TOKEN).",
)
@pass_opts
def data_merge(
    opts: Options,
    source: str | None,
    on_conflict: str | None,
    no_push: bool,
    no_commit: bool,
    message: str | None,
    comment: bool,
    github_token: str | None,
) -> None:
    """Validate SOURCE (default: data.incoming) and merge it into the dataset: data first, pointers after."""
    gha.mask(github_token)

    def action(cfg: Config) -> StepResult:
        from traingate.pipeline.merge import data_merge_step

        return data_merge_step(
            cfg,
            Path(source) if source else None,
            on_conflict=on_conflict,
            push=not no_push,
            commit=not no_commit,
            message=message,
            comment=comment,
            token=github_token,
            actions=opts.actions,
        )

    run_step(opts, action)


# --------------------------------------------------------------------------------------- infra
@cli.group()
def infra() -> None:
    """Start, stop and inspect the shared training instance."""


_holder_option = click.option(
    "--holder",
    envvar="TRAINGATE_HOLDER",
    help="Lease holder id (default: the Actions run id and attempt, or user@host).",
)


@infra.command("start")
@_holder_option
@pass_opts
def infra_start(opts: Options, holder: str | None) -> None:
    """Start the instance from any state, wait until really ready, arm the watchdog, take the lease."""

    def action(cfg: Config) -> StepResult:
        from traingate.infra.stage import start_step

        return start_step(cfg, holder=holder, actions=opts.actions)

    run_step(opts, action)


@infra.command("stop")
@_holder_option
@click.option(
    "--no-wait",
    is_flag=True,
    envvar="TRAINGATE_NO_WAIT",
    help="Do not wait for the instance to reach `stopped`.",
)
@click.option("--force", is_flag=True, envvar="TRAINGATE_FORCE", help="Stop even when other holders remain.")
@pass_opts
def infra_stop(opts: Options, holder: str | None, no_wait: bool, force: bool) -> None:
    """Release the lease; stop the instance when no one else holds it. Idempotent."""

    def action(cfg: Config) -> StepResult:
        from traingate.infra.stage import stop_step

        return stop_step(cfg, holder=holder, wait=not no_wait, force=force, actions=opts.actions)

    run_step(opts, action)


@infra.command("status")
@pass_opts
def infra_status(opts: Options) -> None:
    """State, holders, lease expiry, uptime and estimated cost so far."""

    def action(cfg: Config) -> StepResult:
        from traingate.infra.stage import status_step

        return status_step(cfg, actions=opts.actions)

    run_step(opts, action)


@infra.command("reap")
@click.option("--dry-run", is_flag=True, help="Say what would be stopped, change nothing.")
@pass_opts
def infra_reap(opts: Options, dry_run: bool) -> None:
    """Stop instances whose lease expired (for a scheduled workflow)."""

    def action(cfg: Config) -> StepResult:
        from traingate.infra.stage import reap_step

        return reap_step(cfg, dry_run=dry_run, actions=opts.actions)

    run_step(opts, action)


# --------------------------------------------------------------------------------------- train
_tracking_uri_option = click.option(
    "--tracking-uri",
    envvar="TRAINGATE_TRACKING_URI",
    help="Override tracking.uri for this call, e.g. the `mlflow_url` output of `infra start` (the "
    "instance's address changes on every start).",
)


def _with_tracking_uri(cfg: Config, tracking_uri: str | None) -> Config:
    """An empty value (an unset workflow input) keeps traingate.yml's tracking.uri."""
    if tracking_uri:
        cfg.tracking.uri = tracking_uri
    return cfg


@cli.command("train")
@click.option(
    "--attach",
    "attach",
    metavar="RUN",
    envvar="TRAINGATE_ATTACH",
    help="Re-attach to a detached run on the instance.",
)
@click.option(
    "--no-pull",
    is_flag=True,
    envvar="TRAINGATE_NO_PULL",
    help="Do not pull the DVC-tracked dataset before training.",
)
@click.option(
    "--force-pull",
    is_flag=True,
    envvar="TRAINGATE_FORCE_PULL",
    help="Pull even over local edits of the dataset (they are lost); without it, train refuses.",
)
@click.option(
    "--gate/--no-gate",
    "with_gate",
    default=False,
    envvar="TRAINGATE_GATE",
    help="Run the quality gate right after training.",
)
@_tracking_uri_option
@click.option(
    "--skip-same-data/--no-skip-same-data",
    "skip_same_data",
    default=False,
    envvar="TRAINGATE_SKIP_SAME_DATA",
    help="With --gate: skip training (improved=false, skipped=true) when the dataset version is the "
    "one @champion was trained on. The pipeline sets it when it merged data in this run; "
    "train.skip_same_data: false turns it off.",
)
@click.option(
    "--data-from",
    metavar="COMMIT",
    envvar="TRAINGATE_DATA_FROM",
    help="Train the checked-out code on the dataset of COMMIT (a data branch's merge commit): only "
    "its DVC pointer is taken, after checking that COMMIT changes data only (untrusted_change).",
)
@pass_opts
def train_cmd(
    opts: Options,
    attach: str | None,
    no_pull: bool,
    force_pull: bool,
    with_gate: bool,
    tracking_uri: str | None,
    data_from: str | None,
    skip_same_data: bool = False,
) -> None:
    """Run the training command, check its exit code and metrics, log everything to MLflow."""

    def action(cfg: Config) -> StepResult:
        from traingate.pipeline.train import train_step

        adopted = None
        if data_from:
            from traingate.data.trust import adopt_data_pointers

            adopted = adopt_data_pointers(cfg, data_from, actions=opts.actions)
        result = None
        if skip_same_data and with_gate and not attach:
            from traingate.pipeline.same_data import skip_if_champion_data

            result = skip_if_champion_data(_with_tracking_uri(cfg, tracking_uri))
        result = result or train_step(
            _with_tracking_uri(cfg, tracking_uri),
            attach=attach,
            pull=not no_pull,
            with_gate=with_gate,
            force_pull=force_pull,
            actions=opts.actions,
        )
        if adopted is not None:
            result.summary = adopted.summary() + result.summary
            result.warnings = [*adopted.warnings, *result.warnings]
        return result

    run_step(opts, action)


@cli.command("gate")
@click.option(
    "--run-id",
    envvar="TRAINGATE_RUN_ID",
    help="The candidate run (default: the run `traingate train` just wrote).",
)
@click.option(
    "--no-promote", is_flag=True, envvar="TRAINGATE_NO_PROMOTE", help="Compare only; never move an alias."
)
@_tracking_uri_option
@pass_opts
def gate_cmd(opts: Options, run_id: str | None, no_promote: bool, tracking_uri: str | None) -> None:
    """Compare the candidate with @champion; promote when improved. Fails closed."""

    def action(cfg: Config) -> StepResult:
        from traingate.tracking.gate import gate_step

        return gate_step(
            _with_tracking_uri(cfg, tracking_uri), run_id=run_id, promote=not no_promote, actions=opts.actions
        )

    run_step(opts, action)


_token_option = click.option(
    "--token",
    envvar=["TRAINGATE_GITHUB_TOKEN", "GITHUB_TOKEN"],
    help="GitHub token (default: $GITHUB_TOKEN).",
    show_envvar=True,
)
_repo_option = click.option(
    "--repo",
    envvar=["TRAINGATE_REPOSITORY", "GITHUB_REPOSITORY"],
    help="owner/name (default: $GITHUB_REPOSITORY).",
)


@cli.command("promote")
@click.option("--version", "version", help="Model version to make champion (default: @challenger).")
@click.option("--rollback", is_flag=True, help="Move champion back to @previous-champion.")
@click.option(
    "--reconcile",
    is_flag=True,
    envvar="TRAINGATE_RECONCILE",
    help="Promote the version recorded in every merged traingate PR not yet promoted (in merge order).",
)
@click.option(
    "--pr", "pr_number", type=int, envvar="TRAINGATE_PR_NUMBER", help="With --reconcile: only this PR."
)
@_token_option
@_repo_option
@_tracking_uri_option
@pass_opts
def promote_cmd(
    opts: Options,
    version: str | None,
    rollback: bool,
    reconcile: bool,
    pr_number: int | None,
    token: str | None,
    repo: str | None,
    tracking_uri: str | None,
) -> None:
    """Move the champion alias (post-merge promotion, or rollback)."""
    gha.mask(token)

    def action(cfg: Config) -> StepResult:
        from traingate.tracking.promote import promote_step

        if reconcile and (version or rollback):
            raise UsageError(
                "--reconcile promotes what merged PRs recorded; "
                "it cannot be combined with --version or --rollback",
                hint="run `traingate promote --reconcile` or `traingate promote --version N`, not both",
            )
        if pr_number is not None and not reconcile:
            raise UsageError("--pr only works with --reconcile", hint="pass --reconcile --pr N")
        if reconcile:
            from traingate.pipeline.promote import reconcile_step

            return reconcile_step(
                cfg, token, repo, pr_number=pr_number, tracking_uri=tracking_uri, actions=opts.actions
            )
        return promote_step(_with_tracking_uri(cfg, tracking_uri), version=version, rollback=rollback)

    run_step(opts, action)


# ------------------------------------------------------------------------------------------ pr
@cli.group()
def pr() -> None:
    """Open the pull request, post the gate status, enable auto-merge."""


@pr.command("create")
@_token_option
@_repo_option
@click.option("--head", envvar="TRAINGATE_HEAD", help="Head branch (default: $GITHUB_REF_NAME).")
@click.option("--base", envvar="TRAINGATE_BASE", help="Base branch (default: pr.base).")
@click.option(
    "--data-report",
    envvar="TRAINGATE_DATA_REPORT",
    type=click.Path(dir_okay=False),
    help="JSON data report from `data merge`.",
)
@click.option(
    "--gate-report",
    envvar="TRAINGATE_GATE_REPORT",
    type=click.Path(dir_okay=False),
    help="JSON gate report from `gate`.",
)
@click.option(
    "--metrics-log",
    envvar="TRAINGATE_METRICS_LOG",
    type=click.Path(dir_okay=False),
    help="metrics.jsonl for the learning curves.",
)
@click.option(
    "--render-only",
    is_flag=True,
    envvar="TRAINGATE_RENDER_ONLY",
    help="Write the body to pr.render_to and call no API.",
)
@pass_opts
def pr_create(
    opts: Options,
    token: str | None,
    repo: str | None,
    head: str | None,
    base: str | None,
    data_report: str | None,
    gate_report: str | None,
    metrics_log: str | None,
    render_only: bool,
) -> None:
    """Open or update the PR with the data summary and metric table; post the gate commit status."""
    gha.mask(token)

    def action(cfg: Config) -> StepResult:
        from traingate.pipeline.pr import create_step

        return create_step(
            cfg,
            token=token,
            repo=repo,
            head=head,
            base=base,
            data_report=Path(data_report) if data_report else None,
            gate_report=Path(gate_report) if gate_report else None,
            metrics_log=Path(metrics_log) if metrics_log else None,
            render_only=render_only,
            actions=opts.actions,
        )

    run_step(opts, action)


@pr.command("automerge")
@_token_option
@_repo_option
@click.option("--pr", "pr_number", type=int, envvar="TRAINGATE_PR_NUMBER", help="PR number.")
@click.option(
    "--method",
    type=click.Choice(["squash", "merge", "rebase", "off"]),
    envvar="TRAINGATE_METHOD",
    help="Default: pr.auto_merge.",
)
@click.option(
    "--delete-branch/--keep-branch",
    default=None,
    envvar="TRAINGATE_DELETE_BRANCH",
    help="Delete the head branch after merge.",
)
@pass_opts
def pr_automerge(
    opts: Options,
    token: str | None,
    repo: str | None,
    pr_number: int | None,
    method: str | None,
    delete_branch: bool | None,
) -> None:
    """Enable auto-merge (or merge directly when already clean), or say exactly why it cannot."""
    gha.mask(token)

    def action(cfg: Config) -> StepResult:
        from traingate.github.automerge import automerge_step

        return automerge_step(
            cfg,
            token=token,
            repo=repo,
            pr_number=pr_number,
            method=method,
            delete_branch=delete_branch,
            actions=opts.actions,
        )

    run_step(opts, action)


@pr.command("comment")
@_token_option
@_repo_option
@click.option("--sha", envvar="GITHUB_SHA", help="Commit to comment on (default: $GITHUB_SHA).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), help="JSON validation report.")
@pass_opts
def pr_comment(
    opts: Options, token: str | None, repo: str | None, sha: str | None, report_path: str | None
) -> None:
    """Post (or update) the validation errors as a commit comment."""
    gha.mask(token)

    def action(cfg: Config) -> StepResult:
        from traingate.github.status import comment_step

        return comment_step(
            cfg,
            token=token,
            repo=repo,
            sha=sha,
            report=Path(report_path) if report_path else None,
            actions=opts.actions,
        )

    run_step(opts, action)


# ------------------------------------------------------------------------------ whole pipeline
@cli.command("run")
@click.argument("source", required=False, type=click.Path(file_okay=False))
@pass_opts
def run_cmd(opts: Options, source: str | None) -> None:
    """Run every stage in order on this machine (stop-infra always runs)."""

    def action(cfg: Config) -> StepResult:
        from traingate.pipeline import run_step as pipeline_run

        return pipeline_run(cfg, Path(source) if source else None, actions=opts.actions)

    run_step(opts, action)


@cli.command("demo")
@click.option(
    "--workdir",
    type=click.Path(file_okay=False),
    help="Folder for the demo (default: a new one under .traingate/demo).",
)
@click.option(
    "--pairs", type=int, default=36, show_default=True, help="Image/mask pairs in the initial dataset."
)
@pass_opts
def demo_cmd(opts: Options, workdir: str | None, pairs: int) -> None:
    """Run the whole pipeline twice on the bundled example: improved, then not improved."""

    def action(_cfg: Config) -> StepResult:
        from traingate.demo import demo_step

        return demo_step(Path(workdir) if workdir else None, pairs=pairs)

    run_step(opts, action, needs_config=False)


@cli.command("init")
@click.argument("target", required=False, default=".", type=click.Path(file_okay=False))
@click.option("--project", help="Project name.")
@click.option("--bucket", help="S3 remote for the dataset, e.g. s3://bucket/prefix.")
@click.option("--instance-id", help="The shared EC2 instance id.")
@click.option("--role-arn", help="IAM role for OIDC (AWS_ROLE_ARN repository variable).")
@click.option("--region", help="AWS region.")
@click.option(
    "--tracking-uri",
    help="MLflow server that outlives the job, e.g. https://mlflow.example.com (default: a local "
    "SQLite file, fine for `traingate run`, refused by the gate in GitHub Actions).",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
@pass_opts
def init_cmd(
    opts: Options,
    target: str,
    project: str | None,
    bucket: str | None,
    instance_id: str | None,
    role_arn: str | None,
    region: str | None,
    tracking_uri: str | None,
    force: bool,
) -> None:
    """Write the workflow templates and a starter traingate.yml into a repository."""

    def action(_cfg: Config) -> StepResult:
        from traingate.templates import init_step

        return init_step(
            Path(target),
            project=project,
            bucket=bucket,
            instance_id=instance_id,
            role_arn=role_arn,
            region=region,
            force=force,
            interactive=sys.stdin.isatty() and not opts.as_json,
            tracking_uri=tracking_uri,
        )

    run_step(opts, action, needs_config=False)


@cli.command("doctor")
@pass_opts
def doctor_cmd(opts: Options) -> None:
    """Check config, credentials, the tracking server and the DVC remote; say what to fix."""

    def action(cfg: Config) -> StepResult:
        from traingate.doctor import doctor_step

        return doctor_step(cfg, actions=opts.actions)

    run_step(opts, action)


# ------------------------------------------------------- global options after the command
def _set_global(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """`--config`, `--json`, `-v` given after a command override the ones before it."""
    opts = ctx.find_object(Options)
    if opts is None or value in (None, False, 0):
        return
    if param.name == "config":
        opts.config_path = value
    elif param.name == "as_json":
        opts.as_json = True
    elif param.name == "verbose":
        opts.verbose += value
        _configure_logging(opts.verbose)


def _accept_global_options(group: click.Group) -> None:
    """DESIGN.md writes `traingate data validate PATH --config F --json`: accept the global
    options after every command and sub-group too, not only before the first command."""
    for cmd in group.commands.values():
        cmd.params += [
            click.Option(
                ["--config", "-c"],
                type=click.Path(dir_okay=False),
                expose_value=False,
                callback=_set_global,
                help="traingate.yml to use (as the global option; allowed here too).",
            ),
            click.Option(
                ["--json", "as_json"],
                is_flag=True,
                expose_value=False,
                callback=_set_global,
                help="Print one JSON object on stdout, pass or fail (as the global option).",
            ),
            click.Option(
                ["-v", "--verbose"],
                count=True,
                expose_value=False,
                callback=_set_global,
                help="More logging (as the global option).",
            ),
        ]
        if isinstance(cmd, click.Group):
            _accept_global_options(cmd)


_accept_global_options(cli)


def _wants_json(argv: list[str]) -> bool:
    args = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in args


def main() -> None:
    try:
        cli.main(prog_name="traingate", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        # Bad flags are usage errors: exit 2 with click's message (what failed) and a pointer.
        exc.show()
        if _wants_json(sys.argv[1:]):
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "traingate"
            usage = UsageError(exc.format_message(), hint=f"see `{where} --help`")
            _echo_envelope(2, usage, {}, {})
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
