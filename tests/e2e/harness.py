"""A workflow interpreter for the end-to-end tests: runs `training-pipeline.yml` the way a runner does.

The job graph comes from the YAML (tests/workflows/jobgraph.py decides which job runs next and
which are skipped). For each job the harness resolves the reusable workflow it `uses:`, turns
the caller's `with:`/`secrets:` into typed inputs (with the callee's defaults), and walks the
callee's steps:

- `actions/checkout`: a fresh clone of the bare remote at `with.ref` (or the pushed branch), so
  nothing leaks between jobs except outputs and artifacts, exactly as on GitHub;
- `actions/upload-artifact` / `download-artifact`: copies into / out of a per-run artifact store
  keyed by name (least common ancestor stripped on upload, as the real action does);
- `aws-actions/configure-aws-credentials`: nothing to do (the environment already points at moto);
- a composite action (`traingate/traingate/actions/x@ref` or `./actions/x`): its input defaults,
  its steps' `if:`/`env:`, the setup steps skipped (the package is installed here already) and
  the one `traingate ...` step run in-process through click's CliRunner with that environment,
  cwd = its working-directory, and its own GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files.

Step outputs become action outputs, job outputs and workflow_call outputs through the YAML's own
`value:` expressions, so a name that differs between the YAML and the CLI shows up as an empty
value here, as it would on GitHub. Anything the interpreter does not understand raises
`HarnessError` instead of being skipped silently.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.workflows.expr import Context, evaluate, evaluate_if, interpolate, strip_wrapper, to_string
from tests.workflows.jobgraph import WorkflowRun, load_workflow
from traingate import gha
from traingate.outputs import OUTPUTS, check_values

REPO = Path(__file__).resolve().parents[2]
PIPELINE = REPO / ".github" / "workflows" / "training-pipeline.yml"
TRAINGATE_EXE = "traingate-venv/bin/traingate"
# The root action (`uses: traingate/traingate@ref`) runs `traingate.cli.main` with the command
# and args it was given (TRAINGATE_COMMAND, TRAINGATE_ARGS), split like a shell would.
ROOT_ACTION_CALL = "from traingate.cli import main"

# os.chdir and os.environ are process-wide: one in-process CLI call at a time.
_CLI_LOCK = threading.Lock()


class HarnessError(AssertionError):
    """The workflow uses something this interpreter does not model (a harness gap, not a pass)."""


@dataclass
class StepRecord:
    job: str
    name: str
    kind: str  # checkout | upload | download | aws | setup | traingate | skipped
    outcome: str = "success"  # success | failure | skipped
    exit_code: int = 0
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)  # the action's outputs (YAML `value:`)
    written: dict[str, str] = field(default_factory=dict)  # what the command wrote to GITHUB_OUTPUT
    stdout: str = ""
    stderr: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    exception: BaseException | None = None

    @property
    def annotations(self) -> list[str]:
        return [line for line in (self.stdout + "\n" + self.stderr).splitlines() if line.startswith("::")]


@dataclass
class JobRecord:
    name: str
    result: str = "success"
    outputs: dict[str, Any] = field(default_factory=dict)
    steps: list[StepRecord] = field(default_factory=list)
    workspace: Path | None = None
    summary: str = ""

    def step(self, kind: str = "traingate") -> StepRecord:
        found = [s for s in self.steps if s.kind == kind]
        if not found:
            raise AssertionError(f"job {self.name} ran no {kind} step: {[s.name for s in self.steps]}")
        return found[-1]

    @property
    def annotations(self) -> list[str]:
        return [a for s in self.steps for a in s.annotations]

    def log(self) -> str:
        parts = []
        for s in self.steps:
            parts.append(f"--- {self.name} / {s.name} [{s.kind}] {s.outcome} exit={s.exit_code} {s.argv}")
            if s.stdout.strip():
                parts.append(s.stdout.rstrip())
            if s.stderr.strip():
                parts.append(s.stderr.rstrip())
            if s.exception is not None and not isinstance(s.exception, SystemExit):
                import traceback

                parts.append("".join(traceback.format_exception(s.exception)))
        return "\n".join(parts)


@dataclass
class Timing:
    """Where the wall time of a run went."""

    cli_seconds: float = 0.0  # inside traingate commands (in-process), wall
    cli_cpu_seconds: float = 0.0  # CPU of the thread running them: traingate's own work
    harness_seconds: float = 0.0  # clones, artifacts, YAML interpretation
    cli_calls: int = 0
    wall_seconds: float = 0.0


@dataclass
class World:
    """What every job of a run sees: the remote, the base environment, the injected services."""

    bare: Path
    root: Path  # per-run scratch (runner folders)
    env: dict[str, str]  # base runner environment (AWS endpoint, PATH, HOME, ...)
    repository: str = "o/r"
    default_branch: str = "main"
    token: str = "ghs_e2eFakeToken000000000000000000000000"
    sync_forge: Callable[[], None] | None = None  # refresh the GitHub fake's view of the branches


Hook = Callable[["PipelineRun", str, "StepRecord | None"], None]


def _git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise HarnessError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return out.stdout.strip()


def _uses_local(uses: str, kind: str) -> Path | None:
    """`./.github/workflows/x.yml`, `traingate/traingate/.github/workflows/x.yml@ref`,
    `./actions/x`, `traingate/traingate/actions/x@ref` -> the file in this checkout."""
    ref_less = uses.split("@", 1)[0]
    if ref_less in ("traingate/traingate", ".") and kind == "action":
        return REPO / "action.yml"
    for prefix in ("./", "traingate/traingate/"):
        if ref_less.startswith(prefix):
            rel = ref_less[len(prefix) :]
            path = REPO / rel
            if kind == "action":
                path = path / "action.yml"
            return path
    return None


def _typed(value: Any, spec: Mapping[str, Any] | None) -> Any:
    kind = (spec or {}).get("type", "string")
    if kind == "boolean" and isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise HarnessError(f"boolean input got {value!r}")
        return value.lower() == "true"
    if kind == "number" and isinstance(value, str):
        return float(value) if "." in value else int(value)
    return value


def _eval_value(value: Any, ctx: Context) -> Any:
    """A `with:` value: a lone `${{ }}` keeps its type (as GitHub does for workflow inputs)."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("${{") and text.endswith("}}") and text.count("${{") == 1:
        return evaluate(strip_wrapper(text), ctx)
    return interpolate(value, ctx)


def _lca(paths: list[Path]) -> Path:
    common = Path(os.path.commonpath([str(p) for p in paths]))
    return common.parent if len(paths) == 1 else common


class PipelineRun:
    """One run of a workflow; `step()` executes the next job, `run()` all (or up to one)."""

    def __init__(
        self,
        world: World,
        *,
        branch: str,
        sha: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        secrets: Mapping[str, str] | None = None,
        run_id: str = "1001",
        attempt: int = 1,
        workflow: Path = PIPELINE,
        hooks: Mapping[str, Hook] | None = None,
    ) -> None:
        self.world = world
        self.branch = branch
        self.sha = sha or _git(world.bare, "rev-parse", f"refs/heads/{branch}")
        self.run_id = run_id
        self.doc = load_workflow(workflow)
        self.secrets = {name: "" for name in self._declared_secrets(self.doc)}
        self.secrets.update(secrets or {})
        self.github = {
            "repository": world.repository,
            "ref": f"refs/heads/{branch}",
            "ref_name": branch,
            "sha": self.sha,
            "run_id": run_id,
            "run_attempt": str(attempt),
            "event_name": "push",
            "token": world.token,
            "server_url": "https://github.com",
            "workspace": "",
            # The push event's payload: the train job checks out the default branch (the base).
            "event": {"repository": {"full_name": world.repository, "default_branch": world.default_branch}},
        }
        self.graph = WorkflowRun.from_doc(
            self.doc, inputs, {"github": self.github, "secrets": self.secrets, "vars": {}}
        )
        self.jobs: dict[str, JobRecord] = {}
        self.artifacts: dict[str, Path] = {}
        self.folder = world.root / f"run-{run_id}-{attempt}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.hooks = dict(hooks or {})
        self.timing = Timing()

    @staticmethod
    def _declared_secrets(doc: Mapping[str, Any]) -> list[str]:
        on = doc.get("on") or {}
        call = on.get("workflow_call") or {} if isinstance(on, dict) else {}
        return list((call.get("secrets") or {}).keys())

    # -------------------------------------------------------------------------------- driving
    @property
    def results(self) -> dict[str, str]:
        return dict(self.graph.results)

    @property
    def ran(self) -> list[str]:
        return self.graph.ran

    def step(self) -> str | None:
        name = self.graph.next_job()
        if name is None:
            return None
        self._hook(f"before:{name}", None)
        record = self._run_job(name)
        self.jobs[name] = record
        self.graph.finish(name, record.result, record.outputs)
        self._hook(f"after:{name}", None)
        return name

    def run(self, until: str | None = None) -> PipelineRun:
        started = time.perf_counter()
        try:
            while (name := self.step()) is not None:
                if name == until:
                    break
        finally:
            self.timing.wall_seconds += time.perf_counter() - started
        return self

    def outputs(self) -> dict[str, Any]:
        """The workflow_call outputs (`on.workflow_call.outputs.*.value`)."""
        on = self.doc.get("on") or {}
        specs = ((on.get("workflow_call") or {}).get("outputs")) or {}
        jobs = {
            name: {"result": self.graph.results.get(name, ""), "outputs": self.graph.outputs.get(name, {})}
            for name in self.doc.get("jobs", {})
        }
        ctx = Context(values={"jobs": jobs})
        return {name: to_string(_eval_value(spec.get("value", ""), ctx)) for name, spec in specs.items()}

    def job(self, name: str) -> JobRecord:
        if name not in self.jobs:
            raise AssertionError(f"job {name} did not run; results: {self.results}")
        return self.jobs[name]

    def log(self) -> str:
        return "\n".join(j.log() for j in self.jobs.values())

    def _hook(self, key: str, step: StepRecord | None) -> None:
        fn = self.hooks.get(key)
        if fn is not None:
            fn(self, key, step)

    # ----------------------------------------------------------------------------- one job
    def _run_job(self, name: str) -> JobRecord:
        started = time.perf_counter()
        cli_before = self.timing.cli_seconds
        job = self.graph.jobs[name]
        ctx = self.graph.context_for(name)
        uses = job.get("uses")
        if not uses:
            raise HarnessError(f"job {name}: only `uses:` jobs (reusable workflows) are modelled")
        path = _uses_local(uses, "workflow")
        if path is None or not path.is_file():
            raise HarnessError(f"job {name}: cannot resolve {uses!r} to a workflow in this repository")
        callee = load_workflow(path)
        call = (callee.get("on") or {}).get("workflow_call") or {}
        specs = call.get("inputs") or {}
        given = {k: _eval_value(v, ctx) for k, v in (job.get("with") or {}).items()}
        unknown = set(given) - set(specs)
        if unknown:
            raise HarnessError(f"job {name} passes undeclared inputs {sorted(unknown)} to {path.name}")
        inputs = {k: _typed(given.get(k, (spec or {}).get("default")), spec) for k, spec in specs.items()}
        for k, spec in specs.items():
            if (spec or {}).get("required") and given.get(k) in (None, ""):
                raise HarnessError(f"job {name}: required input {k} of {path.name} is empty")
        secrets_given = job.get("secrets") or {}
        if secrets_given == "inherit":
            raise HarnessError(f"job {name}: `secrets: inherit` (the house rule says explicit secrets)")
        secrets = {k: "" for k in (call.get("secrets") or {})}
        if set(secrets_given) - set(secrets):
            # GitHub rejects the run: "secret X is not defined in the referenced workflow".
            raise HarnessError(
                f"job {name} passes undeclared secrets {sorted(set(secrets_given) - set(secrets))}"
            )
        secrets.update({k: to_string(_eval_value(v, ctx)) for k, v in secrets_given.items()})

        callee_jobs = callee.get("jobs") or {}
        if len(callee_jobs) != 1:
            raise HarnessError(
                f"{path.name}: one job per stage workflow is modelled, found {list(callee_jobs)}"
            )
        inner_name, inner = next(iter(callee_jobs.items()))
        record = JobRecord(name)
        runner = self.folder / name
        if runner.exists():
            shutil.rmtree(runner)
        temp = runner / "temp"
        workspace = runner / "work"
        temp.mkdir(parents=True)
        record.workspace = workspace
        base = {
            "inputs": inputs,
            "secrets": secrets,
            "github": {**self.github, "workspace": str(workspace)},
            "vars": {},
            "runner": {"temp": str(temp), "os": "Linux"},
        }
        job_env = {
            k: to_string(_eval_value(v, Context(values={**base, "env": {}})))
            for k, v in (inner.get("env") or {}).items()
        }
        steps_ctx: dict[str, Any] = {}
        failed = False
        for index, step in enumerate(inner.get("steps") or []):
            values = {**base, "env": job_env, "steps": steps_ctx}
            sctx = Context(values=values, status=self._step_status(failed))
            sname = step.get("name") or step.get("uses") or step.get("run", "")[:30]
            if not evaluate_if(step.get("if"), sctx):
                record.steps.append(StepRecord(name, sname, "skipped", outcome="skipped"))
                if step.get("id"):
                    steps_ctx[step["id"]] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue
            with_ = {k: to_string(_eval_value(v, sctx)) for k, v in (step.get("with") or {}).items()}
            # A `uses:` step's own `env:` reaches the action's steps, as on GitHub.
            step_env = {k: to_string(_eval_value(v, sctx)) for k, v in (step.get("env") or {}).items()}
            rec = self._run_step(
                name, sname, step, with_, sctx, workspace, temp, {**job_env, **step_env}, index
            )
            record.steps.append(rec)
            if step.get("id"):
                steps_ctx[step["id"]] = {
                    "outputs": rec.outputs,
                    "outcome": rec.outcome,
                    "conclusion": rec.outcome,
                }
            if rec.outcome == "failure" and not step.get("continue-on-error"):
                failed = True
        record.result = "failure" if failed else "success"
        octx = Context(values={**base, "env": job_env, "steps": steps_ctx})
        inner_outputs = {k: to_string(_eval_value(v, octx)) for k, v in (inner.get("outputs") or {}).items()}
        jctx = Context(values={"jobs": {inner_name: {"result": record.result, "outputs": inner_outputs}}})
        record.outputs = {
            k: to_string(_eval_value((spec or {}).get("value", ""), jctx))
            for k, spec in (call.get("outputs") or {}).items()
        }
        summaries = sorted(runner.glob("step-*/summary.md"))
        record.summary = "".join(p.read_text(encoding="utf-8") for p in summaries)
        elapsed = time.perf_counter() - started
        self.timing.harness_seconds += elapsed - (self.timing.cli_seconds - cli_before)
        return record

    @staticmethod
    def _step_status(failed: bool) -> Callable[[str], bool]:
        """Step-level status functions: a failed earlier step makes success() false."""

        def status(fn: str) -> bool:
            if fn == "always":
                return True
            if fn == "failure":
                return failed
            if fn == "cancelled":
                return False
            return not failed

        return status

    def _run_step(
        self,
        job: str,
        sname: str,
        step: Mapping[str, Any],
        with_: dict[str, str],
        ctx: Context,
        workspace: Path,
        temp: Path,
        job_env: dict[str, str],
        index: int,
    ) -> StepRecord:
        uses = step.get("uses", "")
        if "run" in step:
            raise HarnessError(f"job {job}: `run:` steps in a stage workflow are not modelled ({sname})")
        if uses.startswith("actions/checkout@"):
            return self._checkout(job, sname, with_, workspace)
        if uses.startswith("actions/upload-artifact@"):
            return self._upload(job, sname, with_, workspace)
        if uses.startswith("actions/download-artifact@"):
            return self._download(job, sname, with_, workspace)
        if uses.startswith("aws-actions/configure-aws-credentials@"):
            return StepRecord(job, sname, "aws")
        path = _uses_local(uses, "action")
        if path is None or not path.is_file():
            raise HarnessError(f"job {job}: cannot resolve step {uses!r}")
        return self._composite(job, sname, path, with_, ctx, workspace, temp, job_env, index)

    # -------------------------------------------------------------------------- actions
    def _checkout(self, job: str, sname: str, with_: dict[str, str], workspace: Path) -> StepRecord:
        ref = with_.get("ref", "")
        if workspace.exists():
            shutil.rmtree(workspace)
        _git(self.world.bare.parent, "clone", "-q", str(self.world.bare), str(workspace))
        if ref:
            _git(workspace, "checkout", "-q", ref)  # a sha: detached, as actions/checkout does
        else:
            _git(workspace, "checkout", "-q", "-B", self.branch, self.sha)
            _git(workspace, "branch", "-q", f"--set-upstream-to=origin/{self.branch}")
        if with_.get("persist-credentials", "true") == "false":
            # No token left on disk: a push from this job fails as it would on GitHub.
            _git(workspace, "remote", "set-url", "--push", "origin", str(workspace / "no-credentials.git"))
        return StepRecord(job, sname, "checkout", outputs={"ref": ref or self.branch})

    def _upload(self, job: str, sname: str, with_: dict[str, str], workspace: Path) -> StepRecord:
        name = with_.get("name") or "artifact"
        patterns = [p.strip() for p in with_.get("path", "").splitlines() if p.strip()]
        files = []
        for pattern in patterns:
            p = Path(pattern)
            p = p if p.is_absolute() else workspace / p
            files.extend([p] if p.is_file() else [])
        rec = StepRecord(job, sname, "upload")
        if not files:
            rec.stdout = f"::warning::No files were found with the provided path: {' '.join(patterns)}"
            return rec
        if name in self.artifacts and with_.get("overwrite", "false") != "true":
            rec.outcome, rec.exit_code = "failure", 1
            rec.stdout = f"::error::an artifact with the name {name} already exists"
            return rec
        dest = self.folder / "artifacts" / name
        if dest.exists():
            shutil.rmtree(dest)
        root = _lca(files)
        for f in files:
            target = dest / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        self.artifacts[name] = dest
        rec.outputs = {"artifact-id": name}
        return rec

    def _download(self, job: str, sname: str, with_: dict[str, str], workspace: Path) -> StepRecord:
        name = with_.get("name", "")
        rec = StepRecord(job, sname, "download")
        if name not in self.artifacts:
            rec.outcome, rec.exit_code = "failure", 1
            rec.stdout = f"::error::Unable to download artifact(s): Artifact not found for name: {name}"
            return rec
        dest = Path(with_.get("path") or workspace)
        dest = dest if dest.is_absolute() else workspace / dest
        shutil.copytree(self.artifacts[name], dest, dirs_exist_ok=True)
        rec.outputs = {"download-path": str(dest)}
        return rec

    def _composite(
        self,
        job: str,
        sname: str,
        path: Path,
        with_: dict[str, str],
        outer: Context,
        workspace: Path,
        temp: Path,
        job_env: dict[str, str],
        index: int,
    ) -> StepRecord:
        action = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs = action.get("inputs") or {}
        unknown = set(with_) - set(specs)
        if unknown:
            raise HarnessError(f"{path}: step {sname!r} passes undeclared inputs {sorted(unknown)}")
        inputs = {k: with_.get(k, to_string((spec or {}).get("default", ""))) for k, spec in specs.items()}
        for k, spec in specs.items():
            if (spec or {}).get("required") and not inputs[k]:
                rec = StepRecord(job, sname, "traingate", outcome="failure", exit_code=1)
                rec.stdout = f"::error::Input required and not supplied: {k}"
                return rec
        runs = action.get("runs") or {}
        if runs.get("using") != "composite":
            raise HarnessError(f"{path}: only composite actions are modelled")
        steps_ctx: dict[str, Any] = {}
        main: StepRecord | None = None
        failed = False
        for sub in runs.get("steps") or []:
            values = {**outer.values, "inputs": inputs, "steps": steps_ctx}
            sctx = Context(values=values, status=self._step_status(failed))
            if not evaluate_if(sub.get("if"), sctx):
                continue
            sub_uses = sub.get("uses", "")
            if sub_uses.startswith(("actions/setup-python@", "astral-sh/setup-uv@")):
                if sub.get("id"):
                    steps_ctx[sub["id"]] = {"outputs": {"python-path": sys.executable}, "outcome": "success"}
                continue
            run = sub.get("run")
            if run is None:
                raise HarnessError(f"{path}: step {sub.get('name')!r} uses {sub_uses!r}, not modelled")
            root_call = ROOT_ACTION_CALL in run  # the root action: command + args from its env
            if TRAINGATE_EXE not in run and not root_call:
                if "uv pip install" in run or "uv venv" in run:
                    continue  # installing traingate: already installed in this interpreter
                if sub.get("id") == "traingate-source":  # locates pyproject.toml for the uv cache key
                    out = temp / f"locate-{index}.txt"
                    out.write_text("")
                    env = {**os.environ, "GITHUB_ACTION_PATH": str(path.parent), "GITHUB_OUTPUT": str(out)}
                    subprocess.run(["bash", "-e", "-c", run], env=env, check=True, cwd=temp)
                    steps_ctx[sub["id"]] = {"outputs": gha.read_outputs(out), "outcome": "success"}
                    continue
                raise HarnessError(f"{path}: run step {sub.get('name')!r} is neither install nor traingate")
            if "${{" in run:
                raise HarnessError(f"{path}: an expression inside `run:` (template injection)")
            env = {k: to_string(_eval_value(v, sctx)) for k, v in (sub.get("env") or {}).items()}
            cwd_rel = interpolate(str(sub.get("working-directory", ".")), sctx)
            step_env = {**job_env, **env}
            argv = None
            if root_call:
                argv = shlex.split(step_env.get("TRAINGATE_COMMAND", ""))
                argv += shlex.split(step_env.get("TRAINGATE_ARGS", ""))
            rec = self._invoke(
                job, sname, run, step_env, workspace / cwd_rel, workspace, temp, index, argv=argv
            )
            main = rec
            if sub.get("id"):
                steps_ctx[sub["id"]] = {"outputs": rec.outputs, "outcome": rec.outcome}
            if rec.outcome == "failure":
                failed = True
                break
        if main is None:
            raise HarnessError(f"{path}: no traingate step ran")
        actx = Context(values={**outer.values, "inputs": inputs, "steps": steps_ctx})
        main.outputs = {
            k: to_string(_eval_value((spec or {}).get("value", ""), actx))
            for k, spec in (action.get("outputs") or {}).items()
        }
        return main

    def _invoke(
        self,
        job: str,
        sname: str,
        run: str,
        step_env: dict[str, str],
        cwd: Path,
        workspace: Path,
        temp: Path,
        index: int,
        argv: list[str] | None = None,
    ) -> StepRecord:
        from click.testing import CliRunner

        from traingate.cli import cli
        from traingate.gha import read_outputs

        if argv is None:
            tokens = shlex.split(run)
            at = next(i for i, t in enumerate(tokens) if t.endswith(TRAINGATE_EXE))
            argv = tokens[at + 1 :]
        folder = workspace.parent / f"step-{index:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        out_file, summary_file = folder / "output", folder / "summary.md"
        out_file.touch()
        summary_file.touch()
        env = {
            **self.world.env,
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_REPOSITORY": self.github["repository"],
            "GITHUB_REF": f"refs/heads/{self.branch}",
            "GITHUB_REF_NAME": self.branch,
            "GITHUB_SHA": self.sha,
            "GITHUB_RUN_ID": self.run_id,
            "GITHUB_RUN_ATTEMPT": self.github["run_attempt"],
            "GITHUB_EVENT_NAME": "push",
            "GITHUB_SERVER_URL": "https://github.com",
            "GITHUB_WORKSPACE": str(workspace),
            "GITHUB_JOB": job,
            "RUNNER_TEMP": str(temp),
            "GITHUB_OUTPUT": str(out_file),
            "GITHUB_STEP_SUMMARY": str(summary_file),
            **step_env,
        }
        rec = StepRecord(job, sname, "traingate", argv=argv, env=step_env)
        # Everything the job did not set must not leak in from the test process.
        cleared = {
            k: None for k in os.environ if k.startswith(("GITHUB_", "TRAINGATE_", "MLFLOW_")) and k not in env
        }
        with _CLI_LOCK, _chdir(cwd):
            # Under the lock: what a hook observes still holds when the command starts.
            self._hook(f"step:{job}", rec)
            if self.world.sync_forge is not None:
                self.world.sync_forge()
            started, cpu = time.perf_counter(), time.thread_time()
            result = CliRunner().invoke(cli, argv, env={**cleared, **env}, catch_exceptions=True)
            rec.seconds = time.perf_counter() - started
            rec.cpu_seconds = time.thread_time() - cpu
        self.timing.cli_seconds += rec.seconds
        self.timing.cli_cpu_seconds += rec.cpu_seconds
        self.timing.cli_calls += 1
        rec.exit_code = result.exit_code
        rec.stdout = result.stdout
        rec.stderr = result.stderr
        rec.exception = result.exception
        rec.outcome = "success" if result.exit_code == 0 else "failure"
        rec.outputs = read_outputs(out_file)
        rec.written = dict(rec.outputs)
        command = next((" ".join(argv[:n]) for n in (2, 1) if " ".join(argv[:n]) in OUTPUTS), None)
        problems = check_values(command, rec.written) if command else []
        if problems:
            # A value no action or doc declares: a caller's `if:` comparing with it never holds.
            raise HarnessError(f"job {job}, step {sname!r}: " + "; ".join(problems))
        return rec


@contextlib.contextmanager
def _chdir(path: Path) -> Iterator[None]:
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


__all__ = ["PIPELINE", "REPO", "HarnessError", "JobRecord", "PipelineRun", "StepRecord", "World"]
