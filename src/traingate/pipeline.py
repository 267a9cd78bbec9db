"""`traingate run` and `traingate demo`: the stages in order on one machine.

`run_step` chains the same stage functions the workflow jobs call, so what runs here is what
runs in Actions: validate -> merge -> infra start -> train -> gate -> infra stop (always, even
when training or the gate failed: field report 5's instance left running) -> PR only when the
gate said improved. A stage that fails stops the chain and its error reaches cli.py unchanged
(same exit code), with the stages so far in the message and the summary, so the log says where
it stopped and what already happened (field report 1: a failure far from its cause).

`demo_step` builds a fresh git repository from the bundled example and runs `run_step` twice:
clean data (improved, promoted, PR body rendered), then deliberately degraded data (not
improved: no promotion, no PR). It checks its own claims: a demo whose second round "improves"
exits 1 instead of printing a misleading story.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.errors import TraingateError, UsageError

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.result import StepResult

EXAMPLE_NAME = "water-meters"
# Files of the example that make a project; generated data, outputs and caches are not copied.
EXAMPLE_FILES = ("generate.py", "train.py", "traingate.yml", "README.md", ".gitignore")


@dataclass
class StageRecord:
    stage: str
    status: str  # ok | failed | skipped
    detail: str
    seconds: float = 0.0


@dataclass
class Progress:
    """What happened so far; rendered as the table at the end (or in the error)."""

    label: str = ""
    stages: list[StageRecord] = field(default_factory=list)
    summaries: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: str | None = None

    def add(self, stage: str, status: str, detail: str, seconds: float = 0.0) -> None:
        name = f"{self.label} {stage}".strip()
        self.stages.append(StageRecord(name, status, detail, seconds))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _run_stage(progress: Progress, stage: str, fn: Callable[[], StepResult]) -> StepResult:
    """Run one stage; record it; on failure attach the table so far to the stage's own error."""
    started = time.perf_counter()
    try:
        result = fn()
    except TraingateError as err:
        seconds = time.perf_counter() - started
        progress.add(stage, "failed", _first_line(err.message), seconds)
        if progress.failed is None:
            progress.failed = f"{progress.label} {stage}".strip()
        raise
    seconds = time.perf_counter() - started
    progress.add(stage, "ok", _first_line(result.message) or "done", seconds)
    if result.summary:
        progress.summaries.append(result.summary)
    progress.warnings.extend(result.warnings)
    return result


@contextlib.contextmanager
def _explained(progress: Progress) -> Iterator[None]:
    """On failure, put the stages so far (including the `infra stop` that ran after the
    failure) into the failing stage's own error: same class, same exit code."""
    try:
        yield
    except TraingateError as err:
        _annotate_failure(err, progress)
        raise


def _annotate_failure(err: TraingateError, progress: Progress) -> None:
    if getattr(err, "_pipeline_annotated", False):
        return
    err._pipeline_annotated = True  # type: ignore[attr-defined]
    name = progress.failed or "setup"
    err.message = f"stage {name!r} failed: {err.message}\n{render_table(progress.stages)}"
    err.summary = (
        (err.summary or f"### ❌ {err.title}\n\n{err.message}\n")
        + "\n"
        + render_markdown(progress.stages, title="Pipeline so far")
    )


def render_table(stages: list[StageRecord]) -> str:
    if not stages:
        return ""
    width = max(len(s.stage) for s in stages)
    lines = [f"{'stage'.ljust(width)}  {'status':7}  {'time':>6}  what happened"]
    for s in stages:
        lines.append(f"{s.stage.ljust(width)}  {s.status:7}  {s.seconds:5.1f}s  {s.detail}")
    return "\n".join(lines)


def render_markdown(stages: list[StageRecord], *, title: str = "traingate run") -> str:
    from traingate.report import escape_cell

    icon = {"ok": "✅", "failed": "❌", "skipped": "⏭️"}
    rows = "\n".join(
        f"| {escape_cell(s.stage)} | {icon.get(s.status, '')} {s.status} | {s.seconds:.1f} s | "
        f"{escape_cell(s.detail)} |"
        for s in stages
    )
    return f"### {title}\n\n| stage | status | time | what happened |\n|---|---|---|---|\n{rows}\n"


