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
