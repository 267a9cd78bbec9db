"""The contracts stages exchange through the composition layer (`cli.py`, `pipeline/`).

Stages never import each other (tests/test_layers.py): where one stage produces what another
consumes, the shape lives here, below both.

- A training job and its outcome: `train` builds a `TrainJob`; an `Executor` runs it on this
  machine (`train/local.py`) or on a machine from `infra` (SSM, SageMaker) and hands back a
  `TrainOutcome`. `runner.py` owns the checks (exit code, metrics file, artifacts); an executor
  only runs the command somewhere and brings the files back.
- The `Tracking` protocol: everything train, gate and promote need from a tracking server. The
  MLflow specifics (retries, batching, error codes) stay in `tracking/mlflow_client.py`; records
  are plain dataclasses so nothing outside the adapter touches MLflow entities.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from traingate.errors import TrackingError

# ---------------------------------------------------------------- training job (train <-> infra)


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
    # s3:// URL the instance restores TRAINGATE_CHECKPOINT_DIR from before the command and synces
    # it to while the command runs (train.checkpoint_s3); "" for none.
    checkpoint_url: str = ""


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


# ---------------------------------------------------------------- tracking (train <-> tracking)

# Set by `train` on a run whose model files did not reach the artifact store
# (train.artifacts_policy: best-effort); the gate then decides but cannot register the model.
TAG_ARTIFACTS = "traingate.artifacts"
# Set by `train` when it logged `train.model_dir` as an MLflow model: the gate registers that
# logged model (its id and artifact location), so the version loads with mlflow.pyfunc.
TAG_MODEL_ID = "traingate.model_id"
TAG_MODEL_SOURCE = "traingate.model_source"


class TrackingNotFound(TrackingError):
    """The run, model or version does not exist (as opposed to: the server could not answer).

    The gate must tell these apart: "no registered model" means first training, while "could
    not read the registry" must fail closed.
    """

    title = "not found in the tracking server"


@dataclass(frozen=True)
class MetricPoint:
    key: str
    value: float
    step: int
    timestamp_ms: int


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    experiment_id: str
    status: str
    artifact_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VersionRecord:
    model: str
    version: str
    run_id: str
    source: str
    creation_timestamp_ms: int
    tags: dict[str, str] = field(default_factory=dict)


class Tracking(Protocol):
    uri: str

    def wait_healthy(self, timeout_seconds: float) -> None:
        """Return once the server answers; raise TrackingError naming the URL otherwise."""
        ...

    def ensure_experiment(self, name: str, artifact_location: str | None = None) -> str: ...

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> RunRecord: ...

    def log_metrics(self, run_id: str, points: list[MetricPoint]) -> int:
        """Log in batches; return how many batches (requests) it took."""
        ...

    def metric_max_step(self, run_id: str, key: str) -> int:
        """The highest step logged for `key` in the run (0 when none)."""
        ...

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None: ...

    def log_params(self, run_id: str, params: dict[str, str]) -> None: ...

    def log_model(self, run_id: str, experiment_id: str, local_dir: Path, name: str) -> tuple[str, str]:
        """Log an MLflow model folder as a logged model of the run: (model id, artifact location)."""
        ...

    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str) -> None: ...

    def list_artifacts(self, run_id: str, path: str) -> list[str]: ...

    def end_run(self, run_id: str, status: str) -> None: ...

    def get_run(self, run_id: str) -> RunRecord:
        """Raise TrackingNotFound for an unknown (or deleted) run."""
        ...

    def get_aliases(self, model: str) -> dict[str, str] | None:
        """alias -> version; None when the registered model does not exist."""
        ...

    def get_version(self, model: str, version: str) -> VersionRecord: ...

    def ensure_registered_model(self, model: str) -> None: ...

    def create_version(
        self, model: str, source: str, run_id: str, tags: dict[str, str], model_id: str | None = None
    ) -> VersionRecord: ...

    def search_versions(self, model: str, tag_key: str, tag_value: str) -> list[VersionRecord]: ...

    def set_version_tag(self, model: str, version: str, key: str, value: str) -> None: ...

    def set_alias(self, model: str, alias: str, version: str) -> None: ...

    def delete_alias(self, model: str, alias: str) -> None: ...

    def run_url(self, experiment_id: str, run_id: str) -> str: ...
