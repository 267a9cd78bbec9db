"""`traingate train`: dataset in place, MLflow run created, command run, results checked and logged.

The order matters and every step fails loudly (field reports 1, 2, 5):
- the tracking server must answer /health before anything is started, so a dead server is a
  clear error in seconds, not a lost training run;
- the dataset is pulled before the command (never "using local data" silently);
- traingate creates the run and hands its id to the command (`MLFLOW_RUN_ID`), so a script that
  logs to MLflow itself logs into this run, never "the latest run";
- success is the exit code plus a valid metrics file plus the artifacts, never a marker file;
- the run ends FINISHED only when the step succeeds; any failure after it was created marks it
  FAILED, and the state file forgets the previous run so `gate` cannot gate a stale one.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate import __version__, gha
from traingate.contracts import DATA_PULL_FAILED, TAG_ARTIFACTS, Executor, LogSink, TrainJob, TrainOutcome
from traingate.errors import TrackingError, TrainError, TraingateError
from traingate.git import Git
from traingate.interrupt import interruptible, note
from traingate.metrics import read_final_metrics, read_metrics_log, to_points
from traingate.report import actions_run_url
from traingate.result import StepResult
from traingate.state import atomic_write_json, read_state, reports_dir, update_state

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.contracts import Tracking

# Artifacts older than the run by more than this were left by an earlier run.
_STALE_SLACK_SECONDS = 2.0
_GLOB_CHARS = frozenset("*?[")


def git_info(cfg: Config) -> tuple[str, str]:
    """(commit, branch): the commit is the one checked out in train.workdir, the code and the
    pointer that are actually trained. GITHUB_SHA is the push that started the workflow; after
    `data merge` committed the pointer, HEAD is a later commit (issue #12 case 7), so the
    environment is only the fallback when there is no git checkout."""
    workdir = cfg.path(cfg.train.workdir)
    commit = Git(workdir if workdir.is_dir() else cfg.base_dir, author=None, timeout=10).fact(
        "rev-parse", "HEAD"
    )
    commit = commit or os.environ.get("GITHUB_SHA", "")
    branch = os.environ.get("GITHUB_REF_NAME") or Git(cfg.base_dir, author=None, timeout=10).fact(
        "rev-parse", "--abbrev-ref", "HEAD"
    )
    return commit, ("" if branch == "HEAD" else branch)


def _data_version(cfg: Config, pull: bool, force_pull: bool = False) -> tuple[str, list[str]]:
    """Pull (runner) or only read the version; a failed pull stops everything before training.
    A pull never overwrites local edits of the dataset unless `force_pull` (issue #11 case 4)."""
    from traingate.data import store

    if pull:
        with gha.group(f"Pull the dataset {cfg.data.root} from {cfg.store_remote}"):
            return store.pull_dataset(cfg, force=force_pull), []
    try:
        return store.dataset_version(cfg), []
    except TraingateError as err:
        return "", [f"could not read the dataset version (tagged as unknown): {err.message}"]


def _instance_datasets(cfg: Config, workdir: Path) -> list[str]:
    """The DVC pointers the instance must pull itself, checked before anything is shipped."""
    pointer = cfg.data_root.parent / f"{cfg.data_root.name}.dvc"
    if not pointer.exists():
        raise TrainError(
            f"train.where is `instance` and train.pull_data is on, but the dataset pointer {pointer} "
            "does not exist",
            hint="merge the data first (`traingate data merge`), or set train.pull_data: false",
        )
    resolved = pointer.resolve()
    if not resolved.is_relative_to(workdir) or not (workdir / ".dvc").is_dir():
        raise TrainError(
            f"the instance cannot pull {pointer}: it ships train.workdir ({workdir}), which must be the "
            "DVC repository root holding .dvc/ and the pointer",
            hint="set train.workdir to the repository root, or train.pull_data: false and provide "
            "the data on the instance",
        )
    return [resolved.relative_to(workdir).as_posix()]


def _make_executor(cfg: Config) -> Executor:
    if cfg.train.where == "instance":
        from traingate.infra.remote import make_remote_executor

        return make_remote_executor(cfg)
    from traingate.infra.keepalive import RenewingExecutor
    from traingate.train.local import LocalExecutor

    # Training on the runner renews the lease and the watchdog too (the instance does it itself).
    return RenewingExecutor(LocalExecutor(), cfg)


def _resolve_artifacts(cfg: Config, outputs_dir: Path) -> list[Path]:
    found: list[Path] = []
    for pattern in cfg.train.artifacts:
        if _GLOB_CHARS & set(pattern):
            matches = sorted(outputs_dir.glob(pattern))
            if not matches:
                raise TrainError(
                    f"no file matches the artifact pattern {pattern!r} in {outputs_dir}",
                    hint="check that the training script saves the model there (train.artifacts)",
                )
            found.extend(matches)
            continue
        path = outputs_dir / pattern
        if not path.exists():
            raise TrainError(
                f"the training command did not produce the artifact {path}",
                hint="check that the script saves the model there, or fix train.artifacts",
                file=str(path),
            )
        found.append(path)
    return found


def _check_fresh(paths: list[Path], started_wall: float) -> None:
    """On the runner the outputs live in the checkout: a model file from yesterday's run must
    not be registered as today's."""
    for path in paths:
        mtime = path.stat().st_mtime
        if mtime < started_wall - _STALE_SLACK_SECONDS:
            raise TrainError(
                f"the artifact {path} was not written by this training run (last modified "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(mtime))}, before the run started)",
                hint="make the script save the model on every run (a failed save left the old file)",
                file=str(path),
            )


