"""The CLI's one place that maps errors to exit codes, annotations and outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from traingate import gha
from traingate.cli import Options, cli, run_step
from traingate.errors import ConfigError, DataError, TraingateError
from traingate.result import StepResult


def _run(action, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, as_json: bool = False):
    out = tmp_path / "out"
    summary = tmp_path / "summary"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    with pytest.raises(SystemExit) as exc:
        run_step(Options(None, as_json, 0), action, needs_config=False)
        raise SystemExit(0)
    outputs = gha.read_outputs(out) if out.exists() else {}
    return exc.value.code, outputs, summary.read_text() if summary.exists() else ""


def test_success_writes_outputs_and_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, outputs, summary = _run(
        lambda _c: StepResult(outputs={"improved": True, "n": 2}, summary="## ok"), tmp_path, monkeypatch
    )
    assert code == 0
    assert outputs == {"improved": "true", "n": "2"}
    assert "## ok" in summary


def test_failure_never_writes_success_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def action(_c):
        raise DataError(
            "3 files invalid",
            hint="fix them",
            outputs={"validation_passed": False, "improved": True, "report": "r.json"},
        )

    code, outputs, summary = _run(action, tmp_path, monkeypatch)
    assert code == 1
    assert outputs == {"validation_passed": "false", "report": "r.json"}
    assert "3 files invalid" in summary and "fix them" in summary


def test_config_error_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def action(_c):
        raise ConfigError("bad key")

    code, _, _ = _run(action, tmp_path, monkeypatch)
    assert code == 2


def test_error_annotation_in_actions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")

    def action(_c):
        raise TraingateError("boom", file="data/x.png")

    code, _, _ = _run(action, tmp_path, monkeypatch)
    assert code == 1
    assert "::error file=data/x.png" in capsys.readouterr().out


def test_json_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def action(_c):
        raise DataError("bad", hint="h")

    code, _, _ = _run(action, tmp_path, monkeypatch, as_json=True)
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1 and payload["ok"] is False and payload["error"]["hint"] == "h"


def test_unknown_config_key_via_cli_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "traingate.yml"
    cfg.write_text("gate:\n  requre: all\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "gate"])
    assert result.exit_code == 2
    assert "gate.requre: unknown key" in result.output


def test_bad_enum_via_cli_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "traingate.yml"
    cfg.write_text("train:\n  where: laptop\n")
    result = CliRunner().invoke(cli, ["--config", str(cfg), "train"])
    assert result.exit_code == 2
    assert "train.where" in result.output and "'runner'" in result.output


def test_bad_flag_exits_2() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "traingate", "gate", "--no-such-flag"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "no-such-flag" in proc.stderr
