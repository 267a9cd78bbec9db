"""The `infra start|stop|status|reap` stages.

start: take the lease first (so no stopper can slip in between our readiness check and our
work), bring the instance to `running` from any state, wait until really ready, arm the
self-stop watchdog. stop: release; stop only when no live holder remains; idempotent; loud when
a running instance does not stop. On a failed start our lease is released (and the instance
stopped if no one else holds it), so a failed job does not leave it running for days.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

from traingate.config import Config, InfraBackend
from traingate.errors import InfraError
from traingate.infra.base import Clock, Ec2, Instance, Log, Sleep, Ssm, SsmUnreachableError, backoff_delays
from traingate.infra.lease import DynamoLease, FileLease, Lease, StopInProgress, TagLease
from traingate.result import StepResult
from traingate.state import read_state, update_state


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------- holders
def run_prefix() -> str:
    """`owner/repo/run_id/` in Actions: every job and attempt of one workflow run shares it."""
    run_id = os.environ.get("GITHUB_RUN_ID", "")
    if not run_id:
        return ""
    return f"{os.environ.get('GITHUB_REPOSITORY', '') or 'actions'}/{run_id}/"


def resolve_holder(explicit: str | None, cfg: Config, *, for_stop: bool = False) -> str:
    """The lease holder id. In Actions it is derived from run-level values (never the pid), so
    `infra stop` in another job of the same run releases the same lease; outside Actions,
    `start` records it in the state file and `stop` reads it back."""
    if explicit:
        return explicit
    prefix = run_prefix()
    if prefix:
        return prefix + (os.environ.get("GITHUB_RUN_ATTEMPT", "") or "1")
    if for_stop:
        saved = read_state(cfg.workspace_dir).get("infra_holder")
        if isinstance(saved, str) and saved:
            return saved
    return f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"


def _same_run(holder: str, held: list[str]) -> list[str]:
    """Our holder first, then other attempts of the same Actions run: a re-run has a new attempt
    number but must release the lease an earlier attempt took. This holds whether the holder was
    derived or passed explicitly (stop-infra.yml passes start-infra's `holder` output, which is
    the attempt that ran start-infra)."""
    prefix = run_prefix()
    extra = [h for h in held if prefix and h.startswith(prefix) and h != holder]
    return [holder, *sorted(extra)]


# ------------------------------------------------------------------------------------- wiring
class Services:
    """What the ec2 backend talks to; built from traingate.infra.aws (overridable in tests)."""

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
        if self.cfg.infra.lease_table:
            from traingate.infra import aws

            return DynamoLease(
                aws.boto_client("dynamodb", self.cfg.infra.region), self.cfg.infra.lease_table, instance_id
            )
        return TagLease(self.ec2, instance_id)


def _find(cfg: Config, ec2: Ec2) -> Instance:
    from traingate.infra.ec2 import find_instance

    return find_instance(ec2, cfg.infra.instance.id, dict(cfg.infra.instance.tags))


def _mlflow_url(cfg: Config, inst: Instance) -> str:
    from traingate.infra.readiness import render_url

    return render_url(cfg.infra.mlflow_url, inst) if cfg.infra.mlflow_url else ""


def _acquire(
    lease: Lease, holder: str, ttl: float, *, timeout: float, sleep: Sleep, clock: Clock, log: Log
) -> None:
    delay = backoff_delays(0.5, 5.0)
    deadline = clock() + timeout
    while True:
        try:
            lease.acquire(holder, ttl, clock())
            return
        except StopInProgress as err:
            if clock() > deadline:
                raise InfraError(
                    f"{err.message} for more than {timeout:.0f} s",
                    hint="check the other run's stop-infra job; a stale claim expires after 10 minutes",
                ) from None
            log(f"{err.message}; waiting before starting it again")
            sleep(delay())


# -------------------------------------------------------------------------------------- start
def start_step(
    cfg: Config,
    holder: str | None = None,
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.time,
    log: Log = _stderr,
    services: Services | None = None,
) -> StepResult:
    who = resolve_holder(holder, cfg)
    if cfg.infra.backend is InfraBackend.local:
        from traingate.infra import local

        result = local.start(cfg, who, sleep=sleep, clock=clock, log=log)
        update_state(cfg.workspace_dir, infra_holder=who, instance_id=local.LOCAL_ID)
        return result

    svc = services or Services(cfg)
    inst = _find(cfg, svc.ec2)
    if inst.state in ("shutting-down", "terminated"):
        raise InfraError(
            f"instance {inst.id} is {inst.state}: it cannot be started",
            hint="the shared instance must be stopped, never terminated; point infra.instance at a "
            "new instance built from the training AMI",
        )
    warnings: list[str] = []
    behavior = svc.ec2.shutdown_behavior(inst.id)
    if behavior != "stop":
        # The watchdog halts the OS; with `terminate` that would destroy the shared instance.
        svc.ec2.set_shutdown_behavior(inst.id, "stop")
        warnings.append(f"instance {inst.id} had shutdown behaviour {behavior!r}; set it to 'stop'")
        log(warnings[-1])

    lease = svc.lease(inst.id)
    ttl = cfg.infra.ttl_minutes * 60
    _acquire(lease, who, ttl, timeout=cfg.infra.stop_timeout_minutes * 60, sleep=sleep, clock=clock, log=log)
    update_state(cfg.workspace_dir, infra_holder=who, instance_id=inst.id)
    try:
        ready, watchdog = _bring_up(cfg, svc, inst.id, sleep=sleep, clock=clock, log=log)
    except BaseException as err:
        note = _give_back(svc, lease, inst.id, who, cfg, sleep=sleep, clock=clock, log=log)
        if isinstance(err, InfraError) and note:
            err.hint = (err.hint + "; " if err.hint else "") + note
        raise
    warnings.extend(watchdog)
    final = ready.instance
    outputs = {
        "instance_id": final.id,
        "public_ip": final.public_ip,
        "private_ip": final.private_ip,
        "state": final.state,
        "mlflow_url": _mlflow_url(cfg, final),
        "holder": who,
    }
    live = lease.read().live(clock())
    others = sorted(h for h in live if h != who)
    summary = (
        "### Infra: instance ready\n\n| | |\n|---|---|\n"
        f"| instance | `{final.id}` ({final.instance_type or '?'}) |\n| state | {final.state} |\n"
        f"| ready checks | {', '.join(cfg.infra.ready)} ({ready.waited_seconds:.0f} s) |\n"
        f"| holder | `{who}` |\n| other holders | {', '.join(others) or 'none'} |\n"
        f"| watchdog | stops the instance {cfg.infra.ttl_minutes} min after the last renewal |\n"
    )
    return StepResult(
        outputs=outputs,
        summary=summary,
        message=f"instance {final.id} ready after {ready.waited_seconds:.0f} s (holder {who})",
        warnings=warnings,
        data={"holders": sorted(live), "waited_seconds": ready.waited_seconds, "polls": ready.polls},
    )


def _bring_up(
    cfg: Config, svc: Services, instance_id: str, *, sleep: Sleep, clock: Clock, log: Log
) -> tuple[Any, list[str]]:
    from traingate.infra.ec2 import ensure_running
    from traingate.infra.readiness import wait_ready

    timeout = cfg.infra.ready_timeout_minutes * 60
    began = clock()
    ensure_running(
        svc.ec2,
        instance_id,
        timeout=timeout,
        capacity_budget=cfg.infra.start_retry_budget_minutes * 60,
        sleep=sleep,
        clock=clock,
        log=log,
        poll_cap=cfg.infra.poll_cap_seconds,
    )
    ready = wait_ready(
        svc.ec2,
        svc.ssm if "ssm" in cfg.infra.ready else _NoSsm(),
        instance_id,
        list(cfg.infra.ready),
        timeout=max(1.0, timeout - (clock() - began)),
        poll_cap=cfg.infra.poll_cap_seconds,
        sleep=sleep,
        clock=clock,
        log=log,
    )
    warnings = arm_watchdog(
        cfg, svc.ssm, instance_id, required="ssm" in cfg.infra.ready, sleep=sleep, clock=clock, log=log
    )
    return ready, warnings


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
    cfg: Config, ssm: Ssm, instance_id: str, *, required: bool, sleep: Sleep, clock: Clock, log: Log
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
            sleep=sleep,
            clock=clock,
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
        log(msg)
        return [msg]
    log(
        f"self-stop watchdog armed: {instance_id} stops itself "
        f"{cfg.infra.ttl_minutes} min after the last renewal"
    )
    return []


def _give_back(
    svc: Services,
    lease: Lease,
    instance_id: str,
    holder: str,
    cfg: Config,
    *,
    sleep: Sleep,
    clock: Clock,
    log: Log,
) -> str:
    """Best effort after a failed start: release our lease, stop the instance if we were last."""
    from traingate.infra.ec2 import stop_and_wait

    try:
        rel = lease.release(holder, clock())
        if not rel.may_stop:
            return f"lease released; instance left running for {', '.join(rel.remaining) or 'another run'}"
        try:
            stop_and_wait(svc.ec2, instance_id, wait=False, timeout=60, sleep=sleep, clock=clock, log=log)
        finally:
            lease.clear_stop(holder)
        return "lease released and the instance stopped again"
    except Exception as err:
        return f"could not give the instance back ({err}); run `traingate infra stop`"


# --------------------------------------------------------------------------------------- stop
def stop_step(
    cfg: Config,
    holder: str | None = None,
    wait: bool = True,
    force: bool = False,
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.time,
    log: Log = _stderr,
    services: Services | None = None,
) -> StepResult:
    who = resolve_holder(holder, cfg, for_stop=True)
    wait = wait and cfg.infra.stop_wait
    if cfg.infra.backend is InfraBackend.local:
        from traingate.infra import local

        held = list(local.lease_for(cfg).read().holders)
        return local.stop(cfg, _same_run(who, held), force=force, clock=clock)

    from traingate.infra.ec2 import stop_and_wait

    svc = services or Services(cfg)
    inst = _find(cfg, svc.ec2)
    lease = svc.lease(inst.id)
    now = clock()
    ours = _same_run(who, list(lease.read().holders))
    for other in ours[1:]:
        lease.release(other, now, claim_stop=False)
    rel = lease.release(who, now, claim_stop=not force)
    if force:
        if rel.remaining:
            log(f"--force: stopping {inst.id} although {', '.join(rel.remaining)} still hold it")
        lease.claim_stop(who, now, force=True)
    elif not rel.may_stop:
        remaining = rel.remaining or sorted(lease.read().live(now))
        msg = f"instance {inst.id} left {inst.state}: still held by {', '.join(remaining)}"
        return StepResult(
            outputs={
                "instance_id": inst.id,
                "state": inst.state,
                "stopped": False,
                "remaining_holders": remaining,
            },
            message=msg,
            summary=f"### Infra: instance kept running\n\n{msg}. The last holder's `infra stop` stops it.\n",
        )
    try:
        final = stop_and_wait(
            svc.ec2,
            inst.id,
            wait=wait,
            timeout=cfg.infra.stop_timeout_minutes * 60,
            sleep=sleep,
            clock=clock,
            log=log,
            poll_cap=cfg.infra.poll_cap_seconds,
        )
    finally:
        lease.clear_stop(who)
    warnings = []
    if final.state in ("shutting-down", "terminated"):
        warnings.append(f"instance {inst.id} is {final.state}: point infra.instance at a new instance")
    stopped = final.state in ("stopped", "stopping", "shutting-down", "terminated")
    msg = f"instance {inst.id} {final.state}" + ("" if inst.state != "stopped" else " (was already stopped)")
    return StepResult(
        outputs={"instance_id": inst.id, "state": final.state, "stopped": stopped, "remaining_holders": []},
        message=msg,
        summary=f"### Infra: {msg}\n\nReleased by `{who}`; no other holder remained.\n",
        warnings=warnings,
    )


# ------------------------------------------------------------------------------------- status
def _fmt_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _cost(cfg: Config, uptime_seconds: float | None) -> tuple[str, str]:
    if uptime_seconds is None:
        return "", "not running"
    if cfg.infra.hourly_cost_usd <= 0:
        return "", "unknown: set infra.hourly_cost_usd"
    usd = uptime_seconds / 3600 * cfg.infra.hourly_cost_usd
    return f"{usd:.2f}", f"${usd:.2f} (at ${cfg.infra.hourly_cost_usd}/h)"


def status_step(cfg: Config, *, clock: Clock = time.time, services: Services | None = None) -> StepResult:
    now = clock()
    if cfg.infra.backend is InfraBackend.local:
        from traingate.infra import local

        file_lease: FileLease = local.lease_for(cfg)
        lease_state = file_lease.read()
        state = file_lease.machine_state()
        started = file_lease.started_at() if state == "running" else None
        instance_id, started_at = local.LOCAL_ID, started
    else:
        svc = services or Services(cfg)
        inst = _find(cfg, svc.ec2)
        lease_state = svc.lease(inst.id).read()
        state, instance_id = inst.state, inst.id
        started_at = inst.launch_time.timestamp() if inst.launch_time and state == "running" else None
    uptime = (now - started_at) if started_at is not None else None
    cost_value, cost_text = _cost(cfg, uptime)
    live = lease_state.live(now)
    expired = lease_state.expired(now)
    expiry = max(live.values()) if live else 0.0
    rows = [f"| `{h}` | {_fmt_time(e)} | live |" for h, e in sorted(live.items())]
    rows += [f"| `{h}` | {_fmt_time(e)} | **expired** |" for h, e in sorted(expired.items())]
    uptime_text = f"{uptime / 60:.0f} min" if uptime is not None else "-"
    lines = [
        f"instance {instance_id}: {state}",
        f"holders: {', '.join(sorted(live)) or 'none'}"
        + (f" (expired: {', '.join(sorted(expired))})" if expired else ""),
        f"lease expiry: {_fmt_time(expiry) if expiry else '-'}",
        f"uptime: {uptime_text}",
        f"estimated cost so far: {cost_text}",
    ]
    summary = (
        f"### Infra status: `{instance_id}` is {state}\n\n"
        f"Uptime {uptime_text}, estimated cost {cost_text}.\n\n"
        "| holder | expires | |\n|---|---|---|\n" + ("\n".join(rows) or "| none | | |") + "\n"
    )
    return StepResult(
        outputs={
            "instance_id": instance_id,
            "state": state,
            "holders": sorted(live),
            "lease_expiry": _fmt_time(expiry) if expiry else "",
            "uptime_minutes": f"{uptime / 60:.1f}" if uptime is not None else "",
            "cost_usd": cost_value,
        },
        message="\n".join(lines),
        summary=summary,
        data={"expired_holders": sorted(expired)},
    )


# --------------------------------------------------------------------------------------- reap
def reap_step(
    cfg: Config,
    dry_run: bool = False,
    *,
    sleep: Sleep = time.sleep,
    clock: Clock = time.time,
    log: Log = _stderr,
    services: Services | None = None,
) -> StepResult:
    """Stop instances whose holders all expired (a cancelled run never ran `infra stop`).

    A running instance with no lease record at all is reported, not stopped: it was started by
    hand or by something else, and its own watchdog (if armed) still applies."""
    now = clock()
    reaped: list[str] = []
    notes: list[str] = []
    claimer = f"reaper@{socket.gethostname()}"
    if cfg.infra.backend is InfraBackend.local:
        from traingate.infra import local

        file_lease = local.lease_for(cfg)
        st = file_lease.read()
        running = file_lease.machine_state() == "running"
        if running and st.holders and not st.live(now):
            if not dry_run and file_lease.claim_stop(claimer, now):
                file_lease.forget_expired(now)
                file_lease.set_machine_state("stopped")
                file_lease.clear_stop(claimer)
            reaped.append(local.LOCAL_ID)
        elif not running and st.expired(now) and not dry_run:
            notes.append(f"local: forgot expired holders {', '.join(file_lease.forget_expired(now))}")
        return _reap_result(reaped, notes, dry_run)

    from traingate.infra.ec2 import stop_and_wait

    svc = services or Services(cfg)
    if cfg.infra.instance.tags and not cfg.infra.instance.id:
        candidates = [i for i in svc.ec2.find("", dict(cfg.infra.instance.tags)) if i.state != "terminated"]
    else:
        candidates = [_find(cfg, svc.ec2)]
    for inst in candidates:
        lease = svc.lease(inst.id)
        st = lease.read()
        if inst.state not in ("running", "pending"):
            # Already stopped (e.g. by its watchdog after a cancelled run): nothing to stop, but
            # the expired holders would otherwise stay in the lease record forever.
            gone = sorted(st.expired(now))
            if gone and not dry_run:
                _forget(lease, st, now)
            if gone:
                verb = "would forget" if dry_run else "forgot"
                notes.append(f"{inst.id}: {inst.state}; {verb} expired holders {', '.join(gone)}")
            continue
        if st.live(now):
            notes.append(
                f"{inst.id}: held by {', '.join(sorted(st.live(now)))} "
                f"until {_fmt_time(max(st.live(now).values()))}"
            )
            continue
        if not st.holders:
            notes.append(f"{inst.id}: running without any lease (not started by traingate?); left alone")
            continue
        expired = ", ".join(f"{h} (expired {_fmt_time(e)})" for h, e in sorted(st.expired(now).items()))
        if dry_run:
            notes.append(f"{inst.id}: would stop; {expired}")
            reaped.append(inst.id)
            continue
        if not lease.claim_stop(claimer, now):
            notes.append(f"{inst.id}: a holder arrived while reaping; left running")
            continue
        try:
            stop_and_wait(
                svc.ec2,
                inst.id,
                wait=cfg.infra.stop_wait,
                timeout=cfg.infra.stop_timeout_minutes * 60,
                sleep=sleep,
                clock=clock,
                log=log,
                poll_cap=cfg.infra.poll_cap_seconds,
            )
            _forget(lease, st, now)
        finally:
            lease.clear_stop(claimer)
        notes.append(f"{inst.id}: stopped; {expired}")
        reaped.append(inst.id)
    return _reap_result(reaped, notes, dry_run)


def _forget(lease: Lease, st: Any, now: float) -> None:
    for holder in sorted(st.expired(now)):
        lease.release(holder, now, claim_stop=False)


def _reap_result(reaped: list[str], notes: list[str], dry_run: bool) -> StepResult:
    verb = "would stop" if dry_run else "stopped"
    head = f"{verb} {len(reaped)} instance(s) with an expired lease" + (
        f": {', '.join(reaped)}" if reaped else ""
    )
    return StepResult(
        outputs={"reaped": reaped},
        message="\n".join([head, *notes]),
        summary=f"### Infra reap\n\n{head}\n\n" + "".join(f"- {n}\n" for n in notes),
    )
