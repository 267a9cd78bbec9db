"""Issue #12.1: a verdict needs a registry that outlives the job.

On a fresh GitHub runner the embedded `sqlite:///.traingate/mlflow.db` is empty every time, so
every candidate found "no champion yet" and was promoted (dice 0.01 got a PR and auto-merge).
In Actions, `gate`, `train --gate` and `run` refuse a runner-local store (exit 2, naming
tracking.uri); locally the same store is accepted.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.tracking.helpers import NO_WAIT, Project, make_run, open_adapter
from traingate import gha
from traingate.cli import cli
from traingate.errors import ConfigError
from traingate.gha import ActionsContext
from traingate.pipeline.train import train_step
from traingate.tracking.durable import local_store_kind
from traingate.tracking.gate import gate_step


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///.traingate/mlflow.db",
        "sqlite:////abs/mlflow.db",
        "file:///tmp/mlruns",
        "file:mlruns",
        "mlruns",
        "./mlruns",
        "/home/runner/work/mlruns",
        "C:\\mlruns",
        "",
    ],
)
def test_runner_local_stores(uri: str) -> None:
    assert local_store_kind(uri) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "http://10.0.0.5:5000",
        "https://mlflow.example.com",
        "http://127.0.0.1:5000",  # a server, deliberately unlike store.remote (locality.is_runner_local)
        "databricks",
        "databricks://profile",
        "databricks-uc",
        "postgresql://mlflow@db.example.com/mlflow",
    ],
)
def test_remote_stores(uri: str) -> None:
    assert local_store_kind(uri) is None


def test_gate_in_actions_refuses_a_local_sqlite_store(project: Project) -> None:
    cfg = project.config()
    tr = open_adapter(cfg, runtime=NO_WAIT)
    run_id = make_run(tr, cfg, {"dice": 0.01, "iou": 0.01})
    with pytest.raises(ConfigError) as info:
        gate_step(cfg, run_id=run_id, tracking=tr, actions=ActionsContext(in_actions=True))
    assert info.value.exit_code == 2
    assert "tracking.uri" in info.value.message and "sqlite:///.traingate/mlflow.db" in info.value.message
    assert "outlives the job" in (info.value.hint or "")
    assert tr.get_aliases("tg-model") is None  # nothing registered, nothing promoted
    assert not (cfg.workspace_dir / "reports" / "gate-report.json").exists()


def test_gate_locally_accepts_the_same_store(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = project.config()
    tr = open_adapter(cfg, runtime=NO_WAIT)
    run_id = make_run(tr, cfg, {"dice": 0.8, "iou": 0.7})
    # The context the caller passes decides, not an environment a test (or a runner) left set.
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert gate_step(cfg, run_id=run_id, tracking=tr, actions=ActionsContext()).outputs["improved"] is True


def test_cli_gate_in_actions_exits_2_without_improved(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "traingate.yml").write_text("project: tg-test\ngate: {model: tg-cli}\n")
    out = project.root / "out"
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    from traingate.config import load_config

    cfg = load_config()
    run_id = make_run(open_adapter(cfg), cfg, {"dice": 0.01, "iou": 0.01})
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = CliRunner().invoke(cli, ["gate", "--run-id", run_id], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "tracking.uri" in result.output
    assert "improved" not in (gha.read_outputs(out) if out.exists() else {})


def test_cli_gate_in_actions_accepts_a_server_given_by_flag(
    project: Project, monkeypatch: pytest.MonkeyPatch, mlflow_server
) -> None:
    """The tracking-uri input (start-infra's mlflow_url) overrides the local default."""
    (project.root / "traingate.yml").write_text(
        "project: tg-durable\ngate: {model: tg-durable}\ntracking: {retry_budget_seconds: 5}\n"
    )
    out = project.root / "out"
    monkeypatch.chdir(project.root)
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    from traingate.config import load_config

    cfg = load_config()
    cfg.tracking.uri = mlflow_server.url
    run_id = make_run(open_adapter(cfg), cfg, {"dice": 0.5, "iou": 0.5}, tmp=project.root)
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    result = CliRunner().invoke(
        cli, ["gate", "--run-id", run_id, "--no-promote", "--tracking-uri", mlflow_server.url]
    )
    assert result.exit_code == 0, result.output
    assert gha.read_outputs(out)["run_id"] == run_id


def test_train_with_gate_in_actions_refuses_before_training(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = project.config()
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with pytest.raises(ConfigError, match=r"tracking\.uri"):
        train_step(cfg, with_gate=True, log=lambda _l: None)
    assert not (project.root / "outputs").exists()  # the command never ran
    tr = open_adapter(cfg)
    assert tr._client.get_experiment_by_name(cfg.tracking.experiment) is None


def test_train_without_gate_in_actions_still_logs(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging a run is not a verdict: plain `train` keeps working (e.g. a smoke test)."""
    cfg = project.config()
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.root / "summary.md"))
    assert train_step(cfg, log=lambda _l: None).outputs["run_id"]


def test_run_in_actions_refuses_before_anything_runs(tmp_path: Path) -> None:
    from traingate.config import parse_config
    from traingate.pipeline import run_step

    cfg = parse_config({"project": "p"}, base_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"tracking\.uri") as info:
        run_step(cfg, env={"GITHUB_ACTIONS": "true"})
    assert info.value.exit_code == 2
    assert not (tmp_path / ".traingate").exists()
