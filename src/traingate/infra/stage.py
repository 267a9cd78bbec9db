"""The `infra start|stop|status|reap` stages.

start: take the lease first (so no stopper can slip in between our readiness check and our
work), bring the instance to `running` from any state, wait until really ready, arm the
self-stop watchdog. stop: release; stop only when no live holder remains; idempotent; loud when
a running instance does not stop. On a failed start our lease is released (and the instance
stopped if no one else holds it), so a failed job does not leave it running for days.

Written once against `backend.Backend`: the backend (local, the shared ec2 instance, a launched
instance per run) is chosen from `infra.backend` by `backend_for`; nothing here branches on it.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
import time
from datetime import UTC, datetime
from typing import Any

from traingate.config import Config
from traingate.errors import InfraError
from traingate.infra.backend import Backend, Machine, Services, backend_for
from traingate.infra.base import GONE, Clock, Log, Sleep, backoff_delays
from traingate.infra.lease import Lease, LeaseState, StopInProgress
from traingate.infra.shared import arm_watchdog
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
        saved = read_state(cfg.workspace_dir).infra_holder
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
def _backend(cfg: Config, services: Services | None, *, sleep: Sleep, clock: Clock, log: Log) -> Backend:
    return backend_for(cfg, services=services, sleep=sleep, clock=clock, log=log)


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
    sleep: Sleep,
    clock: Clock,
    log: Log,
) -> LeaseState:
    delay = backoff_delays(*backoff)
    deadline = clock() + timeout
    while True:
        try:
            return lease.acquire(holder, ttl, clock())
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
    backend = _backend(cfg, services, sleep=sleep, clock=clock, log=log)
    ttl = cfg.infra.ttl_minutes * 60
    got = backend.acquire(who, ttl, clock())
    machine = got.machine
    warnings = list(got.warnings)
    lease = backend.lease(machine)
    try:
        _acquire(
            lease,
            who,
            ttl,
            timeout=cfg.infra.stop_timeout_minutes * 60,
            backoff=backend.acquire_backoff,
            sleep=sleep,
            clock=clock,
            log=log,
        )
    except BaseException:
        if not backend.persistent:  # a machine launched for this run is never left behind
            _give_back(backend, lease, machine, who, clock=clock)
        raise
    update_state(cfg.workspace_dir, infra_holder=who)
    try:
        ready = backend.ready(machine)
    except BaseException as err:
        note = _give_back(backend, lease, machine, who, clock=clock)
        if isinstance(err, InfraError) and note:
            err.hint = (err.hint + "; " if err.hint else "") + note
        raise
    warnings.extend(ready.warnings)
    final = ready.machine
    outputs = {
        "instance_id": final.id,
        "public_ip": final.public_ip,
        "private_ip": final.private_ip,
        "state": final.state,
        "mlflow_url": _mlflow_url(cfg, final),
        "holder": who,
        "market": final.market,
        "hourly_usd": _usd(final.hourly_usd),
    }
    live = lease.read().live(clock())
    others = sorted(h for h in live if h != who)
    ends = "stops" if backend.persistent else "terminates"
    summary = (
        "### Infra: instance ready\n\n| | |\n|---|---|\n"
        f"| instance | `{final.id}` ({final.instance_type or '?'}) |\n| state | {final.state} |\n"
        + "".join(row + "\n" for row in got.summary_rows)
        + f"| ready checks | {ready.checks} ({ready.waited_seconds:.0f} s) |\n"
        f"| holder | `{who}` |\n| other holders | {', '.join(others) or 'none'} |\n"
        f"| watchdog | {ends} the instance {cfg.infra.ttl_minutes} min after the last renewal |\n"
    )
    return StepResult(
        outputs=outputs,
        summary=summary,
        message=f"instance {final.id} ready after {ready.waited_seconds:.0f} s (holder {who})"
        + (f" (shared with {', '.join(others)})" if others else ""),
        warnings=warnings,
        data={"holders": sorted(live), "waited_seconds": ready.waited_seconds, "polls": ready.polls},
    )


def _give_back(backend: Backend, lease: Lease, machine: Machine, holder: str, *, clock: Clock) -> str:
    """Best effort after a failed start: release our lease, stop (or terminate) the machine if we
    were last."""
    try:
        rel = lease.release(holder, clock())
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
    backend = _backend(cfg, services, sleep=sleep, clock=clock, log=log)
    machines = backend.locate(who)
    if not machines:
        msg = f"no instance of {who} is running: nothing to stop"
        return StepResult(
            outputs={"instance_id": "", "state": "terminated", "stopped": True, "remaining_holders": []},
            message=msg,
            summary=f"### Infra: {msg}\n",
        )
    results = [_stop_one(backend, m, who, wait=wait, force=force, clock=clock, log=log) for m in machines]
    if len(results) == 1:
        return results[0]
    first = results[0]
    return StepResult(
        outputs=first.outputs,
        message="\n".join(r.message for r in results),
        summary="".join(r.summary for r in results),
        warnings=[w for r in results for w in r.warnings],
    )


def _stop_one(
    backend: Backend, machine: Machine, who: str, *, wait: bool, force: bool, clock: Clock, log: Log
) -> StepResult:
    lease = backend.lease(machine)
    now = clock()
    ours = _same_run(who, list(lease.read().holders))
    for other in ours[1:]:
        lease.release(other, now, claim_stop=False)
    rel = lease.release(who, now, claim_stop=not force)
    if force:
        if rel.remaining:
            log(f"--force: stopping {machine.id} although {', '.join(rel.remaining)} still hold it")
        lease.claim_stop(who, now, force=True)
    elif not rel.may_stop:
        remaining = rel.remaining or sorted(lease.read().live(now))
        msg = f"instance {machine.id} left {machine.state}: still held by {', '.join(remaining)}"
        return StepResult(
            outputs={
                "instance_id": machine.id,
                "state": machine.state,
                "stopped": False,
                "remaining_holders": remaining,
            },
            message=msg,
            summary=f"### Infra: instance kept running\n\n{msg}. The last holder's `infra stop` stops it.\n",
        )
    try:
        final = backend.release(machine, wait=wait)
    finally:
        lease.clear_stop(who)
    warnings = []
    if backend.persistent and final.state in GONE:
        warnings.append(f"instance {machine.id} is {final.state}: point infra.instance at a new instance")
    stopped = final.state in ("stopped", "stopping", *GONE)
    was = " (was already stopped)" if machine.state == "stopped" and backend.persistent else ""
    msg = f"instance {machine.id} {final.state}{was}"
    outputs = {"instance_id": machine.id, "state": final.state, "stopped": stopped, "remaining_holders": []}
    return StepResult(
        outputs=outputs,
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
    backend = _backend(cfg, services, sleep=time.sleep, clock=clock, log=_stderr)
    machines = backend.locate(resolve_holder(None, cfg, for_stop=True)) or backend.reap_candidates()
    if machines:
        machine = machines[0]
        lease_state = backend.lease(machine).read()
        state, instance_id, started_at = machine.state, machine.id, machine.started_at
    else:  # `launch` with no instance: nothing runs, nothing bills
        lease_state, state, instance_id, started_at = LeaseState(), "none", "-", None
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
        # The declared outputs (traingate.outputs); the details are for `--json` and people.
        outputs={"state": state, "holders": sorted(live)},
        message="\n".join(lines),
        summary=summary,
        data={
            "instance_id": instance_id,
            "lease_expiry": _fmt_time(expiry) if expiry else "",
            "uptime_minutes": f"{uptime / 60:.1f}" if uptime is not None else "",
            "cost_usd": cost_value,
            "expired_holders": sorted(expired),
        },
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
    backend = _backend(cfg, services, sleep=sleep, clock=clock, log=log)
    halted = "stopped" if backend.persistent else "terminated"
    for machine in backend.reap_candidates():
        lease = backend.lease(machine)
        st = lease.read()
        if machine.state not in backend.reap_states:
            # Already stopped (e.g. by its watchdog after a cancelled run): nothing to stop, but
            # the expired holders would otherwise stay in the lease record forever.
            gone = sorted(st.expired(now))
            if gone and not dry_run:
                _forget(lease, st, now)
            if gone:
                verb = "would forget" if dry_run else "forgot"
                notes.append(f"{machine.id}: {machine.state}; {verb} expired holders {', '.join(gone)}")
            continue
        if st.live(now):
            notes.append(
                f"{machine.id}: held by {', '.join(sorted(st.live(now)))} "
                f"until {_fmt_time(max(st.live(now).values()))}"
            )
            continue
        if not st.holders and not backend.owns_unleased:
            notes.append(f"{machine.id}: running without any lease (not started by traingate?); left alone")
            continue
        expired = ", ".join(f"{h} (expired {_fmt_time(e)})" for h, e in sorted(st.expired(now).items()))
        expired = expired or "its run released it"
        if dry_run:
            notes.append(f"{machine.id}: would be {halted}; {expired}")
            reaped.append(machine.id)
            continue
        if not lease.claim_stop(claimer, now):
            notes.append(f"{machine.id}: a holder arrived while reaping; left running")
            continue
        try:
            backend.release(machine, wait=cfg.infra.stop_wait)
            _forget(lease, st, now)
        finally:
            lease.clear_stop(claimer)
        notes.append(f"{machine.id}: {halted}; {expired}")
        reaped.append(machine.id)
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


__all__ = [
    "Services",
    "arm_watchdog",
    "reap_step",
    "resolve_holder",
    "run_prefix",
    "start_step",
    "status_step",
    "stop_step",
]
