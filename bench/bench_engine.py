"""Figures of one pipeline round under a real Actions engine (nektos/act, host mode, offline).

Runs `tests/engine/test_engine.py::test_improved_model_opens_and_auto_merges_a_pr` (the shipped
training-data-pipeline.yml on a data push: merge, start, train, stop, PR, auto-merge) in a fresh
pytest process per repetition, with TRAINGATE_ENGINE_FIGURES pointing at a file the test appends
its figures to (from act's JSON log: each job's wall time and each step's executionTime).

Reported (medians over the repetitions):
- act's wall time for the whole round, and each job's wall time on the critical path (the six
  jobs run one after the other);
- traingate's own share per job: `Install traingate` (uv, warm shared cache, offline) and the
  `traingate ...` command (CLI start, imports, API calls, and for train the training command);
  the rest is the engine: checkout, setup-python, setup-uv, artifacts, post steps, scheduling;
- outside act, same venv recipe as a job: install of each extras set from the warm cache and
  `traingate --help` start-up (the CLI start inside every command);
- GitHub API requests (the HTTP fake) and MLflow HTTP requests (through the proxy) per round.

    .venv/bin/python bench/bench_engine.py            # 2 repetitions
    .venv/bin/python bench/bench_engine.py --quick    # 1 repetition (~3-4 min on 2 shared cores)
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/engine/test_engine.py::test_improved_model_opens_and_auto_merges_a_pr"
ORDER = ("merge-and-validate", "start-infra", "train", "stop-infra", "create-pr", "auto-merge")


def one_run(figures: Path) -> float:
    env = {**os.environ, "TRAINGATE_ENGINE_FIGURES": str(figures)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", TEST, "-q", "-n", "0", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0 or "skipped" in proc.stdout.splitlines()[-1]:
        sys.exit(
            f"bench_engine: the improved round did not pass:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}"
        )
    return elapsed


def outside_act(uv_cache: Path) -> dict[str, float]:
    """Install each job's extras from the warm cache (offline) and time `traingate --help`."""
    sys.path.insert(0, str(ROOT))
    from tests.engine.act import export_source, extras_sets

    uv = str(Path(sys.executable).parent / "uv")
    out: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = export_source(Path(tmp) / "src")
        env = {**os.environ, "UV_CACHE_DIR": str(uv_cache), "UV_OFFLINE": "1"}
        env.pop("VIRTUAL_ENV", None)
        for extras in sorted(extras_sets()):
            venv = Path(tmp) / "venv"
            began = time.perf_counter()
            subprocess.run([uv, "venv", "--quiet", str(venv)], env=env, check=True)
            python = str(venv / "bin" / "python")
            subprocess.run(
                [uv, "pip", "install", "--quiet", "--python", python, f"{source}[{extras}]"],
                env=env,
                check=True,
            )
            out[f"install [{extras}]"] = time.perf_counter() - began
            starts = []
            for _ in range(3):
                began = time.perf_counter()
                subprocess.run([str(venv / "bin" / "traingate"), "--help"], capture_output=True, check=True)
                starts.append(time.perf_counter() - began)
            out[f"traingate --help [{extras}] (median of 3)"] = statistics.median(starts)
            shutil.rmtree(venv)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--repeat", type=int, default=2, help="repetitions (default 2)")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else max(1, args.repeat)
    if shutil.which("node") is None:
        print("bench_engine: skipped, node is not on PATH (act's host mode needs it)")
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        figures = Path(tmp) / "figures.jsonl"
        pytest_seconds = [one_run(figures) for _ in range(repeat)]
        rows = [json.loads(line) for line in figures.read_text().splitlines() if line.strip()]

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    print(f"repetitions: {len(rows)} (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print(f"pytest process (services, seed, warm uv cache, act round): {med(pytest_seconds)} s")
    print(f"act wall, whole round: {med([r['act_wall_seconds'] for r in rows])} s")
    print(f"training command alone (train report): {med([r['train_command_seconds'] for r in rows])} s")
    print()
    print("| job | wall s | install s | traingate command s | engine s (rest) |")
    print("|---|---:|---:|---:|---:|")
    totals = [0.0, 0.0, 0.0, 0.0]
    for name in ORDER:
        jobs = [r["jobs"][name] for r in rows if name in r["jobs"]]
        if not jobs:
            continue
        wall = med([j["wall_seconds"] for j in jobs])
        install = med([j["install_seconds"] for j in jobs])
        command = med([j["command_seconds"] for j in jobs])
        rest = round(wall - install - command, 2)
        for i, v in enumerate((wall, install, command, rest)):
            totals[i] += v
        print(f"| {name} | {wall} | {install} | {command} | {rest} |")
    print(f"| **all six** | {totals[0]:.1f} | {totals[1]:.1f} | {totals[2]:.1f} | {totals[3]:.1f} |")
    print()
    step_names: dict[str, list[float]] = {}
    for r in rows:
        for job in r["jobs"].values():
            for step, seconds in job["steps"].items():
                if step.startswith(("Main ", "Post ")):
                    key = step.split(" ", 1)[0] + " " + step.split(" ", 1)[1]
                    step_names.setdefault(key, []).append(seconds)
    print("engine steps, median per job where they run:")
    for key in sorted(step_names):
        if not key.startswith(("Main traingate ", "Main Install")):
            print(f"  {key}: {med(step_names[key])} s")
    print()
    github = med([r["github_requests"] for r in rows])
    print(f"GitHub API requests per round: {github} ({rows[0]['github_by_route']})")
    print(f"MLflow HTTP requests per round: {med([r['mlflow_requests'] for r in rows])}")
    cache = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}" / "engine-uv-cache"
    if cache.is_dir():
        print()
        print("outside act, from the same warm uv cache (offline):")
        for key, seconds in outside_act(cache).items():
            print(f"  {key}: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
