"""The setup-uv cache key follows the traingate release the action installs.

setup-uv hashes the files matched by `cache-dependency-glob` into its cache key. Its default
(`**/uv.lock`, `**/requirements*.txt`, relative to the caller's workspace) matches nothing in a
caller's repository, so every job warned "No file matched ... The cache will never get
invalidated" and a new traingate release kept restoring the old release's cache. The key must
hash the pyproject.toml of the action's own checkout. setup-uv's glob (@actions/glob) refuses
`.` and `..` segments, so the path is resolved by a step first.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.workflows.conftest import ROOT, STAGES, action

ALL = [*STAGES, None]


def _steps(stage: str | None) -> dict[str, dict]:
    return {s.get("id") or s["name"]: s for s in action(stage)["runs"]["steps"]}


@pytest.mark.parametrize("stage", ALL, ids=[str(s) for s in ALL])
def test_uv_cache_key_hashes_the_installed_pyproject(stage: str | None, tmp_path: Path) -> None:
    steps = action(stage)["runs"]["steps"]
    (uv,) = [s for s in steps if "astral-sh/setup-uv@" in s.get("uses", "")]
    glob = (uv.get("with") or {}).get("cache-dependency-glob", "")
    m = re.fullmatch(r"\$\{\{ steps\.([\w-]+)\.outputs\.pyproject \}\}", str(glob).strip())
    assert m, f"{stage}: cache-dependency-glob must be the located pyproject.toml, got {glob!r}"
    locate = _steps(stage)[m.group(1)]
    assert steps.index(locate) < steps.index(uv)
    # Run the locating step the way the runner does, from the action's folder in a checkout.
    action_path = ROOT if stage is None else ROOT / "actions" / stage
    out = tmp_path / "output"
    out.write_text("")
    env = {**os.environ, "GITHUB_ACTION_PATH": str(action_path), "GITHUB_OUTPUT": str(out)}
    subprocess.run(["bash", "-e", "-c", locate["run"]], env=env, check=True, cwd=tmp_path)
    (line,) = out.read_text().splitlines()
    pattern = line.removeprefix("pyproject=")
    assert Path(pattern) == ROOT / "pyproject.toml"
    parts = Path(pattern).parts
    assert Path(pattern).is_absolute() and "." not in parts and ".." not in parts, pattern
