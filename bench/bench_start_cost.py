"""Start cost as a user sees it: whole processes, bytecode cached, page cache warm.

    .venv/bin/python bench/bench_start_cost.py            # 1,500 pairs of 512x512
    .venv/bin/python bench/bench_start_cost.py --quick    # 200 pairs, fewer runs

1. Fixed start cost of every stage command: the median wall time of
   `traingate <command> --help` and of the command's start path (`python -c` importing the CLI,
   loading `traingate.yml` and importing the stage's module — everything a run pays before its
   first step of real work), against the floor `python -c pass`.
2. `traingate data validate` as a process: cold (no cache) and the re-run after adding 15 pairs,
   whose ratio is the figure of issue #15 (target <= 15 % of cold). bench_validate.py measures the
   same inside one process, where the start cost is invisible.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
BIN = Path(sys.executable).parent
TRAINGATE = str(BIN / "traingate")

# command -> the module its stage function lives in (DEVELOPERS.md, "Stage entry points")
STAGES = {
    "data validate": "traingate.data.validate",
    "data merge": "traingate.data.merge",
    "infra start": "traingate.infra.stage",
    "infra stop": "traingate.infra.stage",
    "train": "traingate.pipeline.train",
    "gate": "traingate.tracking.gate",
    "promote": "traingate.tracking.promote",
    "pr create": "traingate.github.pr",
    "pr automerge": "traingate.github.automerge",
}


def _cpu() -> float:
    """User + system CPU seconds of all finished children: steadier than wall time when other
    processes compete for the cores (this machine is shared)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], cwd: Path | None = None, env: dict | None = None) -> tuple[float, float, int]:
    """(wall s, CPU s, exit code) of one whole process."""
    cpu, start = _cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, check=False, cwd=cwd, env=env)
    return time.perf_counter() - start, _cpu() - cpu, done.returncode


def _median(cmd: list[str], runs: int, cwd: Path | None = None) -> tuple[float, float]:
    """(median wall, median CPU) of `runs` runs after one warm-up (bytecode, page cache)."""
    _run(cmd, cwd)
    samples = [_run(cmd, cwd) for _ in range(runs)]
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def start_costs(project: Path, runs: int) -> None:
    wall, cpu = _median([sys.executable, "-c", "pass"], runs)
    print(f"floor `python -c pass`: {wall:.3f} s wall, {cpu:.3f} s CPU (medians of {runs})")
    print(f"{'command':16} {'--help wall':>12} {'CPU':>6} {'start path wall':>16} {'CPU':>6}")
    for command, module in STAGES.items():
        h_wall, h_cpu = _median([TRAINGATE, *command.split(), "--help"], runs)
        code = (
            "import traingate.cli; from traingate.config import load_config; "
            f"load_config('traingate.yml'); import {module}"
        )
        p_wall, p_cpu = _median([sys.executable, "-c", code], runs, cwd=project)
        print(f"{command:16} {h_wall:12.3f} {h_cpu:6.3f} {p_wall:16.3f} {p_cpu:6.3f}")


def _validate(project: Path) -> tuple[float, float]:
    # The validation cache lives under $XDG_CACHE_HOME/traingate: a folder of the project here.
    env = {**os.environ, "XDG_CACHE_HOME": str(project / "xdg")}
    wall, cpu, code = _run([TRAINGATE, "data", "validate", "ds"], cwd=project, env=env)
    if code != 0:
        raise SystemExit(f"traingate data validate failed (exit {code}) in {project}")
    return wall, cpu


def validate_process(n: int, size: int, runs: int) -> None:
    from bench_validate import OUT, generate

    base = generate(OUT / f"validate-{n}-{size}", n, size, seed=1)
    extra = generate(OUT / f"validate-extra15-{size}", 15, size, seed=2, prefix="x")
    with tempfile.TemporaryDirectory(prefix="tg-start-") as tmp:
        project = Path(tmp)
        (project / "traingate.yml").write_text(f"data:\n  size: [{size}, {size}]\n")
        shutil.copytree(base, project / "ds", ignore=shutil.ignore_patterns(".complete"))
        for p in (project / "ds").rglob("*.*"):
            p.read_bytes()  # warm the page cache: we measure CPU work, not the disk
        _validate(project)  # bytecode of every module the path imports is now cached
        cold, add = [], []
        for _ in range(runs):
            shutil.rmtree(project / ".traingate", ignore_errors=True)
            shutil.rmtree(project / "xdg", ignore_errors=True)
            for p in (project / "ds").rglob("x*.*"):
                p.unlink()
            cold.append(_validate(project))
            for sub in ("images", "masks"):
                for p in (extra / sub).iterdir():
                    shutil.copy2(p, project / "ds" / sub / p.name)
            add.append(_validate(project))
        print(f"\ntraingate data validate, whole process ({n} pairs of {size}x{size}, median of {runs}):")
        for i, unit in ((0, "wall"), (1, "CPU")):
            t_cold = statistics.median(c[i] for c in cold)
            t_add = statistics.median(a[i] for a in add)
            print(
                f"  {unit:4}: cold (no cache) {t_cold:7.3f} s, after adding 15 pairs {t_add:7.3f} s "
                f"= {100 * t_add / t_cold:5.1f}% of cold"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 pairs, 3 runs")
    parser.add_argument("--runs", type=int, default=0)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 7)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    load = os.getloadavg()[0]
    print(f"cores: {os.cpu_count()}, load average at the start: {load:.2f}")
    with tempfile.TemporaryDirectory(prefix="tg-start-") as tmp:
        (Path(tmp) / "traingate.yml").write_text("project: bench\n")
        start_costs(Path(tmp), runs)
    validate_process(200 if args.quick else 1500, args.size, max(3, runs // 2))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
