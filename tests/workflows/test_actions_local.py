"""Run each composite action's `traingate` step on this machine, the way the runner would.

The step's `env:` is interpolated from the inputs (and their defaults) with the expression
evaluator, `run:` goes through bash in `working-directory`, and `$RUNNER_TEMP/traingate-venv`
points at this checkout's venv (the setup steps need the network). So the exact YAML we ship
is exercised: input -> TRAINGATE_* -> click option -> stage -> $GITHUB_OUTPUT -> declared
outputs. The happy path runs the water-meter example on the local backends; the bad-input cases
mirror the expected-failure steps of .github/workflows/self-test.yml.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.workflows.conftest import ROOT, action
from tests.workflows.expr import Context, interpolate
from traingate import gha

VENV = Path(sys.executable).parent.parent


@pytest.fixture
def runner_temp(tmp_path: Path) -> Path:
    temp = tmp_path / "runner-temp"
    temp.mkdir()
    (temp / "traingate-venv").symlink_to(VENV)
    return temp


def run_action(
    stage: str | None,
    inputs: dict[str, str],
    runner_temp: Path,
    workspace: Path,
    runner_env: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    """Run the action's `traingate` step; `runner_env` adds what the runner sets (GITHUB_*)."""
    act = action(stage)
    values: dict[str, Any] = {n: str(s.get("default", "")) for n, s in act["inputs"].items()}
    values = {n: ("" if "${{" in v else v) for n, v in values.items()}  # github.token: none here
    values.update(inputs)
    ctx = Context(values={"inputs": values, "github": {"token": ""}})
    step = act["runs"]["steps"][-1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINGATE_", "GITHUB_"))}
    env.update({k: interpolate(str(v), ctx) for k, v in (step.get("env") or {}).items()})
    out = runner_temp / f"output-{stage}"
    out.write_text("")
    env.update({"RUNNER_TEMP": str(runner_temp), "GITHUB_OUTPUT": str(out), "PATH": os.environ["PATH"]})
    env.update(runner_env or {})
    cwd = workspace / interpolate(step.get("working-directory", "."), ctx)
    proc = subprocess.run(
        ["bash", "-e", "-c", step["run"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    return proc.returncode, gha.read_outputs(out), proc.stdout + proc.stderr


BAD_INPUTS = [
    ("merge-and-validate", {"on-conflict": "keep-both"}, "keep-both"),
    ("stop-infra", {"no-wait": "yes please"}, "yes please"),
    ("auto-merge", {"pr-number": "seven"}, "seven"),
    ("train", {"config": "no-such-traingate.yml"}, "no-such-traingate.yml"),
    (None, {"command": "no-such-command"}, "no-such-command"),
]


@pytest.mark.parametrize(("stage", "inputs", "named"), BAD_INPUTS, ids=[str(b[0]) for b in BAD_INPUTS])
def test_bad_input_fails_the_step_with_exit_2(
    stage: str | None, inputs: dict[str, str], named: str, runner_temp: Path, tmp_path: Path
) -> None:
    code, outputs, log = run_action(stage, inputs, runner_temp, tmp_path)
    assert code == 2, log
    assert named in log  # the message names the value that failed
    assert "improved" not in outputs and outputs.get("validation_passed") != "true"


def test_root_action_args_are_split_but_never_evaluated(runner_temp: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    args = f"'{tmp_path}/a dir' --project 'two words' --region \"$(touch {marker}); touch {marker}\""
    code, _, log = run_action(None, {"command": "init", "args": args}, runner_temp, tmp_path)
    assert code == 2, log  # `two words` is not a valid project name: the quotes grouped it
    assert "two words" in log
    assert not marker.exists()


@pytest.mark.slow
def test_stage_actions_on_the_example_write_exactly_their_declared_outputs(
    runner_temp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    example = tmp_path / "water-meters"
    shutil.copytree(ROOT / "examples" / "water-meters", example)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=example, check=True)
    subprocess.run([*git, "add", "."], cwd=example, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "example"], cwd=example, check=True)
    subprocess.run(
        [sys.executable, "generate.py", "data/new", "--pairs", "8", "--seed", "1"], cwd=example, check=True
    )
    wd = {"working-directory": "water-meters"}
    # train.command is `python train.py`: the job's python must have numpy, as in self-test.yml.
    monkeypatch.setenv("PATH", f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")
    results = {}
    for stage, inputs in [
        ("merge-and-validate", {"no-push": "true"}),
        ("start-infra", {}),
        ("train", {}),
        ("stop-infra", {}),
        ("create-pr", {"render-only": "true"}),
    ]:
        code, outputs, log = run_action(stage, {**wd, **inputs}, runner_temp, tmp_path)
        assert code == 0, f"{stage}: {log}"
        results[stage] = outputs
        declared = set(action(stage)["outputs"])
        assert set(outputs) <= declared, f"{stage} writes undeclared {set(outputs) - declared}"
        assert set(outputs) == declared, f"{stage} never writes {declared - set(outputs)}"
    assert results["merge-and-validate"]["validation_passed"] == "true"
    assert results["train"]["improved"] == "true"  # the first model has no champion to beat
    assert results["create-pr"]["operation"] == "rendered"
