from __future__ import annotations

from pathlib import Path

import pytest

from traingate import gha


def test_outputs_roundtrip_multiline_and_hostile_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    hostile = "line1\nEOF\nimproved=true\nline4"
    gha.write_outputs({"improved": False, "body": hostile, "n": 3, "m": {"a": 1}})
    parsed = gha.read_outputs(out)
    assert parsed == {"improved": "false", "body": hostile, "n": "3", "m": '{"a": 1}'}


def test_delimiters_are_random(tmp_path: Path) -> None:
    out = tmp_path / "out"
    gha.write_outputs({"a": "1"}, str(out))
    gha.write_outputs({"a": "2"}, str(out))
    first, second = (line for line in out.read_text().splitlines() if line.startswith("a<<"))
    assert first != second


def test_no_output_file_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    gha.write_outputs({"a": 1})  # must not raise


def test_annotations_in_actions_escape(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    gha.error("bad\nthing 100%", file="data/a,b.jpg", line=3, title="x: y")
    out = capsys.readouterr().out
    assert out == "::error file=data/a%2Cb.jpg,line=3,title=x%3A y::bad%0Athing 100%25\n"


def test_annotations_outside_actions_are_plain(capsys: pytest.CaptureFixture[str]) -> None:
    gha.warning("careful", file="f.txt")
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "warning (f.txt): careful\n"


def test_mask_only_in_actions(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    gha.mask("s3cr3t")
    assert capsys.readouterr().out == ""
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    gha.mask("s3cr3t")
    assert capsys.readouterr().out == "::add-mask::s3cr3t\n"


def test_summary_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    gha.append_summary("# one")
    gha.append_summary("two\n")
    assert summary.read_text() == "# one\n\ntwo\n\n"


def test_group(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    with gha.group("Install"):
        print("inside")
    assert capsys.readouterr().out == "::group::Install\ninside\n::endgroup::\n"
