"""End-to-end scenarios: training-pipeline.yml interpreted job by job against emulated services.

Each scenario asserts the exit codes of the traingate steps, the job results the YAML's `if:`
conditions produce, the outputs passed between jobs, the instance state (moto), the lease
(DynamoDB on moto), the MLflow run status and aliases (real server), the GitHub calls (fake)
and the git state of the remote.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from tests.e2e.conftest import E2E, git
from tests.e2e.harness import PipelineRun

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ALL_SUCCESS = {
    "refuse-merge-on-base": "skipped",  # only merge: true on the default branch meets it
    "merge-and-validate": "success",
    "start-infra": "success",
    "start-infra-early": "skipped",  # only with start-early
    "train": "success",
    "stop-infra": "success",
    "create-pr": "success",
    "auto-merge": "success",
}


def given_up(run: PipelineRun) -> str:
    """Context for assertion messages: the job results and every step's log."""
    return f"results: {run.results}\n{run.log()[-8000:]}"


def assert_instance_given_back(e2e: E2E, run: PipelineRun) -> None:
    stop = run.job("stop-infra")
    assert stop.result == "success", given_up(run)
    assert stop.outputs["stopped"] == "true" and stop.outputs["state"] in ("stopped", "stopping")
    assert e2e.instance_state() == "stopped"
    assert e2e.lease_holders() == {}


def assert_no_pr(e2e: E2E, run: PipelineRun) -> None:
    assert run.results["create-pr"] == "skipped" and run.results["auto-merge"] == "skipped", given_up(run)
    assert e2e.github.pulls == {} and e2e.github.statuses == [] and e2e.github.graphql == []
    assert not any(m == "POST" and "/pulls" in p for m, p in e2e.github.log)
    assert run.outputs()["pr_url"] == ""


# ------------------------------------------------------------------------------- 1 happy path
def test_happy_path(e2e: E2E) -> None:
    branch = e2e.push_data(pairs=4)
    pushed = e2e.branch_sha(branch)
    objects_before = e2e.s3_keys()
    e2e.mark()
    run = e2e.pipeline(branch).run()
    e2e.recorded.append(e2e.figures(run))  # bench/bench_e2e.py reads these
    assert run.results == ALL_SUCCESS, given_up(run)
    assert all(s.exit_code == 0 for j in run.jobs.values() for s in j.steps)
    # Every output an action declares was written by its command, and nothing written is hidden.
    for job in run.jobs.values():
        step = job.step()
        assert set(step.outputs) == set(step.written), (job.name, sorted(step.outputs), sorted(step.written))

    # merge-and-validate: data pushed first, then the pointer commit on the data branch.
    merge = run.job("merge-and-validate").outputs
    assert merge["validation_passed"] == "true"
    assert (merge["new_images"], merge["existing_images"], merge["total_images"]) == ("4", "10", "14")
    assert e2e.branch_sha(branch) == merge["commit_sha"] != pushed
    assert git(e2e.world.bare, "rev-parse", f"{merge['commit_sha']}~1") == pushed
    files = e2e.branch_files(branch)
    assert "data/training.dvc" in files and not any(f.startswith("data/new/") for f in files)
    assert len(e2e.s3_keys() - objects_before) == 9  # 8 new files + the new listing
    assert "traingate-data-report" in run.artifacts

    # start-infra -> train -> stop-infra: the instance was lent and given back.
    start = run.job("start-infra").outputs
    assert start["instance_id"] == e2e.instance_id and start["state"] == "running"
    assert start["holder"] == "o/r/1001/1" and start["mlflow_url"] == e2e.proxy.url
    # train tracks to the server start-infra announced (the instance's address changes per start).
    assert run.job("train").step().env.get("TRAINGATE_TRACKING_URI") == start["mlflow_url"]
    assert any("shutdown -h +30" in s for s in e2e.ssm.sent_scripts)  # the self-stop watchdog
    assert_instance_given_back(e2e, run)

    # train + gate: a FINISHED run on the merged data, promoted to @champion.
    train = run.job("train").outputs
    assert train["improved"] == "true" and train["baseline"] == "none"
    assert train["data_version"] == merge["data_version"]
    assert set(json.loads(train["metrics"])) >= {"dice", "iou"}
    assert e2e.run_status(train["run_id"]) == "FINISHED"
    assert e2e.aliases() == {"champion": train["model_version"]}
    tags = e2e.client().get_run(train["run_id"]).data.tags
    # The checked-out HEAD: main's commit, whose code trained; the data is traingate.data_version.
    assert tags["traingate.git_commit"] == git(e2e.world.bare, "rev-parse", "refs/heads/main")
    assert tags["traingate.data_version"] == merge["data_version"]
    assert "Training finished" in run.job("train").summary

    # create-pr + auto-merge: PR with the metric table, gate status on its head, auto-merge on.
    pr = run.job("create-pr").outputs
    assert pr["operation"] == "created" and pr["head_sha"] == merge["commit_sha"]
    pull = e2e.github.pulls[int(pr["pr_number"])]
    assert (pull["head"], pull["base"]) == (branch, "main")
    assert "| dice | max |" in pull["body"] and "| iou | max |" in pull["body"]
    assert "new images | 4" in pull["body"]
    assert [(s["sha"], s["state"], s["context"]) for s in e2e.github.statuses] == [
        (merge["commit_sha"], "success", "traingate/gate")
    ]
    assert pull["auto_merge"] == {"merge_method": "squash"}
    assert run.job("auto-merge").outputs["merge_state"] == "auto_merge_enabled"
    assert run.outputs() == {
        "improved": "true",
        "run_id": train["run_id"],
        "skipped": "false",
        "pr_url": pr["pr_url"],
    }
    assert not [a for a in run.job("train").annotations if a.startswith("::error")]


