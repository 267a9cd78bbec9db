"""`traingate demo`: the pipeline on one machine, twice, on the bundled example.

It builds a fresh git repository from the example (the base branch, `pr.base`: main) and runs
the chain as the workflow does, round by round (issue #11 case 11):

- each round is a data push on its own branch, `data/demo-round-N` created from the base;
  `run_pipeline` validates and merges the batch there, trains, gates and renders the PR
  (`_play_round`);
- the demo then plays the reviewer: an improved round's PR is merged into the base branch
  (a merge commit, as GitHub makes); a not-improved round's branch is left unmerged, so its
  data never reaches the base branch and a later round does not train on it. The checkout's
  dataset follows the base branch's pointer again.

Round 1 is clean data (improved, promoted, PR body rendered), round 2 deliberately degraded
data (not improved: no promotion, no PR, base unchanged). The demo checks its own claims: a
demo whose second round "improves" exits 1 instead of printing a misleading story.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.errors import TraingateError, UsageError
from traingate.gha import ActionsContext
from traingate.git import Git
from traingate.pipeline import (
    Progress,
    RunResult,
    explained,
    merge_stage,
    render_markdown,
    render_table,
    run_pipeline,
    run_stage,
    validate_stage,
)

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.result import StepResult

EXAMPLE_NAME = "water-meters"
# Files of the example that make a project; generated data, outputs and caches are not copied.
EXAMPLE_FILES = ("generate.py", "train.py", "traingate.yml", "README.md", ".gitignore")


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
    """The demo's git: its own identity unless the user's environment sets one, no signing."""
    author = (
        os.environ.get("GIT_AUTHOR_NAME") or _GIT_IDENTITY["GIT_AUTHOR_NAME"],
        os.environ.get("GIT_AUTHOR_EMAIL") or _GIT_IDENTITY["GIT_AUTHOR_EMAIL"],
    )
    Git(
        workdir,
        author=author,
        error=UsageError,
        hint="the demo needs git on PATH",
        config=("commit.gpgsign=false",),
    ).run(*args)


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
    # The merge commits as the user outside Actions; the demo's throwaway repository has its own.
    _git(workdir, "config", "user.name", _GIT_IDENTITY["GIT_AUTHOR_NAME"])
    _git(workdir, "config", "user.email", _GIT_IDENTITY["GIT_AUTHOR_EMAIL"])
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


def _start_round(cfg: Config, number: int) -> str:
    """A data push: its own branch from the base branch, as `data/**` branches are in Actions."""
    branch = f"data/demo-round-{number}"
    _git(cfg.base_dir, "checkout", "-q", "-b", branch, cfg.pr.base)
    return branch


def _finish_round(cfg: Config, branch: str, improved: bool, progress: Progress) -> None:
    """The PR's fate, played locally: merged into the base branch only when the model improved
    (auto-merge in the workflow); otherwise the data stays on its branch. Either way the
    checkout returns to the base branch and its dataset follows the base's pointer, so the
    next round trains on what the base holds, never on refused data."""
    from traingate.data.store import pull_dataset

    started = time.perf_counter()
    base = cfg.pr.base
    _git(cfg.base_dir, "checkout", "-q", base)
    if improved:
        _git(cfg.base_dir, "merge", "-q", "--no-ff", "-m", f"Merge {branch}: the model improved", branch)
        detail = f"improved: {branch} merged into {base}"
    else:
        detail = f"not improved: {branch} not merged, {base}'s dataset unchanged"
    # The round's merge copied its files into the checkout; they are on the DVC remote, so
    # pulling the base's pointer replaces them without losing anything.
    pull_dataset(cfg)
    progress.add("merge PR", "ok" if improved else "skipped", detail, time.perf_counter() - started)


@dataclass(frozen=True)
class DemoRound:
    """One round: the data branch it pushed and what the pipeline made of it."""

    number: int
    branch: str
    result: RunResult


@dataclass(frozen=True)
class DemoResult:
    """The demo's typed value: the folder it built and its two rounds."""

    workdir: Path
    rounds: tuple[DemoRound, ...]

    def outputs(self) -> dict[str, Any]:
        """`demo` declares run's outputs: the last round's verdict and run, the PR of round 1."""
        first, last = self.rounds[0].result, self.rounds[-1].result
        return {"improved": last.improved, "run_id": last.run_id, "pr_url": first.pr_url}