def _last_lines(outcome: TrainOutcome, count: int = 10) -> str:
    return "\n".join(outcome.log_tail.strip().splitlines()[-count:])


def _log_tail_summary(outcome: TrainOutcome) -> str:
    tail = outcome.log_tail.strip() or "(no output)"
    return "### ❌ Training failed\n\nLast lines of the output:\n\n```text\n" + tail + "\n```\n"


def _fail_run(tracking: Tracking, run_id: str, warnings: list[str]) -> None:
    """Mark the run FAILED and show the warnings gathered so far (the failure's report is never
    written). Best effort: the original error is what the user needs; a dead server only adds
    a line."""
    try:
        tracking.end_run(run_id, "FAILED")
    except TraingateError as err:
        warnings.append(f"could not mark MLflow run {run_id} FAILED: {err.message}")
    for text in warnings:
        gha.warning(text)


def _kill_run(tracking: Tracking, run_id: str, workspace: Path, err: KeyboardInterrupt) -> None:
    """Ctrl-C or the runner's cancel: the executor has stopped the command; the run ends
    KILLED (MLflow's status for a run stopped from outside), and nothing will re-attach to it."""
    try:
        tracking.end_run(run_id, "KILLED")
        note(err, f"MLflow run {run_id} marked KILLED")
    except TraingateError as end_err:
        note(err, f"could not mark MLflow run {run_id} KILLED ({end_err.message})")
    update_state(workspace, pending_run_id=None)


