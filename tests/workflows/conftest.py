"""Shared loaders for the workflow tests: every YAML file we ship, parsed once."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from tests.workflows.jobgraph import load_workflow

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
TEMPLATES = ROOT / "workflows-templates"
STAGES = ("merge-and-validate", "start-infra", "train", "stop-infra", "create-pr", "auto-merge")
# stage -> the CLI command its action runs
COMMANDS = {
    "merge-and-validate": "data merge",
    "start-infra": "infra start",
    "train": "train",
    "stop-infra": "infra stop",
    "create-pr": "pr create",
    "auto-merge": "pr automerge",
}
# Our own owner/name; internal references use one release ref (scripts/set_release_ref.py).
OWN = "traingate/traingate"


@cache
def load(path: Path) -> dict[str, Any]:
    return load_workflow(path)


def action(stage: str | None) -> dict[str, Any]:
    return load(ROOT / "action.yml") if stage is None else load(ROOT / "actions" / stage / "action.yml")


def shipped_yaml() -> list[Path]:
    files = sorted(WORKFLOWS.glob("*.yml")) + sorted(TEMPLATES.glob("*.yml"))
    return [*files, ROOT / "action.yml", *sorted((ROOT / "actions").glob("*/action.yml"))]


# `pr` commands write enumerated outputs; test_output_values runs them against the GitHub fake.
from tests.github.conftest import fake_github, forge_factory, sleeps, workspace  # noqa: E402, F401
