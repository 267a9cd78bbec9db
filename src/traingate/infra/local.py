"""`infra.backend: local` (the default, used by `traingate demo`): no instance, same lease path.

The lease file gives two processes on one machine the holder/expiry semantics of the EC2
backend, and the stage drives it through the same `Backend` protocol, so the pipeline's
start -> train -> stop code (and reap, status) is exercised identically.
"""

from __future__ import annotations

from traingate.config import Config
from traingate.infra.backend import Acquired, Machine, Readiness
from traingate.infra.base import Ssm
from traingate.infra.lease import FileLease

LOCAL_ID = "local"
LOCAL_IP = "127.0.0.1"


def lease_for(cfg: Config) -> FileLease:
    return FileLease(cfg.path(cfg.infra.local_dir))


class LocalBackend:
    """A pretend instance whose state lives in the lease file (`running` while held)."""

    persistent = True
    reap_states: tuple[str, ...] = ("running",)
    owns_unleased = False
    acquire_backoff = (0.1, 1.0)

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.file = lease_for(cfg)

    def _machine(self) -> Machine:
        # No lease file: nothing was ever started here (and reading must not create one).
        state = self.file.machine_state() if self.file.path.exists() else "stopped"
        return Machine(
            id=LOCAL_ID,
            state=state,
            public_ip=LOCAL_IP,
            private_ip=LOCAL_IP,
            instance_type="local",
            started_at=self.file.started_at() if state == "running" else None,
            market="local",
            hourly_usd=self.cfg.infra.hourly_cost_usd or None,
        )

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> Acquired:
        return Acquired(self._machine())

    def lease(self, machine: Machine) -> FileLease:
        return self.file

    def ready(self, machine: Machine) -> Readiness:
        # Taking the file lease marked the pretend instance running: nothing to wait for.
        return Readiness(self._machine(), 0.0, 0, "none (local)")

    def run_channel(self, machine: Machine) -> Ssm | None:
        return None

    def release(self, machine: Machine, *, wait: bool) -> Machine:
        self.file.set_machine_state("stopped")
        return self._machine()

    def locate(self, holder: str) -> list[Machine]:
        return [self._machine()]

    def reap_candidates(self) -> list[Machine]:
        return [self._machine()]
