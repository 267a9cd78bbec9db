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
from tests.engine.conftest import TOKEN, World, explain, record_figures

pytestmark = [pytest.mark.engine, pytest.mark.slow]

PIPELINE_JOBS = ("merge-and-validate", "start-infra", "train", "stop-infra", "create-pr", "auto-merge")


def test_improved_model_opens_and_auto_merges_a_pr(world: World) -> None:
    branch = world.push_data(pairs=4)
    pushed = world.branch_sha(branch)
    objects_before = world.s3_keys()
    run = world.push_event(branch)
    record_figures(world, run)  # bench/bench_engine.py reads these
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


def test_not_improved_opens_no_pr_and_stops_the_instance(world: World) -> None:
    champion = world.make_champion(dice=0.999, iou=0.999)
    branch = world.push_data(pairs=4)
    run = world.push_event(branch)
    why = explain(run, world)
    assert run.returncode == 0, why
    ran = dict.fromkeys(("merge-and-validate", "start-infra", "train", "stop-infra"), "success")
    assert run.results == ran, why  # create-pr and auto-merge skipped by their `if:`
    train = run.job("train").outputs
    assert train["improved"] == "false" and train["baseline"] == champion
    assert world.client().get_run(train["run_id"]).info.status == "FINISHED"
    assert world.aliases() == {"champion": champion}  # the champion stays
    assert run.job("stop-infra").outputs["stopped"] == "true"
    assert world.instance_state() == "stopped" and world.lease_holders() == {}
    gh = world.github.fake
    assert gh.pulls == {} and gh.statuses == [] and gh.graphql == [] and gh.log == [], why
    gate = json.loads(run.artifact("traingate-train-reports")["gate-report.json"])
    assert gate["improved"] is False and gate["promoted"] is False


def test_invalid_data_is_commented_and_never_starts_the_instance(world: World) -> None:
    branch = world.push_data(pairs=4, corrupt=True)
    pushed = world.branch_sha(branch)
    objects_before = world.s3_keys()
    run = world.push_event(branch)
    why = explain(run, world)
    assert run.returncode != 0, why
    # act schedules nothing after a failed called workflow; on GitHub the `if:`s skip them too.
    assert run.results == {"merge-and-validate": "failure"}, why
    merge = run.job("merge-and-validate")
    assert merge.outputs["validation_passed"] == "false", why
    report = json.loads(run.artifact("traingate-data-report")["data-report.json"])
    codes = {e["code"] for e in report["errors"]}
    assert report["status"] == "fail" and codes, report
    # The errors as a commit comment on the pushed commit, through GITHUB_API_URL.
    gh = world.github.fake
    comments = list(gh.comments.values())
    assert [c["sha"] for c in comments] == [pushed], why
    assert any(code in comments[0]["body"] for code in codes)
    assert world.github.tokens == {TOKEN}
    # Nothing merged, nothing pushed, the instance never started.
    assert world.branch_sha(branch) == pushed and world.s3_keys() == objects_before
    assert world.instance_state() == "stopped" and world.lease_holders() == {}
    assert gh.pulls == {} and gh.statuses == []


def test_manual_retrain_dispatched_on_main(world: World) -> None:
    """manual-train.yml, Run workflow on main with its defaults (no merge, auto-merge on)."""
    main_before = world.branch_sha("main")
    run = world.dispatch("manual-train.yml", {"merge": False, "source": "", "auto-merge": True})
    why = explain(run, world)
    assert run.returncode == 0, why
    # merge-and-validate skipped (`if: inputs.merge`); auto-merge needs a PR number: none.
    ran = dict.fromkeys(("start-infra", "train", "stop-infra", "create-pr"), "success")
    assert run.results == ran, why
    train = run.job("train").outputs
    assert train["improved"] == "true", why
    assert world.aliases() == {"champion": train["model_version"]}  # gate.promote: on-gate
    assert world.instance_state() == "stopped" and world.lease_holders() == {}
    assert world.branch_sha("main") == main_before  # nothing committed on main
    # Retraining on main has no data branch to propose: create-pr opens nothing and says so.
    pr = run.job("create-pr").outputs
    assert (pr["operation"], pr["pr_url"], pr["pr_number"]) == ("skipped", "", ""), why
    gh = world.github.fake
    assert gh.pulls == {} and gh.statuses == [] and gh.graphql == [], why


def test_reap_schedule_stops_an_instance_whose_holders_expired(world: World) -> None:
    import time

    import boto3

    ec2 = boto3.client("ec2", region_name="us-east-1")
    ec2.start_instances(InstanceIds=[world.instance_id])
    expired = time.time() - 3600  # a cancelled run that never ran `infra stop`
    boto3.client("dynamodb").put_item(
        TableName="traingate-leases",
        Item={
            "instance_id": {"S": world.instance_id},
            "holders": {"M": {"acme/water-meters/7/1": {"N": str(expired)}}},
            "version": {"N": "1"},
        },
    )
    assert world.instance_state() == "running"
    run = world.schedule("reap-instances.yml")
    why = explain(run, world)
    assert run.returncode == 0, why
    assert set(run.results.values()) == {"success"} and run.job("reap").result == "success", why
    assert world.instance_id in run.job("reap").outputs["reaped"], why
    assert world.instance_state() in ("stopping", "stopped") and world.lease_holders() == {}


def test_promotion_on_merge_promotes_the_merged_pr(world: World) -> None:
    """gate.promote: on-merge: the round leaves @challenger and a PR whose body names the version;
    merging it runs promote-on-merge.yml (`promote --reconcile`), which moves @champion."""
    world.configure(gate__promote="on-merge")
    branch = world.push_data(pairs=4)
    first = world.push_event(branch)
    why = explain(first, world)
    assert first.results == dict.fromkeys(PIPELINE_JOBS, "success"), why
    version = first.job("train").outputs["model_version"]
    assert world.aliases() == {"challenger": version}, why  # nothing promoted before the merge
    number = int(first.job("create-pr").outputs["pr_number"])
    gh = world.github.fake
    assert "traingate" in gh.labels[number], why

    run = world.pr_merged(number, branch, labels=gh.labels[number])
    why = explain(run, world)
    assert run.returncode == 0, why
    assert len(run.results) == 3 and set(run.results.values()) == {"success"}, why
    assert run.job("promote").result == "success", why  # by YAML key: its `name:` may change
    assert world.aliases().get("champion") == version, why
    assert "traingate-promoted" in gh.labels[number], why
    assert world.instance_state() == "stopped" and world.lease_holders() == {}
