"""Enumerated outputs: the values the code writes are the values the YAML and the docs declare.

Issue #12 case 8: `pr automerge` wrote `merge_state=auto_merge_enabled` while `action.yml` and
docs/workflows.md declared `enabled|merged|off`, so a caller's `if: ... == 'enabled'` never
held. `traingate.outputs.VALUES` is the one list; this file holds every declaration to it and
runs each command path that writes each value (the e2e harness checks every value it sees too).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.github.conftest import FakeGitHub
from tests.workflows.conftest import ROOT, TEMPLATES, WORKFLOWS, load
from traingate import gha
from traingate.outputs import BOOLEAN, OUTPUTS, VALUES, check_values, values_of

# Stage actions: command -> folder under actions/.
STAGE_ACTIONS = {
    "data merge": "merge-and-validate",
    "infra start": "start-infra",
    "infra stop": "stop-infra",
    "train": "train",
    "pr create": "create-pr",
    "pr automerge": "auto-merge",
}
_TOKEN = re.compile(r"`([a-z_][a-z_-]*)`")  # `on-demand` (infra start's market) has a hyphen


def _declared(description: str) -> set[str]:
    return set(_TOKEN.findall(description))


def _expected(name: str, commands: list[str]) -> set[str]:
    values: set[str] = set()
    for command in commands:
        values |= set(values_of(command, name) or ())
    return values


def _assert_declares(where: str, name: str, description: str, expected: set[str]) -> None:
    if expected == set(BOOLEAN):
        # "`true` when ..." says what `false` means; it must not promise a third value.
        assert re.search(r"\btrue\b", description), f"{where}: {name} should say when it is true"
        assert _declared(description) <= expected, f"{where}: {name}: {description}"
        return
    assert _declared(description) == expected, (
        f"{where}: output {name!r} declares {sorted(_declared(description))}, "
        f"the code writes {sorted(expected)} (traingate.outputs.VALUES)"
    )


def test_every_enumerated_output_is_a_real_output() -> None:
    for command, names in VALUES.items():
        assert command in OUTPUTS, command
        assert set(names) <= set(OUTPUTS[command]) | set(OUTPUTS.get("gate", ())), command


@pytest.mark.parametrize("command", sorted(STAGE_ACTIONS))
def test_stage_actions_declare_the_values(command: str) -> None:
    doc = load(ROOT / "actions" / STAGE_ACTIONS[command] / "action.yml")
    commands = [command, "gate"] if command == "train" else [command]
    for name, spec in doc["outputs"].items():
        expected = _expected(name, commands)
        if expected:
            _assert_declares(f"actions/{STAGE_ACTIONS[command]}", name, spec["description"], expected)


def test_root_action_declares_the_union_over_commands() -> None:
    doc = load(ROOT / "action.yml")
    for name, spec in doc["outputs"].items():
        expected = _expected(name, [c for c in OUTPUTS if name in OUTPUTS[c]])
        if expected:
            _assert_declares("action.yml", name, spec["description"], expected)


def test_reusable_workflows_declare_the_values() -> None:
    stage_of = {v: k for k, v in STAGE_ACTIONS.items()}
    for path in [*sorted(WORKFLOWS.glob("*.yml")), *sorted(TEMPLATES.glob("*.yml"))]:
        call = (load(path).get("on") or {}).get("workflow_call") or {}
        for name, spec in (call.get("outputs") or {}).items():
            command = stage_of.get(path.stem)
            commands = [command] if command else [c for c in OUTPUTS if name in OUTPUTS[c]]
            expected = _expected(name, commands + (["gate"] if command == "train" else []))
            if expected:
                _assert_declares(path.name, name, spec["description"], expected)


def test_docs_declare_the_values() -> None:
    for doc in ("docs/workflows.md", "docs/github.md"):
        for line in (ROOT / doc).read_text(encoding="utf-8").splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            # Output tables have two columns (name | description); input tables have four.
            if len(cells) != 2 or not re.fullmatch(r"`[a-z_]+`", cells[0]):
                continue
            name = cells[0].strip("`")
            expected = _expected(name, [c for c in OUTPUTS if name in OUTPUTS[c]])
            if expected:
                _assert_declares(doc, name, cells[-1], expected)
    # The command table of docs/github.md lists the values in parentheses.
    text = (ROOT / "docs" / "github.md").read_text(encoding="utf-8")
    for command, name in (
        ("pr create", "operation"),
        ("pr automerge", "merge_state"),
        ("pr comment", "operation"),
    ):
        row = next(line for line in text.splitlines() if line.startswith(f"| `traingate {command}`"))
        listed = re.search(rf"`{name}` \(([^)]*)\)", row)
        assert listed, row
        assert _declared(listed.group(1)) == set(values_of(command, name) or ()), row


# ------------------------------------------------------------------ the code paths
def _pr_paths(fake: FakeGitHub, factory: Any, cfg: Any, reports: Path) -> list[tuple[str, Any]]:
    from traingate.gha import ActionsContext
    from traingate.github.automerge import automerge_step
    from traingate.github.status import comment_step
    from traingate.pipeline.pr import create_step

    actions = ActionsContext(repository="o/r", ref_name="data/20240501-101500", sha="f" * 40)
    out: list[tuple[str, Any]] = []

    def create(**kw: Any) -> Any:
        args = {"token": "t", "repo": None, "head": None, "base": None, "data_report": None}
        args |= {"gate_report": None, "metrics_log": None, **kw}
        return create_step(cfg, forge_factory=factory, actions=actions, **args)

    out.append(("pr create", create(render_only=True)))  # rendered
    out.append(("pr create", create()))  # created
    out.append(("pr create", create()))  # updated
    out.append(("pr create", create(head="main")))  # skipped: the base branch itself

    def automerge(number: int | None, method: str | None = None) -> Any:
        return automerge_step(
            cfg, "t", "o/r", number, method, None, forge_factory=factory, actions=ActionsContext()
        )

    out.append(("pr automerge", automerge(1, "off")))
    out.append(("pr automerge", automerge(1)))  # auto_merge_enabled (squash)
    for method in ("merge", "rebase"):
        fake.branches[f"data/{method}"] = "1" * 40
        pr = fake.open_pull(head=f"data/{method}", mergeable_state="clean")
        out.append(("pr automerge", automerge(pr["number"], method)))  # merged
    out.append(("pr automerge", automerge(pr["number"], "rebase")))  # already_merged

    failed = reports / "failed.json"
    failed.write_text(json.dumps({"status": "fail", "counts": {}, "errors": [], "warnings": []}))
    for _ in range(2):  # created, then updated on the re-run
        posted = comment_step(cfg, "t", None, None, failed, forge_factory=factory, actions=actions)
        out.append(("pr comment", posted))
    return out


def test_every_enumerated_value_is_written_by_a_path_and_nothing_else_is(
    fake_github: FakeGitHub,
    forge_factory: Any,
    workspace: Any,
) -> None:
    cfg, reports = workspace
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for command, result in _pr_paths(fake_github, forge_factory, cfg, reports):
        written = {k: gha.format_value(v) for k, v in result.outputs.items()}
        assert check_values(command, written) == [], (command, written)
        for name, value in written.items():
            if values_of(command, name) is not None:
                seen[(command, name)].add(value)
    for command in ("pr create", "pr automerge", "pr comment"):
        for name, allowed in VALUES[command].items():
            assert seen[(command, name)] == set(allowed), (command, name)


def test_check_values_names_the_offender() -> None:
    assert check_values("pr automerge", {"merge_state": "enabled"}) == [
        "pr automerge wrote merge_state='enabled'; declared: auto_merge_enabled, merged, already_merged, off"
    ]
    assert check_values("gate", {"improved": "true", "baseline": "3"}) == []
    assert check_values("train", {"improved": "maybe"})  # train --gate writes the gate's outputs
