"""The `Tracking` protocol: everything train, gate and promote need from a tracking server.

The stages speak only this small interface, so the MLflow specifics (retries, batching, error
codes) stay in `mlflow_client.py` and a different backend could slot in. Records are plain
dataclasses so nothing outside the adapter touches MLflow entities.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from traingate.errors import TrackingError

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
