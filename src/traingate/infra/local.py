"""`infra.backend: local` (the default, used by `traingate demo`): no instance, same lease path.

The lease file gives two processes on one machine the holder/expiry semantics of the EC2
backend, so the pipeline's start -> train -> stop code is exercised identically.
"""

from __future__ import annotations

from traingate.config import Config
from traingate.infra.base import Clock, Log, Sleep, backoff_delays
from traingate.infra.lease import FileLease, StopInProgress
from traingate.result import StepResult

LOCAL_ID = "local"
LOCAL_IP = "127.0.0.1"


def lease_for(cfg: Config) -> FileLease:
    return FileLease(cfg.path(cfg.infra.local_dir))


def start(cfg: Config, holder: str, *, sleep: Sleep, clock: Clock, log: Log) -> StepResult:
    lease = lease_for(cfg)
    delay = backoff_delays(0.1, 1.0)
    deadline = clock() + cfg.infra.stop_timeout_minutes * 60
    while True:
        try:
            state = lease.acquire(holder, cfg.infra.ttl_minutes * 60, clock())
            break
        except StopInProgress as err:
            if clock() > deadline:
                raise
            log(f"{err.message}; waiting")
            sleep(delay())
    mlflow_url = cfg.infra.mlflow_url.replace("{public_ip}", LOCAL_IP).replace("{private_ip}", LOCAL_IP)
    others = sorted(h for h in state.live(clock()) if h != holder)
    return StepResult(
        outputs={
            "instance_id": LOCAL_ID,
            "public_ip": LOCAL_IP,
            "private_ip": LOCAL_IP,
            "state": "running",
            "mlflow_url": mlflow_url,
            "holder": holder,
        },
        message=f"local infra: lease taken by {holder}"
        + (f" (shared with {', '.join(others)})" if others else ""),
        summary=f"### Infra (local)\n\nLease taken by `{holder}`.\n",
    )


def stop(cfg: Config, holders: list[str], *, force: bool, clock: Clock) -> StepResult:
    lease = lease_for(cfg)
    now = clock()
    for other in holders[1:]:
        lease.release(other, now, claim_stop=False)
    rel = lease.release(holders[0], now, claim_stop=not force)
    if force:
        lease.claim_stop(holders[0], now, force=True)
    elif rel.remaining or not rel.may_stop:
        remaining = rel.remaining or sorted(lease.read().live(now))
        return StepResult(
            outputs={
                "instance_id": LOCAL_ID,
                "state": "running",
                "stopped": False,
                "remaining_holders": remaining,
            },
            message=f"local infra left running: still held by {', '.join(remaining)}",
        )
    try:
        lease.set_machine_state("stopped")
    finally:
        lease.clear_stop(holders[0])
    return StepResult(
        outputs={"instance_id": LOCAL_ID, "state": "stopped", "stopped": True, "remaining_holders": []},
        message="local infra stopped (no holder left)",
    )
