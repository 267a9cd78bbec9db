"""The train step's typed result and the Actions context it reads (no MLflow, no subprocess)."""

from __future__ import annotations

from pathlib import Path

import pytest

from traingate.gha import ActionsContext
from traingate.outputs import OUTPUTS, outputs_of
from traingate.train.runner import TrainResult


def test_the_outputs_are_exactly_the_registrys() -> None:
    value = TrainResult(
        run_id="r1", experiment_id="7", metrics={"dice": 0.8}, report="/r.json", data_version="v1"
    )
    assert tuple(value.outputs()) == OUTPUTS["train"]
    assert value.outputs()["metrics"] == {"dice": 0.8} and value.outputs()["skipped"] is False
    gate = {"improved": True, "baseline": "none", "model_version": "1", "run_id": "r1", "metrics": {}}
    gated = TrainResult(run_id="r1", metrics={"dice": 0.8}, gate_outputs={**gate, "report": "/g.json"})
    assert tuple(gated.outputs()) == outputs_of("train", gate=True)
    # The candidate's final metrics and train's report stay train's, not the gate's.
    assert gated.outputs()["metrics"] == {"dice": 0.8} and gated.outputs()["report"] == ""


def test_a_skip_writes_no_run_and_the_gates_not_improved() -> None:
    value = TrainResult(data_version="v1", skipped=True, gate_outputs={"improved": False, "baseline": "3"})
    assert value.outputs() == {"data_version": "v1", "skipped": True, "improved": False, "baseline": "3"}
    assert set(value.outputs()) <= set(outputs_of("train", gate=True))


def test_the_run_url_comes_from_the_actions_context_and_names_a_rerun() -> None:
    actions = ActionsContext(repository="acme/meters", run_id="42")
    assert actions.run_url() == "https://github.com/acme/meters/actions/runs/42"
    rerun = ActionsContext(repository="acme/meters", run_id="42", run_attempt="2")
    assert rerun.run_url() == "https://github.com/acme/meters/actions/runs/42/attempts/2"
    assert ActionsContext().run_url() == ""


def test_git_info_falls_back_to_the_context_without_a_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traingate.config import parse_config
    from traingate.train.runner import git_info

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    cfg = parse_config({"project": "p", "train": {"command": "true"}}, base_dir=tmp_path)
    actions = ActionsContext(sha="abc123", ref_name="data/x")
    assert git_info(cfg, actions) == ("abc123", "data/x")
    assert git_info(cfg, ActionsContext()) == ("", "")
