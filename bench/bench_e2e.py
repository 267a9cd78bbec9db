"""Figures of the end-to-end happy path: wall time, where it goes, and service calls per run.

Runs `tests/e2e/test_pipeline.py::test_happy_path` (training-pipeline.yml interpreted job by job
against moto, the SSM fake, a real mlflow server and the GitHub fake) in a fresh pytest process
per repetition, with TRAINGATE_E2E_FIGURES pointing at a file the test appends its figures to.

Reported per run (medians over the repetitions):
- wall time of the pipeline (all six jobs), and of the whole pytest process (service start-up);
- time inside traingate commands (wall) and the CPU of the thread running them (traingate's own
  work, in-process: click, boto3, DVC, the MLflow client, PyGithub); the rest of the command
  time is waiting (the training subprocess, MLflow/moto answers, git);
- the user's training command alone (`duration_seconds` of the train report) — the same-run
  baseline: pipeline wall / training command is the overhead ratio;
- AWS calls (boto3 operations + every HTTP request moto answered, DVC's included; SSM calls go to
  the fake), MLflow HTTP requests (through the fault proxy) and GitHub API requests.

    .venv/bin/python bench/bench_e2e.py            # 3 repetitions
    .venv/bin/python bench/bench_e2e.py --quick    # 1 repetition (< 60 s on an idle machine)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST = "tests/e2e/test_pipeline.py::test_happy_path"


def one_run(figures: Path) -> float:
    env = {**os.environ, "TRAINGATE_E2E_FIGURES": str(figures)}
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", TEST, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"bench_e2e: the happy path failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repetition")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    args = parser.parse_args(argv)
    repeat = 1 if args.quick else max(1, args.repeat)

    with tempfile.TemporaryDirectory() as tmp:
        figures_path = Path(tmp) / "figures.jsonl"
        process_seconds = [one_run(figures_path) for _ in range(repeat)]
        runs = [json.loads(line) for line in figures_path.read_text().splitlines() if line.strip()]
    if len(runs) != repeat:
        sys.exit(f"bench_e2e: expected {repeat} figure records, got {len(runs)}")

    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    wall, cli, cpu = med("wall_seconds"), med("cli_seconds"), med("cli_cpu_seconds")
    harness, train = med("harness_seconds"), med("train_command_seconds")
    waiting = cli - cpu
    last = runs[-1]
    load = os.getloadavg()[0]
    print(f"e2e happy path, {repeat} run(s), load average {load:.1f} on {os.cpu_count()} cores (medians)")
    rows = [
        ("pytest process (services start + seed + run)", f"{statistics.median(process_seconds):.1f} s"),
        ("fixture set-up per test (moto state, repo copy)", f"{med('fixture_setup_seconds'):.2f} s"),
        ("pipeline wall (6 jobs)", f"{wall:.2f} s"),
        ("  inside traingate commands (wall)", f"{cli:.2f} s ({cli / wall:.0%})"),
        ("  traingate's own CPU (in-process thread)", f"{cpu:.2f} s ({cpu / wall:.0%})"),
        ("  waiting in commands (training, MLflow, moto, git)", f"{waiting:.2f} s ({waiting / wall:.0%})"),
        ("  harness (clones, artifacts, YAML)", f"{harness:.2f} s ({harness / wall:.0%})"),
        ("training command alone (baseline)", f"{train:.2f} s"),
        ("ratio pipeline wall / training command", f"{wall / train:.1f}x" if train else "n/a"),
        ("AWS boto3 operations", str(sum(last["aws_boto3_calls"].values()))),
        ("AWS HTTP requests answered by moto (incl. DVC)", str(last["aws_http_requests"])),
        ("SSM calls (fake)", str(sum(last["ssm_calls"].values()))),
        ("MLflow HTTP requests", str(last["mlflow_requests"])),
        ("GitHub API requests", str(last["github_requests"])),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("per job (s):", json.dumps({k: round(v, 2) for k, v in last["per_job_seconds"].items()}))
    print("AWS operations:", json.dumps(last["aws_boto3_calls"]))
    print("AWS HTTP by kind:", json.dumps(last["aws_http_by_kind"]))
    print("SSM:", json.dumps(last["ssm_calls"]))
    print("GitHub:", json.dumps(last["github_by_route"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
