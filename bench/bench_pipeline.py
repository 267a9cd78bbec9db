"""End-to-end cost of `traingate demo` and of each stage, against the training script alone.

Runs `traingate --json demo` (two rounds: clean data improves, degraded data is refused) and
prints the wall time of the whole demo and of every stage. The baseline, measured in the same
run on the same data, is the example's `train.py` run bare (no traingate, no MLflow): the
ratios say what the pipeline costs on top of the training itself, and how much of it is the
first round's one-off MLflow schema creation.

Usage: .venv/bin/python bench/bench_pipeline.py [--quick] [--runs N]
  --quick: one demo with --pairs 12 (< 60 s on 2 cores); default: 2 demos with 36 pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _demo(workdir: Path, pairs: int) -> tuple[float, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "TRAINGATE_"))}
    start = time.perf_counter()
    proc = subprocess.run(
        [str(BIN / "traingate"), "--json", "demo", "--workdir", str(workdir), "--pairs", str(pairs)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(f"traingate demo failed with exit {proc.returncode}")
    return seconds, json.loads(proc.stdout)


def _bare_train(workdir: Path) -> float:
    """train.py on the demo's final dataset (round 2), written to a scratch folder."""
    with tempfile.TemporaryDirectory() as scratch:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "train.py", "--out", scratch], cwd=workdir, capture_output=True, check=True
        )
        return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="one small demo (< 60 s)")
    parser.add_argument("--runs", type=int, default=0, help="number of demos (default 2, quick 1)")
    args = parser.parse_args()
    runs = args.runs or (1 if args.quick else 2)
    pairs = 12 if args.quick else 36

    totals, bare, stage_times, cpu, bare_cpu = [], [], {}, [], []
    with tempfile.TemporaryDirectory() as root:
        for i in range(runs):
            workdir = Path(root) / f"demo{i}"
            before = _cpu_children()
            seconds, payload = _demo(workdir, pairs)
            cpu.append(_cpu_children() - before)
            totals.append(seconds)
            for stage in payload["stages"]:
                stage_times.setdefault(stage["stage"], []).append(stage["seconds"])
            before = _cpu_children()
            bare.append(_bare_train(workdir))
            bare_cpu.append(_cpu_children() - before)

    print(f"traingate demo, {pairs} initial pairs, {runs} run(s); median seconds\n")
    print(f"{'stage':24} {'seconds':>8}")
    for name, values in stage_times.items():
        print(f"{name:24} {statistics.median(values):8.2f}")
    total = statistics.median(totals)
    base = statistics.median(bare)
    train2 = statistics.median(stage_times.get("round 2 train", [0.0]))
    train1 = statistics.median(stage_times.get("round 1 train", [0.0]))
    print(f"\n{'whole demo (wall, incl. start-up)':40} {total:8.2f} s")
    print(f"{'baseline: bare train.py on round-2 data':40} {base:8.2f} s")
    print(f"{'round 2 train stage / bare train.py':40} {train2 / base:8.2f} x")
    print(
        f"{'round 1 train stage / bare train.py':40} {train1 / base:8.2f} x  (incl. MLflow schema creation)"
    )
    print(f"{'whole demo / bare train.py':40} {total / base:8.2f} x")
    # CPU seconds do not grow when other jobs share the cores; wall time does.
    print(f"{'CPU: whole demo (user+sys, all processes)':40} {statistics.median(cpu):8.2f} s")
    print(f"{'CPU: bare train.py':40} {statistics.median(bare_cpu):8.2f} s")
    print(
        f"{'CPU ratio demo / bare train.py':40} {statistics.median(cpu) / statistics.median(bare_cpu):8.2f} x"
    )
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (wall times stretch with it)")
    print(f"\ntarget: whole demo < 60 s on 2 cores -> {'met' if total < 60 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
