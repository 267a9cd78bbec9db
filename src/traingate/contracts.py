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
- The data report: `data validate` and `data merge` write a `DataReport`; `report.py` renders it
  (step summary, validation comment, PR body) and `pr create` reads it from its file.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from traingate.errors import DataError, GateError, TrackingError

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


# ------------------------------------------------------- data report (data -> report, github, run)
# `data validate` and `data merge` write it (reports/validation-report.json, data-report.json);
# `report.render_data_markdown`, the validation comment and `pr create`'s body read it. to_json()
# is the file's exact shape; from_json() accepts a report with keys missing (an older version, a
# hand-written one) and refuses a key of the wrong type, naming it.


def _bad(what: str, value: object, expected: str) -> DataError:
    return DataError(
        f"data report: {what} must be {expected}, got {type(value).__name__} {value!r:.60}",
        hint="re-run the `data validate` / `data merge` step that writes the report",
    )


def _typed(
    payload: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str
) -> Any:
    value = payload.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _kinds(kind)):
        names = " or ".join(k.__name__ for k in _kinds(kind))
        raise _bad(f"{where}{key}", value, names)
    return value


def _kinds(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _mapping(payload: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(payload, Mapping):
        raise _bad(where, payload, "an object")
    return payload


@dataclass(frozen=True)
class DataIssue:
    """One finding, always naming its file (`path` is "" for the dataset as a whole)."""

    code: str
    path: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}

    @classmethod
    def from_json(cls, payload: Any) -> DataIssue:
        if isinstance(payload, str):  # a bare message
            return cls("", "", payload)
        item = _mapping(payload, "an error or warning")
        return cls(*(str(_typed(item, k, str, "", "issue ")) for k in ("code", "path", "message")))


@dataclass(frozen=True)
class Replacement:
    """A stored file replaced on purpose (`--on-conflict replace`): `replaces` had md5 `old`."""

    path: str
    replaces: str
    old: str
    new: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "replaces": self.replaces, "old": self.old, "new": self.new}

    @classmethod
    def from_json(cls, payload: Any) -> Replacement:
        if isinstance(payload, str):
            return cls(payload, payload, "", "")
        item = _mapping(payload, "merge.replaced[]")
        return cls(*(str(_typed(item, k, str, "", "replaced ")) for k in ("path", "replaces", "old", "new")))


@dataclass(frozen=True)
class MergeCheck:
    """A check the merge ran against the stored dataset; `passed` None: ran, no verdict."""

    name: str
    passed: bool | None = True
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}

    @classmethod
    def from_json(cls, payload: Any) -> MergeCheck:
        if isinstance(payload, str):  # a bare name: it ran and passed
            return cls(payload)
        item = _mapping(payload, "merge.checks[]")
        return cls(
            str(_typed(item, "name", str, "", "check ") or "check"),
            _typed(item, "passed", bool, None, "check "),
            str(_typed(item, "detail", str, "", "check ")),
        )


@dataclass(frozen=True)
class MergeSummary:
    """The `merge` section: what a merge changed. The optional fields are written only by the
    steps that know them (a rejected merge uploaded nothing; a finished interrupted merge did
    not look at the store), so the file keeps exactly the keys it always had."""

    existing_images: int = 0
    new_images: int = 0
    total_images: int = 0
    replaced: tuple[Replacement, ...] = ()
    data_version: str = ""
    commit: str = ""
    checks: tuple[MergeCheck, ...] = ()
    already_stored: int | None = None
    store: str | None = None
    uploaded_objects: int | None = None
    downloaded_objects: int | None = None
    duration_seconds: float | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "existing_images": self.existing_images,
            "new_images": self.new_images,
            "total_images": self.total_images,
            "replaced": [r.to_json() for r in self.replaced],
            "data_version": self.data_version,
            "commit": self.commit,
            "checks": [c.to_json() for c in self.checks],
        }
        for key in ("already_stored", "store", "uploaded_objects", "downloaded_objects", "duration_seconds"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, payload: Any) -> MergeSummary:
        item = _mapping(payload, "merge")
        ints = {
            k: _typed(item, k, int, 0, "merge.") for k in ("existing_images", "new_images", "total_images")
        }
        optional = {
            "already_stored": _typed(item, "already_stored", int, None, "merge."),
            "store": _typed(item, "store", str, None, "merge."),
            "uploaded_objects": _typed(item, "uploaded_objects", int, None, "merge."),
            "downloaded_objects": _typed(item, "downloaded_objects", int, None, "merge."),
            "duration_seconds": _typed(item, "duration_seconds", (int, float), None, "merge."),
        }
        return cls(
            **ints,
            replaced=tuple(Replacement.from_json(r) for r in _typed(item, "replaced", list, [], "merge.")),
            data_version=str(_typed(item, "data_version", str, "", "merge.")),
            commit=str(_typed(item, "commit", str, "", "merge.")),
            checks=tuple(MergeCheck.from_json(c) for c in _typed(item, "checks", list, [], "merge.")),
            **optional,
        )


