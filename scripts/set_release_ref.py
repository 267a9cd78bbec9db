"""Point every internal `uses: traingate/traingate/...@<ref>` at one ref.

The reusable workflows run our composite actions by their full name, and the copy-in templates
call the pipeline by its full name, because inside a caller's run `./actions/...` would mean
the caller's repository. Those references must name the same release the caller picked, so a
release rewrites them all on the release commit before tagging it:

    .venv/bin/python scripts/set_release_ref.py --check            # CI: one ref (prints it)
    .venv/bin/python scripts/set_release_ref.py --release v1.2.0   # release.yml, on the tag
    .venv/bin/python scripts/set_release_ref.py v2                 # main, after a major release

`main` carries the major tag (`@v1`): whatever a caller pins, the nested references never
follow the moving `main` branch. `--release vX.Y.Z` checks the tag is pyproject.toml's version
and rewrites the references to it; `.github/workflows/release.yml` runs it on the release commit
(docs/workflows.md, "Releasing"). Accepted refs: `main`, a version tag `vX`, `vX.Y`, `vX.Y.Z`, or a
40-hex commit SHA.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN = "traingate/traingate"
REFERENCE = re.compile(rf"(uses:\s*{re.escape(OWN)}(?:/[\w./-]+)?@)([\w./-]+)")
VALID_REF = re.compile(r"^(main|v\d+(\.\d+){0,2}|[0-9a-f]{40})$")


def files(root: Path = ROOT) -> list[Path]:
    found = sorted((root / ".github" / "workflows").glob("*.yml"))
    found += sorted((root / "workflows-templates").glob("*.yml"))
    found += [*sorted((root / "docs").glob("*.md")), root / "README.md"]
    return [p for p in found if p.exists()]


def current_refs(root: Path = ROOT) -> dict[str, list[str]]:
    """ref -> files that use it."""
    refs: dict[str, list[str]] = {}
    for path in files(root):
        for m in REFERENCE.finditer(path.read_text(encoding="utf-8")):
            refs.setdefault(m.group(2), [])
            rel = str(path.relative_to(root))
            if rel not in refs[m.group(2)]:
                refs[m.group(2)].append(rel)
    return refs


def set_ref(ref: str, root: Path = ROOT) -> list[Path]:
    if not VALID_REF.match(ref):
        raise ValueError(f"{ref!r} is not main, a vX[.Y[.Z]] tag or a 40-hex commit SHA")
    changed = []
    for path in files(root):
        text = path.read_text(encoding="utf-8")
        new = REFERENCE.sub(lambda m: m.group(1) + ref, text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


RELEASE_TAG = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")


def project_version(root: Path = ROOT) -> str:
    import tomllib

    return str(tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"])


def prepare_release(tag: str, root: Path = ROOT) -> list[Path]:
    """Rewrite every internal reference to the release tag, after checking the tag is the version
    pyproject.toml declares (the wheel `uv build` makes is named after that version)."""
    if not RELEASE_TAG.match(tag):
        raise ValueError(f"{tag!r} is not a release tag vX.Y.Z (the major tag vX is moved, not pushed)")
    version = project_version(root)
    if tag != f"v{version}":
        raise ValueError(
            f"tag {tag} does not match pyproject.toml version {version}: set version = "
            f'"{tag[1:]}" in pyproject.toml, commit, and tag that commit'
        )
    return set_ref(tag, root)


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        refs = current_refs(ROOT)
        if len(refs) != 1:
            print(f"internal references use {len(refs)} refs, expected one: {refs}", file=sys.stderr)
            return 1
        print(next(iter(refs)))
        return 0
    apply: Callable[[str, Path], list[Path]]
    if len(argv) == 2 and argv[0] == "--release":
        ref, apply = argv[1], prepare_release
    elif len(argv) == 1:
        ref, apply = argv[0], set_ref
    else:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        changed = apply(ref, ROOT)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
