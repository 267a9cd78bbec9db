"""Start-up cost of `traingate --help` against the floor of any click CLI and two tools it wraps.

Prints the median wall time of N runs of each command, measured in the same run, and the ratio
to `python -c "import click"`. The target (issue 2) is traingate --help <= 2.0x that floor.
Usage: .venv/bin/python bench/bench_startup.py [--quick] [--runs N]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _time(cmd: list[str], runs: int) -> float:
    subprocess.run(cmd, capture_output=True, check=False)  # warm the page cache
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs, skip the slow tools")
    parser.add_argument("--runs", type=int, default=0)
    args = parser.parse_args()
    runs = args.runs or (5 if args.quick else 15)
    commands: list[tuple[str, list[str]]] = [
        ('python -c "import click"', [sys.executable, "-c", "import click"]),
        ("traingate --help", [str(BIN / "traingate"), "--help"]),
        ("traingate data merge --help", [str(BIN / "traingate"), "data", "merge", "--help"]),
    ]
    slow_runs = max(2, runs // 5)
    for tool in ("mlflow", "dvc"):
        exe = BIN / tool
        if exe.exists() or shutil.which(tool):
            commands.append((f"{tool} --help", [str(exe if exe.exists() else tool), "--help"]))
    results = []
    for label, cmd in commands:
        n = slow_runs if label.split()[0] in ("mlflow", "dvc") else runs
        results.append((label, _time(cmd, n), n))
    floor = results[0][1]
    print(f"{'command':34} {'median s':>9} {'x click':>8} {'runs':>5}")
    for label, seconds, n in results:
        print(f"{label:34} {seconds:9.3f} {seconds / floor:8.2f} {n:5d}")
    ratio = results[1][1] / floor
    print(f"\ntraingate --help / import click = {ratio:.2f} (target <= 2.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
