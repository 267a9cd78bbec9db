"""The import rule of docs/architecture.md, checked on the source (issue #13).

Three floors:

- **core** — the top-level modules that are neither a stage nor a composer (`errors`, `config`,
  `git`, `contracts`, `metrics`, `gha`, `runtime`, `report`, ...): they import no stage and no
  composer.
- **stages** — `data`, `infra`, `train`, `tracking`, `github`, `templates`: each imports the core
  and itself, never another stage and never a composer.
- **composers** — `cli.py`, `pipeline/`, `demo.py`, `doctor.py`: the only modules that put
  stages together.

And only `cli.py` imports click: the core and the stages can be driven by anything (a test, the
demo, another tool) without a command line.

Every import counts, including ones inside functions and under `TYPE_CHECKING`: a lazy import is
still a dependency, only a cheaper one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "traingate"
STAGES = frozenset({"data", "infra", "train", "tracking", "github", "templates"})
COMPOSERS = frozenset({"cli", "pipeline", "demo", "doctor", "__main__"})


def _floor(top: str) -> str:
    if top in STAGES:
        return "stage"
    if top in COMPOSERS:
        return "composer"
    return "core"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(["traingate", *parts]), path))
    return found


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """Every `traingate.*` module (and `click`) that `module` imports, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    names: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            names.append((target, node.lineno))
            # `from traingate import data` imports the stage package itself.
            if target == "traingate":
                names += [(f"traingate.{alias.name}", node.lineno) for alias in node.names]
    return [
        (n, line) for n, line in names if n == "click" or n.startswith("click.") or n.startswith("traingate.")
    ]


def violations() -> list[str]:
    found = []
    for module, path in _modules():
        parts = module.split(".")
        if len(parts) < 2:
            continue
        top = parts[1]
        floor = _floor(top)
        rel = path.relative_to(SRC.parent)
        for target, line in _imports(module, path):
            if target.split(".")[0] == "click":
                if module != "traingate.cli":
                    found.append(f"{rel}:{line} imports click (only cli.py may)")
                continue
            other = target.split(".")[1] if target.count(".") else ""
            if not other or other == top:
                continue
            other_floor = _floor(other)
            if other_floor == "composer" and floor != "composer":
                found.append(f"{rel}:{line} ({floor}) imports the composer {target}")
            elif other_floor == "stage" and floor == "core":
                found.append(f"{rel}:{line} (core) imports the stage {target}")
            elif other_floor == "stage" and floor == "stage":
                found.append(f"{rel}:{line} (stage {top}) imports the stage {target}")
    return found


def _without_line(entry: str) -> str:
    path, rest = entry.split(":", 1)
    return path + " " + rest.split(" ", 1)[1]


def test_the_rule_finds_what_it_is_meant_to_find(tmp_path: Path) -> None:
    """The checker itself: a stage importing a stage, a relative import reaching a composer and a
    lazy click import are all caught (a rule that cannot fail proves nothing)."""
    src = tmp_path / "traingate"
    (src / "train").mkdir(parents=True)
    (src / "train" / "bad.py").write_text(
        "from traingate.tracking.gate import x\nfrom .. import pipeline\n\ndef f():\n    import click\n",
        encoding="utf-8",
    )
    got = {t for t, _ in _imports("traingate.train.bad", src / "train" / "bad.py")}
    assert got == {"traingate.tracking.gate", "traingate.pipeline", "click"}


def test_no_stage_imports_another_stage_and_only_cli_imports_click() -> None:
    found = sorted({_without_line(v) for v in violations()})
    assert found == [], "violations of the import rule (docs/architecture.md):\n" + "\n".join(found)


@pytest.mark.parametrize("core", ["git", "contracts", "metrics", "runtime", "gha", "errors", "config"])
def test_the_shared_ground_is_core(core: str) -> None:
    """What several stages share lives below them (moving it into a stage would break the rule)."""
    assert (SRC / f"{core}.py").is_file()
    assert _floor(core) == "core"


def test_no_function_in_the_package_is_longer_than_60_lines() -> None:
    """#13 split the long steps (merge_step was 194 lines, train_step 163, apply_rules 162)
    into named phases; this keeps them short. Complexity is ruff's (C90, max 12)."""
    long = []
    for module, path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > 60:
                    long.append(f"{module}.{node.name}: {size} lines")
    assert long == [], "\n".join(long)
