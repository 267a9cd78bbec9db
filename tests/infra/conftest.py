"""Infra fixtures: a real (moto) EC2 instance, the SSM fake tied to it, a fake clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import ssm_fake as _ssm_plugin
from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from traingate.config import Config, parse_config
from traingate.infra.aws import translate_client_error
from traingate.infra.base import Instance
from traingate.infra.ec2 import Boto3Ec2

# The SSM fake's fixtures, registered for this folder (pytest_plugins only works at the root).
fake_clock = _ssm_plugin.fake_clock
ssm_fake = _ssm_plugin.ssm_fake

_IMAGE: dict[str, str] = {}


def make_instance(
    name: str = "trainer", *, state: str = "stopped", region: str = "us-east-1", behavior: str = "stop"
) -> str:
    import boto3

    client = boto3.client("ec2", region_name=region)
    # describe_images is slow on moto (hundreds of AMIs): look one up once per process.
    if region not in _IMAGE:
        _IMAGE[region] = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    image = _IMAGE[region]
    out = client.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="g4dn.xlarge",
        InstanceInitiatedShutdownBehavior=behavior,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
    )
    instance_id = out["Instances"][0]["InstanceId"]
    if state == "stopped":
        client.stop_instances(InstanceIds=[instance_id])
    elif state == "terminated":
        client.terminate_instances(InstanceIds=[instance_id])
    return str(instance_id)


class ScriptedEc2:
    """The boto3 adapter on moto, plus what moto does not model: transitional states that last
    a few polls (moto's start/stop are instant) and AWS errors on StartInstances."""

    def __init__(self, inner: Boto3Ec2, *, transition_polls: int = 2) -> None:
        self.inner = inner
        self.transition_polls = transition_polls
        self._pretend: dict[str, tuple[str, int]] = {}
        self.start_errors: list[str] = []
        self.stop_errors: list[str] = []
        self.status = ("ok", "ok")
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def pretend(self, instance_id: str, state: str, polls: int) -> None:
        self._pretend[instance_id] = (state, polls)

    def _raise(self, code: str, action: str, instance_id: str) -> None:
        from botocore.exceptions import ClientError

        err = ClientError({"Error": {"Code": code, "Message": f"simulated {code}"}}, action)
        raise translate_client_error(err, action=f"ec2:{action}", resource=instance_id) from err

    def find(self, instance_id: str, tags: dict[str, str]) -> list[Instance]:
        self._count("find")
        return [self._apply(i) for i in self.inner.find(instance_id, tags)]

    def describe(self, instance_id: str) -> Instance:
        self._count("describe")
        return self._apply(self.inner.describe(instance_id))

    def _apply(self, inst: Instance) -> Instance:
        pretend = self._pretend.get(inst.id)
        if pretend:
            state, polls = pretend
            if polls > 0:
                self._pretend[inst.id] = (state, polls - 1)
                inst.state = state
                if state == "pending":
                    inst.public_ip = ""
            else:
                del self._pretend[inst.id]
        return inst

    def start(self, instance_id: str) -> None:
        self._count("start")
        if self.start_errors:
            self._raise(self.start_errors.pop(0), "StartInstances", instance_id)
        if self.inner.describe(instance_id).state != "stopped":
            self._raise("IncorrectInstanceState", "StartInstances", instance_id)
        self.inner.start(instance_id)
        self.pretend(instance_id, "pending", self.transition_polls)

    def stop(self, instance_id: str) -> None:
        self._count("stop")
        if self.stop_errors:
            self._raise(self.stop_errors.pop(0), "StopInstances", instance_id)
        self.inner.stop(instance_id)
        self.pretend(instance_id, "stopping", self.transition_polls)

    def status_checks(self, instance_id: str) -> tuple[str, str]:
        self._count("status_checks")
        return self.status

    def shutdown_behavior(self, instance_id: str) -> str:
        self._count("shutdown_behavior")
        return self.inner.shutdown_behavior(instance_id)

    def set_shutdown_behavior(self, instance_id: str, behavior: str) -> None:
        self._count("set_shutdown_behavior")
        self.inner.set_shutdown_behavior(instance_id, behavior)

    def set_tags(self, instance_id: str, tags: dict[str, str]) -> None:
        self._count("set_tags")
        self.inner.set_tags(instance_id, tags)

    def delete_tags(self, instance_id: str, keys: list[str]) -> None:
        self._count("delete_tags")
        self.inner.delete_tags(instance_id, keys)


@pytest.fixture
def instance_id(aws_env: str) -> str:
    return make_instance()


@pytest.fixture
def ec2(aws_env: str) -> ScriptedEc2:
    import boto3

    return ScriptedEc2(Boto3Ec2(boto3.client("ec2", region_name="us-east-1")))


@pytest.fixture
def ssm(
    ssm_fake: FakeSsm,
    ec2: ScriptedEc2,
    instance_id: str,
) -> FakeSsm:
    ssm_fake.ec2 = ec2.inner
    ssm_fake.register(instance_id)
    return ssm_fake


def make_cfg(tmp_path: Path, instance_id: str = "", **infra: Any) -> Config:
    raw: dict[str, Any] = {
        "backend": "ec2",
        "instance": {"id": instance_id} if instance_id else {"tags": {"Name": "trainer"}},
        "ready": ["running", "status-ok", "ssm"],
        "ttl_minutes": 60,
    }
    raw.update(infra)
    return parse_config({"infra": raw}, base_dir=tmp_path)


@pytest.fixture
def services(ec2: ScriptedEc2, ssm: FakeSsm) -> Any:
    from traingate.infra.stage import Services

    def build(cfg: Config) -> Services:
        return Services(cfg, ec2=ec2, ssm=ssm)

    return build


@pytest.fixture
def clock(
    fake_clock: FakeClock,
) -> FakeClock:
    return fake_clock
