"""Point every internal `uses: traingate/traingate/...@<ref>` at one ref.

The reusable workflows run our composite actions by their full name, and the copy-in templates
call the pipeline by its full name, because inside a caller's run `./actions/...` would mean
the caller's repository. Those references must name the same release the caller picked, so a
release rewrites them all on the release commit before tagging it:

    .venv/bin/python scripts/set_release_ref.py v1.2.0   # on the release commit, then tag v1.2.0
    .venv/bin/python scripts/set_release_ref.py main     # back on main afterwards
    .venv/bin/python scripts/set_release_ref.py --check  # CI: one ref everywhere (prints it)

Accepted refs: `main`, a version tag `vX`, `vX.Y`, `vX.Y.Z`, or a 40-hex commit SHA.
"""

from __future__ import annotations

import re
import sys
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


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        refs = current_refs(ROOT)
        if len(refs) != 1:
            print(f"internal references use {len(refs)} refs, expected one: {refs}", file=sys.stderr)
            return 1
        print(next(iter(refs)))
        return 0
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        changed = set_ref(argv[0], ROOT)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in changed:
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