def test_manual_retrain_without_merge_uses_the_pr_token(e2e: E2E) -> None:
    """`merge: false` (retrain on the current dataset) with a PAT for the PR, no auto-merge."""
    branch = e2e.push_data()
    pushed = e2e.branch_sha(branch)
    pat = "ghp_e2eRetrainPat0000000000000000000000000"
    run = e2e.pipeline(branch, inputs={"merge": False, "auto-merge": False}, secrets={"PR_TOKEN": pat}).run()
    assert run.results == {**ALL_SUCCESS, "merge-and-validate": "skipped", "auto-merge": "skipped"}, given_up(
        run
    )
    assert e2e.branch_sha(branch) == pushed  # nothing merged, nothing pushed
    train = run.job("train").outputs
    assert train["improved"] == "true"
    pr = run.job("create-pr")
    assert f"::add-mask::{pat}" in pr.step().stdout and pr.step().env["TRAINGATE_GITHUB_TOKEN"] == pat
    assert pr.step().env["TRAINGATE_DATA_REPORT"] == ""  # no merge, no data report artifact
    assert e2e.github.pulls and e2e.github.graphql == []
    assert_instance_given_back(e2e, run)


# ----------------------------------------------------------------------------- 2 not improved
def test_not_improved_stops_instance_and_opens_no_pr(e2e: E2E) -> None:
    champion = e2e.make_champion(dice=0.999, iou=0.999)
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["train"] == "success", given_up(run)
    train = run.job("train")
    assert train.step().exit_code == 0  # "not improved" is a verdict, not a failure
    assert train.outputs["improved"] == "false" and train.outputs["baseline"] == champion
    assert e2e.aliases() == {"champion": champion}
    assert "not improved" in train.summary.lower() or "❌" in train.summary
    assert "dice" in train.summary and "0.999" in train.summary
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)
    assert run.outputs()["improved"] == "false"


# ------------------------------------------------------------------------------ 3 invalid data
def test_invalid_data_stops_before_the_instance(e2e: E2E) -> None:
    branch = e2e.push_data(corrupt=True)
    pushed = e2e.branch_sha(branch)
    objects = e2e.s3_keys()
    run = e2e.pipeline(branch).run()
    assert run.results == {
        "refuse-merge-on-base": "skipped",
        "merge-and-validate": "failure",
        "start-infra": "skipped",
        "start-infra-early": "skipped",
        "train": "skipped",
        "stop-infra": "skipped",
        "create-pr": "skipped",
        "auto-merge": "skipped",
    }, given_up(run)
    merge = run.job("merge-and-validate")
    assert merge.step().exit_code == 1
    assert merge.outputs["validation_passed"] == "false" and merge.outputs["commit_sha"] == ""
    errors = [a for a in merge.annotations if a.startswith("::error")]
    assert errors and "data error" in errors[0]
    report = json.loads((run.artifacts["traingate-data-report"] / "data-report.json").read_text())
    assert {e["code"] for e in report["errors"]} >= {"corrupt_file", "missing_mask"}
    assert "corrupt_file" in merge.summary and "missing_mask" in merge.summary
    # Nothing pushed anywhere, the instance never started.
    assert e2e.branch_sha(branch) == pushed and e2e.s3_keys() == objects
    assert "ec2:StartInstances" not in e2e.aws_calls and e2e.instance_state() == "stopped"
    assert_no_pr(e2e, run)


def test_invalid_data_posts_a_commit_comment(e2e: E2E) -> None:
    branch = e2e.push_data(corrupt=True)
    pushed = e2e.branch_sha(branch)
    run = e2e.pipeline(branch).run()
    assert run.results["merge-and-validate"] == "failure"
    bodies = [c["body"] for c in e2e.github.comments.values() if c["sha"] == pushed]
    assert bodies and "corrupt_file" in bodies[0] and "missing_mask" in bodies[0]


