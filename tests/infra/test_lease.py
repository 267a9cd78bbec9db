"""Leases: DynamoDB conditional writes on moto, tags, the local file; concurrent runs; reap; status."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures import dynamodb_atomic
from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from tests.infra.conftest import ScriptedEc2, make_cfg
from traingate.config import Config
from traingate.infra.base import WALL
from traingate.infra.lease import DynamoLease, FileLease, StopInProgress, TagLease
from traingate.infra.stage import reap_step, start_step, status_step, stop_step
from traingate.result import StepResult

TABLE = "traingate-leases"

atomic_dynamodb = dynamodb_atomic.atomic_dynamodb
slow_conditions = dynamodb_atomic.slow_conditions


@pytest.fixture
def table(aws_env: str) -> Any:
    import boto3

    client = boto3.client("dynamodb", region_name="us-east-1")
    client.create_table(
        TableName=TABLE,
        KeySchema=[{"AttributeName": "instance_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "instance_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return client


def quiet(_: str) -> None:
    pass


@pytest.fixture
def step(clock: FakeClock, services: Any) -> Callable[..., StepResult]:
    """Run an infra step on the fake clock and the test's EC2/SSM, quietly."""

    def run(fn: Callable[..., StepResult], cfg: Config, *args: Any, **kw: Any) -> StepResult:
        return fn(cfg, *args, runtime=clock.runtime(quiet), services=services(cfg), **kw)

    return run


