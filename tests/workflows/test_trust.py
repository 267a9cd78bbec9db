"""The train job's checkout, statically: a data push cannot change the code or the traingate.yml
that train and judge its candidate (issue 11, case 3). tests/e2e runs it (scenarios 13)."""

from __future__ import annotations

from typing import Any

from tests.workflows.conftest import WORKFLOWS, action, load


def _train_job() -> dict[str, Any]:
    (job,) = load(WORKFLOWS / "train.yml")["jobs"].values()
    return job


def _step(job: dict[str, Any], uses_prefix: str) -> dict[str, Any]:
    found = [s for s in job["steps"] if str(s.get("uses", "")).startswith(uses_prefix)]
    assert len(found) == 1, [s.get("name") for s in job["steps"]]
    return found[0]


def test_train_job_checks_out_the_base_branch_with_history_and_no_token() -> None:
    checkout = _step(_train_job(), "actions/checkout@")["with"]
    # Never inputs.ref (the pushed data commit) or the triggering commit: the base's code.
    assert checkout["ref"] == "${{ inputs.base-ref || github.event.repository.default_branch }}"
    assert checkout["fetch-depth"] == 0  # the data commit and its merge-base with the base
    assert checkout["persist-credentials"] is False


def test_train_step_takes_only_the_data_commits_pointer() -> None:
    train = _step(_train_job(), "traingate/traingate/actions/train@")
    assert train["with"]["data-from"] == "${{ inputs.ref || github.sha }}"
    env = next(s for s in action("train")["runs"]["steps"] if 'traingate" train' in s.get("run", ""))["env"]
    assert env["TRAINGATE_DATA_FROM"] == "${{ inputs.data-from }}"


def test_pipeline_trains_the_merge_commit_on_the_base() -> None:
    job = load(WORKFLOWS / "training-pipeline.yml")["jobs"]["train"]
    # The data commit the merge pushed; train.yml runs the base's code on its pointer.
    assert job["with"]["ref"] == "${{ needs.merge-and-validate.outputs.commit_sha }}"
