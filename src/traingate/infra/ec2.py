"""EC2: the boto3 adapter and the start/stop state machine of the shared instance.

The instance is persistent (it holds the training environment and often MLflow), so it is
started and stopped, never created or terminated. `ensure_running` handles every state instead
of assuming one (field report 3: a `stopping` instance was slept on for 30 s and reported fine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from traingate.errors import InfraError
from traingate.infra.aws import translate_client_error
from traingate.infra.base import (
    GONE,
    WALL,
    CapacityError,
    Ec2,
    Ec2Launcher,
    IncorrectStateError,
    Instance,
    LaunchRequest,
    MarketUnavailableError,
    Runtime,
    backoff_delays,
)

#: RunInstances error codes that mean "no spot for you right now" (capacity or price), as opposed
#: to a configuration or permission error that on-demand would hit as well.
SPOT_UNAVAILABLE = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "UnfulfillableCapacity",
        "InsufficientHostCapacity",
    }
)


class Boto3Ec2:
    """`Ec2` over a boto3 client; every ClientError becomes a TraingateError naming the action."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def _call(self, action: str, resource: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as err:
            raise translate_client_error(err, action=action, resource=resource) from err

    @staticmethod
    def _instance(raw: dict[str, Any]) -> Instance:
        return Instance(
            id=raw["InstanceId"],
            state=raw.get("State", {}).get("Name", "unknown"),
            public_ip=raw.get("PublicIpAddress", "") or "",
            private_ip=raw.get("PrivateIpAddress", "") or "",
            instance_type=raw.get("InstanceType", ""),
            launch_time=raw.get("LaunchTime"),
            tags={t["Key"]: t["Value"] for t in raw.get("Tags", []) or []},
            lifecycle=raw.get("InstanceLifecycle", "") or "",
        )

    def find(self, instance_id: str, tags: dict[str, str]) -> list[Instance]:
        kwargs: dict[str, Any] = {}
        if instance_id:
            kwargs["InstanceIds"] = [instance_id]
        if tags:
            kwargs["Filters"] = [{"Name": f"tag:{k}", "Values": [v]} for k, v in sorted(tags.items())]
        found: list[Instance] = []
        token = None
        while True:
            if token:
                kwargs["NextToken"] = token
            page = self._call(
                "ec2:DescribeInstances",
                instance_id or "tagged instances",
                self.client.describe_instances,
                **kwargs,
            )
            for res in page.get("Reservations", []):
                found.extend(self._instance(raw) for raw in res.get("Instances", []))
            token = page.get("NextToken")
            if not token:
                return found

    def describe(self, instance_id: str) -> Instance:
        found = self.find(instance_id, {})
        if not found:
            raise InfraError(
                f"instance {instance_id} not found", hint="check infra.instance.id and infra.region"
            )
        return found[0]

    def start(self, instance_id: str) -> None:
        self._call("ec2:StartInstances", instance_id, self.client.start_instances, InstanceIds=[instance_id])

    def stop(self, instance_id: str) -> None:
        self._call("ec2:StopInstances", instance_id, self.client.stop_instances, InstanceIds=[instance_id])

    def status_checks(self, instance_id: str) -> tuple[str, str]:
        page = self._call(
            "ec2:DescribeInstanceStatus",
            instance_id,
            self.client.describe_instance_status,
            InstanceIds=[instance_id],
            IncludeAllInstances=True,
        )
        for st in page.get("InstanceStatuses", []):
            return (
                st.get("InstanceStatus", {}).get("Status", "unknown"),
                st.get("SystemStatus", {}).get("Status", "unknown"),
            )
        return ("unknown", "unknown")

    def shutdown_behavior(self, instance_id: str) -> str:
        out = self._call(
            "ec2:DescribeInstanceAttribute",
            instance_id,
            self.client.describe_instance_attribute,
            InstanceId=instance_id,
            Attribute="instanceInitiatedShutdownBehavior",
        )
        return str(out.get("InstanceInitiatedShutdownBehavior", {}).get("Value", "stop"))

    def set_shutdown_behavior(self, instance_id: str, behavior: str) -> None:
        self._call(
            "ec2:ModifyInstanceAttribute",
            instance_id,
            self.client.modify_instance_attribute,
            InstanceId=instance_id,
            Attribute="instanceInitiatedShutdownBehavior",
            Value=behavior,
        )

    def set_tags(self, instance_id: str, tags: dict[str, str]) -> None:
        self._call(
            "ec2:CreateTags",
            instance_id,
            self.client.create_tags,
            Resources=[instance_id],
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )

    def delete_tags(self, instance_id: str, keys: list[str]) -> None:
        if keys:
            self._call(
                "ec2:DeleteTags",
                instance_id,
                self.client.delete_tags,
                Resources=[instance_id],
                Tags=[{"Key": k} for k in keys],
            )

    # ------------------------------------------------------------------ per-run instances
    def launch(self, request: LaunchRequest) -> Instance:
        from botocore.exceptions import ClientError

        tags = [{"Key": k, "Value": v} for k, v in request.tags.items()]
        kwargs: dict[str, Any] = {
            "MinCount": 1,
            "MaxCount": 1,
            # The watchdog halts the OS: for a per-run instance that must end the billing.
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if request.template:
            key = "LaunchTemplateId" if request.template.startswith("lt-") else "LaunchTemplateName"
            kwargs["LaunchTemplate"] = {key: request.template}
        if request.image_id:
            kwargs["ImageId"] = request.image_id
        if request.instance_type:
            kwargs["InstanceType"] = request.instance_type
        if request.subnet_id:
            kwargs["SubnetId"] = request.subnet_id
        if request.security_group_ids:
            kwargs["SecurityGroupIds"] = list(request.security_group_ids)
        if request.instance_profile:
            key = "Arn" if request.instance_profile.startswith("arn:") else "Name"
            kwargs["IamInstanceProfile"] = {key: request.instance_profile}
        if request.spot:
            options: dict[str, Any] = {
                # One-time and terminate on interruption: a per-run instance is never resumed.
                "SpotInstanceType": "one-time",
                "InstanceInterruptionBehavior": "terminate",
            }
            if request.max_price:
                options["MaxPrice"] = request.max_price
            kwargs["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        what = request.instance_type or request.template or "instance"
        try:
            out = self.client.run_instances(**kwargs)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if request.spot and code in SPOT_UNAVAILABLE:
                message = err.response.get("Error", {}).get("Message", "")
                raise MarketUnavailableError(
                    f"spot launch of {what} refused: {code}: {message}", code=code
                ) from err
            raise translate_client_error(err, action="ec2:RunInstances", resource=what) from err
        except Exception as err:
            raise translate_client_error(err, action="ec2:RunInstances", resource=what) from err
        return self._instance(out["Instances"][0])

    def terminate(self, instance_id: str) -> None:
        self._call(
            "ec2:TerminateInstances", instance_id, self.client.terminate_instances, InstanceIds=[instance_id]
        )

    def spot_price(self, instance_type: str) -> float | None:
        from datetime import UTC, datetime

        page = self._call(
            "ec2:DescribeSpotPriceHistory",
            instance_type,
            self.client.describe_spot_price_history,
            InstanceTypes=[instance_type],
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.now(UTC),
        )
        prices = []
        for item in page.get("SpotPriceHistory", []):
            try:
                prices.append(float(item["SpotPrice"]))
            except (KeyError, ValueError):
                continue
        return min(prices) if prices else None


def find_instance(ec2: Ec2, instance_id: str, tags: dict[str, str]) -> Instance:
    """Exactly one instance, or an error that lists what matched."""
    if not instance_id and not tags:
        raise InfraError(
            "no instance selected: infra.instance.id and infra.instance.tags are both empty",
            hint="set infra.instance.id (e.g. i-0123456789abcdef0) "
            "or infra.instance.tags (e.g. {Name: trainer})",
        )
    found = ec2.find(instance_id, tags)
    label = instance_id or ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))
    if tags and instance_id:
        found = [i for i in found if all(i.tags.get(k) == v for k, v in tags.items())]
    if not found:
        raise InfraError(
            f"no EC2 instance matches {label}",
            hint="check infra.instance in traingate.yml and infra.region (instances are per region)",
        )
    live = [i for i in found if i.state != "terminated"]
    if len(found) > 1 and len(live) == 1:
        return live[0]
    if len(found) > 1:
        listing = "; ".join(f"{i.id} ({i.state}{', ' + i.name if i.name else ''})" for i in found)
        raise InfraError(
            f"{len(found)} EC2 instances match {label}: {listing}",
            hint="set infra.instance.id, or add a tag that only the shared training instance has",
        )
    return found[0]


