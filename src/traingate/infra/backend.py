"""The one boundary between the infra stage and where a training machine comes from.

`infra start|stop|status|reap` and the lease rules are written once, in `stage.py`, against the
`Backend` protocol below. A backend only says how to acquire its machine (find the shared one,
launch a fresh one, or pretend locally), how to wait until it is ready, how to reach it (the run
channel), how to release it (stop, terminate) and which machines `reap` looks at. The backend is
chosen once from `infra.backend` by `backend_for`, whose match ends in `assert_never`, so a new
`InfraBackend` member that is not wired fails the type check instead of falling into an `else`.

The lease is the same object for every backend (`Lease` in lease.py: a file, instance tags or a
DynamoDB item); the backend only says which store its machine uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from traingate.config import Config, InfraBackend
from traingate.gha import ActionsContext
from traingate.infra.base import WALL, Ec2, Runtime, Ssm

if TYPE_CHECKING:
    from traingate.contracts import Executor
    from traingate.infra.lease import Lease


@dataclass
class Machine:
    """What the stage needs to know of a machine, whatever the backend."""

    id: str
    state: str
    public_ip: str = ""
    private_ip: str = ""
    instance_type: str = ""
    # Epoch seconds since when it has been running (uptime and cost in `status`); None when not.
    started_at: float | None = None
    # `on-demand`, `spot` or `local`; empty when unknown.
    market: str = ""
    # Hourly price of this machine on its market; None when unknown.
    hourly_usd: float | None = None


@dataclass
class Acquired:
    """A machine this run may use, before its lease is taken and before it is ready."""

    machine: Machine
    warnings: list[str] = field(default_factory=list)
    # Markdown rows (`| key | value |`) the start summary shows, e.g. the spot fallback.
    summary_rows: list[str] = field(default_factory=list)


@dataclass
class Readiness:
    machine: Machine
    waited_seconds: float
    polls: int
    # What was checked, for the summary (`running, status-ok, ssm`).
    checks: str
    warnings: list[str] = field(default_factory=list)


class Backend(Protocol):
    """Where training machines come from. Implementations: `local.LocalBackend`,
    `shared.SharedInstanceBackend` (`ec2`), `launch.LaunchBackend` (`launch`)."""

    #: True when the machine outlives runs (stopped, never terminated): a terminated one is an error.
    persistent: bool
    #: States `reap` acts on (a launched instance is reaped even when stopped: its disk bills).
    reap_states: tuple[str, ...]
    #: True when every candidate `reap` sees was created by traingate, so one with no lease at all
    #: is reaped too; False for a shared instance someone may have started by hand.
    owns_unleased: bool
    #: (first, cap) seconds of the backoff while another run's stop is in progress.
    acquire_backoff: tuple[float, float]

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> Acquired:
        """Find (shared) or create (launch) the machine this run uses."""
        ...

    def lease(self, machine: Machine) -> Lease:
        """The lease store of this machine."""
        ...

    def ready(self, machine: Machine) -> Readiness:
        """Bring the machine to running, wait until it is really ready and arm the watchdog."""
        ...

    def run_channel(self, machine: Machine) -> Ssm | None:
        """How a training command reaches the machine: SSM, or None for a local subprocess."""
        ...

    def release(self, machine: Machine, *, wait: bool) -> Machine:
        """Stop (shared, local) or terminate (launch) the machine; already done is success."""
        ...

    def locate(self, holder: str) -> list[Machine]:
        """The machine(s) `stop`/`status` act on for this holder; our own first. Empty when a
        per-run machine was never launched or is already gone."""
        ...

    def reap_candidates(self) -> list[Machine]:
        """Every machine `reap` should look at."""
        ...


@runtime_checkable
class JobBackend(Protocol):
    """A backend whose machine is a managed job that `train` itself creates (`sagemaker`): there
    is no machine to locate before training, and its run channel is an Executor, not a shell."""

    def job_channel(self) -> Executor:
        """The Executor that runs `train.command` as one job and brings its outputs back."""
        ...


class Services:
    """The AWS clients the ec2 and launch backends talk to, built from traingate.infra.aws
    unless handed in (tests pass moto-backed adapters and the SSM fake)."""

    def __init__(self, cfg: Config, ec2: Ec2 | None = None, ssm: Ssm | None = None) -> None:
        from traingate.infra import aws

        self.cfg = cfg
        self.ec2 = ec2 or aws.ec2_api(cfg.infra.region)
        self._ssm = ssm

    @property
    def ssm(self) -> Ssm:
        if self._ssm is None:
            from traingate.infra import aws

            self._ssm = aws.ssm_api(self.cfg.infra.region)
        return self._ssm

    def lease(self, instance_id: str) -> Lease:
        from traingate.infra.lease import DynamoLease, TagLease

        if self.cfg.infra.lease_table:
            from traingate.infra import aws

            return DynamoLease(
                aws.boto_client("dynamodb", self.cfg.infra.region), self.cfg.infra.lease_table, instance_id
            )
        return TagLease(self.ec2, instance_id)


def run_prefix(actions: ActionsContext) -> str:
    """`owner/repo/run_id/` in Actions: every job and attempt of one workflow run shares it."""
    if not actions.run_id:
        return ""
    return f"{actions.repository or 'actions'}/{actions.run_id}/"


def backend_for(
    cfg: Config,
    *,
    services: Services | None = None,
    runtime: Runtime = WALL,
    actions: ActionsContext | None = None,
) -> Backend:
    """The backend `infra.backend` names; the only place that branches on it. `actions`: the
    caller's Actions context (None: not in Actions)."""
    from typing import assert_never

    ctx = ActionsContext.given(actions)
    kind = cfg.infra.backend
    if kind is InfraBackend.local:
        from traingate.infra.local import LocalBackend

        return LocalBackend(cfg)
    if kind is InfraBackend.ec2:
        from traingate.infra.shared import SharedInstanceBackend

        return SharedInstanceBackend(cfg, services or Services(cfg), runtime=runtime)
    if kind is InfraBackend.launch:
        from traingate.infra.launch import LaunchBackend

        return LaunchBackend(cfg, services or Services(cfg), runtime=runtime, actions=ctx)
    if kind is InfraBackend.sagemaker:
        from traingate.infra.sagemaker import SageMakerBackend

        return SageMakerBackend(cfg, runtime=runtime, actions=ctx)
    assert_never(kind)