@dataclass(frozen=True)
class DataReport:
    """The validation (and merge) report: `status` is "pass" or "fail" (anything else read from
    a file is kept, and rendered as unknown)."""

    status: str = "unknown"
    counts: dict[str, int] = field(default_factory=dict)
    errors: tuple[DataIssue, ...] = ()
    warnings: tuple[DataIssue, ...] = ()
    statistics: dict[str, Any] = field(default_factory=dict)
    merge: MergeSummary | None = None

    @property
    def passed(self) -> bool:
        return self.status == "pass"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "status": self.status,
            "counts": dict(self.counts),
            "errors": [e.to_json() for e in self.errors],
            "warnings": [w.to_json() for w in self.warnings],
            "statistics": dict(self.statistics),
        }
        if self.merge is not None:
            out["merge"] = self.merge.to_json()
        return out

    @classmethod
    def from_json(cls, payload: Any) -> DataReport:
        item = _mapping(payload, "the report")
        counts = _typed(item, "counts", Mapping, {}, "")
        for key, value in counts.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise _bad(f"counts.{key}", value, "int")
        merge = item.get("merge")
        return cls(
            status=str(_typed(item, "status", str, "unknown", "")),
            counts=dict(counts),
            errors=tuple(DataIssue.from_json(e) for e in _typed(item, "errors", list, [], "")),
            warnings=tuple(DataIssue.from_json(w) for w in _typed(item, "warnings", list, [], "")),
            statistics=dict(_typed(item, "statistics", Mapping, {}, "")),
            merge=MergeSummary.from_json(merge) if merge else None,
        )


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


# ------------------------------------------------------ gate report (tracking -> github, report)

# Written by `gate` (`tracking/gate.py`) as `<workspace>/reports/gate-report.json`; read by
# `pr create` (github), the PR body and step summaries (`report.py`) and `traingate run`
# (`pipeline/`). One type for the writer and every reader: `to_json()` is the file's exact JSON,
# `from_json()` reads it back (a missing or null key takes its default, a value of another type is
# a GateError naming the key, so a reader never guesses with `x is True or str(x) == "true"`).


def _report_error(where: str, key: str, want: str, value: object) -> GateError:
    return GateError(
        f"{where}: {key!r} must be {want}, got {type(value).__name__} {value!r}"[:300],
        hint="re-run `traingate gate`, which writes this report; do not edit it by hand",
    )


_WANT = {bool: "true or false", str: "a string", list: "a list", float: "a number"}


def _gate_field(data: Mapping[str, Any], key: str, kind: type, default: Any, where: str) -> Any:
    """`data[key]` when it is of `kind` (float: any number), `default` when missing or null."""
    value = data.get(key)
    if value is None:
        return default
    # bool is an int: a number must not be true/false, nor a flag 1/0.
    ok = (
        isinstance(value, bool)
        if kind is bool
        else not isinstance(value, bool) and isinstance(value, (int, float) if kind is float else kind)
    )
    if not ok:
        raise _report_error(where, key, _WANT[kind], value)
    return float(value) if kind is float else value


@dataclass(frozen=True)
class MetricVerdict:
    """One gated metric: the candidate's value, the champion's (None on first training), the
    difference and whether it passed, with the reason in words."""

    name: str
    direction: str
    candidate: float | None
    baseline: float | None
    delta: float | None
    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "gate report metric") -> MetricVerdict:
        if not isinstance(data, Mapping):
            raise _report_error(where, "metric", "an object", data)
        return cls(
            name=_gate_field(data, "name", str, "", where),
            direction=_gate_field(data, "direction", str, "max", where),
            candidate=_gate_field(data, "candidate", float, None, where),
            baseline=_gate_field(data, "baseline", float, None, where),
            delta=_gate_field(data, "delta", float, None, where),
            passed=_gate_field(data, "passed", bool, False, where),
            reason=_gate_field(data, "reason", str, "", where),
        )