@pytest.mark.parametrize("kind", ["dynamodb", "tags", "file"])
def test_holders_expiry_and_stop_claim(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if kind == "dynamodb":
        lease: Any = DynamoLease(request.getfixturevalue("table"), TABLE, "i-1")
    elif kind == "tags":
        ec2 = request.getfixturevalue("ec2")
        lease = TagLease(ec2, request.getfixturevalue("instance_id"))
    else:
        lease = FileLease(tmp_path / "lease")
    lease.acquire("a", 100, 1000)
    lease.acquire("b", 10, 1000)
    state = lease.read()
    assert state.live(1005) == {"a": 1100, "b": 1010}
    assert state.expired(1050) == {"b": 1010}
    rel = lease.release("a", 1005)
    assert rel.remaining == ["b"] and not rel.may_stop
    # b expired: it no longer keeps the instance up; the release that finds no one takes the claim.
    lease.acquire("a", 100, 1020)
    rel = lease.release("a", 1020)
    assert rel.remaining == [] and rel.may_stop
    with pytest.raises(StopInProgress):
        lease.acquire("c", 100, 1021)
    lease.clear_stop("a")
    lease.acquire("c", 100, 1022)
    assert "c" in lease.read().live(1022)


def test_dynamodb_claim_is_refused_when_someone_acquired_in_between(table: Any) -> None:
    lease = DynamoLease(table, TABLE, "i-2")
    lease.acquire("a", 100, 1000)
    state_after_release = lease.release("a", 1000, claim_stop=False)
    assert state_after_release.remaining == []
    version_seen = lease.read().version
    lease.acquire("b", 100, 1001)  # b arrives before a claims the stop
    assert not lease._claim("a", 1001, version_seen)
    assert lease.read().stop_claim == ""


def test_the_race_tests_store_applies_a_conditional_update_of_one_item_atomically(
    table: Any, atomic_dynamodb: None, slow_conditions: Callable[[float], None]
) -> None:
    """What DynamoDB guarantees and moto's threaded server alone does not: of two concurrent
    conditional claims of one item, exactly one wins, however slow the check is."""
    from botocore.exceptions import ClientError

    slow_conditions(0.2)
    won: list[str] = []

    def claim(who: str) -> None:
        try:
            table.update_item(
                TableName=TABLE,
                Key={"instance_id": {"S": "i-atomic"}},
                UpdateExpression="SET #o = :me",
                ConditionExpression="attribute_not_exists(#o)",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": who}},
            )
            won.append(who)
        except ClientError as err:
            assert err.response["Error"]["Code"] == "ConditionalCheckFailedException"

    threads = [threading.Thread(target=claim, args=(who,)) for who in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    item = table.get_item(TableName=TABLE, Key={"instance_id": {"S": "i-atomic"}})["Item"]
    assert len(won) == 1 and item["owner"]["S"] == won[0]


def test_dynamodb_concurrent_acquire_and_stop_never_overlap(
    table: Any, atomic_dynamodb: None, slow_conditions: Callable[[float], None]
) -> None:
    """Two runs hammer the lease: whenever one holds the stop claim, no holder is live.

    Against a store that is atomic per item, as DynamoDB is (moto alone is not, and failed this
    test 3 times in 6 on a loaded machine). The slowed condition checks make the interleavings
    the lease must survive happen on any machine, not only on a busy one."""
    slow_conditions(0.002)
    lease = DynamoLease(table, TABLE, "i-3")
    violations: list[str] = []
    claims = 0
    stop = threading.Event()

    def stopper() -> None:
        nonlocal claims
        for _ in range(25):
            try:
                lease.acquire("stopper", 100, 1000)
            except StopInProgress:
                continue
            if lease.release("stopper", 1000).may_stop:
                claims += 1
                live = lease.read().live(1000)
                if live:
                    violations.append(f"stop claimed while {live} held the lease")
                lease.clear_stop("stopper")
        stop.set()

    def starter() -> None:
        while not stop.is_set():
            try:
                lease.acquire("starter", 100, 1000)
            except StopInProgress:
                continue
            lease.release("starter", 1000, claim_stop=False)

    threads = [threading.Thread(target=stopper), threading.Thread(target=starter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not violations
    # How often the stopper won under contention depends on thread scheduling; what must hold
    # is that the lease is not left stuck: once the starter is gone, the last holder may stop.
    lease.acquire("stopper", 100, 1000)
    assert lease.release("stopper", 1000).may_stop, f"lease stuck after {claims} contended claims"


def test_two_runs_share_the_instance_with_a_lease_table(
    tmp_path: Path,
    table: Any,
    instance_id: str,
    ec2: ScriptedEc2,
    ssm: FakeSsm,
    step: Callable[..., StepResult],
) -> None:
    cfg = make_cfg(tmp_path, instance_id, lease_table=TABLE)
    results: dict[str, Any] = {}

    def start(holder: str) -> None:
        results[holder] = step(start_step, cfg, holder)

    threads = [threading.Thread(target=start, args=(h,)) for h in ("run-a", "run-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert {r.outputs["state"] for r in results.values()} == {"running"}
    first = step(stop_step, cfg, "run-a")
    assert first.outputs["stopped"] is False and first.outputs["remaining_holders"] == ["run-b"]
    assert ec2.inner.describe(instance_id).state == "running"  # never stopped under run-b
    assert "still held by run-b" in first.message
    last = step(stop_step, cfg, "run-b")
    assert last.outputs["stopped"] is True
    assert ec2.inner.describe(instance_id).state == "stopped"


def test_start_during_a_stop_waits_and_starts_again(
    tmp_path: Path,
    table: Any,
    instance_id: str,
    ec2: ScriptedEc2,
    ssm: FakeSsm,
    clock: FakeClock,
    step: Callable[..., StepResult],
    services: Any,
) -> None:
    """Run A stops (last holder) while run B starts: B must end with a running instance.

    Both share one fake clock. B's waits first let A's stop really happen (real time), then
    advance the clock: a fake clock racing ahead of A's real work would make A's stop claim look
    abandoned after 600 fake seconds while A is still stopping (a flake under load)."""
    from traingate.runtime import Runtime

    cfg = make_cfg(tmp_path, instance_id, lease_table=TABLE)
    ec2.transition_polls = 6
    step(start_step, cfg, "run-a")
    out: dict[str, Any] = {}

    def a_stops() -> None:
        out["a"] = step(stop_step, cfg, "run-a")

    ta = threading.Thread(target=a_stops)

    def b_waits(seconds: float) -> None:
        ta.join(timeout=60)
        clock.sleep(seconds)

    def b_starts() -> None:
        b_runtime = Runtime(clock=clock, sleep=b_waits, log=quiet)
        out["b"] = start_step(cfg, "run-b", runtime=b_runtime, services=services(cfg))

    tb = threading.Thread(target=b_starts)
    ta.start()
    tb.start()
    ta.join(timeout=120)
    tb.join(timeout=120)
    assert out["b"].outputs["state"] == "running"
    assert ec2.inner.describe(instance_id).state == "running"
    assert "run-b" in DynamoLease(table, TABLE, instance_id).read().live(clock())


def test_reap_stops_only_expired_leases(
    tmp_path: Path,
    instance_id: str,
    ec2: ScriptedEc2,
    ssm: FakeSsm,
    clock: FakeClock,
    step: Callable[..., StepResult],
) -> None:
    cfg = make_cfg(tmp_path, instance_id, ttl_minutes=30)
    step(start_step, cfg, "cancelled-run")
    held = step(reap_step, cfg)
    assert held.outputs["reaped"] == [] and "held by cancelled-run" in held.message
    clock.advance(31 * 60)
    dry = step(reap_step, cfg, dry_run=True)
    assert dry.outputs["reaped"] == [instance_id] and ec2.inner.describe(instance_id).state == "running"
    done = step(reap_step, cfg)
    assert done.outputs["reaped"] == [instance_id]
    assert ec2.inner.describe(instance_id).state == "stopped"
    assert TagLease(ec2, instance_id).read().holders == {}


def test_reap_forgets_expired_holders_of_a_stopped_instance(
    tmp_path: Path,
    instance_id: str,
    ec2: ScriptedEc2,
    ssm: FakeSsm,
    clock: FakeClock,
    step: Callable[..., StepResult],
) -> None:
    """The watchdog stopped the instance of a cancelled run; reap cleans the lease record."""
    cfg = make_cfg(tmp_path, instance_id, ttl_minutes=30)
    step(start_step, cfg, "cancelled-run")
    for _ in range(31):
        clock.advance(60)
        ssm.tick(instance_id)
    assert ec2.inner.describe(instance_id).state == "stopped"
    result = step(reap_step, cfg)
    assert result.outputs["reaped"] == [] and "forgot expired holders cancelled-run" in result.message
    assert TagLease(ec2, instance_id).read().holders == {}


def test_reap_leaves_an_instance_without_lease_alone(
    tmp_path: Path, instance_id: str, ec2: ScriptedEc2, ssm: FakeSsm, services: Any, clock: FakeClock
) -> None:
    ec2.inner.start(instance_id)
    result = reap_step(
        make_cfg(tmp_path), runtime=clock.runtime(quiet), services=services(make_cfg(tmp_path))
    )
    assert result.outputs["reaped"] == [] and "without any lease" in result.message


def test_watchdog_stops_the_instance_of_a_cancelled_run(
    tmp_path: Path,
    instance_id: str,
    ec2: ScriptedEc2,
    ssm: FakeSsm,
    clock: FakeClock,
    step: Callable[..., StepResult],
) -> None:
    cfg = make_cfg(tmp_path, instance_id, ttl_minutes=45)
    step(start_step, cfg, "cancelled")
    started = clock()
    # The workflow is cancelled: no `infra stop`. The instance's own clock runs on.
    for _ in range(60):
        clock.advance(60)
        ssm.tick(instance_id)
    assert ec2.inner.describe(instance_id).state == "stopped"
    assert ssm.watchdog_fired[instance_id] - started == pytest.approx(45 * 60, abs=61)


def test_status_reports_holders_expiry_uptime_and_cost(
    tmp_path: Path,
    instance_id: str,
    ec2: ScriptedEc2,
    ssm: FakeSsm,
    services: Any,
    clock: FakeClock,
    step: Callable[..., StepResult],
) -> None:
    cfg = make_cfg(tmp_path, instance_id)
    step(start_step, cfg, "run-a")
    st = status_step(cfg, runtime=clock.runtime(), services=services(cfg))
    assert st.outputs["state"] == "running" and st.outputs["holders"] == ["run-a"]
    assert st.data["lease_expiry"].endswith("UTC")
    assert "set infra.hourly_cost_usd" in st.message
    priced = make_cfg(tmp_path, instance_id, hourly_cost_usd=0.526)
    st2 = status_step(priced, runtime=WALL, services=services(priced))
    assert st2.data["cost_usd"] != "" and "$" in st2.message and "uptime" in st2.message


def test_local_backend_two_processes_same_semantics(tmp_path: Path) -> None:
    import subprocess
    import sys

    from traingate.config import parse_config

    cfg = parse_config({}, base_dir=tmp_path)
    code = (
        "import sys, time\n"
        "from traingate.config import parse_config\n"
        "from traingate.infra.stage import start_step\n"
        "from pathlib import Path\n"
        "r = start_step(parse_config({}, base_dir=Path(sys.argv[1])), sys.argv[2])\n"
        "print(r.outputs['state'])\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), f"p{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    assert [p.communicate(timeout=60)[0].strip() for p in procs] == ["running", "running"]
    assert sorted(FileLease(tmp_path / ".traingate" / "infra").read().holders) == ["p0", "p1"]
    one = stop_step(cfg, "p0")
    assert one.outputs == {
        "instance_id": "local",
        "state": "running",
        "stopped": False,
        "remaining_holders": ["p1"],
    }
    two = stop_step(cfg, "p1")
    assert two.outputs["state"] == "stopped" and two.outputs["stopped"] is True
    assert status_step(cfg).outputs["state"] == "stopped"
