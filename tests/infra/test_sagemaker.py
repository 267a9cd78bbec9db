"""`infra.backend: sagemaker`: a SageMaker training job per run, on moto's server plus a fake
that executes the job as SageMaker would (tests/fixtures/sagemaker_fake.py).

moto records the job (and answers Search, tags, IAM and ECR); the fake runs its entry script in
an `/opt/ml` layout, writes the output archive to moto's S3 and sets FailureReason. The MLflow
side is the real adapter on sqlite, so "logged exactly as a local run" is checked on the run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sagemaker_fake import FakeSageMaker
from tests.fixtures.ssm_fake import FakeClock
from tests.fixtures.tracking_project import *  # noqa: F403 - `project` (a real MLflow on sqlite)
from tests.tracking.helpers import Project, open_adapter
from traingate.config import Config
from traingate.errors import ConfigError, InfraError, TrainError
from traingate.infra.aws import override_clients
from traingate.infra.base import WALL
from traingate.infra.remote import make_remote_executor
from traingate.infra.sagemaker import SageMakerChannel
from traingate.infra.stage import reap_step, start_step, status_step, stop_step
from traingate.pipeline.train import train_step

LOG: list[str] = []
ROLE = "arn:aws:iam::123456789012:role/traingate-sagemaker"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/train:latest"
TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}

#: A training script that checkpoints every step and resumes from TRAINGATE_CHECKPOINT_DIR.
RESUMABLE = r"""
import json, os, pathlib, time
ck = pathlib.Path(os.environ["TRAINGATE_CHECKPOINT_DIR"]) / "step.txt"
start = int(ck.read_text()) if ck.exists() else 0
print("resumed from", start, flush=True)
for step in range(start, 4):
    ck.write_text(str(step + 1))
    print("step", step, flush=True)
    if step == 1 and start == 0:
        time.sleep(60)  # the spot reclaim comes here
