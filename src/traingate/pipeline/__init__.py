"""`traingate run`: the stages in order on one machine (`traingate demo` is demo.py).

`run_step` chains the same stage functions the workflow jobs call, so what runs here is what
runs in Actions: validate -> merge -> infra start -> train -> gate -> infra stop (always, even
when training or the gate failed: field report 5's instance left running) -> PR only when the
gate said improved. A stage that fails stops the chain and its error reaches cli.py unchanged
(same exit code), with the stages so far in the message and the summary, so the log says where
it stopped and what already happened (field report 1: a failure far from its cause).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.errors import TraingateError, UsageError

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.result import StepResult


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
    from traingate.interrupt import interruptible
    from traingate.runlock import run_lock

    _preflight_github(token, repo)
    progress = progress if progress is not None else Progress()
    # One run per folder (they share state.json); Ctrl-C/cancel still runs `infra stop`.
    with interruptible(), run_lock(cfg.workspace_dir), explained(progress):
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
    from traingate.data.merge import holds_files
    from traingate.github.pr import create_step
    from traingate.infra.stage import start_step, stop_step
    from traingate.interrupt import note
    from traingate.state import read_state
    from traingate.tracking.gate import gate_step
    from traingate.train.runner import train_step

    src = (source if source is not None else cfg.path(cfg.data.incoming)).resolve()
    if source is not None and not src.is_dir():
        # Asked for by name: a typo must not turn into "no new data, train on the stored set".
        raise UsageError(
            f"SOURCE {source} does not exist or is not a folder",
            hint=f"pass the folder holding {cfg.data.images}/ and {cfg.data.masks}/, or omit it "
            f"to use data.incoming ({cfg.data.incoming})",
        )
    _check_data_only(cfg, src, progress)
    data_report: Path | None = None
    # The merge's own test for new data: a lone .gitkeep in incoming/ is not a batch to merge.
    if holds_files(src, cfg.data.ignore):
        run_stage(progress, "validate", lambda: validate_stage(cfg, src))
        merged = run_stage(progress, "merge", lambda: merge_stage(cfg, src, None))
        data_report = Path(str(merged.outputs["report"]))
        skipped = _skip_same_data(cfg, progress)
        if skipped is not None:
            return skipped
    else:
        progress.add("validate", "skipped", f"no new data in {src}: training on the stored dataset")
        progress.add("merge", "skipped", "nothing to merge")
        saved = read_state(cfg.workspace_dir).data_report
        if isinstance(saved, str) and Path(saved).is_file():
            data_report = Path(saved)

    started = run_stage(progress, "infra start", lambda: start_step(cfg, holder=None))
    holder = str(started.outputs.get("holder") or "") or None
    outcome: dict[str, Any] = {"improved": False, "run_id": "", "pr_url": ""}
    failure: TraingateError | None = None
    interrupted: KeyboardInterrupt | None = None
    try:
        trained = run_stage(
            progress, "train", lambda: train_step(cfg, attach=None, pull=True, with_gate=False)
        )
        run_id = str(trained.outputs["run_id"])
        outcome["run_id"] = run_id
        outcome["train"] = trained.outputs
        gated = run_stage(progress, "gate", lambda: gate_step(cfg, run_id=run_id, promote=True))
        outcome["gate"] = gated.outputs
        outcome["improved"] = (
            gated.outputs.get("improved") is True or str(gated.outputs.get("improved")) == "true"
        )
    except TraingateError as err:
        failure = err
        raise
    except KeyboardInterrupt as err:
        interrupted = err
        raise
    finally:
        # Always give the instance back; a stop failure must not hide the first failure.
        try:
            run_stage(progress, "infra stop", lambda: stop_step(cfg, holder=holder, wait=True, force=False))
            if interrupted is not None:
                note(interrupted, f"released the infra lease (holder {holder or cfg.project})")
        except TraingateError as stop_err:
            if interrupted is not None:
                note(interrupted, f"infra stop failed ({stop_err.message}): run `traingate infra stop`")
            elif failure is None:
                raise
            else:
                failure.message += f"\nalso, infra stop failed: {stop_err.message}"
                failure.hint = (failure.hint or "") + "; then run `traingate infra stop` (or `infra reap`)"

    if not outcome["improved"]:
        progress.add("pr create", "skipped", "not improved: no pull request")
        return outcome
    gate_report = Path(str(outcome["gate"]["report"])) if outcome["gate"].get("report") else None
    # Token and repository: both or neither (checked up front): with neither, create_step renders
    # the body only. metrics_log None: create_step reads the workspace's metrics.jsonl if present.
    pr = run_stage(
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


def _skip_same_data(cfg: Config, progress: Progress) -> dict[str, Any] | None:
    """After a merge: the outcome of a run that trains nothing, when the merged dataset is the
    one @champion was trained on (train/same_data.py); here even the instance is not started."""
    from traingate.train.same_data import skip_if_champion_data

    skipped = skip_if_champion_data(cfg)
    if skipped is None:
        return None
    for stage in ("infra start", "train", "gate", "infra stop", "pr create"):
        progress.add(stage, "skipped", skipped.message if stage == "train" else "training skipped")
    progress.summaries.append(skipped.summary)
    return {"improved": False, "run_id": "", "pr_url": "", "skipped": True}


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
    from traingate.tracking.durable import require_lasting_registry

    require_lasting_registry(cfg, command="run", env=env)
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


def validate_stage(cfg: Config, source: Path) -> StepResult:
    """`data validate` as a chained run (pipeline, demo) calls it: cached, no report file."""
    from traingate.data.validate import validate_step

    return validate_step(cfg, source, use_cache=True, report_path=None)


def merge_stage(cfg: Config, source: Path, message: str | None) -> StepResult:
    """`data merge` as a chained run calls it: commit and push, no PR comment (the run reports)."""
    from traingate.data.merge import merge_step
    from traingate.gha import ActionsContext

    return merge_step(
        cfg,
        source,
        on_conflict=None,
        push=True,
        commit=True,
        message=message,
        actions=ActionsContext.from_env(),
    )


__all__ = [
    "Progress",
    "StageRecord",
    "explained",
    "merge_stage",
    "render_table",
    "run_pipeline",
    "run_stage",
    "run_step",
    "validate_stage",
]
