"""The training pipeline with `infra.backend: launch`: a fresh instance per run (#14).

The same workflow as tests/e2e/test_pipeline.py, with one key changed in traingate.yml. The spot
request is refused at the boto boundary (a botocore event hook raising the real ClientError, as
AWS answers it), so `spot-preferred` falls back to on-demand; training runs on the launched
instance over the SSM fake; stop-infra terminates it. No scenario leaves an instance running.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.harness import PipelineRun
from tests.fixtures.ssm_fake import LaunchedSsm

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def given_up(run: PipelineRun) -> str:
    return f"results: {run.results}\n{run.log()[-8000:]}"


def _launched() -> list[dict[str, Any]]:
    import boto3

    out = boto3.client("ec2", region_name="us-east-1").describe_instances(
        Filters=[{"Name": "tag:traingate:backend", "Values": ["launch"]}]
    )
    return [i for r in out["Reservations"] for i in r["Instances"]]


def test_spot_preferred_falls_back_loudly_trains_on_the_launched_instance_and_terminates_it(
    e2e: E2E, tmp_path: Any
) -> None:
    import boto3
    from botocore.exceptions import ClientError

    from tests.infra import conftest as infra_fixtures
    from traingate.infra.aws import override_clients
    from traingate.infra.ec2 import Boto3Ec2

    client = boto3.client("ec2", region_name="us-east-1")

    def refuse_spot(params: dict[str, Any], **_: Any) -> None:
        if "InstanceMarketOptions" in params:
            err = {"Code": "InsufficientInstanceCapacity", "Message": "no Spot capacity in us-east-1a"}
            raise ClientError({"Error": err}, "RunInstances")

    client.meta.events.register("before-parameter-build.ec2.RunInstances", refuse_spot)
    ec2 = Boto3Ec2(client)
    ssm = LaunchedSsm(tmp_path / "launched", ec2=Boto3Ec2(boto3.client("ec2")), clock=e2e.clock)
    e2e.configure(
        infra__backend="launch",
        infra__launch={
            "image_id": infra_fixtures._IMAGE["us-east-1"],
            "instance_type": "g4dn.xlarge",
            "market": "spot-preferred",
        },
        train__where="instance",
    )
    try:
        with override_clients(ec2=ec2, ssm=ssm):
            run = e2e.pipeline(e2e.push_data()).run()
    finally:
        ssm.close()
    assert run.results["start-infra"] == "success", given_up(run)
    assert run.results["train"] == "success" and run.results["stop-infra"] == "success", given_up(run)
    start = run.job("start-infra")
    assert start.outputs["market"] == "on-demand" and start.outputs["hourly_usd"] == "0.526"
    [warning] = [a for a in start.annotations if a.startswith("::warning")]
    assert "InsufficientInstanceCapacity" in warning and "ON-DEMAND" in warning and "per run" in warning
    [inst] = _launched()
    assert inst["InstanceId"] == start.outputs["instance_id"]
    assert any("python train.py" in s for s in ssm.sent_scripts)  # trained on the launched instance
    assert run.job("stop-infra").outputs["state"] == "terminated"
    assert inst["State"]["Name"] == "terminated"
    # The shared instance of the other scenarios was never touched.
    assert e2e.instance_state() == "stopped"
