"""The MLflow adapter against a real `mlflow server` behind the fault-injecting proxy."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.mlflow_server import FaultProxy
from traingate.config import TrackingConfig
from traingate.contracts import MetricPoint, TrackingNotFound
from traingate.errors import TrackingError
from traingate.runtime import Runtime
from traingate.tracking.mlflow_client import MlflowTracking, mlflow_env, redact_uri

pytestmark = pytest.mark.slow


class FakeTime:
    """A clock that only moves when the code sleeps: retry budgets without real waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def adapter(url: str, fake: FakeTime | None = None, **settings: float) -> MlflowTracking:
    cfg = TrackingConfig(**{"max_retries": 0, "retry_budget_seconds": 30, **settings})
    if fake is None:
        return MlflowTracking(url, cfg)
    return MlflowTracking(url, cfg, runtime=Runtime(clock=fake.clock, sleep=fake.sleep))


def new_run(tr: MlflowTracking) -> str:
    exp = tr.ensure_experiment(f"exp-{uuid.uuid4().hex[:8]}")
    return tr.create_run(exp, "r", {}).run_id


def points(epochs: int = 100, keys: int = 9) -> list[MetricPoint]:
    now = int(time.time() * 1000)
    return [MetricPoint(f"m{k}", k * 0.01 + s, s, now + s) for s in range(epochs) for k in range(keys)]


def test_100_epochs_of_9_metrics_take_one_request(fault_proxy: FaultProxy) -> None:
    tr = adapter(fault_proxy.url)
    run_id = new_run(tr)
    fault_proxy.requests.clear()
    assert tr.log_metrics(run_id, points()) == 1
    assert fault_proxy.count("/runs/log-batch") == 1
    assert fault_proxy.count() == 1
    history = tr._client.get_metric_history(run_id, "m3")
    assert len(history) == 100
    assert tr.get_run(run_id).metrics["m3"] == pytest.approx(99.03)


def test_batch_size_is_respected(fault_proxy: FaultProxy) -> None:
    tr = adapter(fault_proxy.url, log_batch_size=250)
    run_id = new_run(tr)
    fault_proxy.requests.clear()
    assert tr.log_metrics(run_id, points()) == 4
    assert fault_proxy.count("/runs/log-batch") == 4


def test_a_burst_of_503_is_retried_with_growing_backoff(fault_proxy: FaultProxy) -> None:
    fake = FakeTime()
    tr = adapter(fault_proxy.url, fake)
    run_id = new_run(tr)
    fault_proxy.fail_next(4, 503, path_contains="/runs/log-batch")
    assert tr.log_metrics(run_id, points(10, 2)) == 1
    assert fault_proxy.count("/runs/log-batch") == 5
    assert len(fake.sleeps) == 4
    # Exponential backoff (0.5, 1, 2, 4 s) with +-50 % jitter.
    for index, slept in enumerate(fake.sleeps):
        assert 0.25 * 2**index <= slept <= 0.75 * 2**index
    assert len(tr._client.get_metric_history(run_id, "m1")) == 10


def test_mlflow_inner_retries_absorb_a_short_burst(fault_proxy: FaultProxy) -> None:
    fake = FakeTime()
    tr = adapter(fault_proxy.url, fake, max_retries=2, backoff_factor=0.1)
    run_id = new_run(tr)
    tr.attempts = 0
    fault_proxy.fail_next(2, 503, path_contains="/runs/get")
    assert tr.get_run(run_id).run_id == run_id
    assert tr.attempts == 1 and fake.sleeps == []


def test_a_long_outage_fails_within_the_budget_naming_the_url(fault_proxy: FaultProxy) -> None:
    fake = FakeTime()
    tr = adapter(fault_proxy.url, fake, retry_budget_seconds=20)
    run_id = new_run(tr)
    fault_proxy.always(503, path_contains="/runs/log-batch")
    with pytest.raises(TrackingError) as info:
        tr.log_metrics(run_id, points(2, 2))
    assert f"tracking server at {fault_proxy.url} did not answer within the 20 s retry budget" in (
        info.value.message
    )
    assert sum(fake.sleeps) <= 20
    assert info.value.hint and "retry_budget_seconds" in info.value.hint


