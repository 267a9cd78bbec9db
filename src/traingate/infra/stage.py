"""The `infra start|stop|status|reap` stages.

start: take the lease first (so no stopper can slip in between our readiness check and our
work), bring the instance to `running` from any state, wait until really ready, arm the
self-stop watchdog. stop: release; stop only when no live holder remains; idempotent; loud when
a running instance does not stop. On a failed start our lease is released (and the instance
stopped if no one else holds it), so a failed job does not leave it running for days.

Written once against `backend.Backend`: the backend (local, the shared ec2 instance, a launched
instance per run) is chosen from `infra.backend` by `backend_for`; nothing here branches on it.
Each step returns its typed result (`StartResult`, `StopResult`, `StatusResult`, `ReapResult`)
as `StepResult.value`; the outputs are derived from it (`traingate.outputs.OUTPUTS`).
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from traingate.config import Config
from traingate.errors import InfraError, TraingateError
from traingate.gha import ActionsContext
from traingate.infra.backend import Acquired, Backend, Machine, Readiness, Services, backend_for, run_prefix
from traingate.infra.base import GONE, WALL, Runtime, backoff_delays
from traingate.infra.lease import Lease, LeaseState, StopInProgress
from traingate.infra.shared import arm_watchdog
from traingate.result import StepResult
from traingate.state import read_state, update_state


# ------------------------------------------------------------------------------------- holders
def resolve_holder(
    explicit: str | None, cfg: Config, *, actions: ActionsContext, for_stop: bool = False
) -> str:
    """The lease holder id. In Actions it is derived from run-level values (never the pid), so
    `infra stop` in another job of the same run releases the same lease; outside Actions,
    `start` records it in the state file and `stop` reads it back."""
    if explicit:
        return explicit
    prefix = run_prefix(actions)
    if prefix:
        return prefix + (actions.run_attempt or "1")
    if for_stop:
        saved = read_state(cfg.workspace_dir).infra_holder
        if isinstance(saved, str) and saved:
            return saved
    return f"{getpass.getuser()}@{socket.gethostname()}:{os.getpid()}"


def _same_run(holder: str, held: list[str], actions: ActionsContext) -> list[str]:
    """Our holder first, then other attempts of the same Actions run: a re-run has a new attempt
    number but must release the lease an earlier attempt took. This holds whether the holder was
    derived or passed explicitly (stop-infra.yml passes start-infra's `holder` output, which is
    the attempt that ran start-infra)."""
    prefix = run_prefix(actions)
    extra = [h for h in held if prefix and h.startswith(prefix) and h != holder]
    return [holder, *sorted(extra)]


# ------------------------------------------------------------------------------------- wiring
def _mlflow_url(cfg: Config, machine: Machine) -> str:
    from traingate.infra.readiness import render_url

    return render_url(cfg.infra.mlflow_url, machine) if cfg.infra.mlflow_url else ""  # type: ignore[arg-type]


def _usd(value: float | None) -> str:
    from traingate.infra.pricing import plain_usd

    return "" if value is None else plain_usd(value)


def _acquire(
    lease: Lease,
    holder: str,
    ttl: float,
    *,
    timeout: float,
    backoff: tuple[float, float],
    runtime: Runtime,
) -> LeaseState:
    delay = backoff_delays(*backoff)
    deadline = runtime.deadline(timeout)
    while True:
        try:
            return lease.acquire(holder, ttl, runtime.clock())
        except StopInProgress as err:
            if runtime.clock() > deadline:
                raise InfraError(
                    f"{err.message} for more than {timeout:.0f} s",
                    hint="check the other run's stop-infra job; a stale claim expires after 10 minutes",
                ) from None
            runtime.log(f"{err.message}; waiting before starting it again")
            runtime.sleep(delay())


# -------------------------------------------------------------------------------------- start
@dataclass(frozen=True)
class StartResult:
    """What `infra start` gave this run: its machine, ready, and who holds the lease now."""

    instance_id: str
    public_ip: str
    private_ip: str
    state: str
    mlflow_url: str
    holder: str
    # `on-demand`, `spot` or `local` (traingate.outputs.VALUES); hourly_usd None when unknown.
    market: str
    hourly_usd: float | None
    instance_type: str = ""
    # Every live holder, ours included (sorted).
    holders: tuple[str, ...] = ()
    waited_seconds: float = 0.0
    polls: int = 0

    @property
    def others(self) -> list[str]:
        return [h for h in self.holders if h != self.holder]

    def outputs(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "public_ip": self.public_ip,
            "private_ip": self.private_ip,
            "state": self.state,
            "mlflow_url": self.mlflow_url,
            "holder": self.holder,
            "market": self.market,
            "hourly_usd": _usd(self.hourly_usd),
        }


def start_step(
    cfg: Config,
    holder: str | None = None,
    *,
    runtime: Runtime = WALL,
    services: Services | None = None,
    actions: ActionsContext | None = None,
) -> StepResult[StartResult]:
    ctx = ActionsContext.given(actions)
    who = resolve_holder(holder, cfg, actions=ctx)
    backend = backend_for(cfg, services=services, runtime=runtime, actions=ctx)
    got = backend.acquire(who, cfg.infra.ttl_minutes * 60, runtime.clock())
    lease = backend.lease(got.machine)
    _take_lease(cfg, backend, lease, got, who, runtime)
    update_state(cfg.workspace_dir, infra_holder=who)
    ready = _bring_ready(backend, lease, got, who, runtime)
    final = ready.machine
    value = StartResult(
        instance_id=final.id,
        public_ip=final.public_ip,
        private_ip=final.private_ip,
        state=final.state,
        mlflow_url=_mlflow_url(cfg, final),
        holder=who,
        market=final.market,
        hourly_usd=final.hourly_usd,
        instance_type=final.instance_type,
        holders=tuple(sorted(lease.read().live(runtime.clock()))),
        waited_seconds=ready.waited_seconds,
        polls=ready.polls,
    )
    others = value.others
    return StepResult(
        outputs=value.outputs(),
        summary=_start_summary(cfg, value, got, ready, persistent=backend.persistent),
        message=f"instance {value.instance_id} ready after {value.waited_seconds:.0f} s (holder {who})"
        + (f" (shared with {', '.join(others)})" if others else ""),
        warnings=[*got.warnings, *ready.warnings],
        data={"holders": list(value.holders), "waited_seconds": value.waited_seconds, "polls": value.polls},
        value=value,
    )


def _take_lease(
    cfg: Config, backend: Backend, lease: Lease, got: Acquired, who: str, runtime: Runtime
) -> None:
    """Our lease on the acquired machine, waiting out another run's stop. A machine launched for
    this run is never left behind when that fails."""
    try:
        _acquire(
            lease,
            who,
            cfg.infra.ttl_minutes * 60,
            timeout=cfg.infra.stop_timeout_minutes * 60,
            backoff=backend.acquire_backoff,
            runtime=runtime,
        )
    except BaseException as err:
        if not backend.persistent:
            _give_back(backend, lease, got.machine, who, now=runtime.clock())
        if isinstance(err, TraingateError):
            err.add_warnings(got.warnings)
        raise


def _bring_ready(backend: Backend, lease: Lease, got: Acquired, who: str, runtime: Runtime) -> Readiness:
    """The machine running and really ready; on failure our lease is given back (the hint says
    what became of the machine) and the warnings gathered so far travel on the error."""
    try:
        return backend.ready(got.machine)
    except BaseException as err:
        note = _give_back(backend, lease, got.machine, who, now=runtime.clock())
        if isinstance(err, InfraError) and note:
            err.hint = (err.hint + "; " if err.hint else "") + note
        if isinstance(err, TraingateError):
            err.add_warnings(got.warnings)
        raise


def _start_summary(
    cfg: Config, value: StartResult, got: Acquired, ready: Readiness, *, persistent: bool
) -> str:
    ends = "stops" if persistent else "terminates"
    return (
        "### Infra: instance ready\n\n| | |\n|---|---|\n"
        f"| instance | `{value.instance_id}` ({value.instance_type or '?'}) |\n| state | {value.state} |\n"
        + "".join(row + "\n" for row in got.summary_rows)
        + f"| ready checks | {ready.checks} ({ready.waited_seconds:.0f} s) |\n"
        f"| holder | `{value.holder}` |\n| other holders | {', '.join(value.others) or 'none'} |\n"
        f"| watchdog | {ends} the instance {cfg.infra.ttl_minutes} min after the last renewal |\n"
    )


def _give_back(backend: Backend, lease: Lease, machine: Machine, holder: str, *, now: float) -> str:
    """Best effort after a failed start: release our lease, stop (or terminate) the machine if we
    were last."""
    try:
        rel = lease.release(holder, now)
        if not rel.may_stop:
            return f"lease released; instance left running for {', '.join(rel.remaining) or 'another run'}"
        try:
            backend.release(machine, wait=False)
        finally:
            lease.clear_stop(holder)
        return "lease released and the instance " + ("stopped again" if backend.persistent else "terminated")
    except Exception as err:
        return f"could not give the instance back ({err}); run `traingate infra stop`"


# --------------------------------------------------------------------------------------- stop
@dataclass(frozen=True)
class StopResult:
    """What `infra stop` did to one machine: its state now, and who kept it running if anyone."""

    instance_id: str
    state: str
    stopped: bool
    remaining_holders: tuple[str, ...] = ()

    def outputs(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "state": self.state,
            "stopped": self.stopped,
            "remaining_holders": list(self.remaining_holders),
        }


def stop_step(
    cfg: Config,
    holder: str | None = None,
    wait: bool = True,
    force: bool = False,
    *,
    runtime: Runtime = WALL,
    services: Services | None = None,
    actions: ActionsContext | None = None,
) -> StepResult[StopResult]:
    ctx = ActionsContext.given(actions)
    who = resolve_holder(holder, cfg, actions=ctx, for_stop=True)
    wait = wait and cfg.infra.stop_wait
    backend = backend_for(cfg, services=services, runtime=runtime, actions=ctx)
    machines = backend.locate(who)
    if not machines:
        msg = f"no instance of {who} is running: nothing to stop"
        value = StopResult(instance_id="", state="terminated", stopped=True)
        return StepResult(outputs=value.outputs(), message=msg, summary=f"### Infra: {msg}\n", value=value)
    results = [_stop_one(backend, m, who, ctx, wait=wait, force=force, runtime=runtime) for m in machines]
    if len(results) == 1:
        return results[0]
    first = results[0]
    return StepResult(
        outputs=first.outputs,
        message="\n".join(r.message for r in results),
        summary="".join(r.summary for r in results),
        warnings=[w for r in results for w in r.warnings],
        value=first.value,
    )


def _stop_one(
    backend: Backend,
    machine: Machine,
    who: str,
    actions: ActionsContext,
    *,
    wait: bool,
    force: bool,
    runtime: Runtime,
) -> StepResult[StopResult]:
    lease = backend.lease(machine)
    kept = _release(lease, machine, who, actions, force=force, runtime=runtime)
    if kept is not None:
        value = StopResult(machine.id, machine.state, stopped=False, remaining_holders=tuple(kept))
        msg = f"instance {machine.id} left {machine.state}: still held by {', '.join(kept)}"
        return StepResult(
            outputs=value.outputs(),
            message=msg,
            summary=f"### Infra: instance kept running\n\n{msg}. The last holder's `infra stop` stops it.\n",
            value=value,
        )
    try:
        final = backend.release(machine, wait=wait)
    finally:
        lease.clear_stop(who)
    warnings = []
    if backend.persistent and final.state in GONE:
        warnings.append(f"instance {machine.id} is {final.state}: point infra.instance at a new instance")
    value = StopResult(machine.id, final.state, stopped=final.state in ("stopped", "stopping", *GONE))
    was = " (was already stopped)" if machine.state == "stopped" and backend.persistent else ""
    msg = f"instance {machine.id} {final.state}{was}"
    return StepResult(
        outputs=value.outputs(),
        message=msg,
        summary=f"### Infra: {msg}\n\nReleased by `{who}`; no other holder remained.\n",
        warnings=warnings,
        value=value,
    )


def _release(
    lease: Lease, machine: Machine, who: str, actions: ActionsContext, *, force: bool, runtime: Runtime
) -> list[str] | None:
    """Release our holder (and earlier attempts of our run). The holders that keep the machine
    running, or None when we hold the stop claim (`force` takes it regardless)."""
    now = runtime.clock()
    for other in _same_run(who, list(lease.read().holders), actions)[1:]:
        lease.release(other, now, claim_stop=False)
    rel = lease.release(who, now, claim_stop=not force)
    if force:
        if rel.remaining:
            runtime.log(f"--force: stopping {machine.id} although {', '.join(rel.remaining)} still hold it")
        lease.claim_stop(who, now, force=True)
        return None
    if rel.may_stop:
        return None
    return rel.remaining or sorted(lease.read().live(now))


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


@dataclass(frozen=True)
class StatusResult:
    """The machine `infra status` looked at and its lease: outputs are `state` and the live
    `holders`; the rest (`details()`) is for `--json` and people."""

    state: str
    instance_id: str
    # holder -> expiry (epoch seconds), live and expired at the time of the status.
    live: dict[str, float] = field(default_factory=dict)
    expired: dict[str, float] = field(default_factory=dict)
    uptime_seconds: float | None = None
    cost_usd: str = ""
    cost_text: str = ""

    @property
    def holders(self) -> list[str]:
        return sorted(self.live)

    @property
    def lease_expiry(self) -> float:
        """The latest live expiry; 0 when no one holds the lease."""
        return max(self.live.values()) if self.live else 0.0

    def outputs(self) -> dict[str, Any]:
        return {"state": self.state, "holders": self.holders}

    def details(self) -> dict[str, Any]:
        uptime = self.uptime_seconds
        return {
            "instance_id": self.instance_id,
            "lease_expiry": _fmt_time(self.lease_expiry) if self.lease_expiry else "",
            "uptime_minutes": f"{uptime / 60:.1f}" if uptime is not None else "",
            "cost_usd": self.cost_usd,
            "expired_holders": sorted(self.expired),
        }


def status_step(
    cfg: Config,
    *,
    runtime: Runtime = WALL,
    services: Services | None = None,
    actions: ActionsContext | None = None,
) -> StepResult[StatusResult]:
    ctx = ActionsContext.given(actions)
    now = runtime.clock()
    backend = backend_for(cfg, services=services, runtime=runtime, actions=ctx)
    who = resolve_holder(None, cfg, actions=ctx, for_stop=True)
    machines = backend.locate(who) or backend.reap_candidates()
    if machines:
        machine = machines[0]
        lease_state = backend.lease(machine).read()
        state, instance_id, started_at = machine.state, machine.id, machine.started_at
    else:  # `launch` with no instance: nothing runs, nothing bills
        lease_state, state, instance_id, started_at = LeaseState(), "none", "-", None
    uptime = (now - started_at) if started_at is not None else None
    cost_value, cost_text = _cost(cfg, uptime)
    value = StatusResult(
        state=state,
        instance_id=instance_id,
        live=lease_state.live(now),
        expired=lease_state.expired(now),
        uptime_seconds=uptime,
        cost_usd=cost_value,
        cost_text=cost_text,
    )
    message, summary = _status_text(value)
    # The declared outputs (traingate.outputs); the details are for `--json` and people.
    return StepResult(
        outputs=value.outputs(), message=message, summary=summary, data=value.details(), value=value
    )


def _status_text(value: StatusResult) -> tuple[str, str]:
    """The log lines and the step summary of a status."""
    rows = [f"| `{h}` | {_fmt_time(e)} | live |" for h, e in sorted(value.live.items())]
    rows += [f"| `{h}` | {_fmt_time(e)} | **expired** |" for h, e in sorted(value.expired.items())]
    uptime_text = f"{value.uptime_seconds / 60:.0f} min" if value.uptime_seconds is not None else "-"
    expired = sorted(value.expired)
    lines = [
        f"instance {value.instance_id}: {value.state}",
        f"holders: {', '.join(value.holders) or 'none'}"
        + (f" (expired: {', '.join(expired)})" if expired else ""),
        f"lease expiry: {_fmt_time(value.lease_expiry) if value.lease_expiry else '-'}",
        f"uptime: {uptime_text}",
        f"estimated cost so far: {value.cost_text}",
    ]
    summary = (
        f"### Infra status: `{value.instance_id}` is {value.state}\n\n"
        f"Uptime {uptime_text}, estimated cost {value.cost_text}.\n\n"
        "| holder | expires | |\n|---|---|---|\n" + ("\n".join(rows) or "| none | | |") + "\n"
    )
    return "\n".join(lines), summary


# --------------------------------------------------------------------------------------- reap
@dataclass(frozen=True)
class ReapResult:
    """The machines `infra reap` stopped (or would stop, `dry_run`) and a note per machine."""

    reaped: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    dry_run: bool = False

    def outputs(self) -> dict[str, Any]:
        return {"reaped": list(self.reaped)}


def reap_step(
    cfg: Config,
    dry_run: bool = False,
    *,
    runtime: Runtime = WALL,
    services: Services | None = None,
    actions: ActionsContext | None = None,
) -> StepResult[ReapResult]:
    """Stop instances whose holders all expired (a cancelled run never ran `infra stop`).

    A running instance with no lease record at all is reported, not stopped: it was started by
    hand or by something else, and its own watchdog (if armed) still applies."""
    now = runtime.clock()
    reaped: list[str] = []
    notes: list[str] = []
    backend = backend_for(cfg, services=services, runtime=runtime, actions=ActionsContext.given(actions))
    for machine in backend.reap_candidates():
        note, gone = _reap_one(cfg, backend, machine, now=now, dry_run=dry_run)
        if note:
            notes.append(note)
        if gone:
            reaped.append(machine.id)
    return _reap_result(ReapResult(tuple(reaped), tuple(notes), dry_run))


def _reap_one(
    cfg: Config, backend: Backend, machine: Machine, *, now: float, dry_run: bool
) -> tuple[str, bool]:
    """What reap does with one machine: (a note, "" for none; whether it is (would be) reaped)."""
    lease = backend.lease(machine)
    st = lease.read()
    if machine.state not in backend.reap_states:
        # Already stopped (e.g. by its watchdog after a cancelled run): nothing to stop, but
        # the expired holders would otherwise stay in the lease record forever.
        gone = sorted(st.expired(now))
        if gone and not dry_run:
            _forget(lease, st, now)
        verb = "would forget" if dry_run else "forgot"
        return (
            f"{machine.id}: {machine.state}; {verb} expired holders {', '.join(gone)}" if gone else ""
        ), False
    if st.live(now):
        until = _fmt_time(max(st.live(now).values()))
        return f"{machine.id}: held by {', '.join(sorted(st.live(now)))} until {until}", False
    if not st.holders and not backend.owns_unleased:
        return f"{machine.id}: running without any lease (not started by traingate?); left alone", False
    expired = ", ".join(f"{h} (expired {_fmt_time(e)})" for h, e in sorted(st.expired(now).items()))
    expired = expired or "its run released it"
    halted = "stopped" if backend.persistent else "terminated"
    if dry_run:
        return f"{machine.id}: would be {halted}; {expired}", True
    claimer = f"reaper@{socket.gethostname()}"
    if not lease.claim_stop(claimer, now):
        return f"{machine.id}: a holder arrived while reaping; left running", False
    try:
        backend.release(machine, wait=cfg.infra.stop_wait)
        _forget(lease, st, now)
    finally:
        lease.clear_stop(claimer)
    return f"{machine.id}: {halted}; {expired}", True


def _forget(lease: Lease, st: LeaseState, now: float) -> None:
    for holder in sorted(st.expired(now)):
        lease.release(holder, now, claim_stop=False)


def _reap_result(value: ReapResult) -> StepResult[ReapResult]:
    verb = "would stop" if value.dry_run else "stopped"
    head = f"{verb} {len(value.reaped)} instance(s) with an expired lease" + (
        f": {', '.join(value.reaped)}" if value.reaped else ""
    )
    return StepResult(
        outputs=value.outputs(),
        message="\n".join([head, *value.notes]),
        summary=f"### Infra reap\n\n{head}\n\n" + "".join(f"- {n}\n" for n in value.notes),
        value=value,
    )


__all__ = [
    "ReapResult",
    "Services",
    "StartResult",
    "StatusResult",
    "StopResult",
    "arm_watchdog",
    "reap_step",
    "resolve_holder",
    "run_prefix",
    "start_step",
    "status_step",
    "stop_step",
]
