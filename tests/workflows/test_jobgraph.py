"""The training pipeline's job graph: which stages run in each scenario.

stop-infra must run whenever start-infra ran (also half-way), create-pr and auto-merge only on
improvement, and nothing touches the instance after a failed merge.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workflows.jobgraph import WorkflowRun, simulate

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = ROOT / ".github" / "workflows" / "training-pipeline.yml"
IMPROVED = ("success", {"improved": "true", "run_id": "r1"})
NOT_IMPROVED = ("success", {"improved": "false", "run_id": "r1"})
MERGED = ("success", {"commit_sha": "abc", "validation_passed": "true"})
PR = ("success", {"pr_number": "7", "pr_url": "https://x/pull/7"})

ALL = ["merge-and-validate", "start-infra", "train", "stop-infra", "create-pr", "auto-merge"]


# What GitHub always sets for a data push (the guard against merging on the base reads it).
DATA_PUSH = {
    "github": {"ref_name": "data/20240501-101500", "event": {"repository": {"default_branch": "main"}}}
}


def _ran(outcomes, inputs=None, cancel_after=None) -> tuple[list[str], dict[str, str]]:
    run = simulate(PIPELINE, outcomes, inputs=inputs, cancel_after=cancel_after, contexts=DATA_PUSH)
    return run.ran, run.results


SCENARIOS = {
    "all green": (
        {"merge-and-validate": MERGED, "train": IMPROVED, "create-pr": PR},
        None,
        ALL,
    ),
    "improved=false": (
        {"merge-and-validate": MERGED, "train": NOT_IMPROVED},
        None,
        ["merge-and-validate", "start-infra", "train", "stop-infra"],
    ),
    "train fails": (
        {"merge-and-validate": MERGED, "train": "failure"},
        None,
        ["merge-and-validate", "start-infra", "train", "stop-infra"],
    ),
    # A failed step never writes improved=true, but even if a job output said so, a failed
    # train must not open a PR.
    "train fails after writing improved": (
        {"merge-and-validate": MERGED, "train": ("failure", {"improved": "true"})},
        None,
        ["merge-and-validate", "start-infra", "train", "stop-infra"],
    ),
    "start-infra fails half-way": (
        {"merge-and-validate": MERGED, "start-infra": "failure"},
        None,
        ["merge-and-validate", "start-infra", "stop-infra"],
    ),
    "merge fails": (
        {"merge-and-validate": "failure"},
        None,
        ["merge-and-validate"],
    ),
    "create-pr fails": (
        {"merge-and-validate": MERGED, "train": IMPROVED, "create-pr": "failure"},
        None,
        ["merge-and-validate", "start-infra", "train", "stop-infra", "create-pr"],
    ),
    "stop-infra fails but the model improved": (
        {"merge-and-validate": MERGED, "train": IMPROVED, "stop-infra": "failure", "create-pr": PR},
        None,
        ALL,
    ),
    "manual retrain without merge": (
        {"train": IMPROVED, "create-pr": PR},
        {"merge": False},
        ["start-infra", "train", "stop-infra", "create-pr", "auto-merge"],
    ),
    "auto-merge disabled": (
        {"merge-and-validate": MERGED, "train": IMPROVED, "create-pr": PR},
        {"auto-merge": False},
        ["merge-and-validate", "start-infra", "train", "stop-infra", "create-pr"],
    ),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_pipeline_scenarios(scenario: str) -> None:
    outcomes, inputs, expected = SCENARIOS[scenario]
    ran, results = _ran(outcomes, inputs)
    assert ran == expected, results
    assert set(results) == {*ALL, "refuse-merge-on-base", "start-infra-early"}  # every job is decided


def test_stop_infra_runs_when_the_run_is_cancelled_during_train() -> None:
    ran, results = _ran({"merge-and-validate": MERGED, "train": "cancelled"}, cancel_after="train")
    assert "stop-infra" in ran
    assert results["create-pr"] == "skipped" and results["auto-merge"] == "skipped"


@pytest.mark.parametrize("start", ["success", "failure", "cancelled"])
@pytest.mark.parametrize("train", ["success", "failure", "cancelled"])
def test_stop_infra_always_follows_a_started_instance(start: str, train: str) -> None:
    ran, _ = _ran({"start-infra": start, "train": (train, {"improved": "true"})})
    assert "stop-infra" in ran


def test_create_pr_only_when_improved_exactly_true() -> None:
    for improved in ("false", "", "yes", "1"):
        ran, _ = _ran({"train": ("success", {"improved": improved})})
        assert "create-pr" not in ran, improved


def test_stepping_api_for_the_harness() -> None:
    run = WorkflowRun.from_file(PIPELINE, contexts=DATA_PUSH)
    seen = []
    while (job := run.next_job()) is not None:
        seen.append(job)
        run.finish(job, "success", {"improved": "true"} if job == "train" else {"pr_number": "1"})
    assert seen == ALL
    with pytest.raises(ValueError, match="already finished"):
        run.finish("train", "success")
    with pytest.raises(ValueError, match="unknown result"):
        WorkflowRun.from_file(PIPELINE, contexts=DATA_PUSH).finish("train", "passed")


def test_success_is_transitive(tmp_path: Path) -> None:
    # c needs b needs a; a fails, b runs with always(); c (default success()) is skipped even
    # though its direct need succeeded — the runner's behaviour that bites hand-written graphs.
    wf = tmp_path / "wf.yml"
    wf.write_text(
        "on: push\njobs:\n  a: {runs-on: x, steps: []}\n"
        "  b: {needs: a, if: always(), runs-on: x, steps: []}\n"
        "  c: {needs: b, runs-on: x, steps: []}\n"
    )
    run = simulate(wf, {"a": "failure"})
    assert run.results == {"a": "failure", "b": "success", "c": "skipped"}


def test_cycles_and_unknown_needs_are_rejected(tmp_path: Path) -> None:
    wf = tmp_path / "wf.yml"
    wf.write_text("on: push\njobs:\n  a: {needs: b}\n  b: {needs: a}\n")
    with pytest.raises(ValueError, match="cycle"):
        WorkflowRun.from_file(wf)
    wf.write_text("on: push\njobs:\n  a: {needs: zzz}\n")
    with pytest.raises(ValueError, match="unknown job"):
        WorkflowRun.from_file(wf)


def test_promote_on_merge_template_graph() -> None:
    template = ROOT / "workflows-templates" / "promote-on-merge.yml"
    merged = {"github": {"event": {"pull_request": {"merged": True, "labels": [{"name": "traingate"}]}}}}
    run = simulate(template, {"promote": "failure"}, contexts=merged)
    assert run.ran == ["start-infra", "promote", "stop-infra"]
    closed = {"github": {"event": {"pull_request": {"merged": False, "labels": [{"name": "traingate"}]}}}}
    assert simulate(template, {}, contexts=closed).ran == []


# ------------------------------------------------------------------ promotion on merge (#12 case 4)
AUTO_MERGE = ROOT / ".github" / "workflows" / "auto-merge.yml"
REAP = ROOT / "workflows-templates" / "reap-instances.yml"


def _promote_steps(path: Path, job: str) -> list[dict]:
    from tests.workflows.jobgraph import load_workflow

    steps = load_workflow(path)["jobs"][job]["steps"]
    return [s for s in steps if (s.get("with") or {}).get("command") == "promote"]


def test_auto_merge_promotes_what_it_merged_directly() -> None:
    from tests.workflows.expr import Context, evaluate_if

    # A GITHUB_TOKEN merge starts no workflow: the job that merged promotes, from the PR body.
    (step,) = _promote_steps(AUTO_MERGE, "automerge")
    assert step["with"]["args"] == "--reconcile"
    assert step["env"]["TRAINGATE_PR_NUMBER"] == "${{ steps.automerge.outputs.pr_number }}"
    for state, runs in [
        ("merged", True),
        ("already_merged", True),
        ("auto_merge_enabled", False),  # merged later by GitHub: the scheduled sweep promotes it
        ("off", False),
    ]:
        ctx = Context({"steps": {"automerge": {"outputs": {"merge_state": state}}}})
        assert evaluate_if(step["if"], ctx) is runs, state


def test_promote_on_merge_reconciles_instead_of_promoting_the_challenger() -> None:
    template = ROOT / "workflows-templates" / "promote-on-merge.yml"
    (step,) = _promote_steps(template, "promote")
    assert step["with"]["args"] == "--reconcile"
    assert step["env"]["TRAINGATE_TRACKING_URI"] == "${{ needs.start-infra.outputs.mlflow_url }}"


@pytest.mark.parametrize(
    ("pending", "expected"),
    [
        ("0", ["reap", "promotion"]),  # nothing waits, or MLflow is reachable and it promoted
        ("2", ["reap", "promotion", "start-infra", "promote", "stop-infra"]),
    ],
)
def test_reap_template_sweeps_merged_prs_and_borrows_the_instance_only_when_needed(
    pending: str, expected: list[str]
) -> None:
    run = simulate(REAP, {"promotion": ("success", {"pending": pending})})
    assert run.ran == expected
    for job in ("promotion", "promote"):
        (step,) = _promote_steps(REAP, job)
        assert step["with"]["args"] == "--reconcile"


def test_reap_template_gives_the_instance_back_when_promotion_fails() -> None:
    run = simulate(REAP, {"promotion": ("success", {"pending": "1"}), "promote": "failure"})
    assert "stop-infra" in run.ran


# ------------------------------------------- manual retraining on the base branch (#12 case 5)
ON_MAIN = {"github": {"ref_name": "main", "event": {"repository": {"default_branch": "main"}}}}
ON_DATA = {"github": {"ref_name": "data/x", "event": {"repository": {"default_branch": "main"}}}}
NO_PR = ("success", {"pr_number": "", "pr_url": "", "operation": "skipped"})


def test_merge_true_on_the_base_branch_is_refused_before_anything_runs() -> None:
    run = simulate(PIPELINE, {"refuse-merge-on-base": "failure"}, inputs={"merge": True}, contexts=ON_MAIN)
    assert run.ran == ["refuse-merge-on-base"], run.results
    assert run.results["merge-and-validate"] == "skipped" and run.results["start-infra"] == "skipped"


def test_retraining_on_the_base_branch_trains_and_attempts_no_pr_merge() -> None:
    # merge: false on main: train (the gate promotes or records the challenger); `pr create`
    # says there is nothing to open, so auto-merge has no PR and is skipped.
    run = simulate(
        PIPELINE, {"train": IMPROVED, "create-pr": NO_PR}, inputs={"merge": False}, contexts=ON_MAIN
    )
    assert run.ran == ["start-infra", "train", "stop-infra", "create-pr"], run.results
    assert run.results["refuse-merge-on-base"] == "skipped"


def test_a_data_branch_never_meets_the_guard() -> None:
    run = simulate(
        PIPELINE, {"merge-and-validate": MERGED, "train": IMPROVED, "create-pr": PR}, contexts=ON_DATA
    )
    assert run.ran == ALL


def test_the_refusal_fails_the_job_and_says_what_to_do(tmp_path: Path) -> None:
    import subprocess

    from tests.workflows.jobgraph import load_workflow

    (step,) = load_workflow(PIPELINE)["jobs"]["refuse-merge-on-base"]["steps"]
    assert step["env"] == {"BRANCH": "${{ github.ref_name }}"}  # no expression inside run:
    proc = subprocess.run(
        ["bash", "-e", "-c", step["run"]], env={"BRANCH": "main"}, capture_output=True, text=True
    )
    assert proc.returncode == 1
    assert proc.stdout.startswith("::error ")
    assert "base branch main" in proc.stdout and "merge: false" in proc.stdout