def demo_step(
    workdir: Path | None = None,
    pairs: int = 36,
) -> StepResult[DemoResult]:
    """Two rounds on the bundled example in a fresh git repository. The demo never calls
    GitHub: the environment's GITHUB_* are hidden from every stage, the stages get an empty
    Actions context, and the PR is rendered to pr.render_to (a real PR needs a pushed branch:
    `traingate run` in a clone, or Actions)."""
    if pairs < 10:
        raise UsageError(f"--pairs must be at least 10, got {pairs}", hint="use the default (36)")
    started = time.perf_counter()
    folder = _fresh_workdir(workdir)
    progress = Progress(label="setup")
    with isolated_env(), explained(progress):
        cfg = _setup_project(folder)
        _initial_dataset(cfg, folder, pairs, progress)
        batch = max(pairs // 3, 4)
        first = _play_round(cfg, progress, 1, pairs=batch, prefix="batch1", degrade=False)
        _expect(cfg, first, improved=True, why="clean data, no champion yet")
        pr_body = cfg.path(cfg.pr.render_to)
        round1_body = pr_body.read_text(encoding="utf-8") if pr_body.is_file() else ""
        second = _play_round(cfg, progress, 2, pairs=pairs + batch, prefix="worse", degrade=True)
        _expect(cfg, second, improved=False, why="degraded data")
        if pr_body.is_file() and pr_body.read_text(encoding="utf-8") != round1_body:
            raise TraingateError("demo round 2 rewrote the PR body although the model did not improve")
    value = DemoResult(folder, (first, second))
    return _demo_report(cfg, value, progress, time.perf_counter() - started)


def _initial_dataset(cfg: Config, folder: Path, pairs: int, progress: Progress) -> None:
    """Setup: the base branch's first dataset, generated, validated and merged as a push would be."""
    incoming = cfg.path(cfg.data.incoming)
    warming = _warm_tracking_store(cfg)
    t = time.perf_counter()
    _generate(folder, incoming, pairs, seed=1, prefix="meter", degrade=False)
    progress.add("generate", "ok", f"{pairs} clean pairs in {cfg.data.incoming}", time.perf_counter() - t)
    run_stage(progress, "validate", lambda: validate_stage(cfg, incoming))
    run_stage(
        progress,
        "merge",
        lambda: merge_stage(cfg, incoming, "data: initial water-meter dataset", ActionsContext()),
    )
    if warming is not None:
        warming.wait()


# Each round's batch: (seed, what the generate row says).
_ROUND_DATA = {
    1: (2, "{n} new clean pairs"),
    2: (3, "{n} degraded pairs (blurry photos, misplaced masks)"),
}


def _play_round(
    cfg: Config, progress: Progress, number: int, *, pairs: int, prefix: str, degrade: bool
) -> DemoRound:
    """A data push on its own branch, the whole pipeline on it, then the PR's fate."""
    seed, what = _ROUND_DATA[number]
    progress.label = f"round {number}"
    t = time.perf_counter()
    branch = _start_round(cfg, number)
    incoming = cfg.path(cfg.data.incoming)
    _generate(cfg.base_dir, incoming, pairs, seed=seed, prefix=prefix, degrade=degrade)
    progress.add("generate", "ok", f"{what.format(n=pairs)} on {branch}", time.perf_counter() - t)
    result = run_pipeline(
        cfg, incoming, token=None, repo=None, head=branch, progress=progress, actions=ActionsContext()
    )
    _finish_round(cfg, branch, result.improved, progress)
    return DemoRound(number, branch, result)


def _expect(cfg: Config, played: DemoRound, *, improved: bool, why: str) -> None:
    """The demo checks its own story: a round that ends the other way is a bug, exit 1."""
    if played.result.improved == improved:
        return
    if improved:
        message = f"demo round {played.number} ({why}) ended 'not improved'"
    else:
        message = f"demo round {played.number} ({why}) ended 'improved': the gate should have refused it"
    raise TraingateError(
        message, hint=f"look at the gate report in {cfg.workspace_dir / 'reports'}; this is a bug"
    )


def _artifacts(cfg: Config, folder: Path) -> list[tuple[str, Path]]:
    return [
        ("project (git repository)", folder),
        ("dataset (DVC pointer)", cfg.data_root.with_name(cfg.data_root.name + ".dvc")),
        ("DVC remote", Path(cfg.store_remote)),
        ("MLflow database", Path(cfg.tracking_uri.removeprefix("sqlite:///"))),
        ("reports", cfg.workspace_dir / "reports"),
        ("PR body (round 1)", cfg.path(cfg.pr.render_to)),
        ("model of round 2", folder / "outputs" / "model.npz"),
    ]


def _demo_report(
    cfg: Config, value: DemoResult, progress: Progress, elapsed: float
) -> StepResult[DemoResult]:
    from traingate.result import StepResult

    (first, second) = value.rounds
    g1, g2 = first.result.gate, second.result.gate
    artifacts = _artifacts(cfg, value.workdir)
    lines = [
        render_table(progress.stages),
        "",
        f"round 1: improved (no champion yet): {_metrics_line(g1)}; "
        f"model version {g1.get('model_version', '')} is @{cfg.gate.alias}, PR body rendered, "
        f"{first.branch} merged into {cfg.pr.base}",
        f"round 2: not improved: {_metrics_line(g2)}; no promotion, no PR, {second.branch} not merged "
        f"({cfg.pr.base} keeps round 1's dataset)",
        "",
        "artifacts:",
        *(f"  {name:26} {path}" for name, path in artifacts),
        "",
        f"see the runs: mlflow ui --backend-store-uri {cfg.tracking_uri}",
        f"demo finished in {elapsed:.1f}s",
    ]
    table = "| artifact | path |\n|---|---|\n" + "\n".join(f"| {n} | `{p}` |" for n, p in artifacts) + "\n"
    rounds = [
        {
            "improved": r.result.improved,
            "run_id": r.result.run_id,
            "gate": dict(r.result.gate),
            "branch": r.branch,
        }
        for r in value.rounds
    ]
    return StepResult(
        outputs=value.outputs(),
        summary="\n".join([render_markdown(progress.stages, title="traingate demo"), table]),
        message="\n".join(lines),
        data={
            "workdir": str(value.workdir),
            "rounds": rounds,
            "stages": [s.__dict__ for s in progress.stages],
            "seconds": round(elapsed, 2),
        },
        warnings=progress.warnings,
        value=value,
    )


__all__ = ["EXAMPLE_FILES", "DemoResult", "DemoRound", "demo_step", "example_dir", "isolated_env"]
