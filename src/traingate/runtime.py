"""The three things every waiting loop needs, travelling as one object: a clock, a sleep and a log.

Loops that wait (readiness, leases, push retries, following a remote job) used to take
`sleep=`, `clock=` and `log=` one by one, and a caller that swapped the sleep for a fake but
forgot the clock waited on real time. `Runtime` keeps them together: production code uses
`Runtime()` (monotonic clock, real sleep, stderr), tests pass one fake clock whose sleep advances
it, so "waited 600 s" is a fact of the fake clock, never of the machine.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

Sleep = Callable[[float], None]
Clock = Callable[[], float]
Log = Callable[[str], None]


def stderr_log(line: str) -> None:
    """Progress for a person reading the job log (stdout is reserved for `--json`)."""
    print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Runtime:
    clock: Clock = field(default=time.monotonic)
    sleep: Sleep = field(default=time.sleep)
    log: Log = field(default=stderr_log)

    def with_log(self, log: Log) -> Runtime:
        """The same clock and sleep with another log (a step that collects its lines)."""
        return replace(self, log=log)

    def deadline(self, seconds: float) -> float:
        """The clock reading `seconds` from now."""
        return self.clock() + seconds

    def remaining(self, deadline: float) -> float:
        """Seconds left until `deadline` (never negative)."""
        return max(0.0, deadline - self.clock())


__all__ = ["Clock", "Log", "Runtime", "Sleep", "stderr_log"]