def train_step(
    cfg: Config,
    attach: str | None = None,
    pull: bool = True,
    with_gate: bool = False,
    *,
    force_pull: bool = False,
    tracking: Tracking | None = None,
    executor: Executor | None = None,
    log: LogSink | None = None,
    wall: Callable[[], float] = time.time,
) -> StepResult:
    from traingate.train.local import default_log_sink

    log = log or default_log_sink()
    workspace = cfg.workspace_dir
    if with_gate:
        from traingate.tracking.durable import require_lasting_registry

        # Before an hour of training, not after: the verdict could not be trusted.
        require_lasting_registry(cfg, command="train --gate")
    # Forget the previous candidate first: if this run fails, `gate` must not pick up the last one.
    update_state(workspace, run_id=None)

    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    tracking.wait_healthy(cfg.tracking.health_timeout_seconds)

    warnings: list[str] = []
    where_runner = cfg.train.where == "runner"
    data_version, notes = _data_version(cfg, pull and cfg.train.pull_data and where_runner, force_pull)
    warnings.extend(notes)

    from traingate.tracking.mlflow_client import artifact_location, mlflow_env

    commit, branch = git_info(cfg)
    experiment_id = tracking.ensure_experiment(cfg.tracking.experiment, artifact_location(cfg))
    tags = {
        "mlflow.source.git.commit": commit,
        "traingate.git_commit": commit,
        "traingate.git_branch": branch,
        "traingate.actions_run_url": actions_run_url(),
        "traingate.data_version": data_version or "unknown",
        "traingate.version": __version__,
        "traingate.where": str(cfg.train.where),
    }
    run_name = f"{cfg.project}-{commit[:8]}" if commit else cfg.project
    pending = read_state(workspace).pending_run_id if attach else None
    if pending:
        # Re-attaching: the run was created when the job was started; keep logging into it.
        run_id = tracking.get_run(str(pending)).run_id
    else:
        run_id = tracking.create_run(experiment_id, run_name, {k: v for k, v in tags.items() if v}).run_id
    update_state(workspace, pending_run_id=run_id)

    workdir = cfg.path(cfg.train.workdir).resolve()
    env = {
        **mlflow_env(cfg.tracking),
        **cfg.train.env,
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "TRAINGATE_DATA_VERSION": data_version,
        "TRAINGATE_PARAMS": json.dumps(cfg.train.params),
    }
    datasets = _instance_datasets(cfg, workdir) if not where_runner and pull and cfg.train.pull_data else []
    job = TrainJob(
        datasets=datasets,
        command=cfg.train.command,
        workdir=workdir,
        env=env,
        timeout_seconds=cfg.train.timeout_minutes * 60,
        metrics_file=cfg.train.metrics_file,
        metrics_log=cfg.train.metrics_log,
        artifacts=list(cfg.train.artifacts),
        setup=cfg.train.setup,
        run_name=run_name,
        commit=commit,
        optional_outputs=[cfg.train.params_file, cfg.train.model_dir],
        checkpoint_url=cfg.train.checkpoint_s3 if not where_runner else "",
    )
    started_wall = wall()
    try:
        with interruptible():
            result = _train_and_log(cfg, tracking, executor, job, attach, log, started_wall, warnings)
    except KeyboardInterrupt as err:
        if where_runner:
            _kill_run(tracking, run_id, workspace, err)
        else:
            # Detached by design (infra/remote.py): the job goes on and can be re-attached.
            note(
                err,
                f"the training on the instance goes on; MLflow run {run_id} stays RUNNING "
                "(re-attach with `traingate train --attach`, or stop the instance)",
            )
        raise
    except BaseException:
        _fail_run(tracking, run_id, warnings)
        raise
    metrics, outcome, batches, artifacts = result
    from traingate.tracking.record import record_run_extras

    try:
        fresh_after = started_wall if where_runner and not attach else None
        recorded = record_run_extras(cfg, tracking, run_id, experiment_id, outcome, fresh_after, warnings)
    except BaseException:
        _fail_run(tracking, run_id, warnings)
        raise

    tracking.end_run(run_id, "FINISHED")
    run_url = tracking.run_url(experiment_id, run_id)
    report_dir = reports_dir(workspace)
    report_path = report_dir / "train-report.json"
    log_src = outcome.outputs_dir / cfg.train.metrics_log
    if log_src.is_file():
        report_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_src, report_dir / "metrics.jsonl")
    report = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "tracking_uri": getattr(tracking, "display_uri", tracking.uri),
        "run_url": run_url,
        "metrics": metrics,
        "data_version": data_version,
        "commit": commit,
        "duration_seconds": round(outcome.duration_seconds, 3),
        "artifacts": artifacts,
        "warnings": warnings,
        "metric_batches": batches,
        **recorded,
    }
    atomic_write_json(report_path, report)
    update_state(workspace, run_id=run_id, pending_run_id=None)

    outputs: dict[str, Any] = {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "metrics": metrics,
        "report": str(report_path),
        "data_version": data_version,
        "skipped": False,
    }
    summary = _summary(run_id, run_url, metrics, data_version, outcome, batches, artifacts, warnings)
    message = f"training finished: run {run_id}, " + ", ".join(f"{k}={v:g}" for k, v in metrics.items())
    result_obj = StepResult(
        outputs=outputs, summary=summary, message=message, warnings=list(warnings), data={"report": report}
    )
    if with_gate:
        from traingate.tracking.gate import gate_step

        gated = gate_step(cfg, run_id=run_id, promote=True, tracking=tracking)
        for key, value in gated.outputs.items():
            # `metrics` stays the candidate's final metrics (a JSON object) as `train` documents
            # it; the per-metric comparison is in the gate report and the summary.
            if key not in ("metrics", "report", "run_id"):
                result_obj.outputs[key] = value
        result_obj.summary += "\n" + gated.summary
        result_obj.message += "\n" + gated.message
        result_obj.warnings.extend(gated.warnings)
        result_obj.data["gate"] = gated.data
    return result_obj


