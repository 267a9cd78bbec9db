"""The contract between `train` and where the command runs.

`runner.py` owns the checks (exit code, metrics file, artifacts) and the MLflow logging; an
Executor only runs the command somewhere and brings the files back. Nothing here is EC2-specific,
so a SageMaker executor slots in with the same metrics-file contract.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class TrainJob:
    command: str
    # Local checkout folder holding the code (train.workdir resolved against the config folder).
    workdir: Path
    env: dict[str, str]
    timeout_seconds: float
    # Relative to workdir, as in traingate.yml.
    metrics_file: str
    metrics_log: str
    artifacts: list[str] = field(default_factory=list)
    setup: str = ""
    run_name: str = ""
    # Git commit of the code being trained (shipped to the instance as-is).
    commit: str = ""
    # DVC pointer files (relative to workdir) the executor must pull where the command runs,
    # with that machine's own credentials: the runner never ships the dataset.
    datasets: list[str] = field(default_factory=list)
    # Files or folders (relative to workdir) brought back when they exist, missing is fine:
    # train.params_file and train.model_dir.
    optional_outputs: list[str] = field(default_factory=list)


# Exit code an executor reports when it could not make `TrainJob.datasets` available, so the
# runner can say "the dataset could not be pulled" rather than "the training command failed".
DATA_PULL_FAILED = 86


@dataclass
class TrainOutcome:
    exit_code: int
    # Last lines of the combined stdout/stderr, for the error message.
    log_tail: str
    # Local folder where metrics_file, metrics_log and artifacts (relative paths) can be found.
    outputs_dir: Path
    duration_seconds: float
    # An id to re-attach to (remote runs), else "".
    run_ref: str = ""
    killed: bool = False


LogSink = Callable[[str], None]


class Executor(Protocol):
    def run(self, job: TrainJob, log: LogSink) -> TrainOutcome:
        """Run the job to completion (or timeout); raise TrainError only when it could not be run."""
        ...

    def attach(self, run_ref: str, job: TrainJob, log: LogSink) -> TrainOutcome:
        """Follow a job started earlier (a re-run after the runner disconnected)."""
        ...
