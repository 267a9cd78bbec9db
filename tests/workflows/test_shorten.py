"""The critical path's shortcuts in training-pipeline.yml (issue #15): a push whose data
@champion was already trained on skips training; `start-early` boots the instance beside the
merge. Evaluated on the real workflow file with the job-graph simulator."""

from __future__ import annotations

from pathlib import Path

from tests.workflows.expr import interpolate
from tests.workflows.jobgraph import WorkflowRun, load_workflow, simulate

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / ".github" / "workflows" / "training-pipeline.yml"
MERGED = ("success", {"commit_sha": "abc", "validation_passed": "true"})
SKIPPED_TRAIN = ("success", {"improved": "false", "skipped": "true", "data_version": "d1.dir"})
DATA_PUSH = {
    "github": {"ref_name": "data/20240501-101500", "event": {"repository": {"default_branch": "main"}}}
}
ON_MAIN = {"github": {"ref_name": "main", "event": {"repository": {"default_branch": "main"}}}}


def _train_input(run: WorkflowRun, name: str) -> str:
    job = load_workflow(PIPELINE)["jobs"]["train"]
    return interpolate(str(job["with"][name]), run.context_for("train"))


def test_a_push_that_merged_data_asks_train_to_skip_the_champions_data() -> None:
    run = simulate(PIPELINE, {"merge-and-validate": MERGED, "train": SKIPPED_TRAIN}, contexts=DATA_PUSH)
    assert _train_input(run, "skip-same-data") == "true"
    # Skipped training: no PR, and the instance is still given back.
    assert run.ran == ["merge-and-validate", "start-infra", "train", "stop-infra"], run.results
    assert run.results["create-pr"] == "skipped"


def test_a_manual_retrain_never_skips() -> None:
    run = simulate(
        PIPELINE, {"train": ("success", {"improved": "false"})}, inputs={"merge": False}, contexts=ON_MAIN
    )
    assert run.results["merge-and-validate"] == "skipped"
    assert _train_input(run, "skip-same-data") == "false"


def test_the_pipeline_re_exports_skipped() -> None:
    outputs = load_workflow(PIPELINE)["on"]["workflow_call"]["outputs"]
    assert outputs["skipped"]["value"] == "${{ jobs.train.outputs.skipped }}"


# ------------------------------------------------------------------------------ start-early
EARLY = {"start-early": True}


def _runnable(run: WorkflowRun) -> set[str]:
    """Jobs GitHub would start now: every need finished and the `if:` holds (skips recorded)."""
    from tests.workflows.expr import evaluate_if

    run.next_job()  # records the skips decided so far
    ready = set()
    for name, job in run.jobs.items():
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        decided = name not in run.results and all(n in run.results for n in needs)
        if decided and evaluate_if(job.get("if"), run.context_for(name)):
            ready.add(name)
    return ready


def test_start_early_boots_beside_the_merge_and_train_needs_both() -> None:
    run = WorkflowRun.from_file(PIPELINE, EARLY, DATA_PUSH)
    assert _runnable(run) == {"merge-and-validate", "start-infra-early"}
    run.finish("start-infra-early", "success", {"holder": "h1", "mlflow_url": "http://10.0.0.5:5000"})
    assert _runnable(run) == {"merge-and-validate"}  # train waits for the merge
    run.finish("merge-and-validate", *MERGED)
    assert _runnable(run) == {"train"}
    assert run.results["start-infra"] == "skipped"
    assert {"merge-and-validate", "start-infra-early"} <= run.ancestors("train")
    job = load_workflow(PIPELINE)["jobs"]
    assert interpolate(str(job["train"]["with"]["tracking-uri"]), run.context_for("train")) == (
        "http://10.0.0.5:5000"
    )
    run.finish("train", "success", {"improved": "false"})
    assert _runnable(run) == {"stop-infra"}
    assert interpolate(str(job["stop-infra"]["with"]["holder"]), run.context_for("stop-infra")) == "h1"


def test_start_early_with_invalid_data_never_trains_and_stops_the_instance() -> None:
    run = simulate(PIPELINE, {"merge-and-validate": "failure"}, inputs=EARLY, contexts=DATA_PUSH)
    assert run.ran == ["merge-and-validate", "start-infra-early", "stop-infra"], run.results
    assert run.results["train"] == "skipped" and run.results["create-pr"] == "skipped"
    # The instance was booted beside the merge; stop-infra gives it back once the start finished.
    assert run.results["stop-infra"] == "success"


def test_start_early_failing_half_way_still_stops() -> None:
    run = simulate(
        PIPELINE,
        {"merge-and-validate": MERGED, "start-infra-early": "failure"},
        inputs=EARLY,
        contexts=DATA_PUSH,
    )
    assert run.results["train"] == "skipped" and run.results["stop-infra"] == "success", run.results


def test_start_early_on_a_manual_retrain() -> None:
    run = simulate(
        PIPELINE,
        {"train": ("success", {"improved": "false"})},
        inputs={**EARLY, "merge": False},
        contexts=ON_MAIN,
    )
    assert run.ran == ["start-infra-early", "train", "stop-infra"], run.results


def test_by_default_the_instance_starts_after_the_merge() -> None:
    run = WorkflowRun.from_file(PIPELINE, None, DATA_PUSH)
    assert _runnable(run) == {"merge-and-validate"}
    run.finish("merge-and-validate", *MERGED)
    assert _runnable(run) == {"start-infra"}
    invalid = simulate(PIPELINE, {"merge-and-validate": "failure"}, contexts=DATA_PUSH)
    assert invalid.ran == ["merge-and-validate"], invalid.results
    assert invalid.results["stop-infra"] == "skipped"
