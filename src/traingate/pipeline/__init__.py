"""`traingate run`: the stages in order on one machine (`traingate demo` is demo.py).

`run_step` chains the same stage functions the workflow jobs call, so what runs here is what
runs in Actions: validate -> merge -> infra start -> train -> gate -> infra stop (always, even
when training or the gate failed: field report 5's instance left running) -> PR only when the
gate said improved. A stage that fails stops the chain and its error reaches cli.py unchanged
(same class, same exit code), with the stages so far added as its context and to its summary and
the warnings gathered so far carried on it, so the log says where it stopped and what already
happened (field report 1: a failure far from its cause). cli.run_step is the only place that
writes them out.

The phases of a run (`_data_phase`, `_train_phase`, `_stop_infra`, `_pr_phase`) share one `_Run`;
the run's typed value is a `RunResult`. One submodule per composed command joins this package
(`pipeline/train.py`, `promote.py`, `pr.py`, `merge.py`).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from traingate.errors import TraingateError, UsageError
from traingate.gha import ActionsContext

V = TypeVar("V")

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.result import StepResult
    from traingate.tracking.gate import GateResult


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


def run_stage(progress: Progress, stage: str, fn: Callable[[], StepResult]) -> StepResult:
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
def explained(progress: Progress) -> Iterator[None]:
    """On failure, say on the failing stage's own error (same class, same exit code) where the
    run stopped, with the stages so far (including the `infra stop` that ran after the failure),
    and carry the warnings the earlier stages gathered. Nothing is annotated here: cli.run_step
    writes the error, its context and its warnings."""
    try:
        yield
    except TraingateError as err:
        err.add_warnings(progress.warnings)
        err.add_context(_where_it_stopped(progress))
        _add_summary_table(err, progress)
        raise


def _where_it_stopped(progress: Progress) -> str:
    """The context line: the same text for the same stages, so a composer nesting `explained`
    (the demo around `run_pipeline`) adds it once (`add_context` keeps one copy)."""
    name = progress.failed or "setup"
    return f"running the pipeline: stage {name!r} failed; the stages so far:\n{render_table(progress.stages)}"


def _add_summary_table(err: TraingateError, progress: Progress) -> None:
    table = render_markdown(progress.stages, title="Pipeline so far")
    summary = err.summary or f"### ❌ {err.title}\n\n{err.message}\n" + (
        f"\n**Next step:** {err.hint}\n" if err.hint else ""
    )
    if table not in summary:
        err.summary = f"{summary}\n{table}"


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
@dataclass(frozen=True)
class RunResult:
    """What one `traingate run` (or one demo round) ended with: the typed value of the step."""

    improved: bool = False
    run_id: str = ""
    pr_url: str = ""
    # Training skipped: the merged dataset is the one @champion was trained on.
    skipped: bool = False
    # The gate's outputs (verdict, metric rows, report path) and the pull request's outputs.
    gate: Mapping[str, Any] = field(default_factory=dict)
    pr: Mapping[str, Any] = field(default_factory=dict)

    def outputs(self) -> dict[str, Any]:
        """Exactly the outputs `run` (and `demo`) declare in traingate.outputs."""
        return {"improved": self.improved, "run_id": self.run_id, "pr_url": self.pr_url}


@dataclass
class _Run:
    """What every phase of one run needs: the config, where it reports, and the GitHub target."""

    cfg: Config
    progress: Progress
    actions: ActionsContext
    token: str | None
    repo: str | None
    head: str | None
    forge_factory: Any = None


@dataclass
class _Trained:
    """What the train phase hands to the PR phase."""

    run_id: str = ""
    gated: StepResult[GateResult] | None = None


def _value(result: StepResult[Any], kind: type[V], stage: str) -> V:
    """A stage's typed result: composers read these, never outputs re-parsed from strings."""
    if not isinstance(result.value, kind):
        raise TraingateError(
            f"internal error: {stage} returned no {kind.__name__}",
            hint="this is a traingate bug: report it with the step's output",
        )
    return result.value


def _improved(gated: StepResult[GateResult]) -> bool:
    """The gate's typed verdict (`GateResult.improved`), never its `improved` output re-parsed."""
    from traingate.tracking.gate import GateResult

    return _value(gated, GateResult, "the gate (no verdict)").improved


