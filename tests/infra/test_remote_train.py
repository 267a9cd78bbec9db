"""Training on the instance over SSM: shipping at the commit, detached runs, streaming, re-attach.

The instance is a moto EC2 instance; its disk is the SSM fake's sandbox, where the commands
really run (bash, tar, sha256sum, python) and `aws s3 cp` reaches moto's S3.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from tests.infra.conftest import ScriptedEc2
from traingate.contracts import TrainJob
from traingate.errors import ConfigError, TrainError
from traingate.infra.remote import RemoteExecutor, S3Location

TRAIN_PY = """
import json, os, sys, time, pathlib
out = pathlib.Path("outputs"); out.mkdir(exist_ok=True)
mode = os.environ.get("MODE", "ok")
for i in range(int(os.environ.get("EPOCHS", "3"))):
    print(f"epoch {i} loss {1 / (i + 1):.3f}", flush=True)
    with open(out / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps({"step": i, "loss": 1 / (i + 1)}) + "\\n")
    time.sleep(float(os.environ.get("PAUSE", "0")))
if mode == "big":
    for n in range(3000):
        print(f"line {n:05d} " + "x" * 90)
    print("end-of-big", flush=True)
if mode == "fail":
    print("boom", file=sys.stderr)
    sys.exit(3)
if mode == "kill":  # the OOM killer or an operator takes the whole run down
    os.system(f"pkill -KILL -s {os.getsid(0)}")
if mode == "slow":
    time.sleep(60)
if mode == "wait":  # until the test says so (a long run, in real seconds kept short)
    while not os.path.exists(os.environ["GO_FILE"]):
        time.sleep(0.05)
(out / "metrics.json").write_text(json.dumps({"dice": 0.9, "iou": 0.8}))
if mode != "noart":
    (out / "model.npz").write_bytes(b"weights")
if mode == "mlmodel":
    (out / "model").mkdir(exist_ok=True)
    (out / "model" / "MLmodel").write_text("flavors: {}\\n")
    (out / "params.json").write_text(json.dumps({"lr": 0.1}))
print("done", flush=True)
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def project(tmp_path: Path) -> tuple[Path, str]:
    """A git repository whose training code lives in a subfolder (field report 5)."""
    repo = tmp_path / "repo"
    work = repo / "models" / "seg"
    work.mkdir(parents=True)
    (work / "train.py").write_text(TRAIN_PY)
    (work / "lib").mkdir()
    (work / "lib" / "util.py").write_text("X = 1\n")
    (repo / "README.md").write_text("not shipped: outside train.workdir\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "train")
    return work, _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def bucket(aws_env: str) -> Any:
    import boto3

    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="tg-runs")
    return s3


@pytest.fixture
def running(instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm) -> str:
    ec2.inner.start(instance_id)
    return instance_id


def job_for(project: tuple[Path, str], **kw: Any) -> TrainJob:
    work, commit = project
    env = kw.pop("env", {})
    return TrainJob(
        command=kw.pop("command", "python train.py"),
        workdir=work,
        env={"MODE": "ok", **env},
        timeout_seconds=kw.pop("timeout_seconds", 600),
        metrics_file="outputs/metrics.json",
        metrics_log="outputs/metrics.jsonl",
        artifacts=["outputs/model.npz"],
        commit=commit,
        **kw,
    )


@pytest.fixture
def executor(
    running: str, ssm: FakeSsm, bucket: Any, clock: FakeClock, tmp_path: Path
) -> Callable[..., RemoteExecutor]:
    """A RemoteExecutor on the running instance, the fake SSM and moto's S3 (extra options as kwargs)."""

    def make(**kw: Any) -> RemoteExecutor:
        return RemoteExecutor(
            ssm=ssm,
            s3=bucket,
            instance_id=running,
            location=S3Location("tg-runs", "ci/traingate"),
            outputs_root=tmp_path / "outputs",
            runtime=clock.runtime(),
            **kw,
        )

    return make


def test_success_ships_the_commit_streams_and_brings_outputs_back(
    project: Any, running: str, ssm: FakeSsm, executor: Callable[..., RemoteExecutor]
) -> None:
    lines: list[str] = []
    refs: list[str] = []
    ex = executor(on_launch=refs.append)
    outcome = ex.run(job_for(project, setup="echo installing deps; echo deps ok"), lines.append)
    assert outcome.exit_code == 0 and not outcome.killed
    assert outcome.run_ref == refs[0]
    assert (outcome.outputs_dir / "outputs" / "metrics.json").exists()
    assert (outcome.outputs_dir / "outputs" / "model.npz").read_bytes() == b"weights"
    assert len((outcome.outputs_dir / "outputs" / "metrics.jsonl").read_text().splitlines()) == 3
    text = "\n".join(lines)
    assert "code verified" in text and "2 files" in text  # the workdir only, at the commit
    assert "installing deps" in text and "deps ok" in text  # setup output streamed
    assert "epoch 2 loss" in text and "done" in outcome.log_tail
    code = ssm.remote_root(running) / "runs" / outcome.run_ref / "code"
    assert sorted(p.relative_to(code).as_posix() for p in code.rglob("*.py")) == ["lib/util.py", "train.py"]
    assert (code.parent / "exit_code").read_text().strip() == "0"


