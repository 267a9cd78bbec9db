"""The `infra` commands through the CLI (clients overridden), holder ids, and the SSM fake itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from tests.infra.conftest import ScriptedEc2
from traingate import gha
from traingate.cli import cli
from traingate.config import parse_config
from traingate.gha import ActionsContext
from traingate.infra.aws import override_clients
from traingate.infra.base import SsmUnreachableError
from traingate.infra.ssm import run_command
from traingate.infra.stage import resolve_holder


def write_cfg(tmp_path: Path, instance_id: str) -> Path:
    path = tmp_path / "traingate.yml"
    path.write_text(
        "infra:\n  backend: ec2\n"
        f"  instance: {{id: {instance_id}}}\n"
        "  ready: [running, ssm]\n  ttl_minutes: 30\n  poll_cap_seconds: 0.05\n"
        "  mlflow_url: 'http://{private_ip}:5000'\n"
    )
    return path


def test_start_and_stop_through_the_cli_write_outputs(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_cfg(tmp_path, instance_id)
    out = tmp_path / "out.txt"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/meters")
    monkeypatch.setenv("GITHUB_RUN_ID", "77")
    monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "1")
    runner = CliRunner()
    with override_clients(ec2=ec2, ssm=ssm):
        started = runner.invoke(cli, ["--config", str(cfg), "infra", "start"])
        assert started.exit_code == 0, started.output
        outputs = gha.read_outputs(out)
        assert outputs["instance_id"] == instance_id and outputs["state"] == "running"
        assert outputs["holder"] == "acme/meters/77/1"
        assert outputs["mlflow_url"] == f"http://{outputs['private_ip']}:5000"
        # A re-run (attempt 2) starts again, then its stop job gets attempt 2's holder passed
        # explicitly (as stop-infra.yml does): attempt 1's holder is released too.
        monkeypatch.setenv("GITHUB_RUN_ATTEMPT", "2")
        assert runner.invoke(cli, ["--config", str(cfg), "infra", "start"]).exit_code == 0
        out.write_text("")
        stopped = runner.invoke(
            cli, ["--config", str(cfg), "--json", "infra", "stop", "--holder", "acme/meters/77/2"]
        )
    assert stopped.exit_code == 0, stopped.output
    assert gha.read_outputs(out) == {
        "instance_id": instance_id,
        "state": "stopped",
        "stopped": "true",
        "remaining_holders": "[]",
    }
    assert json.loads(stopped.stdout.strip().splitlines()[-1])["ok"] is True


def test_cli_exit_1_for_terminated_instance(
    tmp_path: Path, aws_env: str, ec2: ScriptedEc2, ssm_fake: FakeSsm
) -> None:
    from tests.infra.conftest import make_instance

    iid = make_instance("dead", state="terminated")
    with override_clients(ec2=ec2, ssm=ssm_fake):
        result = CliRunner().invoke(cli, ["--config", str(write_cfg(tmp_path, iid)), "infra", "start"])
    assert result.exit_code == 1
    assert "terminated" in result.output and "next step" in result.output


def test_cli_status_and_reap_on_local_backend(tmp_path: Path) -> None:
    runner = CliRunner()
    cfg = tmp_path / "traingate.yml"
    cfg.write_text("project: p\n")
    assert runner.invoke(cli, ["--config", str(cfg), "infra", "start", "--holder", "me"]).exit_code == 0
    status = runner.invoke(cli, ["--config", str(cfg), "--json", "infra", "status"])
    assert status.exit_code == 0
    payload = json.loads(status.stdout.strip().splitlines()[-1])
    assert payload["outputs"]["holders"] == ["me"] and payload["outputs"]["state"] == "running"
    reap = runner.invoke(cli, ["--config", str(cfg), "--json", "infra", "reap"])
    assert json.loads(reap.stdout.strip().splitlines()[-1])["outputs"]["reaped"] == []
    stop = runner.invoke(cli, ["--config", str(cfg), "infra", "stop"])  # holder read from the state file
    assert stop.exit_code == 0 and "stopped" in stop.output


def test_holder_ids(tmp_path: Path) -> None:
    cfg = parse_config({}, base_dir=tmp_path)
    local_run = ActionsContext()
    assert resolve_holder("explicit", cfg, actions=local_run) == "explicit"
    local = resolve_holder(None, cfg, actions=local_run)
    assert "@" in local and local.endswith(f":{__import__('os').getpid()}")
    from traingate.state import update_state

    update_state(cfg.workspace_dir, infra_holder="alice@box:1")
    assert resolve_holder(None, cfg, actions=local_run, for_stop=True) == "alice@box:1"
    actions = ActionsContext.from_env({"GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "5"})
    assert resolve_holder(None, cfg, actions=actions) == "o/r/5/1"
    assert resolve_holder(None, cfg, actions=actions, for_stop=True) == "o/r/5/1"
    retried = ActionsContext(repository="o/r", run_id="5", run_attempt="3")
    assert resolve_holder(None, cfg, actions=retried) == "o/r/5/3"
    assert resolve_holder(None, cfg, actions=ActionsContext(run_id="5")) == "actions/5/1"


# ------------------------------------------------------------------------------- the SSM fake
def test_fake_ping_goes_online_after_the_delay(
    instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, clock: FakeClock
) -> None:
    assert ssm.ping_status(instance_id) == "ConnectionLost"  # stopped
    ssm.online_after = 60
    ec2.inner.start(instance_id)
    assert ssm.ping_status(instance_id) == "ConnectionLost"
    with pytest.raises(SsmUnreachableError):
        ssm.send(instance_id, "true", timeout_seconds=10)
    clock.advance(61)
    assert ssm.ping_status(instance_id) == "Online"
    assert FakeSsm(ssm.root).ping_status("i-unknown") == ""


def test_fake_statuses_output_cap_and_timeout(
    instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, clock: FakeClock
) -> None:
    ec2.inner.start(instance_id)
    ssm.pending_for = 5
    cid = ssm.send(instance_id, "echo hi; exit 4", timeout_seconds=10)
    assert ssm.invocation(cid, instance_id).status == "Pending"
    clock.advance(5)
    inv = run_command(ssm, instance_id, "echo hi; exit 4", timeout_seconds=10, runtime=clock.runtime())
    assert (inv.status, inv.exit_code, inv.stdout) == ("Failed", 4, "hi\n")
    ssm.pending_for = 0
    big = run_command(
        ssm,
        instance_id,
        "head -c 100000 /dev/zero | tr '\\0' a",
        timeout_seconds=10,
        runtime=clock.runtime(),
    )
    assert big.status == "Success" and len(big.stdout) == 24000
    slow = run_command(ssm, instance_id, "sleep 5", timeout_seconds=1, runtime=clock.runtime())
    assert slow.status == "TimedOut"


def test_fake_stop_kills_detached_processes(
    instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, clock: FakeClock
) -> None:
    ec2.inner.start(instance_id)
    inv = run_command(
        ssm,
        instance_id,
        "setsid nohup sleep 300 >/dev/null 2>&1 < /dev/null & echo $!",
        timeout_seconds=10,
        runtime=clock.runtime(),
    )
    pid = int(inv.stdout.strip())
    import os

    os.kill(pid, 0)  # alive, detached from the command
    ec2.inner.stop(instance_id)
    assert ssm.ping_status(instance_id) == "ConnectionLost"
    from tests.fixtures.ssm_fake import _alive

    assert not _alive(pid)


def test_override_clients_rejects_unknown_names() -> None:
    with pytest.raises(TypeError, match="unknown client"), override_clients(sts=object()):
        pass


def _unused(*_: Any) -> None:  # keeps type checkers quiet about fixtures used for side effects
    pass


def test_stop_clears_the_scheduled_shutdown(
    instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, clock: FakeClock
) -> None:
    ec2.inner.start(instance_id)
    run_command(ssm, instance_id, "shutdown -h +5", timeout_seconds=10, runtime=clock.runtime())
    assert ssm.shutdown_at(instance_id) is not None
    ec2.inner.stop(instance_id)
    ssm.tick(instance_id)
    assert ssm.shutdown_at(instance_id) is None


def test_boto3_ssm_sets_execution_timeout(aws_env: str, instance_id: str) -> None:
    """SSM's default executionTimeout is one hour (field report 2): every command sets its own."""
    import boto3

    from traingate.infra.ssm import Boto3Ssm

    client = boto3.client("ssm", region_name="us-east-1")
    command_id = Boto3Ssm(client).send(instance_id, "echo hi", timeout_seconds=5400, comment="t")
    sent = client.list_commands(CommandId=command_id)["Commands"][0]
    assert sent["Parameters"]["executionTimeout"] == ["5400"]
    assert sent["DocumentName"] == "AWS-RunShellScript"


