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


# ---------------------------------------------------- issue #12 case 9: the contract as written
def _leaf_commands(group=cli, path=()):
    import click

    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            yield from _leaf_commands(cmd, (*path, name))
        else:
            yield (*path, name)


def _main(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """`traingate ARGS` in-process through `main()`, as the console script runs it."""
    from traingate.cli import main

    monkeypatch.setattr("sys.argv", ["traingate", *args])
    with pytest.raises(SystemExit) as exc:
        main()
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def _bad_dataset(make_root: Path) -> Path:
    from tests.data.conftest import image_bytes, mask_bytes

    for stem in ("a", "b", "c"):
        (make_root / "images").mkdir(parents=True, exist_ok=True)
        (make_root / "masks").mkdir(parents=True, exist_ok=True)
        (make_root / "images" / f"{stem}.jpg").write_bytes(image_bytes(seed=ord(stem)))
    (make_root / "masks" / "a.png").write_bytes(mask_bytes(fg=0.0))
    return make_root


def test_global_options_after_the_subcommand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.data.conftest import image_bytes, mask_bytes

    monkeypatch.chdir(tmp_path)
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.jpg").write_bytes(image_bytes())
    (root / "masks" / "a.png").write_bytes(mask_bytes())
    cfg = tmp_path / "conf.yml"
    cfg.write_text("data: {size: [64, 64]}\n")
    # Exactly the line of DESIGN.md's contract.
    code, out, err = _main(["data", "validate", "data", "--config", str(cfg), "--json"], monkeypatch, capsys)
    assert code == 0, err
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload["ok"] is True and payload["exit_code"] == 0 and payload["error"] is None
    assert payload["report"]["statistics"]["resolution"] == "64x64"
    # After the command, the config applies: the wrong size is found.
    cfg.write_text("data: {size: [32, 32]}\n")
    code, out, _ = _main(["data", "validate", "data", "-c", str(cfg), "-v", "--json"], monkeypatch, capsys)
    assert code == 1
    assert json.loads(out.strip().splitlines()[-1])["report"]["errors"][0]["code"] == "resolution_mismatch"
    # Between a group and its sub-command too.
    code, out, _ = _main(["data", "--json", "validate", "data"], monkeypatch, capsys)
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["ok"] is True


def test_every_command_accepts_global_options_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "missing.yml")
    leaves = list(_leaf_commands())
    assert ("data", "validate") in leaves and ("pr", "comment") in leaves
    for path in leaves:
        code, out, err = _main([*path, "--help"], monkeypatch, capsys)
        assert code == 0
        for flag in ("--config", "--json", "--verbose"):
            assert flag in out, (path, flag)
        if path in (("demo",), ("init",)):
            continue  # need no configuration
        code, out, err = _main([*path, "--config", missing, "--json"], monkeypatch, capsys)
        assert code == 2, (path, err)
        payload = json.loads(out.strip().splitlines()[-1])
        assert payload["ok"] is False and payload["exit_code"] == 2, path
        assert "configuration file not found" in payload["error"]["message"]


def test_json_on_failed_validation_prints_the_whole_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    root = _bad_dataset(tmp_path / "data")
    code, out, _ = _main(["--json", "data", "validate", str(root)], monkeypatch, capsys)
    assert code == 1
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload["ok"] is False and payload["exit_code"] == 1
    assert payload["error"]["type"] == "DataError" and "3 data error(s)" in payload["error"]["message"]
    assert payload["outputs"]["validation_passed"] is False
    assert sorted((e["path"], e["code"]) for e in payload["report"]["errors"]) == [
        ("images/b.jpg", "missing_mask"),
        ("images/c.jpg", "missing_mask"),
        ("masks/a.png", "empty_mask"),
    ]
    assert payload["report"]["status"] == "fail" and payload["report"]["counts"]["images"] == 3


def test_json_envelope_on_usage_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _main(["gate", "--no-such-flag", "--json"], monkeypatch, capsys)
    assert code == 2 and "no-such-flag" in err
    payload = json.loads(out.strip().splitlines()[-1])
    assert payload == {
        "ok": False,
        "exit_code": 2,
        "error": {
            "type": "UsageError",
            "message": payload["error"]["message"],
            "hint": "see `traingate gate --help`",
            "file": None,
            "context": [],
            "warnings": [],
        },
        "outputs": {},
    }
    assert "no-such-flag" in payload["error"]["message"]


def test_warnings_gathered_before_an_error_survive_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """#13: a step that learned something (a warning) and then failed reports both; the
    context added on the way up says what the step was doing."""

    def action(_c):
        err = DataError("the push failed", hint="re-run").add_warnings(["the comment could not be posted"])
        raise err.add_context("merging data/new")

    code, _, summary = _run(action, tmp_path, monkeypatch, as_json=True)
    assert code == 1
    captured = capsys.readouterr()
    assert "warning: the comment could not be posted" in captured.err
    assert "the push failed (while merging data/new)" in captured.err
    envelope = json.loads(captured.out.strip().splitlines()[-1])
    assert envelope["error"]["warnings"] == ["the comment could not be posted"]
    assert envelope["error"]["context"] == ["merging data/new"]
    assert "the comment could not be posted" in summary and "while merging data/new" in summary


def test_outputs_outside_the_registry_fail_the_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """#13: cli.run_step holds each command's outputs to traingate.outputs before writing them."""
    out = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    for outputs in ({"improved": True, "surprise": 1}, {"improved": "maybe"}):
        with pytest.raises(SystemExit) as exc:
            run_step(
                Options(None, False, 0),
                lambda _c, o=outputs: StepResult(outputs=o),
                needs_config=False,
                command="gate",
            )
        assert exc.value.code == 1
        assert not out.exists() or gha.read_outputs(out) == {}
    err = capsys.readouterr().err
    assert "undeclared surprise" in err and "undeclared value improved='maybe'" in err
    run_step(
        Options(None, False, 0),
        lambda _c: StepResult(outputs={"improved": False}),
        needs_config=False,
        command="gate",
    )
    assert gha.read_outputs(out) == {"improved": "false"}