def run_pipeline(
    cfg: Config,
    source: Path | None = None,
    *,
    token: str | None = None,
    repo: str | None = None,
    head: str | None = None,
    progress: Progress | None = None,
    forge_factory: Any = None,
    actions: ActionsContext | None = None,
) -> RunResult:
    """The chain. Raises the failing stage's own error after `infra stop` has run.
    `forge_factory` goes to `pr create` (tests hand in a forge without rate-limit pauses);
    `actions` is the Actions context the stages get (the CLI's; the demo's is empty)."""
    from traingate.interrupt import interruptible
    from traingate.runlock import run_lock

    _preflight_github(token, repo)
    progress = progress if progress is not None else Progress()
    run = _Run(
        cfg,
        progress,
        ActionsContext.given(actions),
        token=token,
        repo=repo,
        head=head,
        forge_factory=forge_factory,
    )
    # One run per folder (they share state.json); Ctrl-C/cancel still runs `infra stop`.
    with interruptible(), run_lock(cfg.workspace_dir), explained(progress):
        return _chain(run, source)


def _chain(run: _Run, source: Path | None) -> RunResult:
    """validate -> merge (or the stored dataset) -> infra start/train/gate/infra stop -> PR."""
    from traingate.github.pr import PrResult

    src = _source_folder(run.cfg, source)
    _check_data_only(run.cfg, src, run.progress, run.actions)
    data = _data_phase(run, src)
    if isinstance(data, RunResult):
        return data
    trained = _train_phase(run)
    assert trained.gated is not None  # the train phase raised otherwise
    if not _improved(trained.gated):
        run.progress.add("pr create", "skipped", "not improved: no pull request")
        return RunResult(improved=False, run_id=trained.run_id, gate=trained.gated.outputs)
    pr = _pr_phase(run, data, trained.gated)
    return RunResult(
        improved=True,
        run_id=trained.run_id,
        pr_url=_value(pr, PrResult, "pr create").url,
        gate=trained.gated.outputs,
        pr=pr.outputs,
    )


def _source_folder(cfg: Config, source: Path | None) -> Path:
    src = (source if source is not None else cfg.path(cfg.data.incoming)).resolve()
    if source is not None and not src.is_dir():
        # Asked for by name: a typo must not turn into "no new data, train on the stored set".
        raise UsageError(
            f"SOURCE {source} does not exist or is not a folder",
            hint=f"pass the folder holding {cfg.data.images}/ and {cfg.data.masks}/, or omit it "
            f"to use data.incoming ({cfg.data.incoming})",
        )
    return src


def _data_phase(run: _Run, src: Path) -> Path | RunResult | None:
    """Validate and merge new data; returns the data report for the PR (None without one), or
    the whole run's result when the merged data is what @champion was trained on."""
    from traingate.data.merge import holds_files
    from traingate.state import read_state

    cfg, progress = run.cfg, run.progress
    # The merge's own test for new data: a lone .gitkeep in incoming/ is not a batch to merge.
    if holds_files(src, cfg.data.ignore):
        run_stage(progress, "validate", lambda: validate_stage(cfg, src))
        merged = run_stage(progress, "merge", lambda: merge_stage(cfg, src, None, run.actions))
        skipped = _skip_same_data(cfg, progress)
        if skipped is not None:
            return skipped
        from traingate.data.merge import MergeResult

        return _value(merged, MergeResult, "data merge").report_path
    progress.add("validate", "skipped", f"no new data in {src}: training on the stored dataset")
    progress.add("merge", "skipped", "nothing to merge")
    saved = read_state(cfg.workspace_dir).data_report
    if isinstance(saved, str) and Path(saved).is_file():
        return Path(saved)
    return None


def _train_phase(run: _Run) -> _Trained:
    """infra start -> train -> gate, then infra stop always (field report 5)."""
    from traingate.infra.stage import StartResult, start_step
    from traingate.pipeline.train import train_step
    from traingate.tracking.gate import gate_step
    from traingate.train.runner import TrainResult

    cfg, progress = run.cfg, run.progress
    started = run_stage(progress, "infra start", lambda: start_step(cfg, holder=None, actions=run.actions))
    holder = _value(started, StartResult, "infra start").holder or None
    trained = _Trained()
    failure: TraingateError | KeyboardInterrupt | None = None
    try:
        result = run_stage(
            progress,
            "train",
            lambda: train_step(cfg, attach=None, pull=True, with_gate=False, actions=run.actions),
        )
        run_id = trained.run_id = _value(result, TrainResult, "train").run_id
        trained.gated = run_stage(
            progress, "gate", lambda: gate_step(cfg, run_id=run_id, promote=True, actions=run.actions)
        )
    except (TraingateError, KeyboardInterrupt) as err:
        failure = err
        raise
    finally:
        _stop_infra(run, holder, failure)
    return trained


