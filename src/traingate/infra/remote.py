"""The Executor for `train.where: instance`: run the training command on the shared instance.

Field report 5 is the specification: code sync failures were ignored (here the archive's hash
and file count are checked on the instance before anything starts); "training complete" came
from a marker file (here only the exit code file counts, and the runner checks the metrics and
artifacts we bring back); dependency installation looked like a hang (its output is streamed);
a failed workflow left things behind with no resume (the command runs detached in its own
process group and run folder, so `traingate train --attach RUN` picks it up again).

On the instance, under `$TRAINGATE_ROOT` (default /var/lib/traingate):

    runs/<ref>/code/        the workdir at the exact commit
    runs/<ref>/stdout.log   combined stdout/stderr of setup + command
    runs/<ref>/pid          the detached session leader (session id = pid)
    runs/<ref>/exit_code    written once, atomically, when the command ended

SSM returns at most ~24 KB of output per invocation, so the log is streamed by byte offset in
base64 chunks small enough to never be truncated.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import shlex
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.contracts import DATA_PULL_FAILED, LogSink, TrainJob, TrainOutcome
from traingate.errors import ConfigError, InfraError, TrainError
from traingate.gha import ActionsContext
from traingate.git import Git
from traingate.infra.base import WALL, Runtime, Ssm, backoff_delays
from traingate.infra.ssm import REMOTE_ROOT, check_command, run_command, watchdog_script

if TYPE_CHECKING:
    from collections.abc import Callable

    from traingate.config import Config
    from traingate.infra.backend import Backend, Machine
    from traingate.infra.lease import Lease

#: Bytes of log per poll; base64 makes it 4/3 larger, still well under SSM's 24,000 characters.
CHUNK_BYTES = 15000
SCRIPT_SUFFIXES = (".py", ".sh", ".R", ".r", ".jl", ".pl", ".rb")
TIMEOUT_MARK = "== traingate: killed after train.timeout_minutes"
EXCLUDE_DIRS = {".git", ".traingate", "__pycache__", ".venv", ".dvc/cache"}


@dataclass
class S3Location:
    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def s3_location(cfg: Config) -> S3Location:
    """infra.s3_prefix, else `<store.remote>/traingate-runs` when the dataset already lives on S3."""
    raw = cfg.infra.s3_prefix
    if not raw and cfg.store.remote.startswith("s3://"):
        raw = cfg.store.remote.rstrip("/") + "/traingate-runs"
    if not raw.startswith("s3://") or len(raw) <= 5:
        raise ConfigError(
            f"train.where: instance needs an S3 location to ship code and bring outputs back "
            f"(infra.s3_prefix is {cfg.infra.s3_prefix!r})",
            hint="set infra.s3_prefix: s3://<bucket>/<prefix> (the instance role needs s3:GetObject and "
            "s3:PutObject there)",
        )
    bucket, _, prefix = raw[5:].partition("/")
    return S3Location(bucket, prefix.strip("/"))


# ------------------------------------------------------------------------------ the code shipped
def check_script_paths(job: TrainJob) -> list[Path]:
    """Every script the command names must exist under train.workdir (resolved), before shipping."""
    workdir = job.workdir.resolve()
    if not workdir.is_dir():
        raise TrainError(
            f"train.workdir {workdir} does not exist",
            hint="train.workdir is relative to the folder of traingate.yml",
        )
    try:
        tokens = shlex.split(job.command)
    except ValueError as err:
        raise ConfigError(f"train.command cannot be parsed ({err}): {job.command!r}") from None
    found = []
    for tok in tokens:
        if tok.startswith("-") or "=" in tok or not tok.endswith(SCRIPT_SUFFIXES) or Path(tok).is_absolute():
            continue
        path = (workdir / tok).resolve()
        if not path.is_file():
            raise TrainError(
                f"training script not found: {path} (from train.command {job.command!r}, "
                f"resolved against train.workdir {workdir})",
                hint="script paths in train.command are relative to train.workdir; "
                "fix the path or the workdir",
            )
        found.append(path)
    return found


@dataclass
class CodeArchive:
    path: Path
    sha256: str
    files: int
    source: str


def _git(workdir: Path) -> Git:
    """Git for shipping code: a failure is the training's (TrainError), with the checkout hint."""
    return Git(
        workdir,
        author=None,
        error=TrainError,
        hint="the commit to train must be in the local clone (actions/checkout with fetch-depth: 0 "
        "or the commit's ref)",
    )