def test_model_dir_and_params_file_come_back_when_they_exist(
    project: Any, executor: Callable[..., RemoteExecutor]
) -> None:
    """Issue #12.3: the runner logs train.model_dir and train.params_file, so they must come back."""
    job = job_for(project, env={"MODE": "mlmodel"}, optional_outputs=["outputs/params.json", "outputs/model"])
    outcome = executor().run(job, lambda _line: None)
    assert (outcome.outputs_dir / "outputs" / "model" / "MLmodel").read_text() == "flavors: {}\n"
    assert (outcome.outputs_dir / "outputs" / "params.json").is_file()
    without = executor().run(job_for(project, optional_outputs=["outputs/model"]), lambda _line: None)
    assert without.exit_code == 0 and not (without.outputs_dir / "outputs" / "model").exists()


def test_uncommitted_script_change_is_not_shipped(
    project: Any, executor: Callable[..., RemoteExecutor]
) -> None:
    work, _ = project
    (work / "train.py").write_text("raise SystemExit('working tree, not the commit')\n")
    lines: list[str] = []
    outcome = executor().run(job_for(project), lines.append)
    assert outcome.exit_code == 0
    assert any("uncommitted changes" in line for line in lines)


def test_wrong_script_path_fails_before_shipping(
    project: Any, ssm: FakeSsm, bucket: Any, executor: Callable[..., RemoteExecutor]
) -> None:
    work, _ = project
    with pytest.raises(TrainError) as info:
        executor().run(job_for(project, command="python src/train.py --epochs 3"), lambda _: None)
    assert str(work / "src" / "train.py") in info.value.message
    assert "train.workdir" in info.value.message
    assert "Contents" not in bucket.list_objects_v2(Bucket="tg-runs")  # nothing shipped
    assert ssm.calls["send"] == 0


def test_failing_command_returns_its_exit_code(project: Any, executor: Callable[..., RemoteExecutor]) -> None:
    outcome = executor().run(job_for(project, env={"MODE": "fail"}), print)
    assert outcome.exit_code == 3 and not outcome.killed
    assert "boom" in outcome.log_tail


def test_killed_process_is_not_success(project: Any, executor: Callable[..., RemoteExecutor]) -> None:
    outcome = executor().run(job_for(project, env={"MODE": "kill"}), print)
    # Not a timeout: reported as SIGKILL's exit code, with the reason in the log tail.
    assert outcome.exit_code == 137 and not outcome.killed
    assert "died without writing an exit code" in outcome.log_tail
    assert not (outcome.outputs_dir / "outputs" / "metrics.json").exists()


def test_missing_artifact_is_reported_not_invented(
    project: Any, executor: Callable[..., RemoteExecutor]
) -> None:
    lines: list[str] = []
    outcome = executor().run(job_for(project, env={"MODE": "noart"}), lines.append)
    assert outcome.exit_code == 0
    assert (outcome.outputs_dir / "outputs" / "metrics.json").exists()
    assert not (outcome.outputs_dir / "outputs" / "model.npz").exists()
    assert any("not produced on the instance: outputs/model.npz" in line for line in lines)


def test_log_larger_than_the_ssm_output_cap_is_streamed_whole(
    project: Any, executor: Callable[..., RemoteExecutor]
) -> None:
    lines: list[str] = []
    outcome = executor().run(job_for(project, env={"MODE": "big"}), lines.append)
    assert outcome.exit_code == 0
    numbered = [line for line in lines if line.startswith("line ")]
    assert len(numbered) == 3000  # ~290 KB through a 24,000-character window
    assert numbered[-1].startswith("line 02999") and "end-of-big" in lines


def test_timeout_kills_on_the_instance(project: Any, executor: Callable[..., RemoteExecutor]) -> None:
    ex = executor(grace_seconds=10**9)
    outcome = ex.run(job_for(project, env={"MODE": "slow"}, timeout_seconds=1), print)
    assert outcome.exit_code == 124 and outcome.killed
    assert "killed after train.timeout_minutes" in outcome.log_tail


def test_a_script_exiting_124_is_not_a_timeout(project: Any, executor: Callable[..., RemoteExecutor]) -> None:
    outcome = executor().run(job_for(project, command="exit 124"), print)
    assert outcome.exit_code == 124 and not outcome.killed


