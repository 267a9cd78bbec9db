"""The `traingate pr *` commands end to end: exit codes, $GITHUB_OUTPUT, masking."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import responses
from click.testing import CliRunner

from tests.github.conftest import GATE_REPORT, FakeGitHub
from traingate import gha
from traingate.cli import cli

HEAD = "data/20240501-101500"
TOKEN = "ghs_0123456789abcdefSECRET"


@pytest.fixture
def project(workspace: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    cfg, _ = workspace
    config = cfg.base_dir / "traingate.yml"
    config.write_text("project: water-meters\npr:\n  status_context: ci/traingate-gate\n")
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "out"))
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary"))
    monkeypatch.chdir(cfg.base_dir)
    return config


def _outputs(tmp_path: Path) -> dict[str, str]:
    out = tmp_path / "out"
    return gha.read_outputs(out) if out.exists() else {}


@pytest.fixture
def github(fake_github: FakeGitHub, forge_factory: Any, monkeypatch: pytest.MonkeyPatch) -> FakeGitHub:
    """The fake GitHub, with every `pr` command's forge made by `forge_factory`."""
    # No throttling and a recorded sleep; the forge is still the real PyGithub one.
    monkeypatch.setattr("traingate.github.forge.make_forge", forge_factory)
    return fake_github


def test_create_in_actions_masks_token_and_writes_outputs(
    project: Path,
    tmp_path: Path,
    github: FakeGitHub,
) -> None:
    env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_REPOSITORY": "o/r",
        "GITHUB_REF_NAME": HEAD,
    }
    result = CliRunner().invoke(cli, ["--config", str(project), "pr", "create"], env=env)
    assert result.exit_code == 0, result.output
    assert f"::add-mask::{TOKEN}" in result.stdout
    assert result.output.count(TOKEN) == 1  # only inside the mask command
    outputs = _outputs(tmp_path)
    assert outputs["operation"] == "created"
    assert outputs["pr_number"] == "1"
    assert outputs["head_sha"] == github.branches[HEAD]
    assert github.statuses[0]["context"] == "ci/traingate-gate"
    assert "Pull request created" in (tmp_path / "summary").read_text()


def test_create_with_repository_but_no_token_is_exit_2(project: Path, tmp_path: Path) -> None:
    with responses.RequestsMock():
        result = CliRunner().invoke(
            cli, ["--config", str(project), "pr", "create", "--head", HEAD], env={"GITHUB_REPOSITORY": "o/r"}
        )
    assert result.exit_code == 2
    assert "GITHUB_TOKEN is not set" in result.stderr
    assert "pull-requests: write" in result.stderr
    assert "pr_number" not in _outputs(tmp_path)


def test_render_only_is_exit_0_without_network(project: Path, tmp_path: Path) -> None:
    with responses.RequestsMock():
        result = CliRunner().invoke(
            cli, ["--config", str(project), "--json", "pr", "create", "--render-only"]
        )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["ok"] is True and payload["outputs"]["operation"] == "rendered"
    assert Path(payload["outputs"]["body_path"]).read_text().count("```mermaid") == 3


def test_not_improved_is_exit_1(project: Path, tmp_path: Path, workspace: Any) -> None:
    _, reports = workspace
    (reports / "gate-report.json").write_text(json.dumps(dict(GATE_REPORT, improved=False)))
    result = CliRunner().invoke(cli, ["--config", str(project), "pr", "create", "--render-only"])
    assert result.exit_code == 1
    assert "improved=false" in result.stderr
    assert _outputs(tmp_path) == {}


def test_create_403_is_exit_1_with_the_setting(
    project: Path,
    tmp_path: Path,
    github: FakeGitHub,
) -> None:
    github.actions_may_create_prs = False
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r", "GITHUB_REF_NAME": HEAD}
    result = CliRunner().invoke(cli, ["--config", str(project), "pr", "create"], env=env)
    assert result.exit_code == 1
    assert "Allow GitHub Actions to create and approve pull requests" in result.stderr


def test_automerge_command(
    project: Path,
    tmp_path: Path,
    github: FakeGitHub,
) -> None:
    github.open_pull(HEAD, mergeable_state="clean")
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r"}
    args = ["--config", str(project), "pr", "automerge", "--pr", "1", "--method", "merge", "--delete-branch"]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert _outputs(tmp_path) == {"pr_number": "1", "merge_state": "merged", "method": "merge"}
    assert github.merges[0]["merge_method"] == "merge"
    assert github.deleted == [HEAD]


def test_automerge_disabled_is_exit_1(
    project: Path,
    tmp_path: Path,
    github: FakeGitHub,
) -> None:
    github.open_pull(HEAD)
    github.auto_merge_allowed = False
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r"}
    result = CliRunner().invoke(cli, ["--config", str(project), "pr", "automerge", "--pr", "1"], env=env)
    assert result.exit_code == 1
    assert "Allow auto-merge" in result.stderr
    assert "merge_state" not in _outputs(tmp_path)


def test_comment_command(
    project: Path,
    tmp_path: Path,
    github: FakeGitHub,
    workspace: Any,
) -> None:
    _, reports = workspace
    failed = {"status": "fail", "counts": {}, "errors": [{"code": "no_data", "path": "", "message": "empty"}]}
    (reports / "data-report.json").write_text(json.dumps(failed))
    env = {"GITHUB_TOKEN": TOKEN, "GITHUB_REPOSITORY": "o/r", "GITHUB_SHA": "f" * 40}
    result = CliRunner().invoke(cli, ["--config", str(project), "pr", "comment"], env=env)
    assert result.exit_code == 0, result.output
    assert _outputs(tmp_path)["operation"] == "created"
    assert "`no_data`" in next(iter(github.comments.values()))["body"]


def test_missing_token_is_reported_before_the_reports_are_read(tmp_path: Path) -> None:
    """Configuration first: without a token the step is exit 2 even when no report exists yet."""
    cfg = tmp_path / "traingate.yml"
    cfg.write_text("project: p\n")
    result = CliRunner().invoke(
        cli, ["--config", str(cfg), "pr", "create", "--head", HEAD], env={"GITHUB_REPOSITORY": "o/r"}
    )
    assert result.exit_code == 2, result.output
    assert "GITHUB_TOKEN is not set" in result.stderr
