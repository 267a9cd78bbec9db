"""`traingate run` as real processes: one run per folder (issue #11 case 9), and Ctrl-C or the
runner's cancel releases the lease and kills the MLflow run (issue #11 case 5).

The training command waits for a file the test writes, so "run 1 is training" is a condition
the test can wait for, not a guess about time. Every wait is bounded generously.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.fixtures.mlflow_server import mlflow_sqlite_template  # noqa: F401 - a fixture
from traingate.config import Config, load_config
from traingate.demo import _setup_project
from traingate.runlock import LOCK_FILE, RunLockedError, read_holder, run_lock
from traingate.train.local import group_members

pytestmark = pytest.mark.slow

TIMEOUT = 180.0

# Writes its pid, waits for `go`, then succeeds with the gated metrics and the model file.
WAITER = r"""
import json, os, pathlib, sys, time
here = pathlib.Path(".")
(here / f"training-{os.environ['TAG']}.json").write_text(json.dumps({"pgid": os.getpgid(0)}))
while not (here / "go").exists():
    time.sleep(0.02)
out = here / "outputs"
out.mkdir(exist_ok=True)
(out / "model.npz").write_bytes(b"w")
(out / "metrics.json").write_text(json.dumps({"dice": 0.5, "iou": 0.4}))
"""


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def folder(tmp_path: Path, mlflow_sqlite_template: Path) -> Path:  # noqa: F811
    """The example project, its train.command replaced by WAITER (TAG names the process)."""
    root = tmp_path / "project"
    root.mkdir()
    cfg = _setup_project(root)
    cfg.workspace_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_sqlite_template, cfg.workspace_dir / "mlflow.db")
    (root / "waiter.py").write_text(WAITER)
    raw = yaml.safe_load((root / "traingate.yml").read_text())
    raw["train"]["command"] = shlex.join([sys.executable, "waiter.py"])
    (root / "traingate.yml").write_text(yaml.safe_dump(raw))
    return root


def start_run(root: Path, tag: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "TRAINGATE_"))}
    env["TAG"] = tag
    return subprocess.Popen(
        [sys.executable, "-m", "traingate", "run"],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def lease_holders(cfg: Config) -> list[str]:
    from traingate.infra.stage import status_step

    return list(status_step(cfg).outputs["holders"] or [])


def runs(cfg: Config) -> list[tuple[str, str]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking_uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return [(r.info.run_id, r.info.status) for r in client.search_runs([exp.experiment_id])] if exp else []


def test_a_second_run_in_the_same_folder_fails_fast_naming_the_first(folder: Path) -> None:
    first = start_run(folder, "one")
    try:
        wait_for(
            lambda: (folder / "training-one.json").exists() or first.poll() is not None, "run 1 training"
        )
        assert first.poll() is None, finish(first)
        second = start_run(folder, "two")
        _out, err = finish(second)
        assert second.returncode == 1, err
        assert f"pid {first.pid}" in err and "traingate run" in err
        assert not (folder / "training-two.json").exists()  # run 2 started nothing
    finally:
        (folder / "go").write_text("")
        _out, err1 = finish(first)
    assert first.returncode == 0, err1
    cfg = load_config(folder / "traingate.yml")
    state = json.loads((cfg.workspace_dir / "state.json").read_text())
    ((run_id, status),) = runs(cfg)
    assert state["run_id"] == run_id and status == "FINISHED"
    assert lease_holders(cfg) == []
    # The next run may go: the lock was released.
    third = start_run(folder, "three")
    _out, err3 = finish(third)
    assert third.returncode == 0, err3


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    workspace = tmp_path / ".traingate"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom traingate.runlock import run_lock\n"
            "with run_lock(Path(sys.argv[1]), 'traingate run (killed)'):\n"
            "    print('locked', flush=True)\n    time.sleep(600)\n",
            str(workspace),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError) as info, run_lock(workspace, "traingate run"):
            pass
        assert f"pid {holder.pid}" in info.value.message and info.value.exit_code == 1
    finally:
        holder.kill()
        holder.wait()
    assert read_holder(workspace)["pid"] == holder.pid  # the dead run's name is still in the file
    with run_lock(workspace, "traingate run") as mine:
        assert read_holder(workspace)["pid"] == os.getpid() == mine["pid"]
    assert (workspace / LOCK_FILE).exists()


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_run_kills_training_and_releases_the_lease(
    folder: Path, signum: signal.Signals, code: int
) -> None:
    cfg = load_config(folder / "traingate.yml")
    proc = start_run(folder, "one")
    marker = folder / "training-one.json"
    wait_for(lambda: marker.exists() or proc.poll() is not None, "training")
    assert proc.poll() is None, finish(proc)
    assert lease_holders(cfg) != []
    proc.send_signal(signum)
    _out, err = finish(proc)
    pgid = json.loads(marker.read_text())["pgid"]
    survivors = group_members(pgid)
    if survivors:
        os.killpg(pgid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert survivors == []
    assert lease_holders(cfg) == []
    ((run_id, status),) = runs(cfg)
    assert status == "KILLED"
    (line,) = [x for x in err.splitlines() if f"interrupted by {signal.Signals(signum).name}" in x]
    assert f"process group {pgid}" in line and run_id in line and "released the infra lease" in line
    # The folder is free again.
    with run_lock(cfg.workspace_dir):
        pass
