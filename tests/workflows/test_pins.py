"""Every SHA-pinned `uses:` names the commit its `# vX` comment claims upstream.

A pin like `astral-sh/setup-uv@f0b9…  # v5.4.2` passes every linter (40 hex digits, a version
comment) and still fails on GitHub when that commit does not exist upstream. This test checks
each pin against `PINS` (`owner/repo tag sha`, one line each), the list of the third-party
actions the project vendors for offline runs under act. Where that list lives:

- `$TRAINGATE_ACT_ACTIONS/PINS` when the variable names the actions folder;
- otherwise `<dir>/shared/actions/PINS` for the first parent `<dir>` of this checkout that has one
  (CI clones main with `shared/` beside it; worktrees sit one level deeper).

Without the file the test skips and says why.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.workflows.conftest import OWN, ROOT

# `uses: owner/repo[/path]@<40 hex> # vX...` (the comment is required by test_consistency.py)
PINNED = re.compile(
    r"^\s*-?\s*uses:\s*(?P<repo>[\w.-]+/[\w.-]+)(?:/[\w./-]+)?@(?P<sha>[0-9a-f]{40})\s*#\s*(?P<tag>v\S+)",
    re.MULTILINE,
)
USES = re.compile(r"^\s*-?\s*uses:\s*(?P<ref>\S+)", re.MULTILINE)


def pins_file(root: Path = ROOT, env: dict[str, str] | None = None) -> Path | None:
    """The PINS list this checkout is checked against, or None when there is none."""
    env = dict(os.environ) if env is None else env
    override = env.get("TRAINGATE_ACT_ACTIONS")
    if override:
        return Path(override) / "PINS"
    for parent in root.resolve().parents:
        candidate = parent / "shared" / "actions" / "PINS"
        if candidate.is_file():
            return candidate
    return None


def read_pins(path: Path) -> dict[tuple[str, str], str]:
    """(owner/repo, tag) -> sha."""
    pins: dict[tuple[str, str], str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            repo, tag, sha = line.split()
            pins[(repo, tag)] = sha
    return pins


def pinned_files(root: Path = ROOT) -> list[Path]:
    """Workflows, actions and templates we ship (the usage snippets in docs are linted separately)."""
    files = sorted((root / ".github" / "workflows").glob("*.y*ml"))
    files += sorted((root / "workflows-templates").glob("*.y*ml"))
    files += sorted(root.glob("action.y*ml")) + sorted((root / "actions").glob("*/action.y*ml"))
    files += [p for p in [root / "docs" / "workflows.md", root / "README.md"] if p.exists()]
    return files


def wrong_pins(pins: dict[tuple[str, str], str], root: Path = ROOT) -> list[str]:
    """Every third-party pin whose SHA is not the upstream commit of the tag in its comment."""
    problems = []
    for path in pinned_files(root):
        text = path.read_text(encoding="utf-8")
        for m in PINNED.finditer(text):
            repo, sha, tag = m["repo"], m["sha"], m["tag"]
            where = f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}"
            upstream = pins.get((repo, tag))
            if upstream is None:
                known = sorted(t for r, t in pins if r == repo)
                problems.append(f"{where}: {repo} {tag} is not in PINS (known tags: {known})")
            elif upstream != sha:
                problems.append(f"{where}: {repo}@{sha} claims {tag}, which is {upstream} upstream")
    return problems


PINS = pins_file()
needs_pins = pytest.mark.skipif(
    PINS is None or not PINS.is_file(),
    reason=(
        f"no PINS list ({PINS} missing; set TRAINGATE_ACT_ACTIONS to the vendored actions folder, "
        "or keep shared/actions/PINS beside the checkout)"
    ),
)


@needs_pins
def test_every_pin_is_the_upstream_commit_of_its_tag() -> None:
    assert PINS is not None
    assert wrong_pins(read_pins(PINS)) == []


@needs_pins
def test_every_third_party_action_is_sha_pinned_with_a_known_tag() -> None:
    """No third-party `uses:` escapes the check above by lacking a SHA or a comment."""
    assert PINS is not None
    pins = read_pins(PINS)
    for path in pinned_files():
        if path.suffix == ".md":
            continue
        text = path.read_text(encoding="utf-8")
        pinned_lines = {m.start() for m in PINNED.finditer(text)}
        for m in USES.finditer(text):
            ref = m["ref"].strip("'\"")
            if ref.startswith(("./", "$/", OWN + "/", OWN + "@", "docker://")):
                continue
            assert m.start() in pinned_lines, f"{path.relative_to(ROOT)}: {ref} is not SHA-pinned"
            assert ref.split("@")[0].count("/") >= 1
    assert {repo for repo, _ in pins} >= {"actions/checkout", "astral-sh/setup-uv"}


def test_a_wrong_sha_is_caught(tmp_path: Path) -> None:
    """The check can fail: the pin from issue #15 (a SHA that is not v5.4.2 upstream)."""
    (tmp_path / "actions" / "x").mkdir(parents=True)
    (tmp_path / "actions" / "x" / "action.yml").write_text(
        "runs:\n  using: composite\n  steps:\n"
        "    - uses: astral-sh/setup-uv@f0b9a6de3f46e0f44b9cfb33d9f63c73b85ab6de # v5.4.2\n"
        "    - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v9.9.9\n"
        "    - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2\n"
    )
    pins = {
        ("astral-sh/setup-uv", "v5.4.2"): "d4b2f3b6ecc6e67c4457f6d3e41ec42d3d0fcb86",
        ("actions/checkout", "v4.2.2"): "11bd71901bbe5b1630ceea73d27597364c9af683",
    }
    problems = wrong_pins(pins, tmp_path)
    assert len(problems) == 2, problems
    assert "which is d4b2f3b6ecc6e67c4457f6d3e41ec42d3d0fcb86 upstream" in problems[0]
    assert "v9.9.9 is not in PINS" in problems[1]