# -------------------------------------------------------------------------------------- run
def run_pipeline(
    cfg: Config,
    source: Path | None = None,
    *,
    token: str | None = None,
    repo: str | None = None,
    head: str | None = None,
    progress: Progress | None = None,
    forge_factory: Any = None,
) -> dict[str, Any]:
    """The chain; returns {"improved", "run_id", "pr_url", "gate", "train", "pr"}. Raises the
    failing stage's own error after `infra stop` has run. `forge_factory` goes to `pr create`
    (tests hand in a forge without rate-limit pauses)."""
    _preflight_github(token, repo)
    progress = progress if progress is not None else Progress()
    with _explained(progress):
        return _chain(
            cfg, source, token=token, repo=repo, head=head, progress=progress, forge_factory=forge_factory
        )


def _chain(
    cfg: Config,
    source: Path | None,
    *,
    token: str | None,
    repo: str | None,
    head: str | None,
    progress: Progress,
    forge_factory: Any = None,
) -> dict[str, Any]:
    from traingate.data.merge import _has_files
    from traingate.github.pr import create_step
    from traingate.infra.stage import start_step, stop_step
    from traingate.state import read_state
    from traingate.tracking.gate import gate_step
    from traingate.train.runner import train_step

    src = (source if source is not None else cfg.path(cfg.data.incoming)).resolve()
    _check_data_only(cfg, src, progress)
    data_report: Path | None = None
    # The merge's own test for new data: a lone .gitkeep in incoming/ is not a batch to merge.
    if _has_files(src):
        _run_stage(progress, "validate", lambda: _validate(cfg, src))
        merged = _run_stage(progress, "merge", lambda: _merge(cfg, src, None))
        data_report = Path(str(merged.outputs["report"]))
    else:
        progress.add("validate", "skipped", f"no new data in {src}: training on the stored dataset")
        progress.add("merge", "skipped", "nothing to merge")
        saved = read_state(cfg.workspace_dir).get("data_report")
        if isinstance(saved, str) and Path(saved).is_file():
            data_report = Path(saved)

    started = _run_stage(progress, "infra start", lambda: start_step(cfg, holder=None))
    holder = str(started.outputs.get("holder") or "") or None
    outcome: dict[str, Any] = {"improved": False, "run_id": "", "pr_url": ""}
    failure: TraingateError | None = None
    try:
        trained = _run_stage(
            progress, "train", lambda: train_step(cfg, attach=None, pull=True, with_gate=False)
        )
        run_id = str(trained.outputs["run_id"])
        outcome["run_id"] = run_id
        outcome["train"] = trained.outputs
        gated = _run_stage(progress, "gate", lambda: gate_step(cfg, run_id=run_id, promote=True))
        outcome["gate"] = gated.outputs
        outcome["improved"] = (
            gated.outputs.get("improved") is True or str(gated.outputs.get("improved")) == "true"
        )
    except TraingateError as err:
        failure = err
        raise
    finally:
        # Always give the instance back; a stop failure must not hide the first failure.
        try:
            _run_stage(progress, "infra stop", lambda: stop_step(cfg, holder=holder, wait=True, force=False))
        except TraingateError as stop_err:
            if failure is None:
                raise
            failure.message += f"\nalso, infra stop failed: {stop_err.message}"
            failure.hint = (failure.hint or "") + "; then run `traingate infra stop` (or `infra reap`)"

    if not outcome["improved"]:
        progress.add("pr create", "skipped", "not improved: no pull request")
        return outcome
    gate_report = Path(str(outcome["gate"]["report"])) if outcome["gate"].get("report") else None
    # Token and repository: both or neither (checked up front): with neither, create_step renders
    # the body only. metrics_log None: create_step reads the workspace's metrics.jsonl if present.
    pr = _run_stage(
        progress,
        "pr create",
        lambda: create_step(
            cfg,
            token=token,
            repo=repo,
            head=head,
            base=None,
            data_report=data_report,
            gate_report=gate_report,
            metrics_log=None,
            render_only=False,
            forge_factory=forge_factory,
        ),
    )
    outcome["pr"] = pr.outputs
    outcome["pr_url"] = str(pr.outputs.get("pr_url") or "")
    return outcome


def _check_data_only(cfg: Config, source: Path, progress: Progress) -> None:
    """A data branch changes data only: on any branch but pr.base, refuse before anything is
    merged or trained (the workflow's train job runs the base's code instead, see trust.py)."""
    from traingate.data.trust import check_branch

    try:
        report = check_branch(cfg, source=source)
    except TraingateError as err:
        progress.add("trust", "failed", _first_line(err.message))
        progress.failed = progress.failed or f"{progress.label} trust".strip()
        raise
    progress.warnings.extend(report.warnings)


