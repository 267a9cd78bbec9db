"""`traingate train` composed: the stages the training needs, around the train stage.

The train stage (`traingate.train.runner`) builds the job, runs it with the executor it is given,
checks and logs the result. What needs the other stages is put together here, in this order
(field reports 1, 2, 5):

- `--gate` refuses a tracking store on the runner before an hour of training, not after;
- the tracking server must answer /health before anything is started, so a dead server is a
  clear error in seconds, not a lost training run;
- the dataset is pulled before the command (never "using local data" silently), by `data`;
- the executor: the instance's (`infra`), or the runner's own that keeps the lease alive;
- after the command, the run's eval set, params and model are recorded by `tracking`;
- with `--gate`, the gate judges the run just trained.

`traingate.pipeline.train.train_step` is the one entry point (the CLI, `traingate run`, tests).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from traingate import gha
from traingate.errors import TraingateError
from traingate.gha import ActionsContext
from traingate.interrupt import interruptible
from traingate.state import update_state
from traingate.train import runner as train
from traingate.train.runner import RunInputs, Trained, TrainResult, TrainRun

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.contracts import Executor, LogSink, Tracking
    from traingate.result import StepResult


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
    actions: ActionsContext | None = None,
) -> StepResult[TrainResult]:
    """Pull, create the run, train, record, finish; with `with_gate`, gate the run."""
    tracking = _ready_tracking(cfg, tracking, with_gate=with_gate)
    warnings: list[str] = []
    inputs = _run_inputs(cfg, pull=pull, force_pull=force_pull, warnings=warnings)
    actions = actions if actions is not None else ActionsContext.from_env()
    run = train.start_run(cfg, tracking, inputs, attach=attach, actions=actions, wall=wall, warnings=warnings)
    trained = _train(cfg, run, executor, log, actions)
    recorded = _record(cfg, run, trained)
    result = train.finish_run(cfg, run, trained, recorded)
    if not with_gate:
        return result
    from traingate.tracking.gate import gate_step

    return train.with_gate(
        result, gate_step(cfg, run_id=run.run_id, promote=True, tracking=tracking, actions=actions)
    )


def _ready_tracking(cfg: Config, tracking: Tracking | None, *, with_gate: bool) -> Tracking:
    """The tracking server, answering, with the previous candidate forgotten."""
    if with_gate:
        from traingate.tracking.durable import require_lasting_registry

        # Before an hour of training, not after: the verdict could not be trusted.
        require_lasting_registry(cfg, command="train --gate")
    # Forget the previous candidate first: if this run fails, `gate` must not pick up the last one.
    update_state(cfg.workspace_dir, run_id=None)
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    tracking.wait_healthy(cfg.tracking.health_timeout_seconds)
    return tracking


def _run_inputs(cfg: Config, *, pull: bool, force_pull: bool, warnings: list[str]) -> RunInputs:
    """What the run needs from `data` (the dataset, pulled on the runner) and `tracking`."""
    from traingate.tracking.mlflow_client import artifact_location, mlflow_env

    on_runner = cfg.train.where == "runner"
    data_version, notes = _data_version(cfg, pull and cfg.train.pull_data and on_runner, force_pull)
    warnings.extend(notes)
    return RunInputs(
        data_version=data_version,
        tracking_env=mlflow_env(cfg.tracking),
        artifact_location=artifact_location(cfg),
        instance_pulls=not on_runner and pull and cfg.train.pull_data,
    )


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


def _make_executor(cfg: Config, actions: ActionsContext) -> Executor:
    if cfg.train.where == "instance":
        from traingate.infra.remote import make_remote_executor

        return make_remote_executor(cfg, actions=actions)
    from traingate.infra.keepalive import RenewingExecutor
    from traingate.train.local import LocalExecutor

    # Training on the runner renews the lease and the watchdog too (the instance does it itself).
    return RenewingExecutor(LocalExecutor(), cfg, actions=actions)


def _train(
    cfg: Config, run: TrainRun, executor: Executor | None, log: LogSink | None, actions: ActionsContext
) -> Trained:
    """The training itself; an interrupt stops (runner) or detaches (instance), a failure marks
    the run FAILED."""
    from traingate.train.local import default_log_sink

    try:
        with interruptible():
            return train.run_training(
                cfg, run, executor or _make_executor(cfg, actions), log or default_log_sink()
            )
    except KeyboardInterrupt as err:
        train.stop_run(cfg, run, err)
        raise
    except BaseException as err:
        train.fail_run(run, err)
        raise


def _record(cfg: Config, run: TrainRun, trained: Trained) -> dict[str, Any]:
    """The run's eval set, params and model, recorded by `tracking` (keys for the train report)."""
    from traingate.tracking.record import record_run_extras

    try:
        return record_run_extras(
            cfg, run.tracking, run.run_id, run.experiment_id, trained.outcome, run.fresh_after, run.warnings
        )
    except BaseException as err:
        train.fail_run(run, err)
        raise


__all__ = ["train_step"]