def ensure_running(
    ec2: Ec2,
    instance_id: str,
    *,
    timeout: float,
    capacity_budget: float,
    runtime: Runtime = WALL,
    poll_cap: float = 5.0,
) -> Instance:
    """Bring the instance to `running` from whatever state it is in.

    `stopping` is waited out before starting (StartInstances on a stopping instance fails with
    IncorrectInstanceState); capacity errors are retried with backoff inside their own budget,
    because AWS often has capacity again within minutes.
    """
    start = runtime.clock()
    delay = backoff_delays(0.5, poll_cap)
    capacity = _CapacityRetry(capacity_budget, runtime)
    last_state = ""
    while True:
        inst = ec2.describe(instance_id)
        if inst.state != last_state:
            runtime.log(f"instance {instance_id} is {inst.state}")
            last_state = inst.state
        if inst.state == "running":
            return inst
        if inst.state in GONE:
            raise InfraError(
                f"instance {instance_id} is {inst.state}: a terminated instance cannot be started",
                hint="the shared instance must be stopped, never terminated; create a new one from the "
                "training AMI and set infra.instance.id (or its tags) to it",
            )
        if inst.state == "stopped":
            if not _start_stopped(ec2, inst, capacity, runtime):
                continue  # the capacity retry has waited already
        elif runtime.clock() - start > timeout:
            raise InfraError(
                f"instance {instance_id} still {inst.state} after {timeout:.0f} s",
                hint="look at the instance in the EC2 console; "
                "raise infra.ready_timeout_minutes if it is slow",
            )
        runtime.sleep(delay())


