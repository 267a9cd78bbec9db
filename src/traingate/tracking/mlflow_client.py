"""MLflow behind the `Tracking` protocol: batched writes, bounded retries, clear errors.

Field report 2: an SQLite-backed MLflow answered 503 under 900 single-metric writes per run,
and MLflow's own defaults (7 retries, factor 2, 120 s timeout) let a dead server hang a job for
minutes. So:

- metrics go out with `log_batch` in chunks of at most `tracking.log_batch_size` (MLflow's
  limit is 1000 per request): 100 epochs x 9 metrics is one request, not 900;
- MLflow's HTTP retry settings are set from `tracking.*` before the client is used (a few quick
  retries inside MLflow, for a single dropped request), and around every call we retry
  transient failures (5xx, 429, timeouts, refused connections) with exponential backoff and
  jitter until `tracking.retry_budget_seconds` is spent, then raise TrackingError naming the
  URL;
- "not found" is its own exception (`TrackingNotFound`), so the gate can tell "no champion
  yet" from "could not read the registry" (which must fail closed).

mlflow is imported inside the functions: `traingate --help` must not pay for it.
"""

from __future__ import annotations

import logging
import math
import os
import random
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from traingate.contracts import MetricPoint, RunRecord, TrackingNotFound, VersionRecord
from traingate.errors import TrackingError, TraingateError
from traingate.runtime import Runtime

if TYPE_CHECKING:
    from traingate.config import Config, TrackingConfig

log = logging.getLogger(__name__)

T = TypeVar("T")

# MLflow's error codes for "this will not get better by retrying".
_PERMANENT_CODES = frozenset(
    {
        "INVALID_PARAMETER_VALUE",
        "RESOURCE_ALREADY_EXISTS",
        "RESOURCE_DOES_NOT_EXIST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "BAD_REQUEST",
        "INVALID_STATE",
        "ENDPOINT_NOT_FOUND",
        "FEATURE_DISABLED",
    }
)
_NOT_FOUND_CODES = frozenset({"RESOURCE_DOES_NOT_EXIST"})
# The longest single pause between two attempts; the budget bounds the total.
_MAX_BACKOFF_SECONDS = 8.0


