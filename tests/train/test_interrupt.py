"""Ctrl-C and the runner's cancel during `traingate train` (issue #11 case 5), for real:
`traingate train` is a subprocess, its training command starts a worker of its own, and both
write a file until they are stopped. Every wait is on a condition, bounded generously."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import yaml

from tests.tracking.helpers import Project, open_adapter
from traingate.config import load_config
from traingate.train.local import group_members

pytestmark = pytest.mark.slow

# The training command: a worker (its own child, same process group) and the script itself
# append to files forever; `stubborn` makes both ignore SIGTERM, so only SIGKILL stops them.
SCRIPT = r"""
import os, signal, subprocess, sys, time
from pathlib import Path
if os.environ.get("STUBBORN") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
worker = subprocess.Popen([sys.executable, "-c", '''
import os, signal, time
from pathlib import Path
if os.environ.get("STUBBORN") == "1":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
out = Path("ticks-worker")
while True:
    with out.open("a") as fh:
        fh.write("x")
    time.sleep(0.02)
'''])
ids = (os.getpid(), worker.pid, os.getpgid(0))
Path("started.json").write_text('{"pid": %d, "worker": %d, "pgid": %d}' % ids)
out = Path("ticks-main")
while True:
    with out.open("a") as fh:
        fh.write("x")
    time.sleep(0.02)
"""

TIMEOUT = 120.0


def wait_for(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


def start_train(project: Project, stubborn: bool) -> tuple[subprocess.Popen[str], dict[str, int]]:
    (project.root / "loop.py").write_text(SCRIPT)
    (project.root / "traingate.yml").write_text(
        yaml.safe_dump(
            {
                "project": "tg-test",
                "train": {
                    "command": f"{sys.executable} loop.py",
                    "pull_data": False,
                    "timeout_minutes": 30,
                    "env": {"STUBBORN": "1" if stubborn else "0"},
                },
                "tracking": {"retry_budget_seconds": 3, "health_timeout_seconds": 2, "max_retries": 0},
                "gate": {"model": "tg-model"},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "traingate", "train"],
        cwd=project.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = project.root / "started.json"
    ticks = [project.root / "ticks-main", project.root / "ticks-worker"]
    wait_for(
        lambda: (started.is_file() and all(t.is_file() for t in ticks)) or proc.poll() is not None, "start"
    )
    assert proc.poll() is None, proc.communicate()
    return proc, json.loads(started.read_text())


@pytest.mark.parametrize(
    ("signals", "code", "stubborn"),
    [
        ([signal.SIGINT], 130, False),  # Ctrl-C at a terminal
        ([signal.SIGTERM], 143, False),  # a plain `kill`
        ([signal.SIGINT, signal.SIGTERM], 130, True),  # Actions' cancel; the script ignores SIGTERM
    ],
    ids=["sigint", "sigterm", "cancel-stubborn"],
)
def test_a_signal_stops_the_training_group_and_kills_the_run(
    project: Project, signals: list[signal.Signals], code: int, stubborn: bool
) -> None:
    proc, started = start_train(project, stubborn)
    for signum in signals:
        proc.send_signal(signum)
    try:
        _out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    pgid = started["pgid"]
    survivors = group_members(pgid)
    if survivors:  # do not leave them running on the test machine
        os.killpg(pgid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert survivors == []
    # Nobody is left to write: the files stay as they are.
    sizes = [(project.root / name).stat().st_size for name in ("ticks-main", "ticks-worker")]
    time.sleep(0.3)
    assert [(project.root / name).stat().st_size for name in ("ticks-main", "ticks-worker")] == sizes

    name = signal.Signals(signals[0]).name
    lines = [line for line in err.splitlines() if f"interrupted by {name}" in line]
    assert len(lines) == 1, err
    assert f"process group {pgid}" in lines[0] and "KILLED" in lines[0]

    cfg = load_config(project.root / "traingate.yml")
    tr = open_adapter(cfg)
    exp = tr._client.get_experiment_by_name(cfg.tracking.experiment)
    runs = list(tr._client.search_runs([exp.experiment_id]))
    assert [r.info.status for r in runs] == ["KILLED"]
    assert runs[0].info.run_id in lines[0]
