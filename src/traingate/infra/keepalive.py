"""Keep the run's lease and the machine's watchdog alive while training runs on the runner.

`infra start` takes the lease and arms the self-stop watchdog for `infra.ttl_minutes`. Training
on the instance (`train.where: instance`) renews both from its poll loop; training on the runner
(`train.where: runner`, the `init` default) used to renew nothing, so a run longer than the TTL
had the instance halted by its watchdog, or its lease reaped or taken over, under it. `KeepAlive`
closes that gap for every backend: while the training command runs it renews the holder's lease
and re-arms the watchdog (through the backend's run channel) every third of the TTL.

Renewal is best effort: a failure is logged, never fails the training (the next renewal retries).
A holder that no longer holds the lease (released by a stop, or expired before training began) is
not re-added: keeping a machine alive that someone already decided to stop would be worse.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from traingate.config import Config
from traingate.gha import ActionsContext
from traingate.infra.base import WALL, Runtime

if TYPE_CHECKING:
    from traingate.contracts import Executor, LogSink, TrainJob, TrainOutcome
    from traingate.infra.backend import Backend

#: Waits up to the given seconds; returns True when asked to stop (threading.Event.wait's contract).
Wait = Callable[[float], bool]


class KeepAlive:
    """`with KeepAlive(cfg): run_training()` renews every `ttl_minutes / 3` until the block ends."""

    def __init__(
        self,
        cfg: Config,
        holder: str | None = None,
        *,
        backend: Backend | None = None,
        runtime: Runtime = WALL,
        wait: Wait | None = None,
        actions: ActionsContext | None = None,
    ) -> None:
        self.cfg = cfg
        self._holder = holder
        self._backend = backend
        self.runtime = runtime
        # The caller's context (pipeline/train.py passes the run's); None: not in Actions.
        self.actions = ActionsContext.given(actions)
        self.interval = max(30.0, cfg.infra.ttl_minutes * 60 / 3)
        self._stop = threading.Event()
        self._wait: Wait = wait or self._stop.wait
        self._thread: threading.Thread | None = None
        self.renewals = 0
        self._warned = False

    @property
    def holder(self) -> str:
        if self._holder is None:
            from traingate.infra.stage import resolve_holder

            self._holder = resolve_holder(None, self.cfg, actions=self.actions, for_stop=True)
        return self._holder

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from traingate.infra.backend import backend_for

            quiet = self.runtime.with_log(lambda _m: None)
            self._backend = backend_for(self.cfg, runtime=quiet, actions=self.actions)
        return self._backend

    def renew(self) -> bool:
        """One renewal: the lease for another TTL, then the watchdog. True when renewed."""
        from traingate.infra.ssm import check_command, run_command, watchdog_script

        machines = self.backend.locate(self.holder)
        if not machines:
            return False
        machine = machines[0]
        if machine.state != "running":  # nothing started, or already stopped: nothing to keep
            return False
        lease = self.backend.lease(machine)
        now = self.runtime.clock()
        if self.holder not in lease.read().live(now):
            return False
        lease.acquire(self.holder, self.cfg.infra.ttl_minutes * 60, now)
        channel = self.backend.run_channel(machine)
        if channel is not None:
            inv = run_command(
                channel,
                machine.id,
                watchdog_script(self.cfg.infra.ttl_minutes),
                timeout_seconds=60,
                runtime=self.runtime,
                comment="traingate watchdog renewal",
            )
            check_command(inv, "renewing the self-stop watchdog", machine.id)
        self.renewals += 1
        return True

    def _safe_renew(self) -> None:
        try:
            self.renew()
        except Exception as err:  # best effort: training goes on, the next renewal retries
            if not self._warned:
                self.runtime.log(
                    f"could not renew the lease/watchdog of {self.holder} ({err}); retrying later"
                )
                self._warned = True

    def _loop(self) -> None:
        while not self._wait(self.interval):
            self._safe_renew()

    def __enter__(self) -> KeepAlive:
        self._safe_renew()
        self._thread = threading.Thread(target=self._loop, name="traingate-keepalive", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=120)


class RenewingExecutor:
    """An `Executor` that runs its inner executor inside a `KeepAlive` (runner-side training)."""

    def __init__(self, inner: Executor, cfg: Config, *, actions: ActionsContext | None = None) -> None:
        self.inner = inner
        self.cfg = cfg
        self.actions = actions

    def run(self, job: TrainJob, log: LogSink) -> TrainOutcome:
        with KeepAlive(self.cfg, actions=self.actions):
            return self.inner.run(job, log)

    def attach(self, run_ref: str, job: TrainJob, log: LogSink) -> TrainOutcome:
        with KeepAlive(self.cfg, actions=self.actions):
            return self.inner.attach(run_ref, job, log)
