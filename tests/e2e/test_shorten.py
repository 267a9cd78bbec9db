"""The critical path's shortcuts (issue #15) run through the harness: a push of data the
champion was already trained on skips training, opens no PR, and still gives the instance back."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import E2E
from tests.e2e.test_pipeline import assert_instance_given_back, given_up

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_a_second_push_of_the_same_data_skips_training(e2e: E2E) -> None:
    first = e2e.pipeline(e2e.push_data("data/20261124-101500", pairs=3)).run()
    assert first.job("train").outputs["improved"] == "true", given_up(first)
    champion = first.job("train").outputs["model_version"]
    trained_on = first.job("train").outputs["data_version"]
    runs, pulls = len(e2e.experiment_runs()), dict(e2e.github.pulls)

    # The same images again on another branch: merged, they make the same dataset version.
    again = e2e.pipeline(e2e.push_data("data/20261124-111500", pairs=3)).run()
    assert again.results["train"] == "success", given_up(again)
    train = again.job("train")
    assert train.step().exit_code == 0
    assert train.outputs["skipped"] == "true" and train.outputs["improved"] == "false"
    assert train.outputs["data_version"] == trained_on
    assert (
        f"data version {trained_on} is what @champion (version {champion}) was trained on: "
        "nothing new to learn, training skipped" in train.summary
    )
    assert len(e2e.experiment_runs()) == runs  # no MLflow run, no training
    assert e2e.aliases() == {"champion": champion}
    assert again.results["create-pr"] == "skipped" and e2e.github.pulls == pulls
    assert again.outputs()["skipped"] == "true" and again.outputs()["improved"] == "false"
    assert_instance_given_back(e2e, again)


def test_start_early_with_valid_data_trains_on_the_instance_started_beside_the_merge(e2e: E2E) -> None:
    run = e2e.pipeline(e2e.push_data(pairs=3), inputs={"start-early": True}).run()
    assert run.results["start-infra"] == "skipped", given_up(run)
    assert run.results["start-infra-early"] == "success" and run.results["train"] == "success", given_up(run)
    assert run.job("train").outputs["improved"] == "true"
    assert (
        run.job("stop-infra").step().env["TRAINGATE_HOLDER"] == run.job("start-infra-early").outputs["holder"]
    )
    assert_instance_given_back(e2e, run)


def test_start_early_with_invalid_data_stops_the_instance_and_never_trains(e2e: E2E) -> None:
    run = e2e.pipeline(e2e.push_data(corrupt=True), inputs={"start-early": True}).run()
    assert run.results["merge-and-validate"] == "failure", given_up(run)
    assert run.results["start-infra-early"] == "success"  # the price: it booted during the merge
    assert run.results["train"] == "skipped" and run.results["create-pr"] == "skipped"
    assert len(e2e.experiment_runs()) == 0
    assert_instance_given_back(e2e, run)
