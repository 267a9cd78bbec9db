"""Internal references use one release ref, and a release rewrites them all."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from tests.workflows.conftest import ROOT

spec = importlib.util.spec_from_file_location("set_release_ref", ROOT / "scripts" / "set_release_ref.py")
assert spec and spec.loader
release = importlib.util.module_from_spec(spec)
sys.modules["set_release_ref"] = release
spec.loader.exec_module(release)


def test_one_ref_everywhere() -> None:
    refs = release.current_refs()
    assert list(refs) == ["main"], refs
    used = set(refs["main"])
    # the stage workflows, the pipeline's callers (templates) and the root action users
    assert {".github/workflows/train.yml", "workflows-templates/training-data-pipeline.yml"} <= used


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for sub in (".github/workflows", "workflows-templates"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    (tmp_path / "docs").mkdir()
    readme = "uses: traingate/traingate/.github/workflows/training-pipeline.yml@main\n"
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_release_rewrites_every_reference(copy: Path) -> None:
    before = release.current_refs(copy)["main"]
    changed = release.set_ref("v1.2.0", copy)
    assert {str(p.relative_to(copy)) for p in changed} == set(before)
    assert list(release.current_refs(copy)) == ["v1.2.0"]
    assert release.set_ref("v1.2.0", copy) == []  # idempotent
    # third-party pins are untouched
    text = (copy / ".github" / "workflows" / "train.yml").read_text()
    assert "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2" in text
    assert "traingate/traingate/actions/train@v1.2.0" in text


@pytest.mark.parametrize("bad", ["", "latest", "v1.2.3.4", "main; rm -rf /", "abc123"])
def test_invalid_refs_are_refused(copy: Path, bad: str) -> None:
    with pytest.raises(ValueError):
        release.set_ref(bad, copy)
    assert list(release.current_refs(copy)) == ["main"]


def test_check_reports_mixed_refs(copy: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(release, "ROOT", copy)
    assert release.main(["--check"]) == 0
    path = copy / ".github" / "workflows" / "train.yml"
    path.write_text(path.read_text().replace("actions/train@main", "actions/train@v9"))
    assert release.main(["--check"]) == 1
    assert "expected one" in capsys.readouterr().err