def test_boto3_ssm_ping_and_missing_invocation() -> None:
    import boto3
    from botocore.stub import Stubber

    from traingate.infra.ssm import Boto3Ssm

    client = boto3.client("ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    stub = Stubber(client)
    stub.add_response(
        "describe_instance_information",
        {"InstanceInformationList": [{"InstanceId": "i-1", "PingStatus": "ConnectionLost"}]},
    )
    stub.add_response("describe_instance_information", {"InstanceInformationList": []})
    stub.add_client_error("get_command_invocation", service_error_code="InvocationDoesNotExist")
    stub.add_client_error("send_command", service_error_code="InvalidInstanceId")
    with stub:
        ssm = Boto3Ssm(client)
        assert ssm.ping_status("i-1") == "ConnectionLost"
        assert ssm.ping_status("i-1") == ""
        assert ssm.invocation("0" * 36, "i-1").status == "Pending"
        with pytest.raises(SsmUnreachableError, match="not online"):
            ssm.send("i-1", "true", timeout_seconds=10)


def test_make_remote_executor_through_overrides(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, aws_env: str
) -> None:
    import boto3

    from traingate.errors import TrainError
    from traingate.infra.remote import make_remote_executor

    cfg = parse_config(
        {
            "infra": {"backend": "ec2", "instance": {"id": instance_id}, "s3_prefix": "s3://b/p"},
            "train": {"where": "instance"},
        },
        base_dir=tmp_path,
    )
    s3 = boto3.client("s3", region_name="us-east-1")
    with override_clients(ec2=ec2, ssm=ssm, s3=s3):
        with pytest.raises(TrainError, match="is stopped"):
            make_remote_executor(cfg)
        ec2.inner.start(instance_id)
        ex = make_remote_executor(cfg)
    assert ex.instance_id == instance_id and ex.ssm is ssm and ex.s3 is s3
    assert ex.location.url("runs") == "s3://b/p/runs"
    assert ex.ttl_minutes == cfg.infra.ttl_minutes
