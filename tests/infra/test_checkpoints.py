"""Spot-interruption resume on an instance (`train.checkpoint_s3`, `train.where: instance`).

The training command gets TRAINGATE_CHECKPOINT_DIR, restored from `train.checkpoint_s3` before it
starts and synced back while it runs. A spot reclaim is every process on the instance dying at
once (SIGKILL of the run's session: no exit code, no final sync); the re-run on a fresh instance
(a fresh run folder here) restores the last synced checkpoint and the command resumes from it.
The instance is the SSM fake on moto (its `aws s3 sync` shim talks to moto's S3).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.infra import test_remote_train as _remote
from traingate.config import parse_config
from traingate.infra.remote import RemoteExecutor

# The SSM channel's fixtures (a running moto instance with the SSM fake, moto's S3 bucket).
bucket, executor, running, job_for = _remote.bucket, _remote.executor, _remote.running, _remote.job_for

RESUMABLE = r"""
import json, os, pathlib, time
ck = pathlib.Path(os.environ["TRAINGATE_CHECKPOINT_DIR"]) / "step.txt"
start = int(ck.read_text()) if ck.exists() else 0
print("resumed from", start, flush=True)
for step in range(start, 4):
    ck.write_text(str(step + 1))
    print("step", step, flush=True)
    if step == 1 and start == 0:
        time.sleep(1.5)  # a periodic sync (every 0.2 s here) carries step 2 to S3
        os.system(f"pkill -KILL -s {os.getsid(0)}")  # the spot reclaim: everything dies at once
        time.sleep(30)
out = pathlib.Path("outputs"); out.mkdir(exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"dice": 0.9, "iou": 0.8, "resumed_from": start}))
(out / "model.npz").write_bytes(b"weights")
"""


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    work = tmp_path / "meters"
    work.mkdir()
    (work / "train.py").write_text(RESUMABLE)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(work), *args], check=True, capture_output=True, text=True
        ).stdout

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-qm", "resumable training")
    return work, git("rev-parse", "HEAD").strip()


def test_a_rerun_after_a_spot_reclaim_resumes_from_the_synced_checkpoint(
    project: Any, bucket: Any, executor: Callable[..., RemoteExecutor]
) -> None:
    url = "s3://tg-runs/checkpoints/meters"
    # The executor's polls advance the fake clock while the script runs in real time, so on a loaded
    # machine many polls pass: a 10-minute job timeout then fired (exit 124) before the reclaim.
    # This test is about resuming, not timeouts.
    NO_TIMEOUT = 10**9
    env = {"TRAINGATE_CHECKPOINT_SYNC_SECONDS": "0.2"}
    lines: list[str] = []
    first = executor().run(
        job_for(project, env=env, checkpoint_url=url, timeout_seconds=NO_TIMEOUT), lines.append
    )
    assert first.exit_code == 137  # reclaimed: died without an exit code
    assert bucket.get_object(Bucket="tg-runs", Key="checkpoints/meters/step.txt")["Body"].read() == b"2"
    second = executor().run(
        job_for(project, env=env, checkpoint_url=url, timeout_seconds=NO_TIMEOUT), lines.append
    )
    assert second.exit_code == 0, second.log_tail
    metrics = (second.outputs_dir / "outputs" / "metrics.json").read_text()
    assert '"resumed_from": 2' in metrics  # not from zero
    assert "resumed from 2" in lines
    # The end of the run is synced too (the trap), so a later re-run would start after step 4.
    assert bucket.get_object(Bucket="tg-runs", Key="checkpoints/meters/step.txt")["Body"].read() == b"4"


def test_without_checkpoint_s3_the_job_script_is_unchanged(project: Any) -> None:
    from traingate.infra.remote import _job_script

    script = _job_script(job_for(project), "ref")
    assert "TRAINGATE_CHECKPOINT_DIR" not in script and "aws s3 sync" not in script


def test_train_checkpoint_s3_reaches_the_job(tmp_path: Path) -> None:
    cfg = parse_config({"train": {"where": "instance", "checkpoint_s3": "s3://b/ck"}}, base_dir=tmp_path)
    assert cfg.train.checkpoint_s3 == "s3://b/ck"


def test_checkpoint_s3_must_be_an_s3_url(tmp_path: Path) -> None:
    from traingate.errors import ConfigError

    with pytest.raises(ConfigError, match="checkpoint_s3 must be an s3://bucket/prefix URL"):
        parse_config({"train": {"checkpoint_s3": "/tmp/ck"}}, base_dir=tmp_path)
