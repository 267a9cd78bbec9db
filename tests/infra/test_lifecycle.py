"""One lifecycle, three backends, one interface (issue #14): the same `infra start|status|stop|
reap` calls and the same assertions for `ec2`, `launch` and `sagemaker`.

The config is one base; each backend changes only `infra.backend` and fills its own section, as a
user would once. Each backend runs on the fixtures its own tests use: moto's EC2 with the SSM fake
(`ec2`, tests/infra/conftest.py), moto's EC2 with the per-instance SSM fake (`launch`,
test_launch.py) and moto plus the SageMaker fake (`sagemaker`, test_sagemaker.py). A backend only
supplies what differs: its clients, how to make its machine bill (a SageMaker job is created by
`train`, not `start`) and what of its machines is billing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fixtures.sagemaker_fake import FakeSageMaker
from tests.fixtures.ssm_fake import FakeClock
from tests.fixtures.tracking_project import *  # noqa: F403 - `project` (a real MLflow on sqlite)
from tests.infra.test_launch import World, image
from tests.infra.test_launch import world as launch_world  # noqa: F401 - a fixture
from tests.infra.test_sagemaker import IMAGE, ROLE, Cancel, _cancel_at, _job, channel
from tests.infra.test_sagemaker import world as sagemaker_world  # noqa: F401 - a fixture
from tests.tracking.helpers import Project
from traingate import gha
from traingate.config import Config
from traingate.gha import ActionsContext
from traingate.infra.backend import Services
from traingate.infra.stage import (
    ReapResult,
    StartResult,
    StatusResult,
    StopResult,
    reap_step,
    start_step,
    status_step,
    stop_step,
)
from traingate.outputs import OUTPUTS, check_values

HOLDER = "run-a"
LOG: list[str] = []
#: What bills, per backend: a shared instance stops, a launched one terminates, a job ends.
BILLING = {
    "ec2": ("running", "pending"),
    "launch": ("running", "pending", "stopped"),
    "sagemaker": ("InProgress",),
}


@dataclass
class Rig:
    """What differs per backend; everything the test asserts goes through `traingate.infra.stage`."""

    backend: str
    section: dict[str, Any]
    services: Callable[[Config], Services | None]
    # Makes the acquired machine bill (the job `train` would start); a no-op for EC2 backends.
    use: Callable[[Config], None]
    # Every machine of this backend and its state, straight from the (fake) provider.
    machines: Callable[[], dict[str, str]]

    def billing(self) -> list[str]:
        return sorted(k for k, state in self.machines().items() if state in BILLING[self.backend])


def lifecycle_cfg(project: Project, rig: Rig) -> Config:
    """The one base config: only `infra.backend` and that backend's own section change."""
    return project.config(
        project="meters",
        infra={"backend": rig.backend, "ready": ["running", "ssm"], "ttl_minutes": 60, **rig.section},
        # A long job (MODE sleep) that outlives the lease, so only stop or reap can end it.
        train={"env": {"MODE": "sleep"}, "timeout_minutes": 180},
    )


def _ec2(request: pytest.FixtureRequest) -> Rig:
    instance_id: str = request.getfixturevalue("instance_id")
    services = request.getfixturevalue("services")
    ec2 = request.getfixturevalue("ec2")
    return Rig(
        "ec2",
        {"instance": {"id": instance_id}},
        services,
        lambda cfg: None,
        lambda: {instance_id: ec2.inner.describe(instance_id).state},
    )


def _launch(request: pytest.FixtureRequest) -> Rig:
    world: World = request.getfixturevalue("launch_world")

    def machines() -> dict[str, str]:
        return {i.id: i.state for i in world.ec2.find("", {"traingate:backend": "launch"})}

    spec = {"image_id": image(), "instance_type": "g5.xlarge", "market": "on-demand"}
    return Rig("launch", {"launch": spec}, world.services, lambda cfg: None, machines)


def _sagemaker(request: pytest.FixtureRequest) -> Rig:
    fake: FakeSageMaker = request.getfixturevalue("sagemaker_world")
    clock: FakeClock = request.getfixturevalue("fake_clock")

    def use(cfg: Config) -> None:
        with pytest.raises(Cancel):  # the workflow is cancelled while the job trains
            channel(cfg, clock).run(_job(cfg), _cancel_at("epoch 0"))

    spec = {"role_arn": ROLE, "image": IMAGE, "instance_type": "ml.g5.xlarge", "code_s3": "s3://tg-sm/code"}
    return Rig(
        "sagemaker",
        {"sagemaker": spec},
        lambda cfg: None,  # its clients come from override_clients in the fixture
        use,
        lambda: {name: fake.describe(name).status for name in fake.jobs},
    )