def pack_code(job: TrainJob, scripts: list[Path], dest: Path, log: LogSink) -> CodeArchive:
    """A tar.gz of train.workdir: at `job.commit` via `git archive` when there is one (exactly the
    commit, not the working tree), else the folder as it is. `scripts` are check_script_paths(job)."""
    workdir = job.workdir.resolve()
    archive = dest / "code.tar.gz"
    if job.commit:
        top = Path(_git(workdir).out("rev-parse", "--show-toplevel"))
        rel = workdir.relative_to(top.resolve()).as_posix()
        _git(workdir).out("cat-file", "-e", f"{job.commit}^{{commit}}")
        for script in scripts:
            rel_script = script.relative_to(top.resolve()).as_posix()
            if not _git(top).ok("cat-file", "-e", f"{job.commit}:{rel_script}"):
                raise TrainError(
                    f"training script {script} is not in commit {job.commit[:12]}",
                    hint="commit the script (the instance trains the exact commit, not the working tree)",
                )
        if _git(workdir).out("status", "--porcelain", "--", "."):
            log(f"note: uncommitted changes in {workdir} are not shipped; training commit {job.commit[:12]}")
        tree = job.commit if rel in ("", ".") else f"{job.commit}:{rel}"
        _git(top).out("archive", "--format=tar.gz", "-o", str(archive), tree)
        source = f"commit {job.commit[:12]}" + (f" ({rel})" if rel not in ("", ".") else "")
    else:
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(workdir.rglob("*")):
                rel_path = path.relative_to(workdir).as_posix()
                if any(
                    rel_path == d or rel_path.startswith(d + "/") or f"/{d}/" in f"/{rel_path}/"
                    for d in EXCLUDE_DIRS
                ):
                    continue
                if path.is_file():
                    tar.add(path, arcname=rel_path, recursive=False)
        source = f"working tree of {workdir} (no commit given)"
    with tarfile.open(archive, "r:gz") as tar:
        files = sum(1 for m in tar.getmembers() if m.isfile())
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    return CodeArchive(archive, digest, files, source)


# ---------------------------------------------------------------------------- remote scripts
def _run_dir(ref: str) -> str:
    return f'"{REMOTE_ROOT}/runs/"{shlex.quote(ref)}'


def _prepare_script(ref: str, code_url: str) -> str:
    return (
        "set -eu\n"
        f"run={_run_dir(ref)}\n"
        'rm -rf "$run/code" && mkdir -p "$run/code"\n'
        f'aws s3 cp --only-show-errors {shlex.quote(code_url)} "$run/code.tar.gz"\n'
        'echo "sha256 $(sha256sum "$run/code.tar.gz" | cut -d" " -f1)"\n'
        'tar -xzf "$run/code.tar.gz" -C "$run/code"\n'
        'echo "files $(find "$run/code" -type f | wc -l)"\n'
    )


def _job_script(job: TrainJob, ref: str) -> str:
    env = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted(job.env.items()) if k.isidentifier())
    setup = ""
    if job.setup.strip():
        setup = f"echo '== traingate: setup (streamed)'\n{job.setup}\necho '== traingate: setup done'\n"
    pull = ""
    if job.datasets:
        pointers = " ".join(shlex.quote(p) for p in job.datasets)
        # After the setup (which may install dvc), with the instance's own role; the code arrived
        # as an archive, not a git clone, hence no_scm. A failure exits DATA_PULL_FAILED.
        pull = (
            f"echo '== traingate: dvc pull {pointers} (on the instance)'\n"
            "command -v dvc >/dev/null || { echo 'traingate: dvc is not installed on the instance; "
            f"install it in train.setup or the image' >&2; exit {DATA_PULL_FAILED}; }}\n"
            f"dvc config --local core.no_scm true || exit {DATA_PULL_FAILED}\n"
            f"dvc pull {pointers} || {{ echo 'traingate: dvc pull failed on the instance' >&2; "
            f"exit {DATA_PULL_FAILED}; }}\n"
        )
    checkpoints = _checkpoint_block(job)
    return f"set -e\nexport TRAINGATE_RUN={shlex.quote(ref)}\n{env}{checkpoints}{setup}{pull}{job.command}\n"