def _train_and_log(
    cfg: Config,
    tracking: Tracking,
    executor: Executor | None,
    job: TrainJob,
    attach: str | None,
    log: LogSink,
    started_wall: float,
    warnings: list[str],
) -> tuple[dict[str, float], TrainOutcome, int, list[str]]:
    executor = executor or _make_executor(cfg)
    run_id = job.env["MLFLOW_RUN_ID"]
    local_outputs = cfg.train.where == "runner"
    if local_outputs and not attach:
        # A metrics file left by an earlier run must not pass for this run's result.
        for rel in (job.metrics_file, job.metrics_log):
            (job.workdir / rel).unlink(missing_ok=True)
    with gha.group(f"Train: {job.command}"):
        outcome = executor.attach(attach, job, log) if attach else executor.run(job, log)
    if outcome.killed:
        raise TrainError(
            f"the training command timed out after {cfg.train.timeout_minutes:g} minutes and was stopped",
            hint="raise train.timeout_minutes, or make the training faster",
            summary=_log_tail_summary(outcome),
        )
    if outcome.exit_code == DATA_PULL_FAILED and job.datasets:
        raise TrainError(
            f"the instance could not pull the dataset {', '.join(job.datasets)} from "
            f"{cfg.store_remote}; training did not start; last lines:\n{_last_lines(outcome)}",
            hint="give the instance's role read access to the DVC remote and install dvc there "
            "(train.setup), or set train.pull_data: false if the instance has the data",
            summary=_log_tail_summary(outcome),
        )
    if outcome.exit_code != 0:
        raise TrainError(
            f"the training command exited with code {outcome.exit_code}; last lines:\n{_last_lines(outcome)}",
            hint="fix the error shown in the log above; the MLflow run is marked FAILED",
            summary=_log_tail_summary(outcome),
        )
    metrics_path = outcome.outputs_dir / job.metrics_file
    metrics = read_final_metrics(metrics_path)
    history = read_metrics_log(outcome.outputs_dir / job.metrics_log)
    missing = [m.name for m in cfg.gate.metrics if m.name not in metrics]
    if missing:
        warnings.append(f"{metrics_path} lacks the gated metric(s) {', '.join(missing)}: the gate will fail")
    # A script that logged the same keys itself (into this run) at higher steps would otherwise
    # shadow metrics.json: MLflow reports the value at the highest step.
    already = tracking.get_run(run_id).metrics
    own_steps = [tracking.metric_max_step(run_id, k) for k in metrics if k in already]
    points = to_points(
        metrics, history, now_ms=int(time.time() * 1000), min_final_step=max(own_steps, default=0)
    )
    batches = tracking.log_metrics(run_id, points)

    paths = _resolve_artifacts(cfg, outcome.outputs_dir)
    if local_outputs and not attach:
        _check_fresh(paths, started_wall)
    uploaded: list[str] = []
    for path in paths:
        try:
            tracking.log_artifact(run_id, path, "model")
            uploaded.append(f"model/{path.name}")
        except TrackingError as err:
            if cfg.train.artifacts_policy == "required":
                raise TrainError(
                    f"uploading the artifact {path} to the MLflow run failed: {err.message}",
                    hint="fix the artifact store permissions (e.g. s3:PutObject for the MLflow bucket), "
                    "or set train.artifacts_policy: best-effort to keep the model locally and go on",
                ) from err
            warnings.append(
                f"artifact upload failed, the model is kept only at {path} "
                f"(train.artifacts_policy: best-effort): {err.message}"
            )
    if len(uploaded) < len(paths):
        # The gate reads this tag: an improved run whose model never reached the artifact store
        # cannot be registered, and best-effort means "say so loudly and go on", not "fail".
        try:
            tracking.set_tags(run_id, {TAG_ARTIFACTS: "missing"})
        except TraingateError as err:
            warnings.append(f"could not tag run {run_id} with the missing artifacts: {err.message}")
    return metrics, outcome, batches, uploaded


def _summary(
    run_id: str,
    run_url: str,
    metrics: dict[str, float],
    data_version: str,
    outcome: TrainOutcome,
    batches: int,
    artifacts: list[str],
    warnings: list[str],
) -> str:
    run_ref = f"[`{run_id}`]({run_url})" if run_url else f"`{run_id}`"
    lines = [
        "### ✅ Training finished",
        "",
        f"Run {run_ref} · data `{data_version or 'unknown'}` · {outcome.duration_seconds:.0f} s · "
        f"metrics logged in {batches} request(s)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.6g} |" for k, v in metrics.items()]
    if artifacts:
        lines += ["", "Artifacts: " + ", ".join(f"`{a}`" for a in artifacts)]
    for text in warnings:
        lines += ["", f"> ⚠️ {text}"]
    return "\n".join(lines) + "\n"


__all__ = ["git_info", "train_step"]