def _preflight_github(token: str | None, repo: str | None) -> None:
    """Half a GitHub setup is a mistake to report before an hour of training, not after."""
    from traingate.errors import CredentialsError

    if repo and not token:
        raise CredentialsError(
            f"a repository is set ({repo}) but GITHUB_TOKEN is not: the pull request could not be opened",
            hint="set GITHUB_TOKEN (in Actions: `env: GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}`), or unset "
            "GITHUB_REPOSITORY to render the PR body to pr.render_to instead",
        )
    if token and not repo:
        raise UsageError(
            "GITHUB_TOKEN is set but no repository: the pull request could not be opened",
            hint="set GITHUB_REPOSITORY=owner/name, or unset GITHUB_TOKEN to render the PR body only",
        )


def _metrics_line(gate: Mapping[str, Any]) -> str:
    """`dice 0.9324 vs 0.9695 (-0.0371)` from the gate's metric rows."""
    import json

    rows = gate.get("metrics")
    if isinstance(rows, str):
        try:
            rows = json.loads(rows)
        except ValueError:
            return rows
    if not isinstance(rows, list):
        return ""
    parts = []
    for row in rows:
        if not isinstance(row, dict):
            continue
        text = f"{row.get('name')} {_num(row.get('candidate'))}"
        if row.get("baseline") is not None:
            text += f" vs champion {_num(row.get('baseline'))} ({_num(row.get('delta'), signed=True)})"
        parts.append(text)
    return ", ".join(parts)


def _num(value: Any, *, signed: bool = False) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:+.4f}" if signed else f"{value:.4f}"
    return "—" if value is None else str(value)


def run_step(
    cfg: Config,
    source: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    forge_factory: Any = None,
) -> StepResult:
    """`traingate run`: the PR goes to GitHub when GITHUB_TOKEN and GITHUB_REPOSITORY are set,
    else it is rendered to pr.render_to."""
    from traingate.result import StepResult

    env = os.environ if env is None else env
    progress = Progress()
    outcome = run_pipeline(
        cfg,
        source,
        token=env.get("GITHUB_TOKEN") or None,
        repo=env.get("GITHUB_REPOSITORY") or None,
        head=env.get("TRAINGATE_HEAD") or None,
        progress=progress,
        forge_factory=forge_factory,
    )
    verdict = "improved" if outcome["improved"] else "not improved"
    return StepResult(
        outputs={"improved": outcome["improved"], "run_id": outcome["run_id"], "pr_url": outcome["pr_url"]},
        summary="\n".join([render_markdown(progress.stages), *progress.summaries]),
        message=f"{render_table(progress.stages)}\n\nresult: {verdict} (run {outcome['run_id']})",
        data={"stages": [s.__dict__ for s in progress.stages], "gate": outcome.get("gate", {})},
        warnings=progress.warnings,
    )


# ------------------------------------------------------------------------------------- demo
def example_dir() -> Path:
    """The bundled example: inside the installed package (wheel), else the source checkout."""
    packaged = Path(__file__).resolve().parent / "examples" / EXAMPLE_NAME
    if (packaged / "train.py").is_file():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "examples" / EXAMPLE_NAME
    if (checkout / "train.py").is_file():
        return checkout
    raise UsageError(
        f"the bundled example {EXAMPLE_NAME!r} is missing from this installation ({packaged})",
        hint="reinstall traingate (pip install --force-reinstall traingate)",
    )


# Variables that would make the demo talk to a real service or read another project's config.
_ISOLATE_PREFIXES = ("GITHUB_", "MLFLOW_", "TRAINGATE_", "DVC_REMOTE")


@contextlib.contextmanager
def isolated_env() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ISOLATE_PREFIXES)}
    for name in saved:
        del os.environ[name]
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith(_ISOLATE_PREFIXES)]:
            del os.environ[name]
        os.environ.update(saved)


_GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "traingate demo",
    "GIT_AUTHOR_EMAIL": "demo@traingate.invalid",
    "GIT_COMMITTER_NAME": "traingate demo",
    "GIT_COMMITTER_EMAIL": "demo@traingate.invalid",
}


