"""`infra start` from every state, readiness, start errors, stop, against moto + the SSM fake."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from tests.infra.conftest import ScriptedEc2, make_cfg, make_instance
from traingate.errors import InfraError
from traingate.infra.stage import start_step, stop_step

LOG: list[str] = []


def run_start(cfg: Any, services: Any, clock: FakeClock, holder: str = "run-a") -> Any:
    return start_step(cfg, holder, runtime=clock.runtime(LOG.append), services=services(cfg))


def run_stop(cfg: Any, services: Any, clock: FakeClock, holder: str = "run-a", **kw: Any) -> Any:
    return stop_step(cfg, holder, runtime=clock.runtime(LOG.append), services=services(cfg), **kw)


def test_start_from_stopped_waits_for_pending_and_arms_watchdog(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    cfg = make_cfg(tmp_path)  # found by tags
    ssm.online_after = 40
    result = run_start(cfg, services, clock)
    assert result.outputs["instance_id"] == instance_id
    assert result.outputs["state"] == "running"
    assert result.outputs["private_ip"]
    assert result.outputs["holder"] == "run-a"
    assert result.outputs["mlflow_url"] == ""
    assert ec2.calls["start"] == 1
    # SSM took 40 s (of the fake clock) to come online: readiness waited for it, not a fixed sleep.
    fake_waited = result.data["waited_seconds"]
    assert fake_waited >= 40
    # The watchdog is armed for ttl_minutes on the instance's clock.
    assert ssm.shutdown_at(instance_id) == pytest.approx(clock() + 60 * 60, abs=120)
    assert any("shutdown -h +60" in s for s in ssm.sent_scripts)


def test_start_when_running_only_checks_readiness(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.inner.start(instance_id)
    cfg = make_cfg(tmp_path, instance_id, mlflow_url="http://{private_ip}:5000")
    result = run_start(cfg, services, clock)
    assert "start" not in ec2.calls
    assert result.outputs["mlflow_url"] == f"http://{result.outputs['private_ip']}:5000"


def test_start_waits_out_stopping_before_starting(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.pretend(instance_id, "stopping", 4)
    LOG.clear()
    result = run_start(make_cfg(tmp_path, instance_id), services, clock)
    assert result.outputs["state"] == "running"
    assert ec2.calls["start"] == 1  # started once, after `stopped`, not while stopping
    assert any("is stopping" in line for line in LOG)


def test_start_from_pending_waits(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.inner.start(instance_id)
    ec2.pretend(instance_id, "pending", 3)
    result = run_start(make_cfg(tmp_path, instance_id), services, clock)
    assert result.outputs["state"] == "running"
    assert "start" not in ec2.calls


@pytest.mark.parametrize("state", ["terminated", "shutting-down"])
def test_start_refuses_gone_instance(
    tmp_path: Path, aws_env: str, ec2: ScriptedEc2, services: Any, clock: FakeClock, state: str
) -> None:
    iid = make_instance("gone", state="terminated")
    if state == "shutting-down":
        ec2.pretend(iid, state, 10)
    with pytest.raises(InfraError) as info:
        run_start(make_cfg(tmp_path, iid), services, clock)
    assert state in info.value.message and iid in info.value.message
    assert "never terminated" in (info.value.hint or "")


def test_several_matches_are_listed(
    tmp_path: Path, instance_id: str, services: Any, clock: FakeClock
) -> None:
    other = make_instance("trainer", state="running")
    with pytest.raises(InfraError) as info:
        run_start(make_cfg(tmp_path), services, clock)
    assert "2 EC2 instances match Name=trainer" in info.value.message
    assert instance_id in info.value.message and other in info.value.message


def test_no_match(tmp_path: Path, aws_env: str, services: Any, clock: FakeClock) -> None:
    with pytest.raises(InfraError, match="no EC2 instance matches Name=nobody"):
        run_start(make_cfg(tmp_path, instance={"tags": {"Name": "nobody"}}), services, clock)


def test_capacity_retried_then_started(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.start_errors = ["InsufficientInstanceCapacity", "InsufficientInstanceCapacity"]
    result = run_start(make_cfg(tmp_path, instance_id), services, clock)
    assert result.outputs["state"] == "running"
    assert ec2.calls["start"] == 3
    assert 10 in clock.slept and 20 in clock.slept  # backoff between capacity retries


def test_capacity_budget_exhausted_says_so_and_releases(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.start_errors = ["InsufficientInstanceCapacity"] * 50
    cfg = make_cfg(tmp_path, instance_id, start_retry_budget_minutes=2)
    with pytest.raises(InfraError) as info:
        run_start(cfg, services, clock)
    assert "no EC2 capacity" in info.value.message and "g4dn.xlarge" in info.value.message
    assert "start_retry_budget_minutes" in (info.value.hint or "")
    from traingate.infra.lease import TagLease

    assert TagLease(ec2, instance_id).read().holders == {}  # lease given back


def test_access_denied_names_the_iam_action(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.start_errors = ["UnauthorizedOperation"]
    with pytest.raises(InfraError) as info:
        run_start(make_cfg(tmp_path, instance_id), services, clock)
    assert "ec2:StartInstances" in info.value.message
    assert info.value.exit_code == 1


def test_incorrect_state_rereads_and_continues(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.start_errors = ["IncorrectInstanceState"]
    result = run_start(make_cfg(tmp_path, instance_id), services, clock)
    assert result.outputs["state"] == "running"
    assert ec2.calls["start"] == 2


def test_readiness_timeout_names_what_is_missing(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ssm.online_after = 10_000
    ec2.status = ("ok", "initializing")
    cfg = make_cfg(tmp_path, instance_id, ready_timeout_minutes=3)
    with pytest.raises(InfraError) as info:
        run_start(cfg, services, clock)
    msg = info.value.message
    assert "not ready after" in msg
    assert "ssm (PingStatus ConnectionLost)" in msg
    assert "status-ok (instance status ok, system status initializing)" in msg
    # We were the only holder: the instance is stopped again, not left running for days.
    assert ec2.inner.describe(instance_id).state == "stopped"
    assert "stopped again" in (info.value.hint or "")


def test_health_url_is_a_readiness_check(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    import http.server
    import threading

    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200 if len(hits) > 2 else 503)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/health?ip={{private_ip}}"
        cfg = make_cfg(tmp_path, instance_id, ready=["running", "ssm", url])
        result = run_start(cfg, services, clock)
    finally:
        server.shutdown()
    assert result.outputs["state"] == "running"
    assert len(hits) == 3 and hits[-1].endswith(result.outputs["private_ip"])


def test_stop_is_idempotent_and_waits(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    cfg = make_cfg(tmp_path, instance_id)
    run_start(cfg, services, clock)
    first = run_stop(cfg, services, clock)
    assert first.outputs == {
        "instance_id": instance_id,
        "state": "stopped",
        "stopped": True,
        "remaining_holders": [],
    }
    assert ssm.ping_status(instance_id) == "ConnectionLost"
    again = run_stop(cfg, services, clock)
    assert again.outputs["stopped"] is True and again.outputs["state"] == "stopped"
    assert ec2.calls["stop"] == 1


def test_stop_failure_is_loud(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    cfg = make_cfg(tmp_path, instance_id)
    run_start(cfg, services, clock)
    ec2.stop_errors = ["UnauthorizedOperation"]
    with pytest.raises(InfraError) as info:
        run_stop(cfg, services, clock)
    assert "ec2:StopInstances" in info.value.message


def test_terminate_shutdown_behaviour_is_switched_to_stop(
    tmp_path: Path, aws_env: str, ec2: ScriptedEc2, ssm_fake: FakeSsm, services: Any, clock: FakeClock
) -> None:
    instance_id = make_instance("halting", behavior="terminate")
    ssm_fake.register(instance_id)
    assert ec2.inner.shutdown_behavior(instance_id) == "terminate"
    result = run_start(make_cfg(tmp_path, instance_id), services, clock)
    assert ec2.inner.shutdown_behavior(instance_id) == "stop"
    assert any("shutdown behaviour 'terminate'" in w for w in result.warnings)


def test_a_failed_start_keeps_the_warnings_gathered_before_it(
    tmp_path: Path, aws_env: str, ec2: ScriptedEc2, ssm_fake: FakeSsm, services: Any, clock: FakeClock
) -> None:
    """The shutdown behaviour was switched (a warning), then readiness timed out: the error
    carries the warning, so the CLI still annotates it (#13: warnings that survive an error)."""
    instance_id = make_instance("halting", behavior="terminate")
    ssm_fake.register(instance_id)
    ssm_fake.online_after = 10_000
    with pytest.raises(InfraError) as info:
        run_start(make_cfg(tmp_path, instance_id, ready_timeout_minutes=3), services, clock)
    assert "not ready after" in info.value.message
    assert any("shutdown behaviour 'terminate'" in w for w in info.value.warnings)