def mlflow_env(tracking: TrackingConfig) -> dict[str, str]:
    """MLflow's HTTP retry settings from `tracking.*` (also handed to the training command).

    MLflow parses the backoff factor and the timeout as integers; the fractional part of our
    backoff goes into MLflow's jitter instead, so a 503 inside MLflow is retried quickly and
    our own loop does the longer, budgeted backoff.
    """
    return {
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(tracking.max_retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(int(tracking.backoff_factor)),
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": f"{tracking.backoff_factor:g}",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(max(1, math.ceil(tracking.request_timeout_seconds))),
    }


def apply_mlflow_env(tracking: TrackingConfig) -> None:
    """Set the retry variables in this process before any MLflow client is built.

    The configuration wins over variables already in the environment: MLflow's defaults are
    the 100+ s hang this project exists to avoid.
    """
    os.environ.update(mlflow_env(tracking))


def redact_uri(uri: str) -> str:
    """A tracking URI safe to print: the password of `https://user:pass@host` is hidden."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _error_code(err: BaseException) -> str:
    return str(getattr(err, "error_code", "") or "")


def _short(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def is_transient(err: BaseException) -> bool:
    """Worth retrying: the server was busy, slow or away, not "your request is wrong"."""
    code = _error_code(err)
    if code in _PERMANENT_CODES:
        return False
    status = None
    getter = getattr(err, "get_http_status_code", None)
    if callable(getter):
        try:
            status = int(getter())
        except (TypeError, ValueError):
            status = None
    if status is not None and (status >= 500 or status in (408, 429)):
        return True
    name = type(err).__name__
    # Connection refused / reset / timeouts from requests, urllib3, sockets; SQLite's
    # "database is locked" (sqlalchemy OperationalError) under a concurrent writer.
    if name in {"ConnectionError", "Timeout", "ReadTimeout", "ConnectTimeout", "OperationalError"}:
        return True
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    text = str(err)
    markers = (
        "Max retries exceeded",
        "Connection refused",
        "Connection aborted",
        "RemoteDisconnected",
        "Read timed out",
        "too many 5",
        "database is locked",
        "TEMPORARILY_UNAVAILABLE",
    )
    return any(m in text for m in markers) or code in {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE"}


class MlflowTracking:
    """`Tracking` over an MlflowClient; one instance per stage run."""

    def __init__(
        self,
        uri: str,
        tracking: TrackingConfig,
        *,
        runtime: Runtime | None = None,
        rng: random.Random | None = None,
    ) -> None:
        apply_mlflow_env(tracking)
        from mlflow import MlflowClient

        self.uri = uri
        self.display_uri = redact_uri(uri)
        self.settings = tracking
        # Retries and the health wait: one clock and its sleep (tests hand in a fake pair).
        runtime = runtime or Runtime()
        self._sleep = runtime.sleep
        self._clock = runtime.clock
        self._rng = rng or random.Random()
        try:
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        except Exception as err:  # MlflowException for a scheme/store MLflow refuses at once
            from traingate.errors import ConfigError

            raise ConfigError(
                f"MLflow refuses tracking.uri {self.display_uri}: {str(err).splitlines()[0][:300]}",
                hint="set tracking.uri to an http(s):// server or sqlite:///path.db "
                "(or --tracking-uri for one call)",
            ) from None
        self.attempts = 0

    @property
    def is_http(self) -> bool:
        return self.uri.startswith(("http://", "https://"))

    # ----------------------------------------------------------------------------- retries
    def _call(self, what: str, fn: Callable[[], T]) -> T:
        budget = self.settings.retry_budget_seconds
        deadline = self._clock() + budget
        attempt = 0
        while True:
            attempt += 1
            self.attempts += 1
            try:
                return fn()
            except TraingateError:
                raise
            except Exception as err:
                code = _error_code(err)
                if code in _NOT_FOUND_CODES:
                    raise TrackingNotFound(
                        f"{what}: not found at {self.display_uri}: {_short(err)}",
                        hint="check the id or name (and that this is the right tracking server)",
                    ) from err
                if not is_transient(err):
                    raise TrackingError(
                        f"{what} failed at {self.display_uri}: {_short(err)}",
                        hint="the server refused the request; check the tracking URI, "
                        "permissions and the values in traingate.yml",
                    ) from err
                delay = min(self.settings.backoff_factor * 2 ** (attempt - 1), _MAX_BACKOFF_SECONDS)
                delay *= 0.5 + self._rng.random()
                if self._clock() + delay > deadline:
                    raise TrackingError(
                        f"{what}: the tracking server at {self.display_uri} did not answer within "
                        f"the {budget:g} s retry budget ({attempt} attempts; last error: {_short(err)})",
                        hint="check that the server is up and reachable (`traingate infra status`, "
                        "its /health URL); a busy server may need a larger "
                        "tracking.retry_budget_seconds",
                    ) from err
                log.warning(
                    "%s: transient error from %s (attempt %d), retrying in %.1f s: %s",
                    what,
                    self.display_uri,
                    attempt,
                    delay,
                    _short(err, 160),
                )
                self._sleep(delay)

    # ------------------------------------------------------------------------------ health
    def wait_healthy(self, timeout_seconds: float) -> None:
        if not self.is_http:
            return
        url = self.uri.rstrip("/") + "/health"
        shown = redact_uri(url)
        deadline = self._clock() + timeout_seconds
        last = "no answer"
        pause = 0.5
        while True:
            remaining = max(deadline - self._clock(), 0.0)
            per_try = max(min(self.settings.request_timeout_seconds, remaining), 1.0)
            try:
                with urllib.request.urlopen(url, timeout=per_try) as resp:  # noqa: S310 - http(s) only
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
            except (urllib.error.URLError, OSError) as err:
                last = str(getattr(err, "reason", err))
            if self._clock() >= deadline:
                raise TrackingError(
                    f"the MLflow server at {shown} did not answer /health within "
                    f"{timeout_seconds:g} s (last: {last})",
                    hint="start it (`traingate infra start` prints mlflow_url), check tracking.uri, "
                    "or raise tracking.health_timeout_seconds",
                )
            self._sleep(min(pause, max(deadline - self._clock(), 0.0)) or 0.01)
            pause = min(pause * 2, 5.0)

    # ------------------------------------------------------------------------------- runs
    def ensure_experiment(self, name: str, artifact_location: str | None = None) -> str:
        def get_or_create() -> str:
            exp = self._client.get_experiment_by_name(name)
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    raise TrackingError(
                        f"the experiment {name!r} at {self.display_uri} is deleted",
                        hint="restore it in the MLflow UI (or `mlflow experiments restore`), "
                        "or set tracking.experiment to another name",
                    )
                return str(exp.experiment_id)
            try:
                return str(self._client.create_experiment(name, artifact_location=artifact_location))
            except Exception as err:
                if _error_code(err) == "RESOURCE_ALREADY_EXISTS":  # created concurrently
                    again = self._client.get_experiment_by_name(name)
                    if again is not None:
                        return str(again.experiment_id)
                raise

        return self._call(f"get or create experiment {name!r}", get_or_create)

    def create_run(self, experiment_id: str, run_name: str, tags: dict[str, str]) -> RunRecord:
        run = self._call(
            "create the MLflow run",
            lambda: self._client.create_run(experiment_id, tags=tags, run_name=run_name or None),
        )
        return _run_record(run)

    def log_metrics(self, run_id: str, points: list[MetricPoint]) -> int:
        from mlflow.entities import Metric

        size = self.settings.log_batch_size
        batches = 0
        for start in range(0, len(points), size):
            chunk = [
                Metric(p.key, float(p.value), int(p.timestamp_ms), int(p.step))
                for p in points[start : start + size]
            ]

            def send(chunk: list[Any] = chunk) -> None:
                self._client.log_batch(run_id, metrics=chunk, synchronous=True)

            self._call(f"log metrics {start + 1}-{start + len(chunk)} of {len(points)}", send)
            batches += 1
        return batches

    def metric_max_step(self, run_id: str, key: str) -> int:
        history = self._call(
            f"read the history of {key!r} in run {run_id}",
            lambda: self._client.get_metric_history(run_id, key),
        )
        return max((int(m.step) for m in history), default=0)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        # MLflow accepts at most 100 tags per batch.
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]

            def send(chunk: list[Any] = chunk) -> None:
                self._client.log_batch(run_id, tags=chunk)

            self._call("set run tags", send)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        # MLflow accepts at most 100 parameters per batch.
        for start in range(0, len(items), 100):
            chunk = items[start : start + 100]

            def send(chunk: list[Any] = chunk) -> None:
                self._client.log_batch(run_id, params=chunk, synchronous=True)

            self._call(f"log parameters {start + 1}-{start + len(chunk)} of {len(items)}", send)

    def log_model(self, run_id: str, experiment_id: str, local_dir: Path, name: str) -> tuple[str, str]:
        from mlflow.entities import LoggedModelOutput

        logged = self._call(
            f"create a logged model for run {run_id}",
            lambda: self._client.create_logged_model(experiment_id, name=name, source_run_id=run_id),
        )
        model_id = str(logged.model_id)
        try:
            self._call(
                f"upload the model {local_dir} to logged model {model_id}",
                lambda: self._client.log_model_artifacts(model_id, str(local_dir)),
            )
            self._call(
                f"finalize logged model {model_id}",
                lambda: self._client.finalize_logged_model(model_id, "READY"),
            )
        except TraingateError:
            try:  # a half-uploaded model must not look usable
                self._client.finalize_logged_model(model_id, "FAILED")
            except Exception as err:
                log.warning("could not mark logged model %s FAILED: %s", model_id, _short(err, 160))
            raise
        self._call(
            f"link logged model {model_id} to run {run_id}",
            lambda: self._client.log_outputs(run_id, [LoggedModelOutput(model_id, 0)]),
        )
        return model_id, str(logged.artifact_location)

    def log_artifact(self, run_id: str, local_path: Path, artifact_path: str) -> None:
        self._call(
            f"upload {local_path} to {artifact_path}/",
            lambda: self._client.log_artifact(run_id, str(local_path), artifact_path),
        )

    def list_artifacts(self, run_id: str, path: str) -> list[str]:
        infos = self._call(
            f"list the artifacts of run {run_id} under {path}/",
            lambda: self._client.list_artifacts(run_id, path),
        )
        return [str(i.path) for i in infos]

    def end_run(self, run_id: str, status: str) -> None:
        self._call(
            f"end run {run_id} as {status}", lambda: self._client.set_terminated(run_id, status=status)
        )

    def get_run(self, run_id: str) -> RunRecord:
        run = self._call(f"read run {run_id}", lambda: self._client.get_run(run_id))
        if run.info.lifecycle_stage == "deleted":
            raise TrackingNotFound(
                f"read run {run_id}: the run is deleted at {self.display_uri}",
                hint="restore the run in the MLflow UI, or gate another run",
            )
        return _run_record(run)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        if not self.is_http:
            return ""
        return f"{redact_uri(self.uri.rstrip('/'))}/#/experiments/{experiment_id}/runs/{run_id}"

    # --------------------------------------------------------------------------- registry
    def get_aliases(self, model: str) -> dict[str, str] | None:
        try:
            rm = self._call(
                f"read registered model {model!r}", lambda: self._client.get_registered_model(model)
            )
        except TrackingNotFound:
            return None
        return {str(k): str(v) for k, v in (rm.aliases or {}).items()}

    def get_version(self, model: str, version: str) -> VersionRecord:
        mv = self._call(
            f"read version {version} of model {model!r}",
            lambda: self._client.get_model_version(model, str(version)),
        )
        return _version_record(mv)

    def ensure_registered_model(self, model: str) -> None:
        def create() -> None:
            try:
                self._client.create_registered_model(model)
            except Exception as err:
                if _error_code(err) != "RESOURCE_ALREADY_EXISTS":
                    raise

        self._call(f"create registered model {model!r}", create)

    def create_version(
        self, model: str, source: str, run_id: str, tags: dict[str, str], model_id: str | None = None
    ) -> VersionRecord:
        mv = self._call(
            f"register a version of {model!r} from run {run_id}",
            lambda: self._client.create_model_version(
                model, source=source, run_id=run_id, tags=tags, await_creation_for=0, model_id=model_id
            ),
        )
        return _version_record(mv)

    def search_versions(self, model: str, tag_key: str, tag_value: str) -> list[VersionRecord]:
        if "'" in model or "'" in tag_value or "`" in tag_key:
            raise TrackingError(
                f"cannot search versions of {model!r}: quotes in the model name or tag",
                hint="use a model name without quotes (gate.model)",
            )
        flt = f"name='{model}' and tags.`{tag_key}`='{tag_value}'"
        found: list[VersionRecord] = []
        token: str | None = None
        while True:

            def page(token: str | None = token) -> Any:
                return self._client.search_model_versions(flt, max_results=1000, page_token=token)

            result = self._call(f"search versions of {model!r}", page)
            found.extend(_version_record(mv) for mv in result)
            token = getattr(result, "token", None)
            if not token:
                return found

    def set_version_tag(self, model: str, version: str, key: str, value: str) -> None:
        self._call(
            f"tag version {version} of {model!r}",
            lambda: self._client.set_model_version_tag(model, str(version), key, value),
        )

    def set_alias(self, model: str, alias: str, version: str) -> None:
        self._call(
            f"point @{alias} of {model!r} at version {version}",
            lambda: self._client.set_registered_model_alias(model, alias, str(version)),
        )

    def delete_alias(self, model: str, alias: str) -> None:
        def delete() -> None:
            try:
                self._client.delete_registered_model_alias(model, alias)
            except Exception as err:
                # Deleting an alias that is already gone is what we wanted.
                if _error_code(err) not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                    raise

        self._call(f"remove @{alias} of {model!r}", delete)


def _run_record(run: Any) -> RunRecord:
    return RunRecord(
        run_id=str(run.info.run_id),
        experiment_id=str(run.info.experiment_id),
        status=str(run.info.status),
        artifact_uri=str(run.info.artifact_uri or ""),
        metrics={str(k): float(v) for k, v in (run.data.metrics or {}).items()},
        tags={str(k): str(v) for k, v in (run.data.tags or {}).items()},
        params={str(k): str(v) for k, v in (run.data.params or {}).items()},
    )


def _version_record(mv: Any) -> VersionRecord:
    return VersionRecord(
        model=str(mv.name),
        version=str(mv.version),
        run_id=str(mv.run_id or ""),
        source=str(mv.source or ""),
        creation_timestamp_ms=int(mv.creation_timestamp or 0),
        tags={str(k): str(v) for k, v in (mv.tags or {}).items()},
    )


def artifact_location(cfg: Config) -> str | None:
    """For the embedded sqlite store, artifacts go to `<workspace>/mlartifacts` instead of
    `./mlruns` in whatever folder the command ran from; servers choose their own."""
    if cfg.tracking_uri.startswith("sqlite:"):
        return (cfg.workspace_dir / "mlartifacts").resolve().as_uri()
    return None


def open_tracking(
    cfg: Config,
    *,
    runtime: Runtime | None = None,
) -> MlflowTracking:
    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        # SQLite creates the file but not its folder.
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowTracking(cfg.tracking_uri, cfg.tracking, runtime=runtime)