def test_a_dead_server_fails_naming_the_retry_budget(dead_url: str) -> None:
    # How long it takes is measured by bench/bench_tracking.py, not asserted here.
    tr = adapter(dead_url, max_retries=1, retry_budget_seconds=2, request_timeout_seconds=1)
    with pytest.raises(TrackingError, match="did not answer within the 2 s retry budget"):
        tr.get_run("abc")


def test_slow_replies_time_out_and_are_bounded(fault_proxy: FaultProxy) -> None:
    tr = adapter(fault_proxy.url, request_timeout_seconds=1, retry_budget_seconds=1)
    run_id = new_run(tr)
    fault_proxy.delay_seconds = 2.5
    with pytest.raises(TrackingError, match="retry budget"):
        tr.get_run(run_id)
    fault_proxy.delay_seconds = 0
    assert tr.get_run(run_id).run_id == run_id


def test_a_refused_request_is_not_retried(fault_proxy: FaultProxy) -> None:
    fake = FakeTime()
    tr = adapter(fault_proxy.url, fake)
    fault_proxy.always(403, path_contains="/experiments/get-by-name")
    with pytest.raises(TrackingError, match="failed at"):
        tr.ensure_experiment("whatever")
    assert fault_proxy.count("/experiments/get-by-name") == 1
    assert fake.sleeps == []


def test_not_found_is_its_own_error(fault_proxy: FaultProxy) -> None:
    tr = adapter(fault_proxy.url)
    with pytest.raises(TrackingNotFound):
        tr.get_run("0" * 32)
    assert tr.get_aliases(f"no-such-model-{uuid.uuid4().hex[:6]}") is None


def test_health_wait(fault_proxy: FaultProxy, dead_url: str) -> None:
    fake = FakeTime()
    adapter(fault_proxy.url, fake).wait_healthy(5)
    fault_proxy.fail_next(3, 503, path_contains="/health")
    adapter(fault_proxy.url, fake).wait_healthy(30)
    assert fault_proxy.count("/health") == 5
    with pytest.raises(TrackingError) as info:
        adapter(dead_url, fake).wait_healthy(10)
    assert f"{dead_url}/health did not answer /health within 10 s" in info.value.message
    assert "health_timeout_seconds" in (info.value.hint or "")


def test_artifacts_and_registry_over_http(fault_proxy: FaultProxy, tmp_path: Path) -> None:
    tr = adapter(fault_proxy.url)
    run_id = new_run(tr)
    (tmp_path / "model.bin").write_bytes(b"w")
    tr.log_artifact(run_id, tmp_path / "model.bin", "model")
    assert tr.list_artifacts(run_id, "model") == ["model/model.bin"]
    name = f"m-{uuid.uuid4().hex[:8]}"
    tr.ensure_registered_model(name)
    tr.ensure_registered_model(name)  # idempotent
    v = tr.create_version(name, tr.get_run(run_id).artifact_uri + "/model", run_id, {"a": "b"})
    tr.set_alias(name, "champion", v.version)
    assert tr.get_aliases(name) == {"champion": v.version}
    assert [x.version for x in tr.search_versions(name, "a", "b")] == [v.version]
    tr.delete_alias(name, "champion")
    tr.delete_alias(name, "champion")  # already gone: fine
    assert tr.get_aliases(name) == {}


def test_mlflow_env_is_bounded_and_parseable() -> None:
    env = mlflow_env(TrackingConfig())
    assert env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "3"
    assert int(env["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]) == 0  # MLflow parses an int
    assert float(env["MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"]) == 0.5
    assert env["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"


def test_redact_uri() -> None:
    assert redact_uri("https://bob:s3cret@mlflow.example:5000/x") == "https://bob:***@mlflow.example:5000/x"
    assert redact_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