def test_pins_file_is_found_by_env_override_or_beside_the_checkout(tmp_path: Path) -> None:
    repo = tmp_path / "clone" / "traingate"
    repo.mkdir(parents=True)
    assert pins_file(repo, env={}) is None
    (tmp_path / "clone" / "shared" / "actions").mkdir(parents=True)
    (tmp_path / "clone" / "shared" / "actions" / "PINS").write_text("o/r v1 " + "a" * 40 + "\n")
    assert pins_file(repo, env={}) == tmp_path / "clone" / "shared" / "actions" / "PINS"
    assert pins_file(repo, env={"TRAINGATE_ACT_ACTIONS": "/x/acts"}) == Path("/x/acts/PINS")


def test_one_commit_per_action_everywhere() -> None:
    """A partial bump (dependabot does not read workflows-templates/) leaves two commits in use."""
    seen: dict[str, dict[str, list[str]]] = {}
    for path in pinned_files():
        for m in PINNED.finditer(path.read_text(encoding="utf-8")):
            where = seen.setdefault(m["repo"], {}).setdefault(f"{m['sha']} {m['tag']}", [])
            where.append(str(path.relative_to(ROOT)))
    mixed = {repo: pins for repo, pins in seen.items() if len(pins) > 1}
    assert mixed == {}, f"update every file to the same pin: {mixed}"


def test_dependabot_watches_every_composite_action() -> None:
    """Dependabot reads `.github/workflows` and an action.yml per listed folder, nothing else."""
    import yaml

    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    (actions,) = [u for u in config["updates"] if u["package-ecosystem"] == "github-actions"]
    listed = set(actions["directories"])
    expected = {"/"} | {f"/{p.parent.relative_to(ROOT)}" for p in (ROOT / "actions").glob("*/action.yml")}
    assert listed == expected
    assert any(u["package-ecosystem"] == "pip" for u in config["updates"])
