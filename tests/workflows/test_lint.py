"""The workflow linters run clean on everything we ship, and actually catch what they must."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from tests.workflows.conftest import ROOT

spec = importlib.util.spec_from_file_location("lint_workflows", ROOT / "scripts" / "lint_workflows.py")
assert spec and spec.loader
lint_workflows = importlib.util.module_from_spec(spec)
sys.modules["lint_workflows"] = lint_workflows
spec.loader.exec_module(lint_workflows)

GOOD_STEPS = """```yaml
- uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
  with:
    persist-credentials: false
- uses: traingate/traingate/actions/train@main
```
"""


def test_everything_we_ship_lints_clean(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_workflows.main([]) == 0, capsys.readouterr().out


def test_snippet_extraction_is_tolerant() -> None:
    markdown = (
        "intro\n```yaml\nproject: x\n```\n"  # a config block: no `uses:`, not a snippet
        + GOOD_STEPS
        + "```yml\non: push\npermissions: {}\njobs:\n  a:\n    uses: o/r/.github/workflows/w.yml@v1\n```\n"
        + "```bash\nuses: not yaml\n```\n"
    )
    snippets = lint_workflows.extract_snippets(markdown)
    assert len(snippets) == 2
    wrapped = lint_workflows.as_workflow(snippets[0])
    assert wrapped is not None and "jobs:" in wrapped and "persist-credentials" in wrapped
    assert lint_workflows.as_workflow(snippets[1]) == snippets[1]
    assert lint_workflows.as_workflow("uses: x\nwith: {}\n") is None  # a fragment we cannot place


def _lint_one(tmp_path: Path, workflow: str) -> int:
    target = tmp_path / ".github" / "workflows" / "w.yml"
    target.parent.mkdir(parents=True)
    target.write_text(workflow)
    return lint_workflows.lint([target], [], cwd=tmp_path)


BAD = {
    "template injection": """
      - run: echo "${{ github.event.head_commit.message }}"
""",
    "unpinned third-party action": """
      - uses: aws-actions/configure-aws-credentials@v4
        with: {aws-region: us-east-1}
""",
    "credentials left on disk": """
      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2
""",
}


@pytest.mark.parametrize("case", list(BAD))
def test_linters_catch_insecure_workflows(tmp_path: Path, case: str) -> None:
    workflow = lint_workflows._STEPS_WRAPPER + BAD[case].lstrip("\n")
    assert _lint_one(tmp_path, workflow) > 0, case


def test_a_clean_wrapped_snippet_passes(tmp_path: Path) -> None:
    (snippet,) = lint_workflows.extract_snippets(GOOD_STEPS)
    assert _lint_one(tmp_path, lint_workflows.as_workflow(snippet)) == 0


def test_readme_snippets_are_linted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_root = tmp_path / "repo"
    (fake_root / "docs").mkdir(parents=True)
    (fake_root / "README.md").write_text("# x\n\n" + GOOD_STEPS)
    leaky = GOOD_STEPS.replace("persist-credentials: false", "fetch-depth: 1")
    (fake_root / "docs" / "a.md").write_text(leaky)
    monkeypatch.setattr(lint_workflows, "ROOT", fake_root)
    out = tmp_path / "out"
    files = lint_workflows.snippet_files(out)
    assert [f.name for f in files] == ["README-md-1.yml", "docs-a-md-1.yml"]
    assert lint_workflows.lint(files[:1], [], cwd=out) == 0
    assert lint_workflows.lint(files[1:], [], cwd=out) > 0  # checkout keeps credentials


def test_linters_are_installed() -> None:
    for tool in ("actionlint", "zizmor", "check-jsonschema"):
        assert (lint_workflows.BIN / tool).exists() or shutil.which(tool), tool


def test_pedantic_zizmor_without_config_reports_only_justified_findings() -> None:
    """Issue #15: an auditor's `zizmor --persona pedantic` (no config of ours) found 12 unpinned
    and 11 self-repository references; what remains must be on the justified list."""
    workflows, actions = lint_workflows._files()
    found = lint_workflows.pedantic_findings([*workflows, *actions, ROOT / ".github" / "dependabot.yml"])
    assert lint_workflows.unjustified(found) == []
    assert {ident for ident, _, _ in found} == set(lint_workflows.PEDANTIC_JUSTIFIED)  # none stale
    assert all(text.startswith("traingate/traingate") for _, _, text in found)


def test_pedantic_check_rejects_what_is_not_justified(tmp_path: Path) -> None:
    target = tmp_path / ".github" / "workflows" / "w.yml"
    target.parent.mkdir(parents=True)
    target.write_text(
        lint_workflows._STEPS_WRAPPER
        + "      - uses: traingate/traingate/actions/train@v1\n"
        + "      - uses: traingate/traingate/actions/train@main\n"
        + "      - uses: ./actions/train\n"
    )
    left = lint_workflows.unjustified(lint_workflows.pedantic_findings([target], cwd=tmp_path))
    assert {(ident, text) for ident, _, text in left} >= {
        ("unpinned-uses", "traingate/traingate/actions/train@main"),  # a branch is never justified
        ("self-repository", "./actions/train"),
    }
    assert all("@v1" not in text for _, _, text in left)


@pytest.mark.parametrize(("queue", "findings"), [("max", 0), ("single", 0), ("all", 2)])
def test_linters_know_the_concurrency_queue_key(tmp_path: Path, queue: str, findings: int) -> None:
    # `queue: max` keeps every pending run of a group (#12 case 6). The pinned actionlint and the
    # vendored workflow schema both know the key and accept only `single` or `max`, so the key
    # is checked, not silently ignored.
    (snippet,) = lint_workflows.extract_snippets(GOOD_STEPS)
    workflow = lint_workflows.as_workflow(snippet)
    assert workflow is not None
    block = f"concurrency:\n  group: traingate-x\n  cancel-in-progress: false\n  queue: {queue}\n"
    assert (
        _lint_one(tmp_path, workflow.replace("permissions: {}\n", "permissions: {}\n" + block, 1)) == findings
    )