def _checkpoint_block(job: TrainJob) -> str:
    """With train.checkpoint_s3: restore TRAINGATE_CHECKPOINT_DIR from S3 before the command, sync
    it back every TRAINGATE_CHECKPOINT_SYNC_SECONDS (60) while it runs and once when it ends. A
    spot reclaim loses at most one interval; the re-run restores and the command resumes."""
    if not job.checkpoint_url:
        return ""
    sync = 'aws s3 sync --only-show-errors "$TRAINGATE_CHECKPOINT_DIR" "$tg_ck_url"'
    return (
        f"tg_ck_url={shlex.quote(job.checkpoint_url.rstrip('/'))}\n"
        'export TRAINGATE_CHECKPOINT_DIR="$(cd .. && pwd)/checkpoints"\n'
        'mkdir -p "$TRAINGATE_CHECKPOINT_DIR"\n'
        'echo "== traingate: restoring checkpoints from $tg_ck_url"\n'
        'aws s3 sync --only-show-errors "$tg_ck_url" "$TRAINGATE_CHECKPOINT_DIR" '
        "|| echo '== traingate: no checkpoints restored (starting fresh)'\n"
        "tg_parent=$$\n"
        # Ends by itself within one interval after this script (killed or not): no orphan.
        '( while kill -0 "$tg_parent" 2>/dev/null; do '
        'sleep "${TRAINGATE_CHECKPOINT_SYNC_SECONDS:-60}"; '
        f"{sync} >/dev/null 2>&1 || true; done ) &\n"
        f"trap '{sync} || echo \"== traingate: final checkpoint sync failed\"' EXIT\n"
    )


def _launch_script(job: TrainJob, ref: str) -> str:
    seconds = max(1, int(job.timeout_seconds))
    runner = (
        "#!/bin/bash\n"
        'run="$(cd "$(dirname "$0")" && pwd)"\n'
        'cd "$run/code"\n'
        "began=$(date +%s)\n"
        f'timeout --kill-after=30 {seconds} bash "$run/job.sh"\n'
        "rc=$?\n"
        # timeout(1) also returns 124 when the command itself does; only the clock tells them apart.
        f'[ "$rc" = 124 ] && [ $(( $(date +%s) - began )) -ge {seconds} ] && echo "{TIMEOUT_MARK}'
        f' ({seconds} s)"\n'
        'echo "$rc" > "$run/exit_code.tmp" && mv "$run/exit_code.tmp" "$run/exit_code"\n'
    )
    return (
        "set -eu\n"
        f"run={_run_dir(ref)}\n"
        'cd "$run"\n'
        'if [ -f pid ] && kill -0 "$(cat pid)" 2>/dev/null; then\n'
        '  echo "already running $(cat pid)"; exit 0\nfi\n'
        "rm -f exit_code exit_code.tmp\n"
        f"cat > job.sh <<'TRAINGATE_JOB_EOF'\n{_job_script(job, ref)}TRAINGATE_JOB_EOF\n"
        f"cat > run.sh <<'TRAINGATE_RUN_EOF'\n{runner}TRAINGATE_RUN_EOF\n"
        # setsid: its own session, so neither SSM nor a disconnect kills it; the session id (the
        # pid) names every process of the run for `alive` and for a kill.
        'setsid nohup bash "$run/run.sh" > "$run/stdout.log" 2>&1 < /dev/null &\n'
        "echo $! > pid\n"
        'echo "started $(cat pid)"\n'
    )


