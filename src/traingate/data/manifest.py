"""The dataset's manifest: DVC's `.dir` listing (relative path + md5) and its `.dvc` pointer.

Reading this listing instead of the data is what makes a merge O(new files): the stored dataset
is known by name and hash from one small object, so conflicts and duplicates are found without
downloading a single image. The hash and file formats here are DVC's own (a test checks them
against `dvc add`), so `dvc pull`/`dvc checkout` work on what `merge` writes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traingate.errors import StoreError


def tree_bytes(entries: dict[str, str]) -> bytes:
    """DVC's `.dir` object: a JSON list sorted by relpath, keys sorted (dvc_data Tree.as_bytes)."""
    listing = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(entries.items())]
    return json.dumps(listing, sort_keys=True).encode("utf-8")


def tree_hash(entries: dict[str, str]) -> str:
    return hashlib.md5(tree_bytes(entries), usedforsecurity=False).hexdigest() + ".dir"


def parse_tree(raw: bytes, source: str) -> dict[str, str]:
    try:
        listing = json.loads(raw)
        return {str(item["relpath"]): str(item["md5"]) for item in listing}
    except (ValueError, TypeError, KeyError) as err:
        raise StoreError(
            f"the dataset listing {source} is not a DVC directory listing: {err}",
            hint="the remote object is damaged; re-push the dataset from a complete copy (`dvc push`)",
        ) from err


@dataclass
class Pointer:
    """The `.dvc` file of the tracked dataset folder."""

    path: Path  # e.g. <repo>/data/training.dvc
    md5: str = ""  # "<hash>.dir", "" when the folder is not tracked yet
    size: int = 0
    nfiles: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    remote: str = ""  # per-output remote, if the file names one

    @property
    def tracked(self) -> bool:
        return bool(self.md5)


def pointer_path(data_root: Path) -> Path:
    return data_root.parent / f"{data_root.name}.dvc"


def read_pointer(data_root: Path) -> Pointer:
    """Read `<root>.dvc`; a missing file means "not tracked yet" (the first merge creates it)."""
    import yaml

    path = pointer_path(data_root)
    if not path.exists():
        return Pointer(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        outs = doc.get("outs") or []
        out = outs[0]
        md5 = str(out.get("md5", ""))
    except (yaml.YAMLError, AttributeError, IndexError, TypeError) as err:
        raise StoreError(
            f"{path} is not a readable DVC pointer file: {err}",
            hint="restore it from git (`git checkout -- <file>`) or re-track the folder with `dvc add`",
            file=str(path),
        ) from err
    if md5 and not md5.endswith(".dir"):
        raise StoreError(
            f"{path} tracks a single file, but the dataset must be a tracked folder (md5 {md5})",
            hint=f"track the folder {data_root} with `dvc add {data_root}`",
            file=str(path),
        )
    raw_meta = doc.get("meta")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    return Pointer(
        path,
        md5=md5,
        size=int(out.get("size") or 0),
        nfiles=int(out.get("nfiles") or 0),
        meta=meta.get("traingate", {}) if isinstance(meta.get("traingate"), dict) else {},
        remote=str(out.get("remote") or ""),
    )


def write_pointer(pointer: Pointer, data_root: Path) -> None:
    """Write the `.dvc` file as `dvc add` does (same keys), plus our statistics under `meta`."""
    from traingate.state import atomic_write_text

    lines = []
    if pointer.meta:
        lines.append("meta:")
        lines.append("  traingate:")
        for key, value in sorted(pointer.meta.items()):
            lines.append(f"    {key}: {json.dumps(value)}")
    lines += [
        "outs:",
        f"- md5: {pointer.md5}",
        f"  size: {pointer.size}",
        f"  nfiles: {pointer.nfiles}",
        "  hash: md5",
        f"  path: {data_root.name}",
    ]
    if pointer.remote:
        lines.append(f"  remote: {pointer.remote}")
    atomic_write_text(pointer.path, "\n".join(lines) + "\n")


def ensure_gitignored(data_root: Path) -> Path:
    """`dvc add` puts `/<name>` in the parent's .gitignore so the raw data never reaches git."""
    gitignore = data_root.parent / ".gitignore"
    entry = f"/{data_root.name}"
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    if entry not in text.splitlines():
        if text and not text.endswith("\n"):
            text += "\n"
        gitignore.parent.mkdir(parents=True, exist_ok=True)
        gitignore.write_text(text + entry + "\n", encoding="utf-8")
    return gitignore
