"""Lint every YAML file we ship: workflows, composite actions and the copy-in templates.

actionlint (workflows), zizmor --offline (workflows and actions, zero findings) and
check-jsonschema against GitHub's workflow/action schemas. Exits non-zero on any finding.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _files() -> tuple[list[Path], list[Path]]:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    workflows += sorted((ROOT / "workflows-templates").glob("*.y*ml"))
    actions = sorted(ROOT.glob("action.y*ml")) + sorted((ROOT / "actions").glob("*/action.y*ml"))
    return workflows, actions


def _run(cmd: list[str]) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call(cmd, cwd=ROOT)


def main() -> int:
    workflows, actions = _files()
    failures = 0
    if workflows:
        failures += _run([str(BIN / "actionlint"), *map(str, workflows)]) != 0
        failures += (
            _run(
                [
                    str(BIN / "check-jsonschema"),
                    "--builtin-schema",
                    "vendor.github-workflows",
                    *map(str, workflows),
                ]
            )
            != 0
        )
    if actions:
        failures += (
            _run(
                [
                    str(BIN / "check-jsonschema"),
                    "--builtin-schema",
                    "vendor.github-actions",
                    *map(str, actions),
                ]
            )
            != 0
        )
    if workflows or actions:
        failures += (
            _run(
                [
                    str(BIN / "zizmor"),
                    "--offline",
                    "--no-progress",
                    "--config",
                    str(ROOT / ".github" / "zizmor.yml"),
                    *map(str, workflows + actions),
                ]
            )
            != 0
        )
    if not workflows and not actions:
        print("no workflow or action files yet")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