def _poll_script(ref: str, offset: int, renew_minutes: int | None) -> str:
    renew = ""
    if renew_minutes:
        renew = (
            "{\n" + watchdog_script(renew_minutes).replace("set -eu\n", "") + "} >/dev/null 2>&1 || true\n"
        )
    return (
        f"run={_run_dir(ref)}\n"
        'if [ ! -d "$run" ]; then echo "TGSTATUS missing"; exit 0; fi\n'
        f"{renew}"
        # Order matters: alive before exit_code (a process that ends in between is seen as ended
        # with its code, never as killed), exit_code before size (the log is complete once it exists).
        'alive=0; pid=$(cat "$run/pid" 2>/dev/null || true)\n'
        # Any process left in the run's session counts (timeout(1) makes its own process group).
        'if [ -n "$pid" ] && pgrep -s "$pid" >/dev/null 2>&1; then alive=1; fi\n'
        'ec=-; if [ -f "$run/exit_code" ]; then ec=$(cat "$run/exit_code"); fi\n'
        'size=$(stat -c %s "$run/stdout.log" 2>/dev/null || echo 0)\n'
        'echo "TGSTATUS $alive $ec $size"\n'
        f'tail -c +{offset + 1} "$run/stdout.log" 2>/dev/null | head -c {CHUNK_BYTES} | base64 -w0\n'
        "echo\n"
    )


def _collect_script(ref: str, job: TrainJob, url: str) -> str:
    wanted = [job.metrics_file, job.metrics_log, *job.artifacts, *job.optional_outputs]
    names = " ".join(shlex.quote(n) for n in wanted if n)
    return (
        "set -eu\n"
        f"run={_run_dir(ref)}\n"
        'cd "$run/code"\n'
        "have=()\n"
        f"for f in {names}; do\n"
        '  if [ -e "$f" ]; then have+=("$f"); else echo "missing $f"; fi\n'
        "done\n"
        'if [ "${#have[@]}" -eq 0 ]; then echo "collected 0"; exit 0; fi\n'
        'tar -czf "$run/outputs.tar.gz" -- "${have[@]}"\n'
        f'aws s3 cp --only-show-errors "$run/outputs.tar.gz" {shlex.quote(url)}\n'
        'echo "collected ${#have[@]}"\n'
    )


# ------------------------------------------------------------------------------------ executor
@dataclass
class _LogStream:
    """The run's stdout.log as read so far: the bytes consumed, an unfinished last line, the tail."""

    offset: int = 0
    partial: str = ""
    tail: list[str] = field(default_factory=list)

    def feed(self, chunk: bytes, log: LogSink) -> None:
        self.offset += len(chunk)
        lines = (self.partial + chunk.decode("utf-8", errors="replace")).split("\n")
        self.partial = lines.pop()
        for line in lines:
            log(line)
        self.tail = (self.tail + lines)[-50:]

    def note(self, line: str, log: LogSink) -> None:
        log(line)
        self.tail = [*self.tail, line][-50:]

    def flush(self, log: LogSink) -> None:
        if self.partial:
            self.note(self.partial, log)


@dataclass
class _Poll:
    """One poll of the run: its session alive, its exit code (`-` while none), the log's size,
    and the next chunk of the log."""

    alive: bool
    exit_code: str
    size: int
    chunk: bytes


def _parse_poll(out: str, ref: str, instance_id: str) -> _Poll:
    header, _, body = out.partition("\n")
    fields = header.split()
    if fields[:2] == ["TGSTATUS", "missing"]:
        raise TrainError(
            f"no run {ref} on instance {instance_id}",
            hint="check the run id printed by `traingate train` (runs live under /var/lib/traingate/runs)",
        )
    if len(fields) != 4 or fields[0] != "TGSTATUS":
        raise TrainError(f"unexpected poll output from {instance_id}: {header[:200]!r}")
    return _Poll(fields[1] == "1", fields[2], int(fields[3]), base64.b64decode(body.strip() or b""))


