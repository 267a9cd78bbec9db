"""One `traingate run` at a time per folder (issue #11 case 9).

Two runs in one workspace share `state.json`: run 1's run id ended up next to run 2's lease
holder, and `infra stop` released the wrong one. The workspace holds `run.lock`; a run takes an
flock on it for its whole duration and writes who it is (pid, command, start time) into it.

The kernel releases an flock when its holder dies, however it dies (kill -9, a lost runner),
so a lock left by a dead run is simply taken over: the file's content is then only history. The
lock file is never deleted (deleting it while another process waits on it would let two runs
hold locks on two different files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from traingate.errors import TraingateError

LOCK_FILE = "run.lock"


class RunLockedError(TraingateError):
    title = "another run is in progress"


def _describe(holder: dict[str, Any]) -> str:
    return (
        f"pid {holder.get('pid', '?')}, started {holder.get('started', '?')}, "
        f"command `{holder.get('command', '?')}`"
    )


def read_holder(workspace: Path) -> dict[str, Any]:
    """What the lock file says about its (last) holder; {} when unreadable."""
    try:
        data = json.loads((workspace / LOCK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def run_lock(workspace: Path, command: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold the workspace's run lock while inside; raise RunLockedError (exit 1) at once,
    naming the holder, when another live process holds it."""
    workspace.mkdir(parents=True, exist_ok=True)
    path = workspace / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_holder(workspace)
            raise RunLockedError(
                f"another traingate run is in progress in {workspace.parent} ({_describe(holder)}); "
                f"two runs in one folder would mix their state ({workspace / 'state.json'})",
                hint="wait for it to finish, or stop it (Ctrl-C in its terminal, or "
                f"`kill -INT {holder.get('pid', '<pid>')}`); runs in different folders do not conflict",
                file=str(path),
            ) from None
        holder = {
            "pid": os.getpid(),
            "command": command or " ".join(["traingate", *sys.argv[1:]]),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder, sort_keys=True) + "\n").encode(), 0)
        try:
            yield holder
        finally:
            # Say the lock is free before letting go of it, so a reader never names a
            # finished run as the holder.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


__all__ = ["LOCK_FILE", "RunLockedError", "read_holder", "run_lock"]
