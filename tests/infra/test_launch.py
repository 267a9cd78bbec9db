"""`infra.backend: launch`: a fresh instance per run, on moto's EC2 server and the SSM fake.

Spot refusals are injected at the boto boundary: a botocore event hook on the real client raises
the real `ClientError` (InsufficientInstanceCapacity, SpotMaxPriceTooLow) before the request is
sent, exactly as botocore raises it when AWS answers with that code. moto itself never refuses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.ssm_fake import FakeClock, LaunchedSsm
from tests.infra.conftest import make_instance
from traingate.config import Config, InfraBackend, parse_config
from traingate.errors import ConfigError, InfraError
from traingate.gha import ActionsContext
from traingate.infra.backend import Services, backend_for
from traingate.infra.ec2 import Boto3Ec2
from traingate.infra.stage import reap_step, start_step, status_step, stop_step
from traingate.runtime import Runtime

LOG: list[str] = []


class World:
    """A real boto3 EC2 client on moto with hooks to refuse spot requests or set spot prices."""

    def __init__(self, tmp_path: Path, clock: FakeClock) -> None:
        import boto3

        self.client = boto3.client("ec2", region_name="us-east-1")
        self.ec2 = Boto3Ec2(self.client)
        self.ssm = LaunchedSsm(tmp_path / "instances", ec2=self.ec2, clock=clock)
        self.clock = clock
        self.refuse_spot: list[str] = []
        self.spot_price: str = ""
        self.run_requests: list[dict[str, Any]] = []
        self.client.meta.events.register("before-parameter-build.ec2.RunInstances", self._on_run)
        self.client.meta.events.register("before-call.ec2.DescribeSpotPriceHistory", self._on_price)

    def _on_run(self, params: dict[str, Any], **_: Any) -> None:
        from botocore.exceptions import ClientError

        self.run_requests.append(dict(params))
        if "InstanceMarketOptions" in params and self.refuse_spot:
            code = self.refuse_spot.pop(0)
            raise ClientError(
                {"Error": {"Code": code, "Message": f"There is no Spot capacity available ({code})."}},
                "RunInstances",
            )

    def _on_price(self, params: dict[str, Any], **_: Any) -> Any:
        if not self.spot_price:
            return None  # moto answers
        from botocore.awsrequest import AWSResponse

        item = {"InstanceType": "g5.xlarge", "SpotPrice": self.spot_price, "AvailabilityZone": "us-east-1a"}
        http = AWSResponse("https://ec2.us-east-1.amazonaws.com/", 200, {}, None)
        return (http, {"SpotPriceHistory": [item], "ResponseMetadata": {"HTTPStatusCode": 200}})

    def services(self, cfg: Config) -> Services:
        return Services(cfg, ec2=self.ec2, ssm=self.ssm)

    def launched(self) -> list[Any]:
        """Every launched instance that is not terminated (what still bills)."""
        found = self.ec2.find("", {"traingate:backend": "launch"})
        return [i for i in found if i.state != "terminated"]

    def start(self, cfg: Config, holder: str = "run-a", **kw: Any) -> Any:
        return start_step(
            cfg, holder, runtime=self.clock.runtime(LOG.append), services=self.services(cfg), **kw
        )

    def stop(self, cfg: Config, holder: str = "run-a", **kw: Any) -> Any:
        return stop_step(
            cfg, holder, runtime=self.clock.runtime(LOG.append), services=self.services(cfg), **kw
        )

    def reap(self, cfg: Config, dry_run: bool = False) -> Any:
        return reap_step(
            cfg,
            dry_run,
            runtime=self.clock.runtime(LOG.append),
            services=self.services(cfg),
        )


@pytest.fixture
def world(tmp_path: Path, aws_env: str, fake_clock: FakeClock) -> Iterator[World]:
    w = World(tmp_path, fake_clock)
    try:
        yield w
    finally:
        w.ssm.close()


def image() -> str:
    from tests.infra import conftest

    if "us-east-1" not in conftest._IMAGE:
        make_instance("ami-probe", state="terminated")
    return conftest._IMAGE["us-east-1"]


def launch_cfg(tmp_path: Path, market: str = "on-demand", **launch: Any) -> Config:
    spec: dict[str, Any] = {"image_id": image(), "instance_type": "g5.xlarge", "market": market}
    spec.update(launch)
    return parse_config(
        {
            "project": "meters",
            "infra": {"backend": "launch", "launch": spec, "ready": ["running", "ssm"], "ttl_minutes": 60},
            "train": {"timeout_minutes": 90},
        },
        base_dir=tmp_path,
    )


# ----------------------------------------------------------------------------- on-demand
def test_launch_tags_waits_arms_terminating_watchdog_and_stop_terminates(
    tmp_path: Path, world: World
) -> None:
    cfg = launch_cfg(tmp_path)
    result = world.start(cfg)
    iid = result.outputs["instance_id"]
    assert result.outputs["state"] == "running"
    assert result.outputs["market"] == "on-demand"
    assert result.outputs["hourly_usd"] == "1.006"  # the documented on-demand table
    assert result.outputs["holder"] == "run-a"
    inst = world.ec2.describe(iid)
    assert inst.tags["traingate:holder"] == "run-a"
    assert inst.tags["traingate:project"] == "meters"
    assert inst.instance_type == "g5.xlarge" and inst.lifecycle == ""
    # The watchdog's halt ends the billing: shutdown behaviour terminate, armed for the TTL.
    assert world.ec2.shutdown_behavior(iid) == "terminate"
    assert world.ssm.shutdown_at(iid) == pytest.approx(world.clock() + 60 * 60, abs=120)
    assert "InstanceMarketOptions" not in world.run_requests[0]
    assert "terminates the instance" in result.summary

    stopped = world.stop(cfg)
    assert stopped.outputs == {
        "instance_id": iid,
        "state": "terminated",
        "stopped": True,
        "remaining_holders": [],
    }
    assert world.launched() == []


def test_stop_is_idempotent(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path)
    world.start(cfg)
    world.stop(cfg)
    again = world.stop(cfg)
    assert again.outputs["stopped"] is True and again.outputs["state"] == "terminated"
    assert "nothing to stop" in again.message
    never = world.stop(cfg, "run-that-never-started")
    assert never.outputs["stopped"] is True


def test_start_again_for_the_same_holder_reuses_its_instance(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path)
    first = world.start(cfg).outputs["instance_id"]
    again = world.start(cfg)
    assert again.outputs["instance_id"] == first and again.outputs["market"] == "on-demand"
    assert len(world.run_requests) == 1 and len(world.launched()) == 1
    world.stop(cfg)
    assert world.launched() == []


def test_launch_template_by_name(tmp_path: Path, world: World) -> None:
    world.client.create_launch_template(
        LaunchTemplateName="trainer",
        LaunchTemplateData={"ImageId": image(), "InstanceType": "g4dn.xlarge"},
    )
    cfg = launch_cfg(tmp_path, image_id="", instance_type="", template="trainer")
    result = world.start(cfg)
    assert world.run_requests[0]["LaunchTemplate"] == {"LaunchTemplateName": "trainer"}
    assert world.ec2.describe(result.outputs["instance_id"]).instance_type == "g4dn.xlarge"
    world.stop(cfg)
    assert world.launched() == []


def test_launch_without_image_or_template_is_a_config_error(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path, image_id="")
    with pytest.raises(ConfigError) as info:
        world.start(cfg)
    assert info.value.exit_code == 2 and "infra.launch" in (info.value.hint or "")
    assert world.run_requests == []


def test_failed_readiness_terminates_the_launched_instance(tmp_path: Path, world: World) -> None:
    world.ssm.online_after = 10_000
    cfg = parse_config(
        {
            "infra": {
                "backend": "launch",
                "launch": {"image_id": image(), "instance_type": "g5.xlarge"},
                "ready": ["running", "ssm"],
                "ready_timeout_minutes": 2,
            }
        },
        base_dir=tmp_path,
    )
    with pytest.raises(InfraError) as info:
        world.start(cfg)
    assert "not ready after" in info.value.message
    assert "terminated" in (info.value.hint or "")
    assert world.launched() == []


# ---------------------------------------------------------------------------------- spot
def test_spot_instance_reclaimed_before_ready_says_so(
    tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_ping = world.ssm.ping_status

    def reclaimed(instance_id: str) -> str:
        world.ec2.terminate(instance_id)  # AWS takes the capacity back during boot
        return real_ping(instance_id)

    monkeypatch.setattr(world.ssm, "ping_status", reclaimed)
    with pytest.raises(InfraError) as info:
        world.start(launch_cfg(tmp_path, "spot"))
    assert "before it was ready (spot capacity reclaimed?)" in info.value.message
    assert "never terminated" not in (info.value.hint or "")
    assert world.launched() == []


def test_spot_launch_with_max_price(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path, "spot", max_price="0.45")
    result = world.start(cfg)
    assert result.outputs["market"] == "spot"
    assert result.outputs["hourly_usd"] == "0.00001"  # moto's spot price history
    options = world.run_requests[0]["InstanceMarketOptions"]
    assert options["MarketType"] == "spot"
    assert options["SpotOptions"]["MaxPrice"] == "0.45"
    assert world.ec2.describe(result.outputs["instance_id"]).lifecycle == "spot"
    assert result.warnings == []
    world.stop(cfg)
    assert world.launched() == []


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "SpotMaxPriceTooLow"])
def test_spot_refused_fails_the_step_naming_the_error_and_leaves_nothing(
    tmp_path: Path, world: World, code: str
) -> None:
    world.refuse_spot = [code]
    cfg = launch_cfg(tmp_path, "spot", max_price="0.01")
    with pytest.raises(InfraError) as info:
        world.start(cfg)
    assert info.value.exit_code == 1
    assert code in info.value.message and "g5.xlarge" in info.value.message
    assert "spot-preferred" in (info.value.hint or "")
    assert len(world.run_requests) == 1  # no silent on-demand retry
    assert world.launched() == []


def test_spot_preferred_falls_back_to_on_demand_loudly(tmp_path: Path, world: World) -> None:
    world.refuse_spot = ["InsufficientInstanceCapacity"]
    world.spot_price = "0.3018"
    cfg = launch_cfg(tmp_path, "spot-preferred")
    result = world.start(cfg)
    assert result.outputs["market"] == "on-demand"
    assert result.outputs["hourly_usd"] == "1.006"
    [warning] = result.warnings
    assert "InsufficientInstanceCapacity" in warning and "ON-DEMAND" in warning
    # Both hourly prices and the difference per run (train.timeout_minutes 90 = 1.5 h).
    assert "$1.006/h" in warning and "$0.3018/h" in warning
    assert "+$0.7042/h" in warning and "+$1.06 per run" in warning
    assert "spot fallback: InsufficientInstanceCapacity" in result.summary
    # Two RunInstances: the refused spot request, then on-demand; one instance, on-demand.
    assert ["InstanceMarketOptions" in r for r in world.run_requests] == [True, False]
    [inst] = world.launched()
    assert inst.lifecycle == "" and inst.id == result.outputs["instance_id"]
    world.stop(cfg)
    assert world.launched() == []


def test_spot_preferred_uses_spot_when_available(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path, "spot-preferred")
    result = world.start(cfg)
    assert result.outputs["market"] == "spot" and result.warnings == []
    world.stop(cfg)


# ---------------------------------------------------------------------------------- reap
def test_reap_terminates_launched_instances_whose_run_is_over(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path)
    shared = make_instance("trainer", state="running")  # not launched by traingate: never touched
    cancelled = world.start(cfg, "cancelled-run").outputs["instance_id"]
    world.clock.advance(61 * 60)  # its lease (60 min) is over; the run never ran `infra stop`
    live = world.start(cfg, "live-run").outputs["instance_id"]

    preview = world.reap(cfg, dry_run=True)
    assert preview.outputs["reaped"] == [cancelled]
    assert {i.id for i in world.launched()} == {cancelled, live}

    result = world.reap(cfg)
    assert result.outputs["reaped"] == [cancelled]
    assert "terminated" in result.message and "cancelled-run" in result.message
    assert [i.id for i in world.launched()] == [live]
    assert world.ec2.describe(shared).state == "running"
    world.stop(cfg, "live-run")
    assert world.launched() == []


def test_watchdog_of_a_cancelled_run_terminates_the_launched_instance(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path)
    iid = world.start(cfg, "cancelled-run").outputs["instance_id"]
    world.clock.advance(61 * 60)  # the job died; nobody ran `infra stop`
    world.ssm.tick(iid)
    assert iid in world.ssm.watchdog_fired
    assert world.ec2.describe(iid).state == "terminated"
    assert world.launched() == []


def test_reap_terminates_a_released_instance_left_running(tmp_path: Path, world: World) -> None:
    """A stop that released the lease but died before TerminateInstances: no holder remains, the
    instance is ours (tagged), so reap terminates it rather than 'leaving it alone'."""
    from traingate.infra.lease import TagLease

    cfg = launch_cfg(tmp_path)
    iid = world.start(cfg).outputs["instance_id"]
    TagLease(world.ec2, iid).release("run-a", world.clock(), claim_stop=False)
    assert world.reap(cfg).outputs["reaped"] == [iid]
    assert world.launched() == []


def test_stop_also_terminates_earlier_attempts_of_the_same_run(tmp_path: Path, world: World) -> None:
    actions = ActionsContext(in_actions=True, repository="acme/meters", run_id="77", run_attempt="2")
    cfg = launch_cfg(tmp_path)
    first = world.start(cfg, "acme/meters/77/1").outputs["instance_id"]
    second = world.start(cfg, "acme/meters/77/2").outputs["instance_id"]
    world.start(cfg, "acme/meters/78/1")  # another run: left alone
    result = world.stop(cfg, "acme/meters/77/2", actions=actions)
    assert result.outputs["instance_id"] == second and result.outputs["stopped"] is True
    assert first in result.message
    assert [i.tags["traingate:holder"] for i in world.launched()] == ["acme/meters/78/1"]


def test_status_of_a_launched_instance(tmp_path: Path, world: World) -> None:
    cfg = launch_cfg(tmp_path)
    assert (
        status_step(cfg, runtime=world.clock.runtime(), services=world.services(cfg)).outputs["state"]
        == "none"
    )
    iid = world.start(cfg).outputs["instance_id"]
    st = status_step(cfg, runtime=world.clock.runtime(), services=world.services(cfg))
    assert st.data["instance_id"] == iid and st.outputs["holders"] == ["run-a"]
    world.stop(cfg)


# ------------------------------------------------------------------------------- boundary
@pytest.mark.parametrize("kind", list(InfraBackend))
def test_every_backend_kind_has_an_implementation(tmp_path: Path, kind: InfraBackend) -> None:
    cfg = parse_config({"infra": {"backend": kind.value}}, base_dir=tmp_path)
    ec2: Any = object()
    runtime = Runtime(clock=lambda: 0.0, sleep=lambda _s: None, log=print)
    backend = backend_for(
        cfg, services=Services(cfg, ec2=ec2, ssm=ec2), runtime=runtime, actions=ActionsContext()
    )
    for method in ("acquire", "lease", "ready", "run_channel", "release", "locate", "reap_candidates"):
        assert callable(getattr(backend, method))


# ---------------------------------------------------------------------------- train + CLI
def test_remote_training_reaches_the_instance_launched_for_its_holder(tmp_path: Path, world: World) -> None:
    from traingate.errors import TrainError
    from traingate.infra.aws import override_clients
    from traingate.infra.remote import make_remote_executor

    actions = ActionsContext(in_actions=True, repository="acme/meters", run_id="5")
    cfg = launch_cfg(tmp_path)
    cfg = cfg.model_copy(
        update={
            "train": cfg.train.model_copy(update={"where": "instance"}),
            "infra": cfg.infra.model_copy(update={"s3_prefix": "s3://b/p"}),
        }
    )
    with override_clients(ec2=world.ec2, ssm=world.ssm):
        with pytest.raises(TrainError, match="no instance for acme/meters/5/1"):
            make_remote_executor(cfg, actions=actions)
        world.start(cfg, "acme/meters/5/1")
        world.start(cfg, "acme/meters/6/1")  # another run's instance
        ex = make_remote_executor(cfg, actions=actions)
    [ours] = [i for i in world.launched() if i.tags["traingate:holder"] == "acme/meters/5/1"]
    assert ex.instance_id == ours.id and ex.ssm is world.ssm


def test_cli_spot_refused_exits_1_and_fallback_warns(
    tmp_path: Path, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    import yaml
    from click.testing import CliRunner

    from traingate.cli import cli
    from traingate.infra.aws import override_clients

    out, summary = tmp_path / "github_output", tmp_path / "step_summary"
    out.write_text("")
    summary.write_text("")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.chdir(tmp_path)
    spec = {"image_id": image(), "instance_type": "g5.xlarge", "market": "spot"}
    raw = {"infra": {"backend": "launch", "launch": spec, "ready": ["running"], "ttl_minutes": 60}}
    (tmp_path / "traingate.yml").write_text(yaml.safe_dump(raw))
    world.refuse_spot = ["SpotMaxPriceTooLow", "InsufficientInstanceCapacity"]
    with override_clients(ec2=world.ec2, ssm=world.ssm):
        refused = CliRunner().invoke(cli, ["infra", "start", "--holder", "run-a"])
        assert refused.exit_code == 1, refused.output
        assert "SpotMaxPriceTooLow" in refused.output
        assert world.launched() == [] and out.read_text() == ""

        spec["market"] = "spot-preferred"
        (tmp_path / "traingate.yml").write_text(yaml.safe_dump(raw))
        fell_back = CliRunner().invoke(cli, ["infra", "start", "--holder", "run-b"])
        assert fell_back.exit_code == 0, fell_back.output
        [warning] = [line for line in fell_back.output.splitlines() if line.startswith("::warning")]
        assert "InsufficientInstanceCapacity" in warning and "ON-DEMAND" in warning and "per run" in warning
        assert re.search(r"^market<<(\S+)\non-demand\n\1$", out.read_text(), re.M)
        assert "spot fallback: InsufficientInstanceCapacity" in summary.read_text()
        stopped = CliRunner().invoke(cli, ["infra", "stop", "--holder", "run-b"])
        assert stopped.exit_code == 0, stopped.output
    assert world.launched() == []


def test_every_declared_market_value_is_written_by_a_path(tmp_path: Path, world: World) -> None:
    from traingate import gha
    from traingate.outputs import VALUES, check_values

    results = [
        world.start(launch_cfg(tmp_path / "od"), "run-od"),
        world.start(launch_cfg(tmp_path / "spot", "spot"), "run-spot"),
        start_step(parse_config({}, base_dir=tmp_path / "local"), "run-local"),
    ]
    seen = set()
    for result in results:
        written = {k: gha.format_value(v) for k, v in result.outputs.items()}
        assert check_values("infra start", written) == [], written
        seen.add(written["market"])
    assert seen == set(VALUES["infra start"]["market"])
    world.stop(launch_cfg(tmp_path / "od"), "run-od")
    world.stop(launch_cfg(tmp_path / "spot", "spot"), "run-spot")
    assert world.launched() == []