class RemoteExecutor:
    def __init__(
        self,
        *,
        ssm: Ssm,
        s3: Any,
        instance_id: str,
        location: S3Location,
        outputs_root: Path,
        runtime: Runtime = WALL,
        poll_cap: float = 10.0,
        ttl_minutes: int | None = None,
        renew: Callable[[], None] | None = None,
        instance_state: Callable[[], str] | None = None,
        on_launch: Callable[[str], None] | None = None,
        max_poll_failures: int = 6,
        grace_seconds: float = 120.0,
    ) -> None:
        # The instance enforces train.timeout_minutes itself (timeout(1)); the runner kills the
        # run only if that did not happen within this grace (a hung kill, a clock jump).
        self.grace_seconds = grace_seconds
        self.ssm = ssm
        self.s3 = s3
        self.instance_id = instance_id
        self.location = location
        self.outputs_root = outputs_root
        self.runtime = runtime
        self.poll_cap = poll_cap
        self.ttl_minutes = ttl_minutes
        self.renew = renew
        self.instance_state = instance_state
        self.on_launch = on_launch
        self.max_poll_failures = max_poll_failures

    # -- helpers
    def _cmd(self, script: str, what: str, timeout: int = 600) -> str:
        inv = run_command(
            self.ssm,
            self.instance_id,
            script,
            timeout_seconds=timeout,
            runtime=self.runtime,
            comment=f"traingate {what}",
        )
        return check_command(inv, what, self.instance_id).stdout

    def run(self, job: TrainJob, log: LogSink) -> TrainOutcome:
        scripts = check_script_paths(job)
        started = self.runtime.clock()
        stamp = datetime.fromtimestamp(time.time(), UTC).strftime("%Y%m%d-%H%M%S")
        ref = f"{stamp}-{(job.commit or 'worktree')[:8]}-{secrets.token_hex(3)}"
        with tempfile.TemporaryDirectory(prefix="traingate-ship-") as tmp:
            code = pack_code(job, scripts, Path(tmp), log)
            key = self.location.key("runs", ref, "code.tar.gz")
            log(
                f"shipping {code.source}: {code.files} files, sha256 {code.sha256[:12]} -> s3://{self.location.bucket}/{key}"
            )
            try:
                self.s3.upload_file(str(code.path), self.location.bucket, key)
            except Exception as err:
                raise TrainError(
                    f"could not upload the code to s3://{self.location.bucket}/{key}: {err}",
                    hint="check infra.s3_prefix and s3:PutObject for the runner's role",
                ) from err
        self._verify_code(ref, code, log)
        launched = self._cmd(_launch_script(job, ref), "launch", 120)
        log(f"training started detached on {self.instance_id}: {launched.strip()} (run {ref})")
        log(f"if this job is cancelled or loses the runner, re-attach with: traingate train --attach {ref}")
        if self.on_launch:
            self.on_launch(ref)
        return self._follow(ref, job, log, started, offset=0)

    def _verify_code(self, ref: str, code: CodeArchive, log: LogSink) -> None:
        """Unpack the shipped archive on the instance and check its hash and file count."""
        out = self._cmd(_prepare_script(ref, self.location.url("runs", ref, "code.tar.gz")), "code sync", 900)
        got = dict(line.split(" ", 1) for line in out.splitlines() if line.startswith(("sha256 ", "files ")))
        if got.get("sha256", "").strip() != code.sha256 or got.get("files", "").strip() != str(code.files):
            raise TrainError(
                f"code sync to {self.instance_id} failed verification: "
                f"shipped {code.files} files with sha256 "
                f"{code.sha256[:12]}, the instance has {got.get('files', '?').strip()} files with sha256 "
                f"{got.get('sha256', '?').strip()[:12]}",
                hint="nothing was started; check disk space on the instance and retry",
            )
        log(f"code verified on {self.instance_id} ({code.files} files)")

    def attach(self, run_ref: str, job: TrainJob, log: LogSink) -> TrainOutcome:
        log(f"re-attaching to run {run_ref} on {self.instance_id}")
        return self._follow(run_ref, job, log, self.runtime.clock(), offset=0)

    # -- following
    def _follow(self, ref: str, job: TrainJob, log: LogSink, started: float, offset: int) -> TrainOutcome:
        stream = _LogStream(offset)
        exit_code, killed = self._watch(ref, job, log, started, stream)
        stream.flush(log)
        outputs_dir = self._collect(ref, job, log)
        return TrainOutcome(
            exit_code=exit_code,
            log_tail="\n".join(stream.tail),
            outputs_dir=outputs_dir,
            duration_seconds=self.runtime.clock() - started,
            run_ref=ref,
            killed=killed,
        )

    def _watch(
        self, ref: str, job: TrainJob, log: LogSink, started: float, stream: _LogStream
    ) -> tuple[int, bool]:
        """Poll the run (streaming its log, renewing the watchdog and the lease) until it ends:
        (exit code, killed by the timeout)."""
        deadline = started + job.timeout_seconds + self.grace_seconds
        delay = backoff_delays(1.0, self.poll_cap)
        renew_every = (self.ttl_minutes or 0) * 60 / 3
        last_renew = self.runtime.clock()
        failures = 0
        while True:
            renew_now = bool(renew_every) and self.runtime.clock() - last_renew >= renew_every
            try:
                script = _poll_script(ref, stream.offset, self.ttl_minutes if renew_now else None)
                out = self._cmd(script, "log poll", 60)
                failures = 0
            except InfraError as err:  # SsmUnreachableError included
                failures += 1
                self._check_contact(ref, err, failures)
                self.runtime.sleep(delay())
                continue
            if renew_now:
                last_renew = self.runtime.clock()
                if self.renew:
                    self.renew()
            poll = _parse_poll(out, ref, self.instance_id)
            if poll.chunk:
                stream.feed(poll.chunk, log)
            ended = self._ended(poll, stream, log)
            if ended is not None:
                return ended
            if self.runtime.clock() > deadline:
                self._kill(ref, log)
                return 124, True
            self.runtime.sleep(0.2 if len(poll.chunk) == CHUNK_BYTES else delay())

    def _check_contact(self, ref: str, err: InfraError, failures: int) -> None:
        """A failed poll is retried while the instance runs, up to max_poll_failures in a row."""
        state = self.instance_state() if self.instance_state else "running"
        if state != "running" or failures >= self.max_poll_failures:
            raise TrainError(
                f"lost contact with the training run {ref} on {self.instance_id} "
                f"(instance {state}; {err.message})",
                hint=f"if the instance is still running, re-attach with `traingate train --attach {ref}`",
            ) from err

    def _ended(self, poll: _Poll, stream: _LogStream, log: LogSink) -> tuple[int, bool] | None:
        """(exit code, killed by the timeout) once the run ended and its log is read; else None."""
        if poll.exit_code != "-" and stream.offset >= poll.size:
            code = int(poll.exit_code) if poll.exit_code.lstrip("-").isdigit() else 1
            # run.sh prints TIMEOUT_MARK only when timeout(1) ended the command.
            return code, code == 124 and any(TIMEOUT_MARK in line for line in stream.tail)
        if poll.exit_code == "-" and not poll.alive and stream.offset >= poll.size:
            # Not a timeout (the runner reads `killed` as one): report it as SIGKILL's 137.
            stream.note(
                f"== traingate: the training process on {self.instance_id} died without "
                "writing an exit code (killed: out of memory, an operator, or a reboot)",
                log,
            )
            return 137, False
        return None

    def _kill(self, ref: str, log: LogSink) -> None:
        self._cmd(
            f'run={_run_dir(ref)}\npkill -KILL -s "$(cat "$run/pid")" 2>/dev/null || true\necho killed',
            "kill",
            60,
        )
        log(f"== traingate: run {ref} exceeded train.timeout_minutes; killed")

    def _collect(self, ref: str, job: TrainJob, log: LogSink) -> Path:
        """Bring back the metrics file, the metrics log and the artifacts that exist; the runner
        decides what a missing one means (artifacts_policy)."""
        key = self.location.key("runs", ref, "outputs.tar.gz")
        out = self._cmd(
            _collect_script(ref, job, self.location.url("runs", ref, "outputs.tar.gz")), "collect", 1800
        )
        for line in out.splitlines():
            if line.startswith("missing "):
                log(f"== traingate: not produced on the instance: {line[8:]}")
        dest = self.outputs_root / ref
        dest.mkdir(parents=True, exist_ok=True)
        if "collected 0" in out:
            return dest
        with tempfile.TemporaryDirectory(prefix="traingate-collect-") as tmp:
            local = Path(tmp) / "outputs.tar.gz"
            try:
                self.s3.download_file(self.location.bucket, key, str(local))
            except Exception as err:
                raise TrainError(
                    f"could not download the outputs from s3://{self.location.bucket}/{key}: {err}",
                    hint="check s3:GetObject on infra.s3_prefix; "
                    f"the run's files stay on the instance ({ref})",
                ) from err
            with tarfile.open(local, "r:gz") as tar:
                tar.extractall(dest, filter="data")
        return dest


