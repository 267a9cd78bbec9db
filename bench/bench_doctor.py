"""How long `traingate doctor` takes to report an unreachable or hung service.

The tests check what doctor reports (the URL, "timed out", "unreachable"); how long it takes is
a figure, measured here (issue #12 case 11: no test asserts wall-clock time). Three cases, each
with the timeout the tests use:

1. tracking server refused (nothing listens): doctor_step, timeout 2 s;
2. tracking server hung (accepts, never answers): run_checks, timeout 0.5 s;
3. S3 endpoint down for the DVC remote: run_checks, timeout 1 s.

Usage: .venv/bin/python bench/bench_doctor.py [--quick]   (--quick: 1 repetition instead of 3)
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from traingate.config import parse_config
from traingate.doctor import doctor_step, run_checks
from traingate.errors import TraingateError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def project(raw: dict) -> object:
    folder = Path(tempfile.mkdtemp(prefix="bench-doctor-"))
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    return parse_config(raw, base_dir=folder, source=None)


def seconds(fn: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        try:
            fn()
        except TraingateError:
            pass
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    runs = 1 if parser.parse_args().quick else 3
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")

    refused = project({"tracking": {"uri": f"http://127.0.0.1:{free_port()}"}})
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    hung = project({"tracking": {"uri": f"http://127.0.0.1:{silent.getsockname()[1]}"}})
    dead_s3 = project(
        {"store": {"remote": "s3://wm-data/x", "endpoint_url": f"http://127.0.0.1:{free_port()}"}}
    )
    rows = [
        ("tracking refused, doctor timeout 2 s", lambda: doctor_step(refused, env={}, timeout=2)),
        ("tracking hung, timeout 0.5 s", lambda: run_checks(hung, env={}, timeout=0.5)),
        ("S3 endpoint down, timeout 1 s", lambda: run_checks(dead_s3, env=dict(os.environ), timeout=1)),
    ]
    print(f"traingate doctor against dead services; median of {runs} run(s)\n")
    for name, fn in rows:
        print(f"{name:40} {seconds(fn, runs):8.2f} s")
    silent.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
