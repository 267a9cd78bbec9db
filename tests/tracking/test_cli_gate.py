"""`traingate gate` and `traingate promote` through the CLI: exit codes, outputs, summary."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.tracking.helpers import Project, make_run, open_adapter
from traingate import gha
from traingate.cli import cli


@pytest.fixture
def cli_env(project: Project, monkeypatch: pytest.MonkeyPatch) -> tuple[Project, Path, Path]:
    (project.root / "traingate.yml").write_text(
        "project: tg-test\ngate: {model: tg-cli, promote: on-merge}\ntracking: {retry_budget_seconds: 2}\n"
    )
    out, summary = project.root / "out", project.root / "summary.md"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.chdir(project.root)
    return project, out, summary


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_gate_then_promote_after_merge_then_rollback(cli_env: tuple[Project, Path, Path]) -> None:
    _project, out, summary = cli_env
    from traingate.config import load_config

    cfg = load_config()
    tr = open_adapter(cfg)
    first = make_run(tr, cfg, {"dice": 0.8, "iou": 0.7})
    code, text = invoke("gate", "--run-id", first)
    assert code == 0, text
    outputs = gha.read_outputs(out)
    assert outputs["improved"] == "true" and outputs["baseline"] == "none" and outputs["model_version"] == "1"
    assert "| dice | max | 0.8 | — | — | ✅ no champion yet; no threshold |" in summary.read_text()
    assert invoke("promote")[0] == 0
    assert gha.read_outputs(out)["model_version"] == "1"

    second = make_run(tr, cfg, {"dice": 0.9, "iou": 0.75})
    assert invoke("gate", "--run-id", second)[0] == 0
    assert tr.get_aliases("tg-cli") == {"champion": "1", "challenger": "2"}
    assert invoke("promote")[0] == 0
    assert tr.get_aliases("tg-cli") == {"champion": "2", "previous-champion": "1"}

    code, text = invoke("promote", "--rollback")
    assert code == 0, text
    assert tr.get_aliases("tg-cli") == {"champion": "1"}
    code, text = invoke("promote", "--rollback")
    assert code == 1
    assert "no @previous-champion version to roll back to" in text


def test_not_improved_is_success_with_improved_false(cli_env: tuple[Project, Path, Path]) -> None:
    _project, out, summary = cli_env
    from traingate.config import load_config

    cfg = load_config()
    tr = open_adapter(cfg)
    invoke("gate", "--run-id", make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}))
    invoke("promote")
    out.unlink()
    code, text = invoke("--json", "gate", "--run-id", make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}))
    assert code == 0, text
    assert gha.read_outputs(out)["improved"] == "false"
    assert '"improved": false' in text
    assert "tie with the champion" in summary.read_text()


def test_missing_metric_exits_1_without_improved(cli_env: tuple[Project, Path, Path]) -> None:
    _project, out, _summary = cli_env
    from traingate.config import load_config

    cfg = load_config()
    run_id = make_run(open_adapter(cfg), cfg, {"dice": 0.99})
    code, text = invoke("gate", "--run-id", run_id)
    assert code == 1
    assert "has no metric 'iou'" in text
    assert "improved" not in (gha.read_outputs(out) if out.exists() else {})