def _stop_infra(run: _Run, holder: str | None, failure: TraingateError | KeyboardInterrupt | None) -> None:
    """Always give the instance back; a stop failure must not hide the first failure."""
    from traingate.infra.stage import stop_step
    from traingate.interrupt import note

    cfg = run.cfg
    try:
        run_stage(
            run.progress,
            "infra stop",
            lambda: stop_step(cfg, holder=holder, wait=True, force=False, actions=run.actions),
        )
        if isinstance(failure, KeyboardInterrupt):
            note(failure, f"released the infra lease (holder {holder or cfg.project})")
    except TraingateError as stop_err:
        if isinstance(failure, KeyboardInterrupt):
            note(failure, f"infra stop failed ({stop_err.message}): run `traingate infra stop`")
        elif failure is None:
            raise
        else:
            failure.message += f"\nalso, infra stop failed: {stop_err.message}"
            failure.hint = (failure.hint or "") + "; then run `traingate infra stop` (or `infra reap`)"


def _pr_phase(run: _Run, data_report: Path | None, gated: StepResult[GateResult]) -> StepResult:
    from traingate.pipeline.pr import create_step
    from traingate.tracking.gate import GateResult

    cfg = run.cfg
    gate_report = _value(gated, GateResult, "the gate").report_path
    # Token and repository: both or neither (checked up front): with neither, create_step renders
    # the body only. metrics_log None: create_step reads the workspace's metrics.jsonl if present.
    return run_stage(
        run.progress,
        "pr create",
        lambda: create_step(
            cfg,
            token=run.token,
            repo=run.repo,
            head=run.head,
            base=None,
            data_report=data_report,
            gate_report=gate_report,
            metrics_log=None,
            render_only=False,
            actions=run.actions,
            forge_factory=run.forge_factory,
        ),
    )


def _skip_same_data(cfg: Config, progress: Progress) -> RunResult | None:
    """After a merge: the outcome of a run that trains nothing, when the merged dataset is the
    one @champion was trained on (pipeline/same_data.py); here even the instance is not started."""
    from traingate.pipeline.same_data import skip_if_champion_data

    skipped = skip_if_champion_data(cfg)
    if skipped is None:
        return None
    for stage in ("infra start", "train", "gate", "infra stop", "pr create"):
        progress.add(stage, "skipped", skipped.message if stage == "train" else "training skipped")
    progress.summaries.append(skipped.summary)
    return RunResult(improved=False, skipped=True)


def _check_data_only(cfg: Config, source: Path, progress: Progress, actions: ActionsContext) -> None:
    """A data branch changes data only: on any branch but pr.base, refuse before anything is
    merged or trained (the workflow's train job runs the base's code instead, see trust.py)."""
    from traingate.data.trust import check_branch

    try:
        report = check_branch(cfg, source=source, actions=actions)
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


def run_step(
    cfg: Config,
    source: Path | None = None,
    *,
    actions: ActionsContext | None = None,
    env: Mapping[str, str] | None = None,
    forge_factory: Any = None,
) -> StepResult[RunResult]:
    """`traingate run`: the PR goes to GitHub when GITHUB_TOKEN is set and the Actions context
    names a repository, else it is rendered to pr.render_to. `actions` is the CLI's context
    (default: read from `env`); the token is a credential, read from `env` here, where it is used."""
    from traingate.result import StepResult
    from traingate.tracking.durable import require_lasting_registry

    env = os.environ if env is None else env
    actions = actions if actions is not None else ActionsContext.from_env(env)
    require_lasting_registry(cfg, command="run", env=env)
    progress = Progress()
    outcome = run_pipeline(
        cfg,
        source,
        token=env.get("GITHUB_TOKEN") or None,
        repo=actions.repository or None,
        head=env.get("TRAINGATE_HEAD") or None,
        progress=progress,
        forge_factory=forge_factory,
        actions=actions,
    )
    verdict = "improved" if outcome.improved else "not improved"
    return StepResult(
        outputs=outcome.outputs(),
        summary="\n".join([render_markdown(progress.stages), *progress.summaries]),
        message=f"{render_table(progress.stages)}\n\nresult: {verdict} (run {outcome.run_id})",
        data={"stages": [s.__dict__ for s in progress.stages], "gate": dict(outcome.gate)},
        warnings=progress.warnings,
        value=outcome,
    )


def validate_stage(cfg: Config, source: Path) -> StepResult:
    """`data validate` as a chained run (pipeline, demo) calls it: cached, no report file."""
    from traingate.data.validate import validate_step

    return validate_step(cfg, source, use_cache=True, report_path=None)


def merge_stage(cfg: Config, source: Path, message: str | None, actions: ActionsContext) -> StepResult:
    """`data merge` as a chained run calls it: commit and push, no PR comment (the run reports)."""
    from traingate.data.merge import merge_step

    return merge_step(
        cfg,
        source,
        on_conflict=None,
        push=True,
        commit=True,
        message=message,
        actions=actions,
    )


__all__ = [
    "Progress",
    "RunResult",
    "StageRecord",
    "explained",
    "merge_stage",
    "render_table",
    "run_pipeline",
    "run_stage",
    "run_step",
    "validate_stage",
]