def _git(workdir: Path, *args: str) -> None:
    env = {**os.environ, **{k: os.environ.get(k) or v for k, v in _GIT_IDENTITY.items()}}
    proc = subprocess.run(
        ["git", "-c", "commit.gpgsign=false", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise UsageError(
            f"`git {' '.join(args)}` failed in {workdir}: {proc.stderr.strip() or proc.stdout.strip()}",
            hint="the demo needs git on PATH",
        )


def _fresh_workdir(workdir: Path | None) -> Path:
    if workdir is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
        workdir = Path.cwd() / ".traingate" / "demo" / stamp
    workdir = workdir.resolve()
    if workdir.exists() and any(workdir.iterdir()):
        raise UsageError(
            f"the demo folder {workdir} is not empty",
            hint="pass --workdir with a new or empty folder (the demo never overwrites files)",
        )
    workdir.mkdir(parents=True, exist_ok=True)
    return workdir


def _setup_project(workdir: Path) -> Config:
    import yaml

    from traingate.config import parse_config

    source = example_dir()
    for name in EXAMPLE_FILES:
        shutil.copy2(source / name, workdir / name)
    raw = yaml.safe_load((workdir / "traingate.yml").read_text(encoding="utf-8"))
    # The interpreter running traingate has numpy and pillow; a bare `python` on PATH may not.
    raw["train"]["command"] = shlex.join([sys.executable, "train.py"])
    text = (
        "# Written by `traingate demo` from examples/water-meters/traingate.yml: the training\n"
        "# command uses the interpreter that runs traingate.\n" + yaml.safe_dump(raw, sort_keys=False)
    )
    (workdir / "traingate.yml").write_text(text, encoding="utf-8")
    _git(workdir, "init", "-q", "-b", "main")
    _git(workdir, "add", *EXAMPLE_FILES)
    _git(workdir, "commit", "-q", "-m", "water-meters example (traingate demo)")
    return parse_config(raw, base_dir=workdir, source=workdir / "traingate.yml")


def _generate(workdir: Path, out: Path, pairs: int, seed: int, prefix: str, degrade: bool) -> None:
    """Make a batch with the example's own generator and commit it, as a data push would."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("traingate_demo_generate", workdir / "generate.py")
    if spec is None or spec.loader is None:  # pragma: no cover - the file was just copied
        raise UsageError(f"cannot load {workdir / 'generate.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate(out, pairs, seed=seed, prefix=prefix, degrade=degrade)
    _git(workdir, "add", str(out.relative_to(workdir)))
    kind = "degraded" if degrade else "clean"
    _git(workdir, "commit", "-q", "-m", f"data: {pairs} {kind} pairs ({prefix}-*)")


def _warm_tracking_store(cfg: Config) -> subprocess.Popen[bytes] | None:
    """Create the MLflow schema (seconds of migrations) on the second core while the data
    stages run on the first. Best effort by design: if it fails, the train stage creates the
    schema itself and reports any real problem."""
    uri = cfg.tracking_uri
    if not uri.startswith("sqlite:///"):
        return None
    Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    code = (
        "import sys\nfrom mlflow.tracking import MlflowClient\nMlflowClient(sys.argv[1]).search_experiments()"
    )
    try:
        return subprocess.Popen(
            [sys.executable, "-c", code, uri],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
    except OSError:
        return None


def demo_step(
    workdir: Path | None = None,
    pairs: int = 36,
) -> StepResult:
    """Two rounds on the bundled example in a fresh git repository. The demo never calls
    GitHub: the environment's GITHUB_* are hidden from every stage and the PR is rendered to
    pr.render_to (a real PR needs a pushed branch: `traingate run` in a clone, or Actions)."""
    from traingate.result import StepResult

    if pairs < 10:
        raise UsageError(f"--pairs must be at least 10, got {pairs}", hint="use the default (36)")
    started = time.perf_counter()
    folder = _fresh_workdir(workdir)
    progress = Progress(label="setup")
    with isolated_env(), _explained(progress):
        cfg = _setup_project(folder)
        incoming = cfg.path(cfg.data.incoming)
        warming = _warm_tracking_store(cfg)

        t = time.perf_counter()
        _generate(folder, incoming, pairs, seed=1, prefix="meter", degrade=False)
        progress.add("generate", "ok", f"{pairs} clean pairs in {cfg.data.incoming}", time.perf_counter() - t)
        _run_stage(progress, "validate", lambda: _validate(cfg, incoming))
        _run_stage(progress, "merge", lambda: _merge(cfg, incoming, "data: initial water-meter dataset"))

        if warming is not None:
            warming.wait()
        batch = max(pairs // 3, 4)
        progress.label = "round 1"
        t = time.perf_counter()
        _generate(folder, incoming, batch, seed=2, prefix="batch1", degrade=False)
        progress.add("generate", "ok", f"{batch} new clean pairs", time.perf_counter() - t)
        first = run_pipeline(cfg, incoming, token=None, repo=None, head="main", progress=progress)
        if not first["improved"]:
            raise TraingateError(
                "demo round 1 (clean data, no champion yet) ended 'not improved'",
                hint=f"look at the gate report in {cfg.workspace_dir / 'reports'}; this is a bug",
            )
        pr_body = cfg.path(cfg.pr.render_to)
        round1_body = pr_body.read_text(encoding="utf-8") if pr_body.is_file() else ""

        worse = pairs + batch
        progress.label = "round 2"
        t = time.perf_counter()
        _generate(folder, incoming, worse, seed=3, prefix="worse", degrade=True)
        progress.add(
            "generate",
            "ok",
            f"{worse} degraded pairs (blurry photos, misplaced masks)",
            time.perf_counter() - t,
        )
        second = run_pipeline(cfg, incoming, token=None, repo=None, head="main", progress=progress)
        if second["improved"]:
            raise TraingateError(
                "demo round 2 (degraded data) ended 'improved': the gate should have refused it",
                hint=f"look at the gate report in {cfg.workspace_dir / 'reports'}; this is a bug",
            )
        if pr_body.is_file() and pr_body.read_text(encoding="utf-8") != round1_body:
            raise TraingateError("demo round 2 rewrote the PR body although the model did not improve")

    elapsed = time.perf_counter() - started
    g1, g2 = first.get("gate", {}), second.get("gate", {})
    artifacts = [
        ("project (git repository)", folder),
        ("dataset (DVC pointer)", cfg.data_root.with_name(cfg.data_root.name + ".dvc")),
        ("DVC remote", Path(cfg.store_remote)),
        ("MLflow database", Path(cfg.tracking_uri.removeprefix("sqlite:///"))),
        ("reports", cfg.workspace_dir / "reports"),
        ("PR body (round 1)", pr_body),
        ("model of round 2", folder / "outputs" / "model.npz"),
    ]
    lines = [
        render_table(progress.stages),
        "",
        f"round 1: improved (no champion yet): {_metrics_line(g1)}; "
        f"model version {g1.get('model_version', '')} is @{cfg.gate.alias}, PR body rendered",
        f"round 2: not improved: {_metrics_line(g2)}; no promotion, no PR",
        "",
        "artifacts:",
        *(f"  {name:26} {path}" for name, path in artifacts),
        "",
        f"see the runs: mlflow ui --backend-store-uri {cfg.tracking_uri}",
        f"demo finished in {elapsed:.1f}s",
    ]
    summary = "\n".join(
        [
            render_markdown(progress.stages, title="traingate demo"),
            "| artifact | path |\n|---|---|\n"
            + "\n".join(f"| {name} | `{path}` |" for name, path in artifacts)
            + "\n",
        ]
    )
    return StepResult(
        outputs={"improved": second["improved"], "run_id": second["run_id"], "pr_url": first["pr_url"]},
        summary=summary,
        message="\n".join(lines),
        data={
            "workdir": str(folder),
            "rounds": [
                {"improved": first["improved"], "run_id": first["run_id"], "gate": g1},
                {"improved": second["improved"], "run_id": second["run_id"], "gate": g2},
            ],
            "stages": [s.__dict__ for s in progress.stages],
            "seconds": round(elapsed, 2),
        },
        warnings=progress.warnings,
    )


def _validate(cfg: Config, source: Path) -> StepResult:
    from traingate.data.validate import validate_step

    return validate_step(cfg, source, use_cache=True, report_path=None)


def _merge(cfg: Config, source: Path, message: str | None) -> StepResult:
    from traingate.data.merge import merge_step

    return merge_step(cfg, source, on_conflict=None, push=True, commit=True, message=message, comment=False)


__all__ = ["Progress", "StageRecord", "demo_step", "example_dir", "render_table", "run_pipeline", "run_step"]
