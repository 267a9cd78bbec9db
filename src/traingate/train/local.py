"""`train.where: runner`: run the training command as a subprocess on this machine.

The command's output is streamed line by line as it comes (a 2 GB dependency install must not
look like a hang), its last lines are kept for the error message, and the timeout kills the
whole process group (a script that started workers must not leave them running).

The command is split like a shell would split it but run without a shell: traingate.yml is
code from the repository, and a pipeline belongs in a script, not in a string we interpolate.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from traingate.contracts import LogSink, TrainJob, TrainOutcome
from traingate.errors import TrainError, UsageError
from traingate.interrupt import note, on_repeat

TAIL_LINES = 40


def _split(command: str, what: str) -> list[str]:
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise TrainError(
            f"cannot parse {what} {command!r}: {err}",
            hint="fix the quoting in traingate.yml",
        ) from None
    if not argv:
        raise TrainError(f"{what} is empty", hint="set train.command in traingate.yml")
    return argv


class LocalExecutor:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        kill_grace_seconds: float = 5.0,
    ) -> None:
        self._clock = clock
        self._grace = kill_grace_seconds

    def run(self, job: TrainJob, log: LogSink) -> TrainOutcome:
        if not job.workdir.is_dir():
            raise TrainError(
                f"the training folder {job.workdir} does not exist",
                hint="set train.workdir (relative to traingate.yml) to the folder holding the script",
            )
        env = {**os.environ, **job.env}
        started = self._clock()
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        deadline = started + job.timeout_seconds
        if job.setup:
            code, killed = self._run_one(_split(job.setup, "train.setup"), job, env, log, tail, deadline)
            if code != 0 or killed:
                return TrainOutcome(
                    exit_code=code,
                    log_tail="(train.setup failed)\n" + "\n".join(tail),
                    outputs_dir=job.workdir,
                    duration_seconds=self._clock() - started,
                    killed=killed,
                )
        code, killed = self._run_one(_split(job.command, "train.command"), job, env, log, tail, deadline)
        return TrainOutcome(
            exit_code=code,
            log_tail="\n".join(tail),
            outputs_dir=job.workdir,
            duration_seconds=self._clock() - started,
            killed=killed,
        )

    def _run_one(
        self,
        argv: list[str],
        job: TrainJob,
        env: dict[str, str],
        log: LogSink,
        tail: deque[str],
        deadline: float,
    ) -> tuple[int, bool]:
        """Start, stream and wait for one command: (exit code, killed at the deadline)."""
        proc = _spawn(argv, job, env)

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                text = line.rstrip("\n")
                tail.append(text)
                log(text)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        try:
            return self._wait(proc, deadline)
        except KeyboardInterrupt as err:
            # Ctrl-C or the runner's cancel (traingate.interrupt): the command is in its own
            # session and got no signal; stop its whole group before anything else happens.
            self._kill(proc)
            shown = shlex.join(argv)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            note(err, f"stopped the training command `{shown}` (process group {proc.pid})")
            raise
        finally:
            reader.join(timeout=5)

    def _wait(self, proc: subprocess.Popen[str], deadline: float) -> tuple[int, bool]:
        """Wait in short slices (so a signal is handled at once); kill the group at the deadline."""
        while True:
            remaining = deadline - self._clock()
            try:
                return proc.wait(timeout=max(min(remaining, 1.0), 0.01)), False
            except subprocess.TimeoutExpired:
                if self._clock() >= deadline:
                    self._kill(proc)
                    return proc.wait(), True

    def _kill(self, proc: subprocess.Popen[str]) -> None:
        """SIGTERM to the whole group, SIGKILL to what is left after the grace period (or at
        once when another signal arrives meanwhile): a worker that outlived its parent, or
        ignores SIGTERM, would keep the GPU and go on writing files."""
        pgid = proc.pid
        _signal_group(pgid, signal.SIGTERM)
        hurry = threading.Event()
        with on_repeat(hurry.set):
            deadline = self._clock() + self._grace
            while self._clock() < deadline and not hurry.is_set():
                proc.poll()  # reap the leader, or it counts as a member
                if not group_members(pgid):
                    break
                hurry.wait(0.05)
        for _ in range(200):  # SIGKILL cannot be refused; bounded only against a stuck kernel
            proc.poll()
            if not group_members(pgid):
                break
            _signal_group(pgid, signal.SIGKILL)
            time.sleep(0.05)
        proc.wait()

    def attach(self, run_ref: str, job: TrainJob, log: LogSink) -> TrainOutcome:
        raise UsageError(
            f"cannot re-attach to {run_ref!r}: a run on this runner ends with the job",
            hint="--attach is for train.where: instance; run `traingate train` again",
        )


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group. A zombie cannot use the GPU or write
    a file, and orphaned zombies are reaped by init (or never, in some containers), so they do
    not count; without /proc, any process `kill(0)` still reaches counts."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return sorted(members)


def default_log_sink() -> LogSink:
    import sys

    def sink(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    return sink


def _spawn(argv: list[str], job: TrainJob, env: dict[str, str]) -> subprocess.Popen[str]:
    """The command in its own session (so its whole group can be stopped), output as text lines;
    a missing or non-executable program is the user's TrainError, not a traceback."""
    try:
        return subprocess.Popen(
            argv,
            cwd=job.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except FileNotFoundError:
        raise TrainError(
            f"cannot run {argv[0]!r}: no such program (in {job.workdir})",
            hint="check train.command and that the program is installed on this machine "
            "(train.setup can install it)",
        ) from None
    except PermissionError:
        raise TrainError(
            f"cannot run {argv[0]!r}: permission denied",
            hint="make the script executable, or run it through its interpreter (python train.py)",
        ) from None


__all__ = ["LocalExecutor", "default_log_sink", "group_members"]