@dataclass(frozen=True)
class Rescored:
    """The champion re-scored on the candidate's eval set by `gate.rescore` (issue #12)."""

    version: str
    run_id: str
    eval_set: str
    metrics: dict[str, float]
    command: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any, where: str = "gate report rescored") -> Rescored:
        if not isinstance(data, Mapping):
            raise _report_error(where, "rescored", "an object or null", data)
        metrics = data.get("metrics") or {}
        if not isinstance(metrics, Mapping):
            raise _report_error(where, "metrics", "an object", metrics)
        return cls(
            version=_gate_field(data, "version", str, "", where),
            run_id=_gate_field(data, "run_id", str, "", where),
            eval_set=_gate_field(data, "eval_set", str, "", where),
            metrics={str(k): _gate_field(metrics, k, float, 0.0, f"{where} metrics") for k in metrics},
            command=_gate_field(data, "command", str, "", where),
        )


@dataclass(frozen=True)
class GateReport:
    improved: bool
    # The champion's version compared with, "none" on first training.
    baseline: str = "none"
    baseline_run_id: str | None = None
    candidate_run_id: str = ""
    model: str = ""
    alias: str = "champion"
    # The version registered for the candidate (None when nothing was registered).
    model_version: str | None = None
    # True when `alias` (the champion) now points at `model_version`.
    promoted: bool = False
    # The alias that points at `model_version`: the champion, or the challenger (on-merge).
    promoted_alias: str | None = None
    promote_mode: str = ""
    require: str = "all"
    reason: str = ""
    run_url: str = ""
    metrics: tuple[MetricVerdict, ...] = ()
    warnings: tuple[str, ...] = ()
    eval_set: str | None = None
    rescored: Rescored | None = None

    @property
    def first_model(self) -> bool:
        return self.baseline in ("", "none")

    def to_json(self) -> dict[str, Any]:
        return {
            "improved": self.improved,
            "baseline": self.baseline,
            "baseline_run_id": self.baseline_run_id,
            "candidate_run_id": self.candidate_run_id,
            "model": self.model,
            "alias": self.alias,
            "model_version": self.model_version,
            "promoted": self.promoted,
            "promoted_alias": self.promoted_alias,
            "promote_mode": self.promote_mode,
            "require": self.require,
            "reason": self.reason,
            "run_url": self.run_url,
            "metrics": [m.to_json() for m in self.metrics],
            "warnings": list(self.warnings),
            "eval_set": self.eval_set,
            "rescored": self.rescored.to_json() if self.rescored else None,
        }

    @classmethod
    def from_json(cls, data: Any, where: str = "gate report") -> GateReport:
        if isinstance(data, GateReport):
            return data
        if not isinstance(data, Mapping):
            raise _report_error(where, "report", "a JSON object", data)
        metrics = _gate_field(data, "metrics", list, [], where)
        warnings = _gate_field(data, "warnings", list, [], where)
        rescored = data.get("rescored")
        return cls(
            improved=_gate_field(data, "improved", bool, False, where),
            baseline=_gate_field(data, "baseline", str, "none", where),
            baseline_run_id=_gate_field(data, "baseline_run_id", str, None, where),
            candidate_run_id=_gate_field(data, "candidate_run_id", str, "", where),
            model=_gate_field(data, "model", str, "", where),
            alias=_gate_field(data, "alias", str, "champion", where),
            model_version=_gate_field(data, "model_version", str, None, where),
            promoted=_gate_field(data, "promoted", bool, False, where),
            promoted_alias=_gate_field(data, "promoted_alias", str, None, where),
            promote_mode=_gate_field(data, "promote_mode", str, "", where),
            require=_gate_field(data, "require", str, "all", where),
            reason=_gate_field(data, "reason", str, "", where),
            run_url=_gate_field(data, "run_url", str, "", where),
            metrics=tuple(MetricVerdict.from_json(m, f"{where} metrics[{i}]") for i, m in enumerate(metrics)),
            warnings=tuple(_gate_field({"warning": w}, "warning", str, "", where) for w in warnings),
            eval_set=_gate_field(data, "eval_set", str, None, where),
            rescored=None if rescored is None else Rescored.from_json(rescored, f"{where} rescored"),
        )
