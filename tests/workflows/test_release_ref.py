"""Internal references use one release ref, and a release rewrites them all."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workflows.conftest import ROOT
from tests.workflows.expr import Context, interpolate
from tests.workflows.jobgraph import load_workflow

spec = importlib.util.spec_from_file_location("set_release_ref", ROOT / "scripts" / "set_release_ref.py")
assert spec and spec.loader
release = importlib.util.module_from_spec(spec)
sys.modules["set_release_ref"] = release
spec.loader.exec_module(release)


def test_one_ref_everywhere() -> None:
    """main carries the major tag: a caller pinning any commit never runs the moving `main`."""
    refs = release.current_refs()
    assert list(refs) == ["v1"], refs
    used = set(refs["v1"])
    # the stage workflows, the pipeline's callers (templates) and the root action users
    assert {".github/workflows/train.yml", "workflows-templates/training-data-pipeline.yml"} <= used


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    for sub in (".github/workflows", "workflows-templates"):
        shutil.copytree(ROOT / sub, tmp_path / sub)
    (tmp_path / "docs").mkdir()
    readme = "uses: traingate/traingate/.github/workflows/training-pipeline.yml@v1\n"
    (tmp_path / "README.md").write_text(readme)
    return tmp_path


def test_release_rewrites_every_reference(copy: Path) -> None:
    before = release.current_refs(copy)["v1"]
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
    assert list(release.current_refs(copy)) == ["v1"]


def test_check_reports_mixed_refs(copy: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(release, "ROOT", copy)
    assert release.main(["--check"]) == 0
    path = copy / ".github" / "workflows" / "train.yml"
    path.write_text(path.read_text().replace("actions/train@v1", "actions/train@v9"))
    assert release.main(["--check"]) == 1
    assert "expected one" in capsys.readouterr().err


# ------------------------------------------------------------------------------ release.yml
RELEASE = ROOT / ".github" / "workflows" / "release.yml"


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


def _release_step(name: str) -> dict:
    (job,) = load_workflow(RELEASE)["jobs"].values()
    (step,) = [s for s in job["steps"] if s.get("name") == name]
    return step


def _run_step(step: dict, cwd: Path, env: dict[str, str], ctx: Context) -> None:
    step_env = {k: interpolate(str(v), ctx) for k, v in (step.get("env") or {}).items()}
    subprocess.run(["bash", "-e", "-c", step["run"]], cwd=cwd, env={**env, **step_env}, check=True)


def test_release_workflow_is_least_privilege_and_triggered_by_version_tags() -> None:
    doc = load_workflow(RELEASE)
    assert doc["on"] == {"push": {"tags": ["v*.*.*"]}}
    assert doc["permissions"] == {}
    (job,) = doc["jobs"].values()
    assert job["permissions"] == {"contents": "write"}
    (checkout,) = [s for s in job["steps"] if "actions/checkout@" in s.get("uses", "")]
    assert checkout["with"]["persist-credentials"] is False
    uv = [s for s in job["steps"] if "setup-uv@" in s.get("uses", "")]
    assert uv and uv[0]["with"]["enable-cache"] is False  # no restored cache in a release build
    # the token reaches only the steps that push and publish
    with_token = {s.get("name") for s in job["steps"] if "github.token" in str(s.get("env", ""))}
    assert with_token == {"Push the release commit to the tags", "Create the GitHub release"}
    assert "uv build" in _release_step("Build")["run"]


def test_release_tag_must_be_the_project_version(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.0"\n')
    (tmp_path / "README.md").write_text("uses: traingate/traingate@v1\n")
    with pytest.raises(ValueError, match=r"does not match pyproject\.toml version 1\.2\.0"):
        release.prepare_release("v1.3.0", tmp_path)
    with pytest.raises(ValueError, match="not a release tag"):
        release.prepare_release("v1", tmp_path)
    assert release.prepare_release("v1.2.0", tmp_path) == [tmp_path / "README.md"]
    assert list(release.current_refs(tmp_path)) == ["v1.2.0"]


def test_release_workflow_points_both_tags_at_a_release_commit(tmp_path: Path) -> None:
    """Run release.yml's own steps on a clone of a bare origin, with `gh` recording its call."""
    version = release.project_version()
    tag, major = f"v{version}", f"v{version.split('.')[0]}"
    source = tmp_path / "source"
    for sub in (".github/workflows", "workflows-templates", "docs", "actions", "scripts"):
        shutil.copytree(ROOT / sub, source / sub)
    for name in ("README.md", "pyproject.toml", "action.yml"):
        shutil.copy(ROOT / name, source / name)
    origin = tmp_path / "origin.git"
    _git(tmp_path, "init", "-q", "--bare", "-b", "main", str(origin))
    _git(source, "init", "-q", "-b", "main")
    _git(source, "add", ".")
    _git(source, "-c", "user.name=m", "-c", "user.email=m@example.invalid", "commit", "-q", "-m", "main")
    _git(source, "tag", tag)
    _git(source, "push", "-q", str(origin), "main", tag)
    tagged = _git(source, "rev-parse", "HEAD")
    # the runner: actions/checkout of the pushed tag
    work = tmp_path / "work"
    _git(tmp_path, "clone", "-q", str(origin), str(work))
    _git(work, "checkout", "-q", tag)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "gh").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{tmp_path}/gh-args"\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    env["GITHUB_SERVER_URL"] = "https://github.com"
    ctx = Context(values={"github": {"ref_name": tag, "token": "t0ken", "repository": "traingate/traingate"}})
    _run_step(_release_step("Release commit (internal refs at the tag)"), work, env, ctx)
    (work / "dist").mkdir()
    (work / "dist" / f"traingate-{version}-py3-none-any.whl").write_text("wheel")
    _run_step(_release_step("Push the release commit to the tags"), work, env, ctx)
    _run_step(_release_step("Create the GitHub release"), work, env, ctx)

    released = _git(origin, "rev-parse", f"refs/tags/{tag}^{{commit}}")
    assert released != tagged and _git(origin, "rev-parse", f"{released}^") == tagged
    assert _git(origin, "rev-parse", f"refs/tags/{major}^{{commit}}") == released
    assert _git(origin, "rev-parse", "refs/heads/main") == tagged  # main keeps @v1
    checkout = tmp_path / "released"
    _git(tmp_path, "clone", "-q", "--branch", tag, str(origin), str(checkout))
    assert list(release.current_refs(checkout)) == [tag]
    changed = _git(checkout, "diff", "--name-only", f"{tagged}..HEAD").splitlines()
    assert set(changed) == set(release.current_refs(ROOT)["v1"])  # only the internal refs moved
    args = (tmp_path / "gh-args").read_text().splitlines()
    assert args[:3] == ["release", "create", tag] and "--verify-tag" in args
    assert f"dist/traingate-{version}-py3-none-any.whl" in args