# ---------------------------------------------------------------------- 4 training fails
def test_training_failure_still_stops_the_instance(e2e: E2E) -> None:
    e2e.configure(train__command="python -c \"import sys; print('CUDA out of memory'); sys.exit(3)\"")
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["train"] == "failure", given_up(run)
    step = run.job("train").step()
    assert step.exit_code == 1 and "exited with code 3" in step.stdout + step.stderr
    assert "CUDA out of memory" in run.job("train").summary
    assert run.job("train").outputs["improved"] == ""  # never `true` after a failure
    runs = e2e.experiment_runs()
    assert [r.info.status for r in runs] == ["FAILED"]
    assert e2e.aliases() == {}
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)


def test_training_failure_on_the_instance_over_ssm(e2e: E2E) -> None:
    e2e.configure(
        train__where="instance",
        train__command="python -c \"import sys; print('CUDA out of memory'); sys.exit(3)\"",
    )
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["train"] == "failure"
    step = run.job("train").step()
    assert step.exit_code == 1 and "exited with code 3" in step.stdout + step.stderr, run.log()
    assert any("CUDA out of memory" in script for script in e2e.ssm.sent_scripts)  # ran over SSM
    assert [r.info.status for r in e2e.experiment_runs()] == ["FAILED"]
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)


def test_happy_path_training_on_the_instance(e2e: E2E) -> None:
    e2e.configure(train__where="instance")
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    assert any("python train.py" in script for script in e2e.ssm.sent_scripts)
    # The instance pulled the dataset itself (its own role); the runner shipped only the code.
    assert any("dvc pull data/training.dvc" in script for script in e2e.ssm.sent_scripts)
    assert e2e.aliases() == {"champion": run.job("train").outputs["model_version"]}
    assert_instance_given_back(e2e, run)


# --------------------------------------------------------------------- 10 capacity errors
def _scripted_ec2(e2e: E2E, errors: list[str]) -> Any:
    import boto3

    from tests.infra.conftest import ScriptedEc2
    from traingate.infra.ec2 import Boto3Ec2

    ec2 = ScriptedEc2(Boto3Ec2(boto3.client("ec2", region_name="us-east-1")), transition_polls=1)
    ec2.start_errors = list(errors)
    return ec2


def test_capacity_error_is_retried_then_the_run_goes_on(e2e: E2E) -> None:
    from traingate.infra.aws import override_clients

    ec2 = _scripted_ec2(e2e, ["InsufficientInstanceCapacity"] * 2)
    with override_clients(ec2=ec2):
        run = e2e.pipeline(e2e.push_data()).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    assert ec2.calls["start"] == 3
    assert "InsufficientInstanceCapacity" in run.job("start-infra").step().stderr
    assert_instance_given_back(e2e, run)


def test_capacity_error_that_persists_fails_clearly_and_only_stop_runs(e2e: E2E) -> None:
    from traingate.infra.aws import override_clients

    ec2 = _scripted_ec2(e2e, ["InsufficientInstanceCapacity"] * 1000)
    with override_clients(ec2=ec2):
        run = e2e.pipeline(e2e.push_data()).run()
    assert run.results == {
        "refuse-merge-on-base": "skipped",
        "merge-and-validate": "success",
        "start-infra": "failure",
        "start-infra-early": "skipped",
        "train": "skipped",
        "stop-infra": "success",
        "create-pr": "skipped",
        "auto-merge": "skipped",
    }, given_up(run)
    step = run.job("start-infra").step()
    assert step.exit_code == 1 and ec2.calls["start"] > 2
    error = next(a for a in step.annotations if a.startswith("::error"))
    assert "InsufficientInstanceCapacity" in error and "next step" in error
    assert run.job("start-infra").outputs["holder"] == ""
    assert e2e.instance_state() == "stopped" and e2e.lease_holders() == {}
    assert e2e.experiment_runs() == []
    assert_no_pr(e2e, run)


def test_start_denied_by_iam_is_not_retried_and_names_the_action(e2e: E2E) -> None:
    """Field report 2: an explicit IAM deny on the EC2 action blocked the whole stack."""
    from traingate.infra.aws import override_clients

    ec2 = _scripted_ec2(e2e, ["UnauthorizedOperation"] * 10)
    with override_clients(ec2=ec2):
        run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["start-infra"] == "failure" and run.results["train"] == "skipped", given_up(run)
    assert ec2.calls["start"] == 1  # a deny does not get better by retrying
    error = next(a for a in run.job("start-infra").annotations if a.startswith("::error"))
    assert "ec2:StartInstances" in error and "policy" in error
    assert run.results["stop-infra"] == "success" and e2e.lease_holders() == {}
    assert_no_pr(e2e, run)


