"""The shipped caller templates (workflows-templates/) run by nektos/act against loopback services.

Each scenario asserts the job results act reports, the outputs the steps set, the instance and
lease in moto, the MLflow run and aliases on the real server, the calls the GitHub fake served
over HTTP received, and the git state of the bare remote. See docs/e2e.md for what this engine
covers and what stays with the harness in tests/e2e.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import git
from tests.engine.conftest import TOKEN, World, explain

pytestmark = [pytest.mark.engine, pytest.mark.slow]

PIPELINE_JOBS = ("merge-and-validate", "start-infra", "train", "stop-infra", "create-pr", "auto-merge")


def test_improved_model_opens_and_auto_merges_a_pr(world: World) -> None:
    branch = world.push_data(pairs=4)
    pushed = world.branch_sha(branch)
    objects_before = world.s3_keys()
    run = world.push_event(branch)
    why = explain(run, world)
    assert run.returncode == 0, why
    assert run.results == dict.fromkeys(PIPELINE_JOBS, "success"), why
    gh = world.github.fake
    assert world.github.unrouted == [], why

    # merge-and-validate: data in S3 first, then the pointer commit pushed to the data branch.
    merge = run.job("merge-and-validate").outputs
    assert merge["validation_passed"] == "true"
    assert (merge["new_images"], merge["existing_images"], merge["total_images"]) == ("4", "10", "14")
    assert world.branch_sha(branch) == merge["commit_sha"] != pushed
    assert git(world.bare, "rev-parse", f"{merge['commit_sha']}~1") == pushed
    files = world.branch_files(branch)
    assert "data/training.dvc" in files and not any(f.startswith("data/new/") for f in files)
    assert len(world.s3_keys() - objects_before) == 9  # 8 new files + the new listing
    report = json.loads(run.artifact("traingate-data-report")["data-report.json"])
    assert report["merge"]["commit"] == merge["commit_sha"]

    # start-infra -> train -> stop-infra: the instance was lent and given back.
    start = run.job("start-infra").outputs
    assert start["instance_id"] == world.instance_id and start["state"] == "running"
    assert start["holder"] == "acme/water-meters/1/1"  # act's run id and attempt are always 1
    assert start["mlflow_url"] == world.proxy.url
    stop = run.job("stop-infra").outputs
    assert stop["stopped"] == "true" and stop["remaining_holders"] == "[]"
    assert world.instance_state() == "stopped" and world.lease_holders() == {}

    # train + gate: a run on the merged data version, promoted to @champion.
    train = run.job("train").outputs
    assert train["improved"] == "true" and train["baseline"] == "none"
    assert train["data_version"] == merge["data_version"]
    assert set(json.loads(train["metrics"])) >= {"dice", "iou"}
    mlflow_run = world.client().get_run(train["run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert world.aliases() == {"champion": train["model_version"]}
    assert world.proxy.count("/runs/log-batch") >= 1  # logged through start-infra's mlflow_url
    reports = run.artifact("traingate-train-reports")
    assert {"train-report.json", "gate-report.json", "metrics.jsonl"} <= set(reports)

    # create-pr + auto-merge: the PR with the metric table, the gate status, auto-merge on.
    pr = run.job("create-pr").outputs
    assert pr["operation"] == "created" and pr["head_sha"] == merge["commit_sha"]
    assert pr["pr_url"] == f"https://github.com/acme/water-meters/pull/{pr['pr_number']}"
    pull = gh.pulls[int(pr["pr_number"])]
    assert (pull["head"], pull["base"], pull["state"]) == (branch, "main", "open")
    assert "| dice | max |" in pull["body"] and "new images | 4" in pull["body"]
    assert [(s["sha"], s["state"], s["context"]) for s in gh.statuses] == [
        (merge["commit_sha"], "success", "traingate/gate")
    ]
    assert pull["auto_merge"] == {"merge_method": "squash"}
    assert run.job("auto-merge").outputs["merge_state"] == "auto_merge_enabled"
    assert world.github.tokens == {TOKEN}  # github.token reached every API call
    assert gh.comments == {}
