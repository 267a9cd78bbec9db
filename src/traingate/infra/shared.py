"""`infra.backend: ec2`: one persistent instance shared by runs, started and stopped, never
terminated. Also the EC2 machinery (readiness, watchdog, run channel) `launch` reuses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from traingate.config import Config
from traingate.errors import InfraError
from traingate.infra.backend import Acquired, Machine, Readiness, Services
from traingate.infra.base import WALL, Instance, Runtime, Ssm, SsmUnreachableError
from traingate.infra.pricing import on_demand_usd

if TYPE_CHECKING:
    from traingate.infra.lease import Lease


def machine_of(inst: Instance, hourly_cost_usd: float = 0.0) -> Machine:
    started = inst.launch_time.timestamp() if inst.launch_time and inst.state == "running" else None
    market = "spot" if inst.lifecycle == "spot" else "on-demand"
    hourly = on_demand_usd(inst.instance_type, hourly_cost_usd) if market == "on-demand" else None
    return Machine(
        id=inst.id,
        state=inst.state,
        public_ip=inst.public_ip,
        private_ip=inst.private_ip,
        instance_type=inst.instance_type,
        started_at=started,
        market=market,
        hourly_usd=hourly,
    )


class _NoSsm:
    """Readiness without the `ssm` check never touches SSM."""

    def ping_status(self, instance_id: str) -> str:  # pragma: no cover - never called
        raise AssertionError("ssm not in infra.ready")

    def send(
        self, instance_id: str, script: str, *, timeout_seconds: int, comment: str = ""
    ) -> str:  # pragma: no cover
        raise AssertionError("ssm not in infra.ready")

    def invocation(self, command_id: str, instance_id: str) -> Any:  # pragma: no cover
        raise AssertionError("ssm not in infra.ready")


def arm_watchdog(
    cfg: Config,
    ssm: Ssm,
    instance_id: str,
    *,
    required: bool,
    runtime: Runtime = WALL,
    verb: str = "stops",
) -> list[str]:
    """(Re)arm the self-stop. When SSM is part of readiness a failure is an error; otherwise the
    instance may have no agent and we say loudly that nothing will stop it but `infra stop`/`reap`."""
    from traingate.infra.ssm import check_command, run_command, watchdog_script

    try:
        if not required and ssm.ping_status(instance_id) != "Online":
            raise SsmUnreachableError(f"SSM agent of {instance_id} is not online")
        inv = run_command(
            ssm,
            instance_id,
            watchdog_script(cfg.infra.ttl_minutes),
            timeout_seconds=60,
            runtime=runtime,
            comment="traingate watchdog",
        )
        check_command(inv, "arming the self-stop watchdog", instance_id)
    except InfraError as err:
        if required:
            raise
        msg = (
            f"self-stop watchdog NOT armed on {instance_id} ({err.message}); only `traingate infra stop` "
            "or `infra reap` will stop it — add `ssm` to infra.ready"
        )
        runtime.log(msg)
        return [msg]
    runtime.log(
        f"self-stop watchdog armed: {instance_id} {verb} itself "
        f"{cfg.infra.ttl_minutes} min after the last renewal"
    )
    return []


class Ec2Machines:
    """What the EC2 backends share: readiness, the watchdog, SSM as the run channel, the lease."""

    persistent = True
    reap_states: tuple[str, ...] = ("running", "pending")
    owns_unleased = False
    acquire_backoff = (0.5, 5.0)
    #: How the watchdog's halt ends the machine (for the log).
    halt_verb = "stops"

    def __init__(self, cfg: Config, services: Services, *, runtime: Runtime = WALL) -> None:
        self.cfg = cfg
        self.svc = services
        self.runtime = runtime

    def log(self, line: str) -> None:
        self.runtime.log(line)

    def machine(self, inst: Instance) -> Machine:
        return machine_of(inst, self.cfg.infra.hourly_cost_usd)

    def lease(self, machine: Machine) -> Lease:
        return self.svc.lease(machine.id)

    def run_channel(self, machine: Machine) -> Ssm | None:
        return self.svc.ssm

    def ready(self, machine: Machine) -> Readiness:
        from traingate.infra.ec2 import ensure_running
        from traingate.infra.readiness import wait_ready

        cfg = self.cfg
        timeout = cfg.infra.ready_timeout_minutes * 60
        began = self.runtime.clock()
        ensure_running(
            self.svc.ec2,
            machine.id,
            timeout=timeout,
            capacity_budget=cfg.infra.start_retry_budget_minutes * 60,
            runtime=self.runtime,
            poll_cap=cfg.infra.poll_cap_seconds,
        )
        report = wait_ready(
            self.svc.ec2,
            self.svc.ssm if "ssm" in cfg.infra.ready else _NoSsm(),
            machine.id,
            list(cfg.infra.ready),
            timeout=max(1.0, timeout - (self.runtime.clock() - began)),
            poll_cap=cfg.infra.poll_cap_seconds,
            runtime=self.runtime,
        )
        warnings = arm_watchdog(
            cfg,
            self.svc.ssm,
            machine.id,
            required="ssm" in cfg.infra.ready,
            runtime=self.runtime,
            verb=self.halt_verb,
        )
        ready = self.machine(report.instance)
        ready.market = machine.market or ready.market
        ready.hourly_usd = machine.hourly_usd if machine.hourly_usd is not None else ready.hourly_usd
        return Readiness(ready, report.waited_seconds, report.polls, ", ".join(cfg.infra.ready), warnings)


class SharedInstanceBackend(Ec2Machines):
    """The shared instance: found by id or tags, started and stopped, never terminated."""

    def _find(self) -> Instance:
        from traingate.infra.ec2 import find_instance

        return find_instance(self.svc.ec2, self.cfg.infra.instance.id, dict(self.cfg.infra.instance.tags))

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> Acquired:
        inst = self._find()
        if inst.state in ("shutting-down", "terminated"):
            raise InfraError(
                f"instance {inst.id} is {inst.state}: it cannot be started",
                hint="the shared instance must be stopped, never terminated; point infra.instance at a "
                "new instance built from the training AMI",
            )
        warnings: list[str] = []
        behavior = self.svc.ec2.shutdown_behavior(inst.id)
        if behavior != "stop":
            # The watchdog halts the OS; with `terminate` that would destroy the shared instance.
            self.svc.ec2.set_shutdown_behavior(inst.id, "stop")
            warnings.append(f"instance {inst.id} had shutdown behaviour {behavior!r}; set it to 'stop'")
            self.log(warnings[-1])
        return Acquired(self.machine(inst), warnings)

    def release(self, machine: Machine, *, wait: bool) -> Machine:
        from traingate.infra.ec2 import stop_and_wait

        final = stop_and_wait(
            self.svc.ec2,
            machine.id,
            wait=wait,
            timeout=self.cfg.infra.stop_timeout_minutes * 60,
            runtime=self.runtime,
            poll_cap=self.cfg.infra.poll_cap_seconds,
        )
        return self.machine(final)

    def locate(self, holder: str) -> list[Machine]:
        return [self.machine(self._find())]

    def reap_candidates(self) -> list[Machine]:
        if self.cfg.infra.instance.tags and not self.cfg.infra.instance.id:
            found = self.svc.ec2.find("", dict(self.cfg.infra.instance.tags))
            return [self.machine(i) for i in found if i.state != "terminated"]
        return self.locate("")