def make_remote_executor(
    cfg: Config,
    *,
    runtime: Runtime = WALL,
    actions: ActionsContext | None = None,
) -> RemoteExecutor:
    """The executor the runner uses for `train.where: instance`; clients come from
    traingate.infra.aws (so tests and the end-to-end harness can override them). `actions`:
    the caller's Actions context (None: not in Actions)."""
    from traingate.infra import aws
    from traingate.infra.backend import JobBackend, backend_for
    from traingate.infra.stage import Services, resolve_holder

    ctx = ActionsContext.given(actions)
    svc = Services(cfg)
    holder = resolve_holder(None, cfg, actions=ctx, for_stop=True)
    # The backend says which machine this run trains on (the shared instance, or the one
    # launched for this holder) and how to reach it.
    backend = backend_for(cfg, services=svc, runtime=runtime.with_log(lambda _m: None), actions=ctx)
    if isinstance(backend, JobBackend):
        # The machine is a job `train` creates (sagemaker): its channel is the executor itself.
        return backend.job_channel()  # type: ignore[return-value]
    inst, channel = _training_machine(cfg, backend, holder)
    return RemoteExecutor(
        ssm=channel,
        s3=aws.boto_client("s3", cfg.infra.region),
        instance_id=inst.id,
        location=s3_location(cfg),
        outputs_root=cfg.workspace_dir / "remote-runs",
        runtime=runtime,
        poll_cap=max(cfg.infra.poll_cap_seconds, 1.0) * 2,
        ttl_minutes=cfg.infra.ttl_minutes,
        renew=_lease_renewal(cfg, backend.lease(inst), holder, runtime),
        instance_state=lambda: svc.ec2.describe(inst.id).state,
    )


def _training_machine(cfg: Config, backend: Backend, holder: str) -> tuple[Machine, Ssm]:
    """The running machine `infra start` gave this holder, and its run channel."""
    machines = backend.locate(holder)
    channel = backend.run_channel(machines[0]) if machines else None
    if not machines or channel is None:
        raise TrainError(
            f"train.where is `instance` but infra.backend {cfg.infra.backend.value} has no instance "
            f"for {holder}",
            hint="run `traingate infra start` first (the start-infra job) with infra.backend ec2 or "
            "launch, and pass its holder",
        )
    inst = machines[0]
    if inst.state != "running":
        raise TrainError(
            f"instance {inst.id} is {inst.state}: train.where is `instance` but it is not running",
            hint="run `traingate infra start` first (the start-infra job)",
        )
    return inst, channel


def _lease_renewal(cfg: Config, lease: Lease, holder: str, runtime: Runtime) -> Callable[[], None]:
    def renew() -> None:
        # Long runs outlive infra.ttl_minutes: keep our lease alive while we are really training.
        now = runtime.clock()
        if holder in lease.read().live(now):
            lease.acquire(holder, cfg.infra.ttl_minutes * 60, now)

    return renew
