"""MLflow request counts and times: batched logging vs one request per metric, and bounded failure.

A real `mlflow server --workers 1` on SQLite (field report 2's setup) runs behind the counting
proxy from tests/fixtures/mlflow_server.py. Figures, all measured in this run:

1. 100 epochs x 9 metrics logged by traingate (`log_batch`, <= 1000 per request) vs the same
   points logged one `log_metric` call each (what the field report did): requests and seconds.
2. The same with a 503 burst on the server (3 refused writes): traingate's retries absorb it.
3. Time for a call to fail against a dead server (connection refused): traingate's budget
   (tracking.* defaults) vs MLflow's own default retries (measured up to a cap).

Usage: .venv/bin/python bench/bench_tracking.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.mlflow_server import (
    FaultProxy,
    free_port,
    start_mlflow_server,
    stop_mlflow_server,
)

from traingate.config import TrackingConfig
from traingate.contracts import MetricPoint
from traingate.tracking.mlflow_client import MlflowTracking


def points(epochs: int, keys: int) -> list[MetricPoint]:
    now = int(time.time() * 1000)
    return [MetricPoint(f"metric_{k}", k + s * 0.01, s, now + s) for s in range(epochs) for k in range(keys)]


def new_run(tr: MlflowTracking) -> str:
    exp = tr.ensure_experiment(f"bench-{uuid.uuid4().hex[:8]}")
    return tr.create_run(exp, "bench", {}).run_id


def batched(proxy: FaultProxy, pts: list[MetricPoint], settings: TrackingConfig) -> tuple[int, float]:
    tr = MlflowTracking(proxy.url, settings)
    run_id = new_run(tr)
    proxy.requests.clear()
    start = time.perf_counter()
    tr.log_metrics(run_id, pts)
    return proxy.count("/runs/log-batch"), time.perf_counter() - start


def per_metric(proxy: FaultProxy, pts: list[MetricPoint], settings: TrackingConfig) -> tuple[int, float]:
    """One request per point, as the field report's script did (MLflow's log_metric)."""
    tr = MlflowTracking(proxy.url, settings)
    run_id = new_run(tr)
    proxy.requests.clear()
    start = time.perf_counter()
    for p in pts:
        tr._client.log_metric(run_id, p.key, p.value, p.timestamp_ms, p.step, synchronous=True)
    return proxy.count("/runs/log-metric"), time.perf_counter() - start


def time_to_fail(url: str, settings: TrackingConfig | None, cap: float) -> tuple[float, bool]:
    """Seconds until a get_run against `url` raises; (cap, False) if it is still trying."""
    import os

    done: list[float] = []

    def call() -> None:
        start = time.perf_counter()
        try:
            if settings is None:
                # MLflow's defaults: no traingate settings in the environment.
                for name in list(os.environ):
                    if name.startswith("MLFLOW_HTTP_REQUEST_"):
                        del os.environ[name]
                from mlflow import MlflowClient

                MlflowClient(tracking_uri=url).get_run("0" * 32)
            else:
                MlflowTracking(url, settings).get_run("0" * 32)
        except Exception:
            done.append(time.perf_counter() - start)

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(cap)
    return (done[0], True) if done else (cap, False)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="headline size only; short failure caps")
    args = parser.parse_args()
    sizes = [(100, 9)] if args.quick else [(100, 9), (300, 9)]
    # --quick times the per-metric baseline on the first 20 epochs only and scales it (its
    # request count is one per point by construction); the full run measures every point.
    sample_epochs = 10 if args.quick else 0
    settings = TrackingConfig()

    root = Path(tempfile.mkdtemp(prefix="traingate-bench-tracking-"))
    t0 = time.perf_counter()
    import mlflow

    template = Path(tempfile.gettempdir()) / f"traingate-mlflow-template-{mlflow.__version__}.db"
    server = start_mlflow_server(root / "server", template=template if template.is_file() else None)
    startup = time.perf_counter() - t0
    proxy = FaultProxy(server.url).start()
    try:
        print(f"mlflow server --workers 1 (SQLite) started in {startup:.1f} s\n")
        print(f"{'run size':>16} {'way':>12} {'requests':>9} {'seconds':>8} {'x fewer requests':>17}")
        headline = None
        for epochs, keys in sizes:
            pts = points(epochs, keys)
            b_req, b_sec = batched(proxy, pts, settings)
            label = f"{epochs}x{keys}={epochs * keys}"
            if sample_epochs and sample_epochs < epochs:
                sample = pts[: sample_epochs * keys]
                s_req, s_sec = per_metric(proxy, sample, settings)
                p_req, p_sec = s_req * len(pts) // len(sample), s_sec * len(pts) / len(sample)
                way = "per-metric*"
            else:
                p_req, p_sec = per_metric(proxy, pts, settings)
                way = "per-metric"
            print(f"{label:>16} {way:>12} {p_req:9d} {p_sec:8.2f} {'1.0':>17}")
            print(f"{label:>16} {'log_batch':>12} {b_req:9d} {b_sec:8.2f} {p_req / b_req:17.0f}")
            headline = headline or (b_req, b_sec, p_req, p_sec)

        pts = points(100, 9)
        proxy.fail_next(3, 503, path_contains="/runs/log-batch")
        r_req, r_sec = batched(proxy, pts, settings)
        print(f"\n100x9 with a burst of 3x 503 on log-batch: {r_req} requests, {r_sec:.2f} s (retried)")
        if sample_epochs:
            print(f"* measured on the first {sample_epochs} epochs and scaled (--quick)")
    finally:
        proxy.stop()
        stop_mlflow_server(server)

    dead = f"http://127.0.0.1:{free_port()}"
    ours_budget = TrackingConfig(retry_budget_seconds=5) if args.quick else settings
    ours, _ = time_to_fail(dead, ours_budget, cap=120)
    cap = 10 if args.quick else 300
    theirs, theirs_done = time_to_fail(dead, None, cap=cap)
    theirs_text = f"{theirs:.1f} s" if theirs_done else f"> {cap} s (still retrying, stopped measuring)"
    print(
        f"\ndead server (connection refused): traingate fails after {ours:.1f} s "
        f"(retry_budget_seconds={ours_budget.retry_budget_seconds:g}); MLflow defaults: {theirs_text}"
    )
    if headline:
        b_req, b_sec, p_req, p_sec = headline
        print(
            f"\nheadline: 100 epochs x 9 metrics = {b_req} request(s) with traingate vs {p_req} "
            f"per metric ({p_req / b_req:.0f}x fewer; {p_sec / max(b_sec, 1e-9):.0f}x faster); target <= 10"
        )
    return 0 if headline and headline[0] <= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
