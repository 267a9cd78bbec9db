"""Ctrl-C and the runner's cancel during a long stage (issue #11 case 5).

The training command runs in its own session (so a Ctrl-C meant for traingate cannot kill it
half-way through a checkpoint), which also means no signal reaches it unless traingate passes
it on. Without this, Ctrl-C or the Actions cancel left the training running on the GPU and
writing files after traingate had exited.

Inside `interruptible()`, the first SIGINT or SIGTERM raises `Interrupted` in the main thread;
each layer it passes stops what it started and says so (`Interrupted.stopped`): the executor
stops the process group, the runner marks the MLflow run KILLED, `run` releases the lease.
Actions cancels with SIGINT, then SIGTERM 7.5 s later: a later signal must not abort that
cleanup, so it only calls the hooks registered with `on_repeat` (stop waiting, kill now).
cli.py prints `Interrupted.line()` and exits 128 + the signal number (130, 143).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A KeyboardInterrupt (not an Exception): `except Exception` on the way up must not
    swallow it, and code that already handles Ctrl-C handles it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
        self.exit_code = 128 + signum
        self.stopped: list[str] = []

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def line(self) -> str:
        done = "; ".join(self.stopped) if self.stopped else "nothing of traingate's was running"
        return f"interrupted by {self.signal_name}: {done}"


class _Handlers:
    def __init__(self) -> None:
        self.active = False
        self.raised: Interrupted | None = None
        self.repeat_hooks: list[Callable[[], None]] = []

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.raised is None:
            self.raised = Interrupted(signum)
            raise self.raised
        for hook in list(self.repeat_hooks):
            hook()


_handlers = _Handlers()


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into `Interrupted` while inside. Nested uses share the outermost;
    outside the main thread (where Python delivers signals) it changes nothing."""
    if _handlers.active or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    _handlers.active, _handlers.raised = True, None
    for signum in SIGNALS:
        signal.signal(signum, _handlers.handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _handlers.active, _handlers.raised = False, None
        _handlers.repeat_hooks.clear()


@contextlib.contextmanager
def on_repeat(hook: Callable[[], None]) -> Iterator[None]:
    """Call `hook` on each signal that arrives while inside, after the first one was raised."""
    _handlers.repeat_hooks.append(hook)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _handlers.repeat_hooks.remove(hook)


def note(err: BaseException, what: str) -> None:
    """Record on an interruption what this layer stopped (a plain Ctrl-C outside
    `interruptible()` has nowhere to record it)."""
    if isinstance(err, Interrupted):
        err.stopped.append(what)


__all__ = ["Interrupted", "interruptible", "note", "on_repeat"]