out = pathlib.Path("outputs"); out.mkdir(exist_ok=True)
(out / "metrics.json").write_text(json.dumps({"dice": 0.8, "iou": 0.7, "resumed_from": start}))
(out / "model.bin").write_bytes(b"w")
"""


@pytest.fixture
def world(
    aws_env: str, tmp_path: Path, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeSageMaker]:
    import boto3

    for name in ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="tg-sm")
    boto3.client("iam", region_name="us-east-1").create_role(
        RoleName="traingate-sagemaker", AssumeRolePolicyDocument=json.dumps(TRUST)
    )
    ecr = boto3.client("ecr", region_name="us-east-1")
    ecr.create_repository(repositoryName="train")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
    ecr.put_image(repositoryName="train", imageManifest=json.dumps(manifest), imageTag="latest")
    fake = FakeSageMaker(tmp_path / "sagemaker", clock=fake_clock)
    with override_clients(sagemaker=fake):
        yield fake
    fake.close()


def sm_cfg(project: Project, *, spot: bool = False, env: dict[str, str] | None = None, **sm: Any) -> Config:
    return project.config(
        infra={
            "backend": "sagemaker",
            "ttl_minutes": 60,
            "sagemaker": {
                "role_arn": ROLE,
                "image": IMAGE,
                "instance_type": "ml.g5.xlarge",
                "spot": spot,
                "checkpoint_s3": "s3://tg-sm/checkpoints",
                "code_s3": "s3://tg-sm/code",
                **sm,
            },
        },
        train={"env": {"DICE": "0.81", "IOU": "0.7", **(env or {})}},
    )


def start(cfg: Config, clock: FakeClock, holder: str = "run-a") -> Any:
    return start_step(cfg, holder, runtime=clock.runtime(LOG.append))


def channel(cfg: Config, clock: FakeClock) -> SageMakerChannel:
    ex = make_remote_executor(cfg, runtime=clock.runtime())
    assert isinstance(ex, SageMakerChannel)  # the backend's run channel, not SSM
    return ex


def quiet(_line: str) -> None:
    return None


def test_switching_to_sagemaker_is_one_key(project: Project) -> None:
    assert project.config(infra={"backend": "sagemaker"}).train.where == "instance"
    with pytest.raises(ConfigError, match=r"train\.where is runner"):
        project.config(infra={"backend": "sagemaker"}, train={"where": "runner"})


def test_start_checks_role_image_and_says_what_it_cannot(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    result = start(sm_cfg(project), fake_clock)
    assert result.outputs["instance_id"] == "sagemaker:ml.g5.xlarge"
    assert result.outputs["market"] == "on-demand"
    assert "role ok, image ok, quota unchecked" in result.summary
    assert any("quota" in w and "unchecked" in w for w in result.warnings)  # moto: no service-quotas
    assert world.calls.get("create") is None  # the job starts in `train`, not here


def test_start_refuses_a_missing_role_and_a_missing_image(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    with pytest.raises(InfraError, match="role nobody does not exist"):
        start(sm_cfg(project, role_arn="arn:aws:iam::123456789012:role/nobody"), fake_clock)
    other = IMAGE.replace(":latest", ":v9")
    with pytest.raises(InfraError, match="ImageNotFoundException"):
        start(sm_cfg(project, image=other), fake_clock)
    with pytest.raises(ConfigError, match="code_s3"):
        start(sm_cfg(project, code_s3=""), fake_clock)


def test_start_refuses_a_quota_below_instance_count(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    world.quotas["ml.g5.xlarge for spot training job usage"] = 1
    with pytest.raises(
        InfraError, match=r"quota for ml\.g5\.xlarge spot training jobs is 1, the job needs 2"
    ):
        start(sm_cfg(project, spot=True, max_wait_minutes=5, instance_count=2), fake_clock)


def test_happy_path_logs_to_mlflow_like_a_local_run(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    cfg = sm_cfg(project, env={"EPOCHS": "5"})
    start(cfg, fake_clock)
    lines: list[str] = []
    result = train_step(cfg, executor=channel(cfg, fake_clock), log=lines.append)
    run_id = result.outputs["run_id"]
    assert result.outputs["metrics"] == {"dice": 0.81, "iou": 0.7}
    tr = open_adapter(cfg)
    run = tr.get_run(run_id)
    assert run.status == "FINISHED"
    assert run.metrics == {"dice": 0.81, "iou": 0.7, "loss": 0.2}
    assert len(tr._client.get_metric_history(run_id, "loss")) == 5  # the metrics log, from the archive
    assert tr.list_artifacts(run_id, "model") == ["model/model.bin"]
    assert "epoch 4" in lines and "done" in lines  # the job's log reached the step's log
    (name,) = world.jobs
    req = world.jobs[name].request
    assert req["StoppingCondition"] == {"MaxRuntimeInSeconds": 60}  # train.timeout_minutes 1
    assert req["EnableManagedSpotTraining"] is False
    assert req["CheckpointConfig"]["S3Uri"] == "s3://tg-sm/checkpoints"
    assert req["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert "MLFLOW_RUN_ID" not in json.dumps(req)  # the environment travels in run.sh, not the job
    tags = {t["Key"]: t["Value"] for t in req["Tags"]}
    assert tags["traingate:holder"] == "run-a" and tags["traingate:backend"] == "sagemaker"
    # The job is over: stop has nothing left to stop.
    assert stop_step(cfg, "run-a", runtime=fake_clock.runtime(LOG.append)).outputs["stopped"]


def test_failing_job_surfaces_failure_reason_and_log_tail(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    cfg = sm_cfg(project, env={"MODE": "fail"})
    start(cfg, fake_clock)
    outcome = channel(cfg, fake_clock).run(_job(cfg), quiet)
    assert outcome.exit_code == 3  # the command's own exit code, from FailureReason
    assert "FailureReason: AlgorithmError: traingate exit 3" in outcome.log_tail
    with pytest.raises(TrainError, match="exited with code 3") as err:
        train_step(cfg, executor=channel(cfg, fake_clock), log=quiet)
    assert "CUDA out of memory" in err.value.message


def test_timeout_stops_the_job_and_says_timed_out(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    cfg = sm_cfg(project, env={"MODE": "sleep"})  # sleeps 60 s; MaxRuntimeInSeconds is 60
    start(cfg, fake_clock)
    with pytest.raises(TrainError, match="timed out after 1 minutes"):
        train_step(cfg, executor=channel(cfg, fake_clock), log=quiet)
    (job,) = world.jobs.values()
    assert (job.status, job.secondary) == ("Stopped", "MaxRuntimeExceeded")
    assert max(fake_clock.slept) <= 30  # capped backoff (poll_cap_seconds 5 x 6)


class Cancel(KeyboardInterrupt):
    pass


def test_stop_after_a_cancelled_train_stops_the_running_job(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    cfg = sm_cfg(project, env={"MODE": "sleep"})
    start(cfg, fake_clock)

    def cancel(line: str) -> None:
        if line == "epoch 2":
            raise Cancel  # the workflow is cancelled while the job trains

    with pytest.raises(Cancel):
        channel(cfg, fake_clock).run(_job(cfg), cancel)
    (name,) = world.jobs
    assert world.describe(name).status == "InProgress"  # billing, until stop-infra runs
    assert status_step(cfg, runtime=fake_clock.runtime()).data["instance_id"] == name
    stopped = stop_step(cfg, "run-a", runtime=fake_clock.runtime(LOG.append))
    assert stopped.outputs == {
        "instance_id": name,
        "state": "terminated",
        "stopped": True,
        "remaining_holders": [],
    }
    assert world.describe(name).status == "Stopped"
    again = stop_step(cfg, "run-a", runtime=fake_clock.runtime(LOG.append))
    assert again.outputs["stopped"] and "nothing to stop" in again.message  # idempotent


def test_spot_interruption_resumes_from_checkpoints(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3

    (project.root / "resumable.py").write_text(RESUMABLE)
    cfg = sm_cfg(project, spot=True, max_wait_minutes=5)
    cfg.train.command = cfg.train.command.replace("train.py", "resumable.py")
    start(cfg, fake_clock)
    interrupted: list[str] = []
    plain = FakeSageMaker.describe

    def describe(self: FakeSageMaker, name: str) -> Any:
        ck = self.ml(name) / "checkpoints" / "step.txt"
        if not interrupted and ck.exists() and ck.read_text() == "2":
            interrupted.append(name)
            self.interrupt(name)  # the spot instance is reclaimed mid-run
        return plain(self, name)

    monkeypatch.setattr(FakeSageMaker, "describe", describe)
    outcome = channel(cfg, fake_clock).run(_job(cfg), quiet)
    assert outcome.exit_code == 0 and interrupted
    metrics = json.loads((outcome.outputs_dir / "outputs" / "metrics.json").read_text())
    assert metrics["resumed_from"] == 2  # not from zero
    (job,) = world.jobs.values()
    assert job.attempts == 2
    assert job.request["EnableManagedSpotTraining"] is True
    assert job.request["StoppingCondition"] == {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 300}
    body = boto3.client("s3", region_name="us-east-1").get_object(Bucket="tg-sm", Key="checkpoints/step.txt")
    assert body["Body"].read() == b"4"


def test_spot_max_wait_below_the_timeout_is_a_config_error(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    cfg = sm_cfg(project, spot=True, max_wait_minutes=0.5)
    with pytest.raises(ConfigError, match="MaxWaitTimeInSeconds >= MaxRuntimeInSeconds"):
        start(cfg, fake_clock)


def test_reap_stops_jobs_whose_run_is_over(
    world: FakeSageMaker, project: Project, fake_clock: FakeClock
) -> None:
    cfg = sm_cfg(project, env={"MODE": "sleep"})
    cfg.train.timeout_minutes = 180  # SageMaker's own MaxRuntime would end it only after 3 h
    start(cfg, fake_clock)
    with pytest.raises(Cancel):
        channel(cfg, fake_clock).run(_job(cfg), _cancel_at("epoch 0"))
    (old,) = world.jobs
    reaped = reap_step(cfg, runtime=fake_clock.runtime(LOG.append))
    assert reaped.outputs["reaped"] == [] and "held by run-a" in reaped.message  # its run may be alive
    fake_clock.advance(61 * 60)  # ttl_minutes 60: no renewal since, the run is over
    reaped = reap_step(cfg, runtime=fake_clock.runtime(LOG.append))
    assert reaped.outputs["reaped"] == [old]
    assert world.describe(old).status == "Stopped"
    assert reap_step(cfg, runtime=fake_clock.runtime(LOG.append)).outputs["reaped"] == []


def _cancel_at(marker: str) -> Any:
    def sink(line: str) -> None:
        if line == marker:
            raise Cancel

    return sink


def _job(cfg: Config) -> Any:
    from traingate.contracts import TrainJob

    return TrainJob(
        command=cfg.train.command,
        workdir=cfg.path(cfg.train.workdir).resolve(),
        env=dict(cfg.train.env),
        timeout_seconds=cfg.train.timeout_minutes * 60,
        metrics_file=cfg.train.metrics_file,
        metrics_log=cfg.train.metrics_log,
        artifacts=list(cfg.train.artifacts),
    )


def test_cli_start_and_stop_with_one_key_switched(
    world: FakeSageMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`infra.backend: sagemaker` through the CLI: outputs are the declared ones; a bad role exits 1."""
    import yaml
    from click.testing import CliRunner

    from traingate import gha
    from traingate.cli import cli
    from traingate.outputs import check_values

    out = tmp_path / "github_output"
    out.write_text("")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary"))
    monkeypatch.chdir(tmp_path)
    spec = {"role_arn": ROLE, "image": IMAGE, "spot": True, "code_s3": "s3://tg-sm/code"}
    raw = {"infra": {"backend": "sagemaker", "sagemaker": spec}}
    (tmp_path / "traingate.yml").write_text(yaml.safe_dump(raw))
    started = CliRunner().invoke(cli, ["infra", "start", "--holder", "run-a"])
    assert started.exit_code == 0, started.output
    assert "market<<" in out.read_text() and "spot" in out.read_text()
    result = start_step(parse(tmp_path), "run-a", runtime=WALL.with_log(LOG.append))
    assert check_values("infra start", {k: gha.format_value(v) for k, v in result.outputs.items()}) == []
    stopped = CliRunner().invoke(cli, ["infra", "stop", "--holder", "run-a"])
    assert stopped.exit_code == 0, stopped.output
    spec["role_arn"] = ROLE.replace("traingate-sagemaker", "gone")
    (tmp_path / "traingate.yml").write_text(yaml.safe_dump(raw))
    refused = CliRunner().invoke(cli, ["infra", "start", "--holder", "run-b"])
    assert refused.exit_code == 1 and "role gone does not exist" in refused.output


def parse(folder: Path) -> Config:
    from traingate.config import load_config

    return load_config(folder / "traingate.yml")
