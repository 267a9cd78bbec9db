"""`train --gate --skip-same-data`: a dataset @champion was already trained on is not trained again
(issue #15), against a real MLflow registry (sqlite)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.tracking.helpers import Project, open_adapter
from traingate import gha
from traingate.cli import cli


def _pointer(root: Path, md5: str) -> None:
    (root / ".dvc").mkdir(exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    (root / "data" / "training.dvc").write_text(f"outs:\n- md5: {md5}\n  path: training\n")


def _runs(project: Project) -> int:
    tr = open_adapter(project.config(gate={"model": "tg-skip"}))
    exp = tr._client.get_experiment_by_name("tg-test")
    return len(tr._client.search_runs([exp.experiment_id])) if exp else 0


@pytest.fixture
def cli_project(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    (project.root / "traingate.yml").write_text(
        "project: tg-test\n"
        f"train: {{command: '{os.sys.executable} train.py', pull_data: false, artifacts: [outputs/model.bin],"
        " env: {DICE: '0.8', IOU: '0.7'}}\n"
        "tracking: {retry_budget_seconds: 3, health_timeout_seconds: 2}\n"
        "gate: {model: tg-skip}\n"
    )
    monkeypatch.setenv("GITHUB_OUTPUT", str(project.root / "gh-output"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.root / "summary.md"))
    monkeypatch.chdir(project.root)
    return project


def _train(project: Project, *flags: str) -> dict[str, str]:
    (project.root / "gh-output").write_text("")
    result = CliRunner().invoke(cli, ["train", "--gate", *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return gha.read_outputs(project.root / "gh-output")


def test_the_champions_data_version_skips_training(cli_project: Project) -> None:
    project = cli_project
    _pointer(project.root, "aaa111.dir")
    first = _train(project, "--skip-same-data")
    assert first["improved"] == "true" and first["model_version"] == "1" and first["skipped"] == "false"
    tags = open_adapter(project.config()).get_run(first["run_id"]).tags
    assert tags["traingate.data_version"] == "aaa111.dir"
    shutil.rmtree(project.root / "outputs")
    before = _runs(project)

    # The same dataset again: nothing is trained, no run is created.
    (project.root / "summary.md").write_text("")
    again = _train(project, "--skip-same-data")
    assert again["improved"] == "false" and again["skipped"] == "true"
    assert again["data_version"] == "aaa111.dir" and again["baseline"] == "1"
    assert "run_id" not in again
    assert not (project.root / "outputs").exists()  # the training command never started
    assert _runs(project) == before
    assert (
        "data version aaa111.dir is what @champion (version 1) was trained on: nothing new to learn, "
        "training skipped" in (project.root / "summary.md").read_text()
    )

    # A manual retrain (no --skip-same-data) trains the same data on purpose.
    manual = _train(project)
    assert manual["skipped"] == "false" and manual["run_id"]
    assert _runs(project) == before + 1


def test_new_data_trains(cli_project: Project) -> None:
    project = cli_project
    _pointer(project.root, "aaa111.dir")
    _train(project, "--skip-same-data")
    _pointer(project.root, "bbb222.dir")
    newer = _train(project, "--skip-same-data")
    assert newer["skipped"] == "false" and newer["run_id"] and newer["data_version"] == "bbb222.dir"


def test_the_config_opts_out(cli_project: Project) -> None:
    project = cli_project
    _pointer(project.root, "aaa111.dir")
    _train(project, "--skip-same-data")
    cfg_file = project.root / "traingate.yml"
    opted_out = cfg_file.read_text().replace("pull_data: false,", "pull_data: false, skip_same_data: false,")
    cfg_file.write_text(opted_out)
    again = _train(project, "--skip-same-data")
    assert again["skipped"] == "false" and again["run_id"]


def test_no_champion_or_no_gate_trains(cli_project: Project) -> None:
    project = cli_project
    _pointer(project.root, "aaa111.dir")
    # No registered model yet: the first model trains.
    assert _train(project, "--skip-same-data")["skipped"] == "false"
    # Without --gate the check is not made (train alone never reads the registry).
    (project.root / "gh-output").write_text("")
    result = CliRunner().invoke(cli, ["train", "--skip-same-data"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert gha.read_outputs(project.root / "gh-output")["skipped"] == "false"