def test_runner_kills_a_run_the_instance_did_not_stop(
    project: Any, running: str, ssm: FakeSsm, executor: Callable[..., RemoteExecutor]
) -> None:
    ex = executor(grace_seconds=0)
    outcome = ex.run(job_for(project, env={"MODE": "slow"}, timeout_seconds=5), print)
    assert outcome.killed and outcome.exit_code == 124
    pid = (ssm.remote_root(running) / "runs" / outcome.run_ref / "pid").read_text().strip()
    import time

    for _ in range(200):  # SIGKILL is delivered asynchronously
        states = subprocess.run(
            ["ps", "-o", "stat=", "-s", pid], capture_output=True, text=True
        ).stdout.split()
        if all(st.startswith("Z") for st in states):
            break
        time.sleep(0.01)
    assert all(st.startswith("Z") for st in states), states  # killed (zombies await their reaper)


def test_reattach_after_a_runner_disconnect(
    project: Any, running: str, executor: Callable[..., RemoteExecutor]
) -> None:
    refs: list[str] = []

    def flaky(line: str) -> None:
        if line.startswith("epoch 1"):
            raise ConnectionError("runner lost")

    job = job_for(project, env={"EPOCHS": "4", "PAUSE": "0.3"})
    with pytest.raises(ConnectionError):
        executor(on_launch=refs.append).run(job, flaky)
    # The training kept running on the instance; a new runner follows it to the end.
    lines: list[str] = []
    outcome = executor().attach(refs[0], job, lines.append)
    assert outcome.exit_code == 0 and outcome.run_ref == refs[0]
    assert [line for line in lines if line.startswith("epoch")] == [
        f"epoch {i} loss {1 / (i + 1):.3f}" for i in range(4)
    ]
    assert (outcome.outputs_dir / "outputs" / "model.npz").exists()


def test_attach_to_unknown_run(project: Any, executor: Callable[..., RemoteExecutor]) -> None:
    with pytest.raises(TrainError, match="no run 2026-nope"):
        executor().attach("2026-nope", job_for(project), print)


def test_instance_stopping_mid_run_fails_with_reattach_hint(
    project: Any, running: str, ec2: ScriptedEc2, executor: Callable[..., RemoteExecutor]
) -> None:
    def stop_on_first_epoch(line: str) -> None:
        if line.startswith("epoch 0"):
            ec2.inner.stop(running)

    ex = executor(instance_state=lambda: ec2.inner.describe(running).state)
    with pytest.raises(TrainError) as info:
        ex.run(job_for(project, env={"EPOCHS": "50", "PAUSE": "0.2"}), stop_on_first_epoch)
    assert "instance stopped" in info.value.message
    assert "--attach" in (info.value.hint or "")


def test_long_run_renews_watchdog_and_lease(
    project: Any,
    running: str,
    ssm: FakeSsm,
    clock: FakeClock,
    tmp_path: Path,
    executor: Callable[..., RemoteExecutor],
) -> None:
    go = tmp_path / "go"
    renewals: list[float] = []

    def renew() -> None:
        renewals.append(clock())
        if len(renewals) == 3:
            go.touch()  # the run ends only after three renewals

    # ttl of 10 minutes: a poll renews once 200 s of (fake) time passed.
    ex = executor(ttl_minutes=10, grace_seconds=10**9, renew=renew, poll_cap=7.0)
    clock_step: Callable[[float], None] = clock.sleep

    def slow_sleep(seconds: float) -> None:
        # Only the executor's own waits between polls (>= 4 s once backed off) run 100 s fast;
        # the short waits inside one SSM command (<= 2 s) stay as they are.
        clock_step(seconds + (100 if seconds >= 4 else 0))

    ex.sleep = slow_sleep
    outcome = ex.run(job_for(project, env={"MODE": "wait", "GO_FILE": str(go)}), print)
    assert outcome.exit_code == 0 and len(renewals) >= 3
    fake_minutes = outcome.duration_seconds / 60  # on the fake clock: behaviour, not a wall-clock figure
    assert fake_minutes > 10  # longer than the ttl, yet never stopped
    assert running not in ssm.watchdog_fired
    assert (ssm.shutdown_at(running) or 0) >= renewals[-1] + 400  # pushed out by the last renewal


def test_s3_location_is_required(tmp_path: Path) -> None:
    from traingate.config import parse_config
    from traingate.infra.remote import s3_location

    with pytest.raises(ConfigError, match=r"infra\.s3_prefix"):
        s3_location(parse_config({}, base_dir=tmp_path))
    cfg = parse_config({"store": {"remote": "s3://data/set"}}, base_dir=tmp_path)
    assert s3_location(cfg).url("runs", "x") == "s3://data/set/traingate-runs/runs/x"