@dataclass
class _CapacityRetry:
    """InsufficientInstanceCapacity, retried with its own backoff inside its own budget, counted
    from the first refusal."""

    budget: float
    runtime: Runtime
    began: float | None = None
    delay: Callable[[], float] = field(default_factory=lambda: backoff_delays(10.0, 60.0))

    def wait_or_give_up(self, inst: Instance, err: CapacityError) -> None:
        now = self.runtime.clock()
        self.began = self.began if self.began is not None else now
        if now - self.began >= self.budget:
            raise InfraError(
                f"no EC2 capacity to start {inst.id} ({inst.instance_type or 'its type'}) after "
                f"retrying for {now - self.began:.0f} s: {err.message}",
                hint="retry later, raise infra.start_retry_budget_minutes, or change the instance "
                "type (stop it, modify the type, start again)",
            ) from None
        wait = self.delay()
        self.runtime.log(f"InsufficientInstanceCapacity for {inst.id}; retrying in {wait:.0f} s")
        self.runtime.sleep(wait)


def _start_stopped(ec2: Ec2, inst: Instance, capacity: _CapacityRetry, runtime: Runtime) -> bool:
    """StartInstances on a stopped instance. False when a capacity refusal has already waited
    (the caller re-reads the state at once)."""
    try:
        ec2.start(inst.id)
        runtime.log(f"start requested for {inst.id}")
    except CapacityError as err:
        capacity.wait_or_give_up(inst, err)
        return False
    except IncorrectStateError as err:
        runtime.log(f"{err.message}; re-reading the state")
    return True


def terminate_and_wait(
    ec2: Ec2Launcher,
    instance_id: str,
    *,
    wait: bool,
    timeout: float,
    runtime: Runtime = WALL,
    poll_cap: float = 5.0,
) -> Instance:
    """Terminate a per-run instance. Already gone is success (idempotent)."""
    return _halt_and_wait(
        ec2, instance_id, verb="terminate", done=("terminated",), halting="shutting-down",
        may_request=lambda state: state != "shutting-down", request=ec2.terminate,
        wait=wait, timeout=timeout, runtime=runtime, poll_cap=poll_cap,
    )  # fmt: skip


def stop_and_wait(
    ec2: Ec2,
    instance_id: str,
    *,
    wait: bool,
    timeout: float,
    runtime: Runtime = WALL,
    poll_cap: float = 5.0,
) -> Instance:
    """Stop (never terminate). Already stopped is success; `pending` is waited out first."""
    return _halt_and_wait(
        ec2, instance_id, verb="stop", done=("stopped", *GONE), halting="stopping",
        may_request=lambda state: state == "running", request=ec2.stop,
        wait=wait, timeout=timeout, runtime=runtime, poll_cap=poll_cap,
    )  # fmt: skip


def _halt_and_wait(
    ec2: Ec2,
    instance_id: str,
    *,
    verb: str,
    done: tuple[str, ...],
    halting: str,
    may_request: Callable[[str], bool],
    request: Callable[[str], None],
    wait: bool,
    timeout: float,
    runtime: Runtime,
    poll_cap: float,
) -> Instance:
    """The one wait loop behind stop and terminate: ask once (when the state allows it), then
    poll with capped backoff until a `done` state, or return at once without `wait`. An instance
    still billing after `timeout` is an error that says so, never a quiet return."""
    start = runtime.clock()
    delay = backoff_delays(0.5, poll_cap)
    requested = False
    while True:
        inst = ec2.describe(instance_id)
        if inst.state in done or (inst.state == halting and not wait):
            return inst
        if not requested and may_request(inst.state):
            try:
                request(instance_id)
                requested = True
                runtime.log(f"{verb} requested for {instance_id}")
            except IncorrectStateError as err:
                runtime.log(f"{err.message}; re-reading the state")
            if requested and not wait:
                return ec2.describe(instance_id)
        if runtime.clock() - start > timeout:
            raise InfraError(
                f"instance {instance_id} did not {verb}: still {inst.state} after {timeout:.0f} s",
                hint=f"{verb} it in the EC2 console now (it costs money while running) and check "
                f"ec2:{verb.capitalize()}Instances in the role's policy",
            )
        runtime.sleep(delay())
