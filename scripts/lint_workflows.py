"""Lint every YAML file we ship: workflows, composite actions, the copy-in templates, and the
usage snippets in README.md and docs/*.md.

actionlint (workflows), zizmor --offline with this repository's policy (zero findings),
zizmor --persona pedantic without any config (only the findings justified in PEDANTIC_JUSTIFIED)
and check-jsonschema against GitHub's workflow/action/dependabot schemas. Exits non-zero on any
finding.

Snippets: every fenced ```yaml block that contains `uses:` is linted like a shipped workflow.
A complete workflow (`on:` + `jobs:`) is linted as is; a list of steps is wrapped in a minimal
hardened workflow first, so a README example cannot teach an unpinned action or an expression
inside `run:`. Usage: .venv/bin/python scripts/lint_workflows.py [--only-snippets]
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ZIZMOR_CONFIG = ROOT / ".github" / "zizmor.yml"
SNIPPET_SOURCES = ("README.md", "docs/*.md", "examples/*/README.md")
_FENCE = re.compile(r"^```ya?ml[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)

_STEPS_WRAPPER = """name: snippet
on: push
permissions: {}
jobs:
  snippet:
    runs-on: ubuntu-latest
    timeout-minutes: 10
    permissions:
      contents: read  # the snippet's steps read the repository
    steps:
"""


def _files() -> tuple[list[Path], list[Path]]:
    workflows = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
    workflows += sorted((ROOT / "workflows-templates").glob("*.y*ml"))
    actions = sorted(ROOT.glob("action.y*ml")) + sorted((ROOT / "actions").glob("*/action.y*ml"))
    return workflows, actions


def extract_snippets(markdown: str) -> list[str]:
    """Fenced yaml blocks that use an action or a reusable workflow."""
    return [m.group(1) for m in _FENCE.finditer(markdown) if re.search(r"^\s*-?\s*uses:", m.group(1), re.M)]


def as_workflow(snippet: str) -> str | None:
    """The snippet as a complete workflow, or None when it is neither a workflow nor steps."""
    doc = yaml.safe_load(snippet)
    if isinstance(doc, dict) and "jobs" in doc and ("on" in doc or True in doc):
        return snippet
    if isinstance(doc, list) and all(isinstance(s, dict) for s in doc):
        body = "".join("      " + line + "\n" if line else "\n" for line in snippet.splitlines())
        return _STEPS_WRAPPER + body
    return None


def snippet_files(out_dir: Path) -> list[Path]:
    """Write each README/docs snippet as a workflow file under out_dir; name records its origin."""
    written: list[Path] = []
    sources = sorted({p for pattern in SNIPPET_SOURCES for p in ROOT.glob(pattern)})
    for source in sources:
        for i, snippet in enumerate(extract_snippets(source.read_text(encoding="utf-8")), 1):
            workflow = as_workflow(snippet)
            if workflow is None:
                continue
            stem = re.sub(r"[^A-Za-z0-9]+", "-", str(source.relative_to(ROOT))).strip("-")
            target = out_dir / ".github" / "workflows" / f"{stem}-{i}.yml"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(workflow, encoding="utf-8")
            written.append(target)
    return written


def _run(cmd: list[str], cwd: Path = ROOT) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.call(cmd, cwd=cwd)


def lint(workflows: list[Path], actions: list[Path], cwd: Path = ROOT) -> int:
    """Run the three linters; the number of tools that reported findings."""
    failures = 0
    if workflows:
        failures += _run([str(BIN / "actionlint"), *map(str, workflows)], cwd) != 0
        schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows"]
        failures += _run([*schema, *map(str, workflows)], cwd) != 0
    if actions:
        schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-actions"]
        failures += _run([*schema, *map(str, actions)], cwd) != 0
    if workflows or actions:
        zizmor = [str(BIN / "zizmor"), "--offline", "--no-progress", "--config", str(ZIZMOR_CONFIG)]
        failures += _run([*zizmor, *map(str, workflows + actions)], cwd) != 0
    return failures


# `zizmor --persona pedantic` with no configuration at all (what an outside auditor runs) may
# report only these, each justified in docs/workflows.md ("Pedantic zizmor"): (audit, the
# flagged text). Our own references are pinned to a release tag on purpose: a commit cannot name
# its own SHA, and release.yml rewrites them to the exact release (`@vX.Y.Z`) on the release commit.
PEDANTIC_JUSTIFIED: dict[str, re.Pattern[str]] = {
    "unpinned-uses": re.compile(r"traingate/traingate(/[\w./-]+)?@v\d+(\.\d+\.\d+)?"),
}


def pedantic_findings(files: list[Path], cwd: Path = ROOT) -> list[tuple[str, str, str]]:
    """(audit, file, flagged text) for every pedantic zizmor finding, without our config."""
    cmd = [str(BIN / "zizmor"), "--offline", "--no-progress", "--persona", "pedantic", "--no-config"]
    cmd += ["--format", "json", *map(str, files)]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode not in (0, *range(10, 15)):  # 10-14: findings of some severity
        raise RuntimeError(f"zizmor failed (exit {proc.returncode}): {proc.stderr.strip()}")
    found = []
    for finding in json.loads(proc.stdout or "[]"):
        primary = next(
            (loc for loc in finding["locations"] if loc["symbolic"]["kind"] == "Primary"),
            finding["locations"][0],
        )
        path = primary["symbolic"]["key"].get("Local", {}).get("verbatim_path", "?")
        found.append((finding["ident"], path, primary["concrete"]["feature"].strip()))
    return found


def unjustified(findings: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [
        f for f in findings if not (f[0] in PEDANTIC_JUSTIFIED and PEDANTIC_JUSTIFIED[f[0]].fullmatch(f[2]))
    ]


def pedantic(files: list[Path]) -> int:
    """1 when zizmor, pedantic and without our config, reports anything not justified."""
    print(f"+ zizmor --persona pedantic --no-config ({len(files)} files)", flush=True)
    found = pedantic_findings(files)
    left = unjustified(found)
    for ident, path, text in left:
        print(f"{path}: {ident}: {text!r} is neither fixed nor justified", flush=True)
    print(f"{len(found)} pedantic finding(s), {len(found) - len(left)} justified", flush=True)
    return 1 if left else 0


def main(argv: list[str]) -> int:
    workflows, actions = ([], []) if "--only-snippets" in argv else _files()
    failures = lint(workflows, actions)
    dependabot = ROOT / ".github" / "dependabot.yml"
    if workflows and dependabot.exists():
        schema = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.dependabot"]
        failures += _run([*schema, str(dependabot)]) != 0
    if workflows or actions:
        failures += pedantic(workflows + actions + ([dependabot] if dependabot.exists() else []))
    # Internal `uses: traingate/traingate/...@ref` must all name one release (set_release_ref.py).
    failures += _run([sys.executable, str(ROOT / "scripts" / "set_release_ref.py"), "--check"]) != 0
    with tempfile.TemporaryDirectory(prefix="traingate-snippets-") as tmp:
        snippets = snippet_files(Path(tmp))
        print(f"{len(snippets)} usage snippet(s) from README.md and docs/", flush=True)
        if snippets:
            failures += lint(snippets, [], cwd=Path(tmp))
    if not (workflows or actions or snippets):
        print("no workflow or action files yet")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