# -------------------------------------------------------------------------- 7 MLflow faults
def test_mlflow_503_burst_while_logging_is_retried(e2e: E2E) -> None:
    e2e.proxy.fail_next(3, 503, path_contains="/runs/log-batch")
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    assert [s for m, p, s in e2e.proxy.requests if "log-batch" in p][:4] == [503, 503, 503, 200]
    train = run.job("train").outputs
    assert e2e.run_status(train["run_id"]) == "FINISHED"
    assert e2e.aliases() == {"champion": train["model_version"]}


def test_mlflow_registry_down_at_gate_time_fails_closed(e2e: E2E) -> None:
    champion = e2e.make_champion(dice=0.1, iou=0.1)  # any candidate would beat it
    e2e.proxy.always(503, path_contains="/registered-models/")
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["train"] == "failure", given_up(run)
    train = run.job("train")
    assert train.step().exit_code == 1
    assert train.outputs["improved"] == ""  # never `true`, never a baseline of 0
    assert any("baseline" in a or "registered model" in a for a in train.annotations), train.annotations
    e2e.proxy.clear()
    assert e2e.aliases() == {"champion": champion}
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)


def test_mlflow_server_down_fails_train_before_training(e2e: E2E) -> None:
    def kill_server(run: PipelineRun, key: str, step: Any) -> None:
        e2e.proxy.stop()

    run = e2e.pipeline(e2e.push_data(), hooks={"before:train": kill_server}).run()
    assert run.results["train"] == "failure", given_up(run)
    step = run.job("train").step()
    assert step.exit_code == 1  # how fast: bench/bench_tracking.py measures a dead server
    error = next(a for a in step.annotations if a.startswith("::error"))
    assert "127.0.0.1" in error
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)


# ---------------------------------------------------------------- 6 two pipelines overlap
def instance_must_be_running(e2e: E2E) -> Any:
    """A hook for `step:train`: the field-report race was a stop under a running training job."""

    def check(run: PipelineRun, key: str, step: Any) -> None:
        state = e2e.instance_state()
        assert state == "running", f"{run.github['repository']} run {run.run_id} trains on a {state} instance"

    return check


def test_two_pipelines_share_the_instance_through_the_lease(e2e: E2E) -> None:
    """Two repositories (a concurrency group does not reach across them) share one instance."""
    hooks = {"step:train": instance_must_be_running(e2e)}
    a = e2e.pipeline(e2e.push_data("data/20261124-a", seed=11), hooks=hooks)
    b = e2e.pipeline(e2e.push_data("data/20261124-b", seed=12, degrade=True, prefix="worse"), hooks=hooks)
    b.github["repository"] = "o/other"
    a.run(until="start-infra")
    b.run(until="start-infra")
    holder_a, holder_b = a.job("start-infra").outputs["holder"], b.job("start-infra").outputs["holder"]
    assert holder_a != holder_b and set(e2e.lease_holders()) == {holder_a, holder_b}

    a.run(until="stop-infra")  # A trains, then gives the instance back while B still holds it
    stop_a = a.job("stop-infra").outputs
    assert stop_a["stopped"] == "false" and json.loads(stop_a["remaining_holders"]) == [holder_b]
    assert e2e.instance_state() == "running"
    a.run()
    b.run()
    assert a.results == ALL_SUCCESS, given_up(a)
    assert b.results["stop-infra"] == "success" and b.job("stop-infra").outputs["stopped"] == "true"
    assert e2e.instance_state() == "stopped" and e2e.lease_holders() == {}

    # B was gated against A's promotion, not against "no champion" or a stale read.
    version_a = a.job("train").outputs["model_version"]
    gate_b = b.job("train").outputs
    assert gate_b["baseline"] == version_a
    if gate_b["improved"] == "true":
        assert e2e.aliases()["champion"] == gate_b["model_version"]
        assert e2e.aliases()["previous-champion"] == version_a
    else:
        assert e2e.aliases()["champion"] == version_a and b.results["create-pr"] == "skipped"