@pytest.fixture(params=["ec2", "launch", "sagemaker"])
def rig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Rig:
    for name in ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)  # holders are explicit here, as outside Actions
    return {"ec2": _ec2, "launch": _launch, "sagemaker": _sagemaker}[request.param](request)


class Stage:
    """The four stage calls with the fake clock and the rig's clients."""

    def __init__(self, cfg: Config, rig: Rig, clock: FakeClock) -> None:
        self.cfg, self.rig, self.clock = cfg, rig, clock

    def _kw(self) -> dict[str, Any]:
        return {"runtime": self.clock.runtime(LOG.append), "actions": ActionsContext()}

    def start(self) -> Any:
        return start_step(self.cfg, HOLDER, services=self.rig.services(self.cfg), **self._kw())

    def status(self) -> Any:
        return status_step(self.cfg, services=self.rig.services(self.cfg), **self._kw())

    def stop(self) -> Any:
        return stop_step(self.cfg, HOLDER, services=self.rig.services(self.cfg), **self._kw())

    def reap(self) -> Any:
        return reap_step(self.cfg, services=self.rig.services(self.cfg), **self._kw())


def test_start_status_stop_stop_reap(rig: Rig, project: Project, fake_clock: FakeClock) -> None:
    stage = Stage(lifecycle_cfg(project, rig), rig, fake_clock)

    started = stage.start()
    assert set(started.outputs) == set(OUTPUTS["infra start"])
    # The typed value is what the outputs are derived from (composers read it, not strings).
    assert isinstance(started.value, StartResult) and started.value.outputs() == started.outputs
    assert started.value.holder == HOLDER
    written = {k: gha.format_value(v) for k, v in started.outputs.items()}
    assert check_values("infra start", written) == []
    assert started.outputs["holder"] == HOLDER
    rig.use(stage.cfg)
    billing = rig.billing()
    assert billing, rig.machines()  # otherwise "stop leaves nothing billing" proves nothing

    status = stage.status()
    assert set(status.outputs) == set(OUTPUTS["infra status"])
    assert isinstance(status.value, StatusResult) and status.value.holders == [HOLDER]
    assert status.data == status.value.details()  # the details are data, never outputs
    assert status.outputs["holders"] == [HOLDER]
    assert status.outputs["state"] == "running"
    assert status.data["instance_id"] in billing

    stopped = stage.stop()
    assert set(stopped.outputs) == set(OUTPUTS["infra stop"])
    assert isinstance(stopped.value, StopResult) and stopped.value.stopped is True
    assert stopped.outputs["stopped"] is True
    assert stopped.outputs["remaining_holders"] == []
    assert rig.billing() == []
    after = rig.machines()
    assert set(after) >= set(billing)  # released, not forgotten: the same machines, now halted

    again = stage.stop()
    assert again.outputs["stopped"] is True
    assert again.outputs["remaining_holders"] == []
    assert rig.machines() == after  # idempotent: nothing changes

    assert stage.status().outputs["holders"] == []
    reaped = stage.reap()
    assert set(reaped.outputs) == set(OUTPUTS["infra reap"])
    assert isinstance(reaped.value, ReapResult) and reaped.value.reaped == ()
    assert reaped.outputs["reaped"] == []
    assert rig.machines() == after


def test_reap_after_the_lease_expired_leaves_nothing_billing(
    rig: Rig, project: Project, fake_clock: FakeClock
) -> None:
    stage = Stage(lifecycle_cfg(project, rig), rig, fake_clock)
    stage.start()
    rig.use(stage.cfg)
    billing = rig.billing()
    assert billing, rig.machines()

    assert stage.reap().outputs["reaped"] == []  # its run may still be alive
    assert rig.billing() == billing
    fake_clock.advance(61 * 60)  # ttl_minutes 60, no renewal: the run was cancelled, no stop ran

    reaped = stage.reap()
    assert reaped.outputs["reaped"] == billing
    assert rig.billing() == []
    assert stage.reap().outputs["reaped"] == []
