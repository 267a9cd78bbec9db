"""The service boundary of the infra stage: small Protocols for EC2 and SSM.

The stage logic (start from any state, readiness, lease, watchdog) takes these as arguments, so
the boto3 adapters (`ec2.py`, `ssm.py`) are thin and tests can run the same logic against moto's
server for EC2 and an SSM fake that really executes commands (moto's SSM runs nothing).
Adapters translate AWS error codes into the exceptions below, so the logic never parses
botocore errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from traingate.errors import InfraError

# One definition for the whole package (traingate.runtime); re-exported for infra's modules.
from traingate.runtime import Clock, Log, Runtime, Sleep  # noqa: F401

#: Infra's default runtime reads the wall clock, not a monotonic one: lease expiries are epoch
#: seconds written to tags, DynamoDB and files and compared by other runs on other machines.
WALL = Runtime(clock=time.time)

#: States no amount of waiting or starting fixes.
GONE = frozenset({"shutting-down", "terminated"})
#: SSM command statuses after which the status never changes again.
TERMINAL_COMMAND = frozenset(
    {"Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated", "DeliveryTimedOut"}
)


@dataclass
class Instance:
    id: str
    state: str
    public_ip: str = ""
    private_ip: str = ""
    instance_type: str = ""
    launch_time: datetime | None = None
    tags: dict[str, str] = field(default_factory=dict)
    # `spot` for a spot instance, `` for on-demand (EC2's InstanceLifecycle).
    lifecycle: str = ""

    @property
    def name(self) -> str:
        return self.tags.get("Name", "")


@dataclass
class CommandInvocation:
    command_id: str
    # Pending | InProgress | Delayed | Success | Failed | TimedOut | Cancelled | ...
    status: str
    # -1 while the command has not finished, as the real service reports it.
    exit_code: int = -1
    stdout: str = ""
    stderr: str = ""

    @property
    def done(self) -> bool:
        return self.status in TERMINAL_COMMAND


class CapacityError(InfraError):
    """InsufficientInstanceCapacity: AWS has no capacity for this type in this zone right now."""


class MarketUnavailableError(InfraError):
    """A spot launch refused for capacity or price (InsufficientInstanceCapacity,
    SpotMaxPriceTooLow, ...); `code` is the AWS error code."""

    def __init__(self, message: str, *, code: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.code = code


class AccessDeniedError(InfraError):
    """UnauthorizedOperation / AccessDenied: the credentials lack an IAM action."""


class IncorrectStateError(InfraError):
    """IncorrectInstanceState: the instance changed state under us; re-read and continue."""


class SsmUnreachableError(InfraError):
    """The SSM agent cannot take a command (not registered, offline, or the instance stopped)."""


class Ec2(Protocol):
    def find(self, instance_id: str, tags: dict[str, str]) -> list[Instance]:
        """Instances matching the id, or all the tags (terminated ones included: they are named
        in errors rather than silently skipped)."""
        ...

    def describe(self, instance_id: str) -> Instance: ...

    def start(self, instance_id: str) -> None: ...

    def stop(self, instance_id: str) -> None: ...

    def status_checks(self, instance_id: str) -> tuple[str, str]:
        """(instance status, system status): `ok`, `initializing`, `impaired`, ... or `unknown`."""
        ...

    def shutdown_behavior(self, instance_id: str) -> str: ...

    def set_shutdown_behavior(self, instance_id: str, behavior: str) -> None: ...

    def set_tags(self, instance_id: str, tags: dict[str, str]) -> None: ...

    def delete_tags(self, instance_id: str, keys: list[str]) -> None: ...


@dataclass
class LaunchRequest:
    """What RunInstances gets for `infra.backend: launch` (one instance, always)."""

    tags: dict[str, str]
    template: str = ""
    image_id: str = ""
    instance_type: str = ""
    subnet_id: str = ""
    security_group_ids: list[str] = field(default_factory=list)
    instance_profile: str = ""
    spot: bool = False
    max_price: str = ""


class Ec2Launcher(Ec2, Protocol):
    """The calls a per-run instance needs besides the shared instance's."""

    def launch(self, request: LaunchRequest) -> Instance:
        """RunInstances with shutdown behaviour `terminate` and the tags on the instance from its
        first moment. Raises MarketUnavailableError when a spot request is refused."""
        ...

    def terminate(self, instance_id: str) -> None: ...

    def spot_price(self, instance_type: str) -> float | None:
        """The lowest current spot price (USD/hour, Linux) across zones, None when unknown."""
        ...


class Ssm(Protocol):
    def ping_status(self, instance_id: str) -> str:
        """`Online`, `ConnectionLost`, `Inactive`, or `` when the agent never registered."""
        ...

    def send(self, instance_id: str, script: str, *, timeout_seconds: int, comment: str = "") -> str:
        """Start `script` (AWS-RunShellScript) and return the command id. Raises
        SsmUnreachableError when the agent cannot take it."""
        ...

    def invocation(self, command_id: str, instance_id: str) -> CommandInvocation: ...


def backoff_delays(first: float, cap: float, factor: float = 2.0) -> Callable[[], float]:
    """Capped exponential backoff: the first check comes quickly, later ones at most `cap` apart,
    so readiness is seen at most `cap` seconds after it happens."""
    state = {"next": first}

    def nxt() -> float:
        value = state["next"]
        state["next"] = min(cap, value * factor)
        return min(value, cap)

    return nxt