def test_two_pipelines_in_threads_never_train_on_a_stopped_instance(e2e: E2E) -> None:
    """The same two repositories, now as free-running threads (jobs interleave as they come)."""
    import threading

    hooks = {"step:train": instance_must_be_running(e2e)}
    a = e2e.pipeline(e2e.push_data("data/20261124-a", seed=11), hooks=hooks)
    b = e2e.pipeline(e2e.push_data("data/20261124-b", seed=13, prefix="more"), hooks=hooks)
    b.github["repository"] = "o/other"
    errors: list[BaseException] = []

    def drive(run: PipelineRun) -> None:
        try:
            run.run()
        except BaseException as err:  # re-raised in the test thread
            errors.append(err)

    threads = [threading.Thread(target=drive, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not errors, errors
    for run in (a, b):
        assert run.results["train"] == "success" and run.results["stop-infra"] == "success", given_up(run)
    assert e2e.instance_state() == "stopped" and e2e.lease_holders() == {}
    stopped = sorted(r.job("stop-infra").outputs["stopped"] for r in (a, b))
    assert stopped in (["false", "true"], ["true", "true"])
    # The gates ran one after the other: at most one saw no champion, and the champion is the
    # version of a run that promoted.
    gates = [r.job("train").outputs for r in (a, b)]
    assert [g["baseline"] for g in gates].count("none") <= 1
    promoted = [g for g in gates if g["improved"] == "true"]
    assert promoted and e2e.aliases()["champion"] in {g["model_version"] for g in promoted}


# ------------------------------------------------------------- 8 artifact upload denied
ACCESS_DENIED = (
    b'{"error_code": "INTERNAL_ERROR", "message": "An error occurred (AccessDenied) when calling '
    b'the PutObject operation: Access Denied"}'
)


def test_artifact_access_denied_best_effort_warns_and_goes_on(e2e: E2E) -> None:
    e2e.configure(train__artifacts_policy="best-effort")
    e2e.proxy.always(403, path_contains="/mlflow-artifacts/", method="PUT", body=ACCESS_DENIED)
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    warnings = [a for a in run.job("train").annotations if a.startswith("::warning")]
    assert any("artifact upload failed" in w and "best-effort" in w for w in warnings), warnings
    report = json.loads((run.artifacts["traingate-train-reports"] / "train-report.json").read_text())
    assert report["artifacts"] == [] and report["warnings"]
    # The gate still decides, but cannot register a model that never reached the store: it says
    # so, and @champion does not move.
    gate = json.loads((run.artifacts["traingate-train-reports"] / "gate-report.json").read_text())
    assert gate["improved"] is True and gate["promoted"] is False and gate["model_version"] is None
    assert any("no version was registered" in w for w in gate["warnings"])
    assert e2e.instance_state() == "stopped"


def test_artifact_access_denied_required_fails_train(e2e: E2E) -> None:
    e2e.proxy.always(403, path_contains="/mlflow-artifacts/", method="PUT", body=ACCESS_DENIED)
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["train"] == "failure", given_up(run)
    error = next(a for a in run.job("train").annotations if a.startswith("::error"))
    assert "artifact" in error and "best-effort" in error
    assert [r.info.status for r in e2e.experiment_runs()] == ["FAILED"]
    assert e2e.aliases() == {}
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)


# ---------------------------------------------------------------------- 9 branch moved
def test_data_branch_moved_during_the_run_is_rebased_and_pushed(e2e: E2E) -> None:
    # NOTES.md is not data: the base must allow it, or the train job and the PR refuse it (13).
    e2e.configure(data__allowed_paths=["NOTES.md"])
    branch = e2e.push_data()
    moved: dict[str, str] = {}

    def push_from_elsewhere(run: PipelineRun, key: str, step: Any) -> None:
        other = e2e.world.root / "colleague"
        git(e2e.world.root, "clone", "-q", "-b", branch, str(e2e.world.bare), str(other))
        (other / "NOTES.md").write_text("labelling notes for this batch\n")
        git(other, "add", "NOTES.md")
        git(other, "commit", "-q", "-m", "notes pushed while the merge ran")
        git(other, "push", "-q", "origin", branch)
        moved["sha"] = git(other, "rev-parse", "HEAD")

    run = e2e.pipeline(branch, hooks={"step:merge-and-validate": push_from_elsewhere}).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    commit = run.job("merge-and-validate").outputs["commit_sha"]
    assert e2e.branch_sha(branch) == commit
    subprocess.run(
        ["git", "merge-base", "--is-ancestor", moved["sha"], commit], cwd=e2e.world.bare, check=True
    )
    files = e2e.branch_files(branch)
    assert "NOTES.md" in files and "data/training.dvc" in files
    assert run.job("create-pr").outputs["head_sha"] == commit


# ----------------------------------------------------- 13 a data branch changes data only
EVIL_TRAIN = (
    "import json, pathlib\n"
    "out = pathlib.Path('outputs'); out.mkdir(exist_ok=True)\n"
    "(out / 'model.npz').write_bytes(b'x')\n"
    "(out / 'metrics.json').write_text(json.dumps({'dice': 0.999, 'iou': 0.999}))\n"
)


def assert_untrusted(step: Any, *paths: str) -> None:
    text = step.stdout + step.stderr
    assert step.exit_code == 1 and "untrusted_change" in text, text
    for path in paths:
        assert path in text, (path, text)


def test_data_branch_that_also_changes_code_and_config_is_refused_at_the_merge(e2e: E2E) -> None:
    """Issue #11 case 3: a `data/**` push that edits train.py and traingate.yml is not merged,
    trained, gated or proposed, and nothing of it reaches main."""
    loosened = (e2e.work / "traingate.yml").read_text().replace("require: all", "require: any")
    branch = e2e.push_data(also={"train.py": EVIL_TRAIN, "traingate.yml": loosened + "\n# loosened\n"})
    pushed = e2e.branch_sha(branch)
    objects_before = e2e.s3_keys()
    run = e2e.pipeline(branch).run()
    assert run.results["merge-and-validate"] == "failure", given_up(run)
    assert {run.results[j] for j in ("start-infra", "train", "stop-infra")} == {"skipped"}, given_up(run)
    assert_untrusted(run.job("merge-and-validate").step(), "train.py (modified)", "traingate.yml (modified)")
    assert any(
        a.startswith("::error file=train.py,title=untrusted change::")
        for a in run.job("merge-and-validate").annotations
    )
    assert e2e.branch_sha(branch) == pushed and e2e.s3_keys() == objects_before  # nothing merged
    assert e2e.instance_state() == "stopped" and e2e.experiment_runs() == [] and e2e.aliases() == {}
    assert_no_pr(e2e, run)
    assert "traingate.yml" not in git(e2e.world.bare, "diff", "--name-only", f"{pushed}~1", "main")


def test_code_pushed_after_the_merge_is_never_trained_or_proposed(e2e: E2E) -> None:
    """Someone pushes train.py to the data branch once the merge is done: the train job still
    runs main's code on the merged pointer, and the PR (whose diff now holds train.py) is refused."""
    branch = e2e.push_data()

    def push_code(run: PipelineRun, key: str, step: Any) -> None:
        other = e2e.world.root / "intruder"
        git(e2e.world.root, "clone", "-q", "-b", branch, str(e2e.world.bare), str(other))
        (other / "train.py").write_text(EVIL_TRAIN)
        git(other, "commit", "-q", "-am", "a better model, promise")
        git(other, "push", "-q", "origin", branch)

    run = e2e.pipeline(branch, hooks={"after:merge-and-validate": push_code}).run()
    merge = run.job("merge-and-validate").outputs
    train = run.job("train")
    assert train.result == "success", given_up(run)
    # main's train.py (a real model), not the pushed one that reports 0.999.
    assert json.loads(train.outputs["metrics"])["dice"] < 0.99
    assert train.outputs["data_version"] == merge["data_version"]
    assert (train.workspace / "train.py").read_text() == (e2e.work / "train.py").read_text()
    assert "Code and traingate.yml from `main`" in train.summary
    assert run.results["create-pr"] == "failure" and run.results["auto-merge"] == "skipped", given_up(run)
    assert_untrusted(run.job("create-pr").step(), "train.py (modified)")
    assert e2e.github.pulls == {} and e2e.github.statuses == []
    assert_instance_given_back(e2e, run)


def test_retrain_of_a_branch_that_changes_code_is_refused_by_the_train_job(e2e: E2E) -> None:
    """`merge: false`: no merge to refuse it; the train job checks the commit before training."""
    git(e2e.work, "checkout", "-q", "-b", "data/retrain", "main")
    (e2e.work / "train.py").write_text(EVIL_TRAIN)
    git(e2e.work, "commit", "-q", "-am", "retrain with this")
    git(e2e.work, "push", "-q", "origin", "data/retrain")
    git(e2e.work, "checkout", "-q", "main")
    run = e2e.pipeline("data/retrain", inputs={"merge": False}).run()
    assert run.results["train"] == "failure", given_up(run)
    assert_untrusted(run.job("train").step(), "train.py (modified)")
    assert e2e.experiment_runs() == [] and e2e.aliases() == {}
    assert_instance_given_back(e2e, run)
    assert_no_pr(e2e, run)


# ------------------------------------------------------------ 5 runner dies mid-train
def test_runner_dies_watchdog_stops_reap_cleans_rerun_succeeds(e2e: E2E) -> None:
    branch = e2e.push_data()
    first = e2e.pipeline(branch)
    first.run(until="start-infra")
    holder = first.job("start-infra").outputs["holder"]
    assert e2e.instance_state() == "running" and set(e2e.lease_holders()) == {holder}
    # The runner dies during train: no train, no stop-infra, nothing renews the lease.
    e2e.clock.advance(31 * 60)
    assert e2e.ssm.tick(e2e.instance_id) == "stopped"
    assert e2e.instance_id in e2e.ssm.watchdog_fired
    assert e2e.instance_state() == "stopped"

    reap = e2e.cli("infra", "reap")
    assert reap.exit_code == 0, reap.output + reap.stderr
    assert e2e.lease_holders() == {}, "infra reap must forget the expired holder"

    again = e2e.pipeline(branch, sha=first.sha, run_id=first.run_id, attempt=2).run()
    assert again.results == ALL_SUCCESS, given_up(again)
    assert_instance_given_back(e2e, again)


def test_runner_dies_rerun_without_reap_restarts_cleanly(e2e: E2E) -> None:
    branch = e2e.push_data()
    first = e2e.pipeline(branch)
    first.run(until="start-infra")
    assert set(e2e.lease_holders()) == {"o/r/1001/1"}
    e2e.clock.advance(31 * 60)
    assert e2e.ssm.tick(e2e.instance_id) == "stopped"
    # "Re-run all jobs": same run id and pushed commit, attempt 2.
    again = e2e.pipeline(branch, sha=first.sha, run_id=first.run_id, attempt=2).run()
    assert again.results == ALL_SUCCESS, given_up(again)
    assert again.job("start-infra").outputs["holder"] == "o/r/1001/2"
    # stop-infra of attempt 2 also releases what attempt 1 left in the lease.
    assert_instance_given_back(e2e, again)


def test_rerun_stop_releases_the_first_attempts_holder(e2e: E2E) -> None:
    branch = e2e.push_data()
    first = e2e.pipeline(branch)
    first.run(until="start-infra")
    e2e.clock.advance(60)  # attempt 1 dies; attempt 2 starts a minute later, within the TTL
    again = e2e.pipeline(branch, sha=first.sha, run_id=first.run_id, attempt=2)
    again.run(until="start-infra")
    assert set(e2e.lease_holders()) == {"o/r/1001/1", "o/r/1001/2"}
    # stop-infra of attempt 2 exactly as the workflow calls it (explicit holder from start-infra).
    env = {"GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "o/r", "GITHUB_RUN_ID": "1001"}
    env |= {"GITHUB_RUN_ATTEMPT": "2", "TRAINGATE_HOLDER": "o/r/1001/2"}
    stop = e2e.cli("infra", "stop", env=env)
    assert stop.exit_code == 0, stop.output + stop.stderr
    assert e2e.lease_holders() == {} and e2e.instance_state() == "stopped"


# ---------------------------------------------------------------- 11 auto-merge refused
def test_auto_merge_on_a_clean_pr_merges_directly(e2e: E2E) -> None:
    def make_clean(run: PipelineRun, key: str, step: Any) -> None:
        for pull in e2e.github.pulls.values():
            pull["mergeable_state"] = "clean"

    run = e2e.pipeline(e2e.push_data(), hooks={"before:auto-merge": make_clean}).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    out = run.job("auto-merge").outputs
    assert out["merge_state"] == "merged" and out["method"] == "squash"
    number = int(out["pr_number"])
    assert e2e.github.pulls[number]["merged"] is True
    assert e2e.github.merges[0]["merge_method"] == "squash"
    assert e2e.github.merges[0]["sha"] == run.job("create-pr").outputs["head_sha"]


def test_actions_may_not_create_prs_fails_loudly_after_the_instance_is_back(e2e: E2E) -> None:
    """The repository forbids GITHUB_TOKEN to open PRs: a clear failure, nothing half-done."""
    e2e.github.actions_may_create_prs = False
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["train"] == "success" and run.results["create-pr"] == "failure", given_up(run)
    assert run.results["auto-merge"] == "skipped"
    error = next(a for a in run.job("create-pr").annotations if a.startswith("::error"))
    assert "not permitted" in error and "next step" in error
    assert e2e.github.pulls == {} and run.outputs()["pr_url"] == ""
    # The model was promoted by the gate and the instance is back: only the PR is missing.
    assert e2e.aliases() == {"champion": run.job("train").outputs["model_version"]}
    assert e2e.instance_state() == "stopped"


def test_lost_response_on_pr_create_still_makes_exactly_one_pr(e2e: E2E) -> None:
    """GitHub created the PR but the 502 hid it: the retry must find it, not open a second one."""
    e2e.github.fail("POST", r"/pulls$", 502, after=True)
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    assert len(e2e.github.pulls) == 1
    assert e2e.github.count("POST", r"/pulls$") >= 2  # the lost one and the retry
    assert run.job("create-pr").outputs["pr_number"] == str(next(iter(e2e.github.pulls)))
    assert len(e2e.github.statuses) == 1


def test_auto_merge_disabled_in_the_repository_fails_loudly(e2e: E2E) -> None:
    e2e.github.auto_merge_allowed = False
    run = e2e.pipeline(e2e.push_data()).run()
    assert run.results["create-pr"] == "success", given_up(run)
    assert run.results["auto-merge"] == "failure"
    step = run.job("auto-merge").step()
    assert step.exit_code == 1
    error = next(a for a in step.annotations if a.startswith("::error"))
    assert "not allowed" in error.lower() and "next step" in error
    pull = next(iter(e2e.github.pulls.values()))
    assert pull["state"] == "open" and pull["auto_merge"] is None  # the PR stays for a human
    assert e2e.github.merges == []


# ----------------------------------------------------- promotion on merge without a PAT (#12)
def test_on_merge_a_direct_auto_merge_promotes_what_it_merged(e2e: E2E) -> None:
    """gate.promote: on-merge, MLflow NOT on the instance: the auto-merge job merged the clean PR
    with GITHUB_TOKEN (no workflow hears of it) and promotes the PR's own version itself."""
    e2e.configure(gate__promote="on-merge", infra__mlflow_url="")

    def make_clean(run: PipelineRun, key: str, step: Any) -> None:
        for pull in e2e.github.pulls.values():
            pull["mergeable_state"] = "clean"

    run = e2e.pipeline(e2e.push_data(), hooks={"before:auto-merge": make_clean}).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    version = run.job("train").outputs["model_version"]
    assert run.job("auto-merge").outputs["merge_state"] == "merged"
    promote = run.job("auto-merge").step()
    assert promote.argv == ["promote", "--reconcile"] and promote.exit_code == 0, given_up(run)
    assert promote.written["promoted"] == run.job("auto-merge").outputs["pr_number"]
    assert e2e.aliases() == {"champion": version}
    assert "traingate-promoted" in e2e.github.labels[int(promote.written["promoted"])]


def test_on_merge_with_mlflow_on_the_instance_defers_to_the_sweep(e2e: E2E) -> None:
    """MLflow lives on the instance, stopped by the time the PR merges: the auto-merge job says
    the PR waits; the scheduled sweep (reap-instances.yml) borrows the instance and promotes."""
    e2e.configure(gate__promote="on-merge")

    def make_clean(run: PipelineRun, key: str, step: Any) -> None:
        for pull in e2e.github.pulls.values():
            pull["mergeable_state"] = "clean"

    run = e2e.pipeline(e2e.push_data(), hooks={"before:auto-merge": make_clean}).run()
    assert run.results == ALL_SUCCESS, given_up(run)
    version = run.job("train").outputs["model_version"]
    promote = run.job("auto-merge").step()
    assert promote.written["pending"] == "1" and promote.written["promoted"] == "", given_up(run)
    assert e2e.aliases() == {"challenger": version}

    # reap-instances.yml's promote job, after its start-infra: the instance's MLflow URL.
    env = {"GITHUB_TOKEN": e2e.world.token, "GITHUB_REPOSITORY": "o/r"}
    swept = e2e.cli("promote", "--reconcile", "--tracking-uri", e2e.proxy.url, env=env)
    assert swept.exit_code == 0, swept.output + swept.stderr
    assert e2e.aliases() == {"champion": version}
    again = e2e.cli("promote", "--reconcile", "--tracking-uri", e2e.proxy.url, env=env)
    assert again.exit_code == 0 and "no merged traingate pull request waits" in again.output


# ------------------------------------------- manual retraining on the base branch (#12 case 5)
def test_manual_retrain_on_the_base_branch_promotes_on_gate_and_opens_no_pr(e2e: E2E) -> None:
    """`manual-train.yml` dispatched on main with merge: false and gate.promote: on-gate."""
    run = e2e.pipeline("main", inputs={"merge": False}).run()
    assert run.results == {**ALL_SUCCESS, "merge-and-validate": "skipped", "auto-merge": "skipped"}, given_up(
        run
    )
    train = run.job("train").outputs
    assert train["improved"] == "true"
    assert e2e.aliases() == {"champion": train["model_version"]}
    pr = run.job("create-pr")
    assert pr.outputs["operation"] == "skipped" and pr.outputs["pr_number"] == ""
    assert f"version {train['model_version']} is already @champion" in pr.step().stdout
    assert e2e.github.pulls == {} and e2e.github.statuses == []
    assert not any(m in ("POST", "PATCH", "PUT") for m, _ in e2e.github.log)
    assert run.outputs()["pr_url"] == ""
    assert_instance_given_back(e2e, run)


def test_manual_retrain_on_the_base_branch_on_merge_says_how_to_promote(e2e: E2E) -> None:
    e2e.configure(gate__promote="on-merge")
    run = e2e.pipeline("main", inputs={"merge": False}).run()
    assert run.results == {**ALL_SUCCESS, "merge-and-validate": "skipped", "auto-merge": "skipped"}, given_up(
        run
    )
    version = run.job("train").outputs["model_version"]
    assert e2e.aliases() == {"challenger": version}  # production untouched, nothing to merge
    warnings = [a for a in run.job("create-pr").annotations if a.startswith("::warning")]
    assert any(f"traingate promote --version {version}" in w for w in warnings), given_up(run)
    assert e2e.github.pulls == {}
