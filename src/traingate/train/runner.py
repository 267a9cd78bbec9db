"""`traingate train`, the training itself: the run's job built from the config, run by an
executor, its result checked and logged, the run ended and summarised.

The order matters and every step fails loudly (field reports 1, 2, 5):
- traingate creates the run and hands its id to the command (`MLFLOW_RUN_ID`), so a script that
  logs to MLflow itself logs into this run, never "the latest run";
- success is the exit code plus a valid metrics file plus the artifacts, never a marker file;
- the run ends FINISHED only when the step succeeds; any failure after it was created marks it
  FAILED, and the state file forgets the previous run so `gate` cannot gate a stale one.

This module is a stage: it imports the core and itself only. What needs the other stages (the
dataset pull, the executor on an instance, the lease kept alive, the run's extras recorded in
tracking, the gate) is composed around it by `traingate.pipeline.train`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate import __version__, gha
from traingate.contracts import DATA_PULL_FAILED, TAG_ARTIFACTS, Executor, LogSink, TrainJob, TrainOutcome
from traingate.errors import TrackingError, TrainError, TraingateError
from traingate.git import Git
from traingate.interrupt import note
from traingate.metrics import read_final_metrics, read_metrics_log, to_points
from traingate.outputs import OUTPUTS, outputs_of
from traingate.result import StepResult
from traingate.state import atomic_write_json, read_state, reports_dir, update_state

if TYPE_CHECKING:
    from collections.abc import Callable

    from traingate.config import Config
    from traingate.contracts import Tracking
    from traingate.gha import ActionsContext

# Artifacts older than the run by more than this were left by an earlier run.
_STALE_SLACK_SECONDS = 2.0
_GLOB_CHARS = frozenset("*?[")
# The dataset version tag every run created here carries (the same-data skip reads it).
TAG_DATA_VERSION = "traingate.data_version"


@dataclass(frozen=True)
class TrainResult:
    """What `traingate train` hands back: composers read it, the workflow outputs derive from it.

    `skipped`: the dataset is the one @champion was trained on, nothing was trained (no run, no
    metrics, no report). `gate_outputs`/`gate`: with `--gate` (and on a skip, which is the gate's
    "not improved"), the gate's outputs beyond train's own, and the gate's typed value.
    """

    run_id: str = ""
    experiment_id: str = ""
    metrics: Mapping[str, float] = field(default_factory=dict)
    report: str = ""
    data_version: str = ""
    skipped: bool = False
    gate_outputs: Mapping[str, Any] | None = None
    gate: Any = None

    def outputs(self) -> dict[str, Any]:
        """Exactly the registry's names (`outputs_of("train", gate=...)`), minus a skip's run."""
        own: dict[str, Any] = {
            "run_id": self.run_id,
            "experiment_id": self.experiment_id,
            "metrics": dict(self.metrics),
            "report": self.report,
            "data_version": self.data_version,
            "skipped": self.skipped,
        }
        if self.skipped:
            own = {"data_version": self.data_version, "skipped": True}
        if self.gate_outputs is None:
            return own
        # `metrics`, `report` and `run_id` stay the candidate's (train documents `metrics` as its
        # final metrics); the per-metric comparison is in the gate report and the summary.
        extra = [n for n in outputs_of("train", gate=True) if n not in OUTPUTS["train"]]
        return {**own, **{n: self.gate_outputs[n] for n in extra if n in self.gate_outputs}}


@dataclass(frozen=True)
class RunInputs:
    """What the composer brings from the other stages: the dataset version (data), the tracking
    server's environment and artifact location (tracking), and whether the instance pulls the
    dataset itself."""

    data_version: str
    tracking_env: Mapping[str, str] = field(default_factory=dict)
    artifact_location: str | None = None
    instance_pulls: bool = False


@dataclass
class TrainRun:
    """The run being trained, handed from phase to phase; `warnings` grows on the way."""

    tracking: Tracking
    job: TrainJob
    run_id: str
    experiment_id: str
    data_version: str
    commit: str
    attach: str | None
    on_runner: bool
    started_wall: float
    warnings: list[str] = field(default_factory=list)

    @property
    def fresh_after(self) -> float | None:
        """Outputs older than this were left by an earlier run (a new run on the runner only)."""
        return self.started_wall if self.on_runner and not self.attach else None


@dataclass(frozen=True)
class Trained:
    """The checked result of the training command, its metrics logged and artifacts uploaded."""

    outcome: TrainOutcome
    metrics: dict[str, float]
    batches: int
    artifacts: list[str]


def git_info(cfg: Config, actions: ActionsContext) -> tuple[str, str]:
    """(commit, branch): the commit is the one checked out in train.workdir, the code and the
    pointer that are actually trained. The Actions sha is the push that started the workflow;
    after `data merge` committed the pointer, HEAD is a later commit (issue #12 case 7), so the
    context is only the fallback when there is no git checkout."""
    workdir = cfg.path(cfg.train.workdir)
    commit = Git(workdir if workdir.is_dir() else cfg.base_dir, author=None, timeout=10).fact(
        "rev-parse", "HEAD"
    )
    commit = commit or actions.sha
    branch = actions.ref_name or Git(cfg.base_dir, author=None, timeout=10).fact(
        "rev-parse", "--abbrev-ref", "HEAD"
    )
    return commit, ("" if branch == "HEAD" else branch)


def instance_datasets(cfg: Config, workdir: Path) -> list[str]:
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


def run_tags(
    cfg: Config, commit: str, branch: str, data_version: str, actions: ActionsContext
) -> dict[str, str]:
    """The tags of a new run (empty values left out)."""
    tags = {
        "mlflow.source.git.commit": commit,
        "traingate.git_commit": commit,
        "traingate.git_branch": branch,
        "traingate.actions_run_url": actions.run_url(),
        TAG_DATA_VERSION: data_version or "unknown",
        "traingate.version": __version__,
        "traingate.where": str(cfg.train.where),
    }
    return {k: v for k, v in tags.items() if v}


def build_job(
    cfg: Config,
    inputs: RunInputs,
    *,
    run_id: str,
    experiment_id: str,
    commit: str,
    run_name: str,
    datasets: list[str],
) -> TrainJob:
    """The command to run and what it must produce, with the run it logs into; `datasets`: the
    pointers the instance pulls itself (`instance_datasets`, checked before the run existed)."""
    workdir = cfg.path(cfg.train.workdir).resolve()
    env = {
        **inputs.tracking_env,
        **cfg.train.env,
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "MLFLOW_RUN_ID": run_id,
        "MLFLOW_EXPERIMENT_ID": experiment_id,
        "TRAINGATE_DATA_VERSION": inputs.data_version,
        "TRAINGATE_PARAMS": json.dumps(cfg.train.params),
    }
    return TrainJob(
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
        checkpoint_url=cfg.train.checkpoint_s3 if cfg.train.where != "runner" else "",
    )


def start_run(
    cfg: Config,
    tracking: Tracking,
    inputs: RunInputs,
    *,
    attach: str | None,
    actions: ActionsContext,
    wall: Callable[[], float],
    warnings: list[str],
) -> TrainRun:
    """Create the run (or re-attach to the pending one) and build its job. What can refuse the
    job without running anything (the instance's dataset pointer) is checked first, so a refusal
    leaves no run RUNNING in the tracking server and none pending to attach to."""
    workdir = cfg.path(cfg.train.workdir).resolve()
    datasets = instance_datasets(cfg, workdir) if inputs.instance_pulls else []
    commit, branch = git_info(cfg, actions)
    experiment_id = tracking.ensure_experiment(cfg.tracking.experiment, inputs.artifact_location)
    run_name = f"{cfg.project}-{commit[:8]}" if commit else cfg.project
    pending = read_state(cfg.workspace_dir).pending_run_id if attach else None
    if pending:
        # Re-attaching: the run was created when the job was started; keep logging into it.
        run_id = tracking.get_run(str(pending)).run_id
    else:
        tags = run_tags(cfg, commit, branch, inputs.data_version, actions)
        run_id = tracking.create_run(experiment_id, run_name, tags).run_id
    update_state(cfg.workspace_dir, pending_run_id=run_id)
    job = build_job(
        cfg,
        inputs,
        run_id=run_id,
        experiment_id=experiment_id,
        commit=commit,
        run_name=run_name,
        datasets=datasets,
    )
    return TrainRun(
        tracking=tracking,
        job=job,
        run_id=run_id,
        experiment_id=experiment_id,
        data_version=inputs.data_version,
        commit=commit,
        attach=attach,
        on_runner=cfg.train.where == "runner",
        started_wall=wall(),
        warnings=warnings,
    )


def run_training(cfg: Config, run: TrainRun, executor: Executor, log: LogSink) -> Trained:
    """Run the command, check its result, log its metrics and upload its artifacts."""
    outcome = _execute(run, executor, log)
    _check_outcome(cfg, run.job, outcome)
    metrics, batches = _log_metrics(cfg, run, outcome)
    artifacts = _upload_artifacts(cfg, run, outcome)
    return Trained(outcome=outcome, metrics=metrics, batches=batches, artifacts=artifacts)


def _execute(run: TrainRun, executor: Executor, log: LogSink) -> TrainOutcome:
    job = run.job
    if run.on_runner and not run.attach:
        # A metrics file left by an earlier run must not pass for this run's result.
        for rel in (job.metrics_file, job.metrics_log):
            (job.workdir / rel).unlink(missing_ok=True)
    with gha.group(f"Train: {job.command}"):
        return executor.attach(run.attach, job, log) if run.attach else executor.run(job, log)


def _check_outcome(cfg: Config, job: TrainJob, outcome: TrainOutcome) -> None:
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


def _log_metrics(cfg: Config, run: TrainRun, outcome: TrainOutcome) -> tuple[dict[str, float], int]:
    """(final metrics, requests used) after logging the metrics file and the metrics log."""
    tracking, run_id = run.tracking, run.run_id
    metrics_path = outcome.outputs_dir / run.job.metrics_file
    metrics = read_final_metrics(metrics_path)
    history = read_metrics_log(outcome.outputs_dir / run.job.metrics_log)
    missing = [m.name for m in cfg.gate.metrics if m.name not in metrics]
    if missing:
        run.warnings.append(
            f"{metrics_path} lacks the gated metric(s) {', '.join(missing)}: the gate will fail"
        )
    # A script that logged the same keys itself (into this run) at higher steps would otherwise
    # shadow metrics.json: MLflow reports the value at the highest step.
    already = tracking.get_run(run_id).metrics
    own_steps = [tracking.metric_max_step(run_id, k) for k in metrics if k in already]
    points = to_points(
        metrics, history, now_ms=int(time.time() * 1000), min_final_step=max(own_steps, default=0)
    )
    return metrics, tracking.log_metrics(run_id, points)


def _upload_artifacts(cfg: Config, run: TrainRun, outcome: TrainOutcome) -> list[str]:
    """The artifacts uploaded to the run (`model/<name>`); best-effort failures become warnings."""
    paths = _resolve_artifacts(cfg, outcome.outputs_dir)
    if run.fresh_after is not None:
        _check_fresh(paths, run.fresh_after)
    uploaded: list[str] = []
    for path in paths:
        try:
            run.tracking.log_artifact(run.run_id, path, "model")
            uploaded.append(f"model/{path.name}")
        except TrackingError as err:
            if cfg.train.artifacts_policy == "required":
                raise TrainError(
                    f"uploading the artifact {path} to the MLflow run failed: {err.message}",
                    hint="fix the artifact store permissions (e.g. s3:PutObject for the MLflow bucket), "
                    "or set train.artifacts_policy: best-effort to keep the model locally and go on",
                ) from err
            run.warnings.append(
                f"artifact upload failed, the model is kept only at {path} "
                f"(train.artifacts_policy: best-effort): {err.message}"
            )
    if len(uploaded) < len(paths):
        # The gate reads this tag: an improved run whose model never reached the artifact store
        # cannot be registered, and best-effort means "say so loudly and go on", not "fail".
        try:
            run.tracking.set_tags(run.run_id, {TAG_ARTIFACTS: "missing"})
        except TraingateError as err:
            run.warnings.append(f"could not tag run {run.run_id} with the missing artifacts: {err.message}")
    return uploaded


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


def fail_run(run: TrainRun, err: BaseException) -> None:
    """Mark the run FAILED; the warnings gathered so far travel with the error (the failure's
    report is never written). Best effort: the original error is what the user needs; a dead
    server only adds a line."""
    try:
        run.tracking.end_run(run.run_id, "FAILED")
    except TraingateError as end_err:
        run.warnings.append(f"could not mark MLflow run {run.run_id} FAILED: {end_err.message}")
    if isinstance(err, TraingateError):
        err.add_warnings(run.warnings)
    else:
        for text in run.warnings:
            note(err, f"warning: {text}")


def stop_run(cfg: Config, run: TrainRun, err: KeyboardInterrupt) -> None:
    """Ctrl-C or the runner's cancel during training. On the runner the executor has stopped the
    command: the run ends KILLED (MLflow's status for a run stopped from outside), and nothing
    will re-attach to it. On an instance the job goes on by design (infra/remote.py) and can be
    re-attached: the run stays RUNNING."""
    if not run.on_runner:
        note(
            err,
            f"the training on the instance goes on; MLflow run {run.run_id} stays RUNNING "
            "(re-attach with `traingate train --attach`, or stop the instance)",
        )
        return
    try:
        run.tracking.end_run(run.run_id, "KILLED")
        note(err, f"MLflow run {run.run_id} marked KILLED")
    except TraingateError as end_err:
        note(err, f"could not mark MLflow run {run.run_id} KILLED ({end_err.message})")
    update_state(cfg.workspace_dir, pending_run_id=None)


def finish_run(
    cfg: Config, run: TrainRun, trained: Trained, recorded: Mapping[str, Any]
) -> StepResult[TrainResult]:
    """End the run FINISHED, write the train report, remember the candidate for `gate`."""
    run.tracking.end_run(run.run_id, "FINISHED")
    run_url = run.tracking.run_url(run.experiment_id, run.run_id)
    report_path, report = _write_report(cfg, run, trained, recorded, run_url)
    update_state(cfg.workspace_dir, run_id=run.run_id, pending_run_id=None)
    value = TrainResult(
        run_id=run.run_id,
        experiment_id=run.experiment_id,
        metrics=trained.metrics,
        report=str(report_path),
        data_version=run.data_version,
    )
    message = f"training finished: run {run.run_id}, " + ", ".join(
        f"{k}={v:g}" for k, v in trained.metrics.items()
    )
    return StepResult(
        outputs=value.outputs(),
        summary=_summary(run, trained, run_url),
        message=message,
        warnings=list(run.warnings),
        data={"report": report},
        value=value,
    )


def _write_report(
    cfg: Config, run: TrainRun, trained: Trained, recorded: Mapping[str, Any], run_url: str
) -> tuple[Path, dict[str, Any]]:
    report_dir = reports_dir(cfg.workspace_dir)
    report_path = report_dir / "train-report.json"
    log_src = trained.outcome.outputs_dir / cfg.train.metrics_log
    if log_src.is_file():
        report_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_src, report_dir / "metrics.jsonl")
    report = {
        "run_id": run.run_id,
        "experiment_id": run.experiment_id,
        "tracking_uri": getattr(run.tracking, "display_uri", run.tracking.uri),
        "run_url": run_url,
        "metrics": trained.metrics,
        "data_version": run.data_version,
        "commit": run.commit,
        "duration_seconds": round(trained.outcome.duration_seconds, 3),
        "artifacts": trained.artifacts,
        "warnings": run.warnings,
        "metric_batches": trained.batches,
        **recorded,
    }
    atomic_write_json(report_path, report)
    return report_path, report


def with_gate(trained: StepResult[TrainResult], gated: StepResult[Any]) -> StepResult[TrainResult]:
    """`train --gate`: the training's result followed by the gate's (outputs, summary, warnings)."""
    if trained.value is None:
        raise TypeError("with_gate needs the training's TrainResult")
    value = replace(trained.value, gate_outputs=dict(gated.outputs), gate=gated.value)
    return StepResult(
        outputs=value.outputs(),
        summary=trained.summary + "\n" + gated.summary,
        message=trained.message + "\n" + gated.message,
        warnings=[*trained.warnings, *gated.warnings],
        data={**trained.data, "gate": gated.data},
        value=value,
    )


def _summary(run: TrainRun, trained: Trained, run_url: str) -> str:
    run_ref = f"[`{run.run_id}`]({run_url})" if run_url else f"`{run.run_id}`"
    seconds = trained.outcome.duration_seconds
    lines = [
        "### ✅ Training finished",
        "",
        f"Run {run_ref} · data `{run.data_version or 'unknown'}` · {seconds:.0f} s · "
        f"metrics logged in {trained.batches} request(s)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.6g} |" for k, v in trained.metrics.items()]
    if trained.artifacts:
        lines += ["", "Artifacts: " + ", ".join(f"`{a}`" for a in trained.artifacts)]
    for text in run.warnings:
        lines += ["", f"> ⚠️ {text}"]
    return "\n".join(lines) + "\n"


__all__ = [
    "TAG_DATA_VERSION",
    "RunInputs",
    "TrainResult",
    "TrainRun",
    "Trained",
    "build_job",
    "fail_run",
    "finish_run",
    "git_info",
    "instance_datasets",
    "run_training",
    "start_run",
    "stop_run",
    "with_gate",
]
