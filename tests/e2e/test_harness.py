"""The interpreter itself: it must refuse what it does not model, and the YAML<->CLI contract it
relies on (every TRAINGATE_* variable an action sets is read by the command it runs)."""

from __future__ import annotations

import shlex
from pathlib import Path

import click
import pytest
import yaml

from tests.e2e.harness import (
    PIPELINE,
    REPO,
    TRAINGATE_EXE,
    HarnessError,
    PipelineRun,
    World,
    _lca,
    _uses_local,
)
from tests.workflows.jobgraph import load_workflow

ACTIONS = sorted((REPO / "actions").glob("*/action.yml"))


def test_uses_resolves_both_spellings_to_this_checkout() -> None:
    for uses in ("./.github/workflows/train.yml", "traingate/traingate/.github/workflows/train.yml@v1"):
        assert _uses_local(uses, "workflow") == REPO / ".github" / "workflows" / "train.yml"
    for uses in ("./actions/train", "traingate/traingate/actions/train@main"):
        assert _uses_local(uses, "action") == REPO / "actions" / "train" / "action.yml"
    assert _uses_local("someone/else/action@v1", "action") is None


def test_artifact_upload_strips_the_common_folder() -> None:
    files = [Path("/w/.traingate/reports/a.json"), Path("/w/.traingate/reports/b.json")]
    assert _lca(files) == Path("/w/.traingate/reports")
    assert _lca(files[:1]) == Path("/w/.traingate/reports")


def _world(tmp_path: Path) -> World:
    return World(bare=tmp_path / "none.git", root=tmp_path, env={})


def test_an_undeclared_input_is_a_harness_error_not_a_silent_pass(tmp_path: Path) -> None:
    doc = load_workflow(PIPELINE)
    doc["jobs"] = {"train": {"uses": "./.github/workflows/train.yml", "with": {"no-such-input": "x"}}}
    path = tmp_path / "wf.yml"
    path.write_text(yaml.safe_dump({**{k: v for k, v in doc.items() if k != "on"}, "on": doc["on"]}))
    run = PipelineRun(_world(tmp_path), branch="data/x", sha="0" * 40, workflow=path)
    with pytest.raises(HarnessError, match="no-such-input"):
        run.step()


def test_an_unknown_workflow_is_a_harness_error(tmp_path: Path) -> None:
    path = tmp_path / "wf.yml"
    path.write_text(
        yaml.safe_dump(
            {"on": {"workflow_call": {}}, "jobs": {"x": {"uses": "other/repo/.github/workflows/y.yml@v1"}}}
        )
    )
    run = PipelineRun(_world(tmp_path), branch="data/x", sha="0" * 40, workflow=path)
    with pytest.raises(HarnessError, match="cannot resolve"):
        run.step()


def _command(argv: list[str]) -> click.Command:
    from traingate.cli import cli

    cmd: click.Command = cli
    for token in argv:
        assert isinstance(cmd, click.Group), f"{argv}: {token} is not a subcommand"
        sub = cmd.commands.get(token)
        assert sub is not None, f"no command {token!r} in {argv}"
        cmd = sub
    return cmd


def _envvars(cmd: click.Command) -> set[str]:
    names: set[str] = set()
    for param in cmd.params:
        env = getattr(param, "envvar", None)
        names.update([env] if isinstance(env, str) else list(env or []))
    return names


@pytest.mark.parametrize("path", ACTIONS, ids=[p.parent.name for p in ACTIONS])
def test_every_traingate_variable_an_action_sets_is_read_by_its_command(path: Path) -> None:
    from traingate.cli import cli

    action = yaml.safe_load(path.read_text(encoding="utf-8"))
    steps = [s for s in action["runs"]["steps"] if TRAINGATE_EXE in s.get("run", "")]
    assert len(steps) == 1, f"{path}: one traingate call per action"
    step = steps[0]
    tokens = shlex.split(step["run"])
    argv = tokens[next(i for i, t in enumerate(tokens) if t.endswith(TRAINGATE_EXE)) + 1 :]
    readable = _envvars(cli) | _envvars(_command(argv))
    set_by_action = {k for k in step.get("env", {}) if k.startswith("TRAINGATE_")}
    assert set_by_action <= readable, f"{path}: {sorted(set_by_action - readable)} reach no option of {argv}"
