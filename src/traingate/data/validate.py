"""`traingate data validate`: every problem of an image/mask dataset, in one pass.

The work splits in two: inspecting files (I/O and decoding, parallel across cores, cached by
content hash in `cache.py`) and applying the rules of traingate.yml to those facts (cheap, always
re-run, so a configuration change never reuses a stale verdict). Every error names its file;
the step summary caps the list, the JSON report keeps all of it.
"""

from __future__ import annotations

import os
import stat
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from traingate.data.images import (
    FACTS_VERSION,
    IMAGE_EXTENSIONS,
    MASK_EXTENSIONS,
    FileProblem,
    describe_mode,
    inspect_data,
    inspect_file,
    md5_bytes,
    read_regular_file,
)
from traingate.errors import DataError

if TYPE_CHECKING:
    from traingate.config import Config, DataConfig
    from traingate.result import StepResult

ERROR_CODES = (
    "missing_images_dir",
    "missing_masks_dir",
    "no_data",
    "missing_mask",
    "missing_image",
    "corrupt_file",
    "unsupported_format",
    "resolution_mismatch",
    "non_binary_mask",
    "empty_mask",
    "near_empty_mask",
    "duplicate_content",
    "name_conflict",
    "too_large",
    "unsafe_path",
    "unreadable_file",
    "wrong_extension",
)
# Used when data.min_foreground is unset: below it a mask is only a `near_empty_mask` warning.
DEFAULT_MIN_FOREGROUND = 0.001
_CONTENT_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}
# Below this many files to inspect, a process pool costs more than it saves.
_PARALLEL_MIN_FILES = 48


@dataclass(frozen=True)
class Issue:
    code: str
    path: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "path": self.path, "message": self.message}


@dataclass
class FileInfo:
    rel: str  # relative to the dataset root, posix: images/a.jpg
    kind: str  # image | mask
    md5: str
    size: int
    facts: dict[str, Any]


@dataclass
class Validation:
    root: Path
    files: dict[str, FileInfo] = field(default_factory=dict)
    # stem (relative path without suffix, under images/ or masks/) -> (image rel, mask rel)
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    statistics: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    cache_note: str = ""

    @property
    def passed(self) -> bool:
        return not self.errors

    def report(self) -> dict[str, Any]:
        return {
            "status": "pass" if self.passed else "fail",
            "counts": dict(self.counts),
            "errors": [e.as_dict() for e in self.errors],
            "warnings": [w.as_dict() for w in self.warnings],
            "statistics": dict(self.statistics),
        }


# ---------------------------------------------------------------------------------- progress
class Progress:
    """A bar on a terminal; one line per 10 % elsewhere (CI logs keep every byte)."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.done = 0
        self._last_decile = 0
        self._last_draw = 0.0

    def advance(self, n: int = 1) -> None:
        if self.total <= 0:
            return
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self._last_draw > 0.1 or self.done >= self.total:
                self._last_draw = now
                width = 30
                filled = int(width * self.done / self.total)
                bar = "#" * filled + "." * (width - filled)
                end = "\n" if self.done >= self.total else ""
                self.stream.write(f"\r{self.label} [{bar}] {self.done}/{self.total}{end}")
                self.stream.flush()
            return
        decile = 10 * self.done // self.total
        if decile > self._last_decile:
            self._last_decile = decile
            self.stream.write(f"{self.label}: {decile * 10}% ({self.done}/{self.total})\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------- scan
def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def scan_folder(
    folder: Path, *, root: Path, max_bytes: int
) -> tuple[list[tuple[str, str, os.stat_result]], list[tuple[str, str, str, bool]]]:
    """Walk `folder` without trusting anything in it.

    Returns (files, problems): files as (path to open, path relative to `folder`, its stat), only
    regular files (or links to regular files inside `root`) of at most `max_bytes`; problems as
    (code, relative path, message, is a file entry) for everything else: links out of `root` or dangling
    (`unsafe_path`), FIFOs, devices, sockets and folders named like images
    (`unsupported_format`; a FIFO is never opened, reading it would wait for a writer forever),
    files over the size limit (`too_large`, not read), and files or folders that cannot be
    listed or stat-ed (`unreadable_file`: a folder skipped in silence would hide its files).
    Hidden entries (.gitkeep, .DS_Store) are skipped. Plain strings and `os.scandir`: pathlib
    costs more than the checks on 3,000 files.
    """
    root_real = os.path.realpath(root)
    files: list[tuple[str, str, os.stat_result]] = []
    problems: list[tuple[str, str, str, bool]] = []
    top = os.path.realpath(folder)
    if not _inside(top, root_real):
        problems.append(
            ("unsafe_path", "", f"folder {folder} resolves to {top}, outside the dataset {root_real}", False)
        )
        return files, problems
    stack: list[tuple[str, str]] = [(top, "")]
    while stack:
        path, rel_dir = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            problems.append(
                (
                    "unreadable_file",
                    rel_dir.rstrip("/"),
                    f"folder cannot be listed: {err.strerror or err}",
                    False,
                )
            )
            continue
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            rel = rel_dir + entry.name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as err:
                problems.append(("unreadable_file", rel, f"cannot be read: {err.strerror or err}", True))
                continue
            target = entry.path
            if stat.S_ISLNK(st.st_mode):
                link = os.readlink(entry.path)  # noqa: PTH115
                real = os.path.realpath(entry.path)
                if not _inside(real, root_real):
                    problems.append(
                        (
                            "unsafe_path",
                            rel,
                            f"symbolic link to {real}, outside the dataset {root_real}",
                            not os.path.isdir(real),  # noqa: PTH112
                        )
                    )
                    continue
                try:
                    st = os.stat(real)  # noqa: PTH116
                except FileNotFoundError:
                    problems.append(
                        ("unsafe_path", rel, f"dangling symbolic link to {link} (no such file)", True)
                    )
                    continue
                except OSError as err:
                    problems.append(("unreadable_file", rel, f"cannot be read: {err.strerror or err}", True))
                    continue
                target = real
            if stat.S_ISDIR(st.st_mode):
                if target != entry.path:
                    problems.append(
                        (
                            "unsupported_format",
                            rel,
                            "a link to a folder is not followed; copy the files in",
                            False,
                        )
                    )
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:  # noqa: PTH122
                    # It poses as a file: listed as one, so its mask is not reported missing.
                    problems.append(("unsupported_format", rel, "is a folder named like an image file", True))
                else:
                    subdirs.append((entry.path, rel + "/"))
                continue
            if not stat.S_ISREG(st.st_mode):
                problems.append(
                    (
                        "unsupported_format",
                        rel,
                        f"is {describe_mode(st.st_mode)}, not a regular file; it was not opened",
                        True,
                    )
                )
                continue
            if st.st_size > max_bytes:
                problems.append(
                    (
                        "too_large",
                        rel,
                        f"file is {st.st_size} bytes, above data.max_file_mb "
                        f"({max_bytes / 1e6:g} MB); it was not read",
                        True,
                    )
                )
                continue
            files.append((target, rel, st))
        stack.extend(reversed(subdirs))
    return files, problems


def _stem_key(rel_in_folder: str) -> str:
    head, _, name = rel_in_folder.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}" if head else stem


def split_rel(rel: str, images_dir: str, masks_dir: str) -> tuple[str, str] | None:
    """(kind, stem) of a dataset-relative path: images/sub/a.jpg -> ("image", "sub/a").
    Folder names may themselves hold slashes (data.images: imgs/train); None outside both."""
    for kind, folder in (("image", images_dir), ("mask", masks_dir)):
        if rel.startswith(folder + "/"):
            return kind, _stem_key(rel[len(folder) + 1 :])
    return None


# ---------------------------------------------------------------------------------- inspect
_WORKER_KNOWN: frozenset[tuple[str, str]] = frozenset()


def _work(
    job: tuple[str, str, str, int, int],
) -> tuple[str, str, int, dict[str, Any] | None, int, int, int]:
    """Worker: hash the file; inspect it only if its content's facts are not cached already.
    A file that cannot be read safely comes back with md5 "" and its problem as facts."""
    path, kind, rel, max_pixels, max_bytes = job
    try:
        st = os.stat(path)  # noqa: PTH116
        data = read_regular_file(path, max_bytes)
    except FileProblem as problem:
        return rel, "", 0, {"error": problem.code, "detail": problem.detail, "partial": True}, 0, 0, 0
    except OSError as err:
        detail = f"cannot be read: {err.strerror or err}"
        return rel, "", 0, {"error": "unreadable_file", "detail": detail, "partial": True}, 0, 0, 0
    digest = md5_bytes(data)
    facts = None if (digest, kind) in _WORKER_KNOWN else inspect_data(data, kind, max_pixels=max_pixels)
    return rel, digest, len(data), facts, st.st_size, st.st_mtime_ns, st.st_ino


def _pool_context() -> Any:
    # fork shares the already imported PIL/numpy and the known-hash set without pickling; where
    # fork is unavailable (macOS/Windows defaults), spawn still works, just slower to start.
    import multiprocessing  # only a pool needs it: a re-run over a few new files never pays for it

    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def inspect_files(
    jobs: list[tuple[str, str, str, int, int]],
    *,
    workers: int,
    known: frozenset[tuple[str, str]],
    progress: Progress | None,
) -> Iterable[tuple[str, str, int, dict[str, Any] | None, int, int, int]]:
    global _WORKER_KNOWN
    _WORKER_KNOWN = known
    try:
        if workers <= 1 or len(jobs) < _PARALLEL_MIN_FILES:
            for job in jobs:
                out = _work(job)
                if progress:
                    progress.advance()
                yield out
            return
        # Preload the decoders so forked workers do not each import them.
        import numpy  # noqa: F401
        from PIL import Image, JpegImagePlugin, PngImagePlugin  # noqa: F401

        ctx = _pool_context()
        chunk = max(1, min(32, len(jobs) // (workers * 8)))
        with ctx.Pool(processes=workers) as pool:
            for out in pool.imap_unordered(_work, jobs, chunksize=chunk):
                if progress:
                    progress.advance()
                yield out
    finally:
        _WORKER_KNOWN = frozenset()


# ------------------------------------------------------------------------------------ rules
def _fmt_size(facts: dict[str, Any]) -> str:
    return f"{facts.get('width')}x{facts.get('height')}"


def apply_rules(v: Validation, data_cfg: DataConfig, images_dir: str, masks_dir: str) -> None:
    """Turn the facts into errors, warnings, counts and statistics (cheap: no file access)."""
    images: dict[str, list[str]] = defaultdict(list)
    masks: dict[str, list[str]] = defaultdict(list)
    for rel, info in v.files.items():
        folder = images_dir if info.kind == "image" else masks_dir
        (images if info.kind == "image" else masks)[_stem_key(rel[len(folder) + 1 :])].append(rel)

    allowed_values = set(data_cfg.mask_values)
    size = tuple(data_cfg.size) if data_cfg.size else None
    bad_files: set[str] = set()

    def err(code: str, rel: str, msg: str) -> None:
        v.errors.append(Issue(code, rel, msg))
        bad_files.add(rel)

    for rel, info in sorted(v.files.items()):
        facts = info.facts
        ext = Path(rel).suffix.lower()
        if not info.md5 and facts.get("error"):  # never read: why matters more than its name
            err(facts["error"], rel, f"{rel}: {facts.get('detail', facts['error'])}")
            continue
        if info.kind == "image" and ext not in IMAGE_EXTENSIONS:
            err("unsupported_format", rel, f"{rel}: extension {ext or '(none)'} is not one of jpg, jpeg, png")
            continue
        if info.kind == "mask" and ext not in MASK_EXTENSIONS:
            err(
                "unsupported_format",
                rel,
                f"{rel}: masks must be lossless .png (a {ext or 'file without extension'} mask "
                "would carry compression artefacts as label values)",
            )
            continue
        if facts.get("error"):
            err(facts["error"], rel, f"{rel}: {facts.get('detail', facts['error'])}")
            continue
        if facts.get("width", 0) * facts.get("height", 0) > data_cfg.max_pixels:
            # Cached facts of a file read under a higher limit: the rule still holds.
            err(
                "too_large",
                rel,
                f"{rel}: {_fmt_size(facts)} is {facts['width'] * facts['height']} pixels, "
                f"above data.max_pixels {data_cfg.max_pixels}",
            )
            continue
        content = facts.get("format")
        if info.kind == "image" and content and content != _CONTENT_FORMAT[ext]:
            better = ".png" if content == "PNG" else ".jpg"
            err(
                "wrong_extension",
                rel,
                f"{rel}: the content is {content} but the name ends in {ext}; rename it to "
                f"{Path(rel).stem}{better} (or re-export it as {_CONTENT_FORMAT[ext]})",
            )
            continue
        if info.kind == "image" and size and (facts["width"], facts["height"]) != size:
            err(
                "resolution_mismatch",
                rel,
                f"{rel}: image is {_fmt_size(facts)}, data.size requires {size[0]}x{size[1]}",
            )
        if info.kind == "mask":
            values = {int(k) for k in facts.get("values", {})}
            extra = sorted(values - allowed_values)
            if facts.get("colour"):
                err("non_binary_mask", rel, f"{rel}: mask has different colour channels; use a gray mask")
            elif extra:
                shown = ", ".join(map(str, extra[:6])) + (" …" if len(extra) > 6 else "")
                err(
                    "non_binary_mask",
                    rel,
                    f"{rel}: mask values {shown} are not in data.mask_values {sorted(allowed_values)}",
                )

    # Pairing by stem.
    paired: dict[str, tuple[str, str]] = {}
    for stem in sorted(set(images) | set(masks)):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        if len(imgs) > 1:
            for rel in imgs:
                err("name_conflict", rel, f"{rel}: {len(imgs)} images share the name {stem!r}: {imgs}")
        if len(msks) > 1:
            for rel in msks:
                err("name_conflict", rel, f"{rel}: {len(msks)} masks share the name {stem!r}: {msks}")
        if imgs and not msks:
            err("missing_mask", imgs[0], f"{imgs[0]}: no mask {masks_dir}/{stem}.png")
        elif msks and not imgs:
            err("missing_image", msks[0], f"{msks[0]}: no image {images_dir}/{stem}.jpg|.jpeg|.png")
        elif len(imgs) == 1 and len(msks) == 1:
            paired[stem] = (imgs[0], msks[0])
    v.pairs = paired

    # Image vs mask size, emptiness.
    fg_fractions: list[float] = []
    resolutions: Counter[str] = Counter()
    for img_rel, mask_rel in paired.values():
        img, msk = v.files[img_rel].facts, v.files[mask_rel].facts
        if img.get("error") or msk.get("error"):
            continue
        if (
            "width" in img
            and "width" in msk
            and (img["width"], img["height"]) != (msk["width"], msk["height"])
        ):
            err(
                "resolution_mismatch",
                mask_rel,
                f"{mask_rel}: mask is {_fmt_size(msk)} but its image {img_rel} is {_fmt_size(img)}",
            )
        if "pixels" in msk and mask_rel not in bad_files:
            fraction = msk["foreground"] / msk["pixels"] if msk["pixels"] else 0.0
            if msk["foreground"] == 0:
                err("empty_mask", mask_rel, f"{mask_rel}: mask has no foreground pixels (image {img_rel})")
            elif data_cfg.min_foreground is not None and fraction < data_cfg.min_foreground:
                # The user chose the threshold: below it the pair is not trained on.
                err(
                    "near_empty_mask",
                    mask_rel,
                    f"{mask_rel}: foreground is {fraction:.5f} of the mask, "
                    f"below data.min_foreground {data_cfg.min_foreground}",
                )
            elif data_cfg.min_foreground is None and fraction < DEFAULT_MIN_FOREGROUND:
                v.warnings.append(
                    Issue(
                        "near_empty_mask",
                        mask_rel,
                        f"{mask_rel}: foreground is {fraction:.5f} of the mask, below the default "
                        f"{DEFAULT_MIN_FOREGROUND} (set data.min_foreground to make this an error)",
                    )
                )
            fg_fractions.append(fraction)
        if "width" in img:
            resolutions[_fmt_size(img)] += 1

    # Identical images under different names leak between train and validation splits.
    # Identical masks are normal (two empty backgrounds), so only images are checked.
    by_md5: dict[str, list[str]] = defaultdict(list)
    for rel, info in v.files.items():
        if info.kind == "image" and info.md5:  # "" = never read (an unsafe or unreadable file)
            by_md5[info.md5].append(rel)
    for md5, rels in sorted(by_md5.items()):
        if len(rels) > 1:
            rels.sort()
            for rel in rels[1:]:
                err("duplicate_content", rel, f"{rel}: same content as {rels[0]} (md5 {md5})")

    n_images = sum(1 for i in v.files.values() if i.kind == "image")
    n_masks = len(v.files) - n_images
    valid_pairs = sum(1 for a, b in paired.values() if a not in bad_files and b not in bad_files)
    v.counts = {"images": n_images, "masks": n_masks, "pairs": len(paired), "valid_pairs": valid_pairs}
    stats: dict[str, Any] = {}
    if resolutions:
        stats["resolution"] = resolutions.most_common(1)[0][0] if len(resolutions) == 1 else "mixed"
        stats["resolutions"] = dict(sorted(resolutions.items()))
    if fg_fractions:
        stats["foreground_median"] = round(statistics.median(fg_fractions), 6)
        stats["foreground_std"] = round(statistics.pstdev(fg_fractions), 6)
        stats["foreground_min"] = round(min(fg_fractions), 6)
        stats["foreground_max"] = round(max(fg_fractions), 6)
    v.statistics = stats
    v.errors.sort(key=lambda i: (i.path, i.code))
    v.warnings.sort(key=lambda i: (i.path, i.code))


# ------------------------------------------------------------------------------------- main
def resolve_cache_dir(cfg: Config) -> Path:
    from traingate.data.cache import default_cache_dir

    return cfg.path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()


def validate_dataset(
    root: Path,
    data_cfg: DataConfig,
    *,
    cache_dir: Path | None = None,
    workers: int = 0,
    progress: bool | None = None,
    stream: TextIO | None = None,
    require_data: bool = True,
) -> Validation:
    """Inspect and check `root` (holding images/ and masks/). Never raises for bad data: every
    finding is in the returned Validation's errors."""
    from traingate.data.cache import ValidationCache, stat_key

    started = time.perf_counter()
    v = Validation(root=root)
    images_dir, masks_dir = data_cfg.images.strip("/"), data_cfg.masks.strip("/")
    img_folder, mask_folder = root / images_dir, root / masks_dir
    missing = False
    if not img_folder.is_dir():
        v.errors.append(Issue("missing_images_dir", images_dir, f"no folder {img_folder}"))
        missing = True
    if not mask_folder.is_dir():
        v.errors.append(Issue("missing_masks_dir", masks_dir, f"no folder {mask_folder}"))
        missing = True
    if missing:
        v.counts = {"images": 0, "masks": 0, "pairs": 0, "valid_pairs": 0}
        return v

    max_bytes = int(data_cfg.max_file_mb * 1_000_000)
    entries: list[tuple[str, str, str]] = []
    stats: dict[str, os.stat_result] = {}  # the scan's stat (of the target for a link): no second pass
    refused = 0
    for folder, prefix, kind in ((img_folder, images_dir, "image"), (mask_folder, masks_dir, "mask")):
        scanned, problems = scan_folder(folder, root=root, max_bytes=max_bytes)
        for abs_path, rel, st in scanned:
            entries.append((abs_path, kind, f"{prefix}/{rel}"))
            stats[f"{prefix}/{rel}"] = st
        for code, rel, message, as_file in problems:
            full = f"{prefix}/{rel}" if rel else prefix
            if as_file:
                # A file: it stays in the listing (never read), so its partner is not blamed.
                v.files[full] = FileInfo(full, kind, "", 0, {"error": code, "detail": message})
            else:
                v.errors.append(Issue(code, full, f"{full}: {message}"))
            refused += 1
    if not entries and not refused:
        if require_data:
            v.errors.append(Issue("no_data", "", f"{img_folder} and {mask_folder} hold no files"))
        v.counts = {"images": 0, "masks": 0, "pairs": 0, "valid_pairs": 0}
        return v

    cache = ValidationCache.open(cache_dir, FACTS_VERSION)
    try:
        abs_paths = {rel: p for p, _, rel in entries}
        memo = cache.stat_hashes(abs_paths.values())
        hashed: dict[str, str] = {}
        for _p, _kind, rel in entries:
            hit = memo.get(abs_paths[rel])
            if hit and hit[:3] == stat_key(stats[rel]):
                hashed[rel] = hit[3]
        facts = cache.facts((hashed[rel], kind) for _, kind, rel in entries if rel in hashed)

        jobs: list[tuple[str, str, str, int, int]] = []
        for _p, kind, rel in entries:
            md5 = hashed.get(rel)
            if md5 is not None and (md5, kind) in facts:
                v.files[rel] = FileInfo(rel, kind, md5, stats[rel].st_size, facts[(md5, kind)])
            else:
                jobs.append((abs_paths[rel], kind, rel, data_cfg.max_pixels, max_bytes))
        # Content seen before under another path (a fresh checkout has new mtimes): hash, reuse.
        known_md5s = frozenset(cache.known_content()) if cache.enabled and jobs else frozenset()
        v.timings["lookup"] = time.perf_counter() - started

        kinds = {rel: kind for _p, kind, rel in entries}
        show = progress if progress is not None else len(jobs) >= 200
        bar = Progress(len(jobs), "validating", stream=stream) if show and jobs else None
        n_workers = workers or os.cpu_count() or 1
        new_stats: list[tuple[str, int, int, int, str]] = []
        new_facts: list[tuple[str, str, dict[str, Any]]] = []
        pending_facts: dict[str, tuple[str, str]] = {}
        for rel, digest, size, found, st_size, mtime_ns, ino in inspect_files(
            jobs, workers=n_workers, known=known_md5s, progress=bar
        ):
            kind = kinds[rel]
            if not digest:  # not read (see _work): nothing to remember about it
                v.files[rel] = FileInfo(rel, kind, "", 0, found or {})
                continue
            new_stats.append((abs_paths[rel], st_size, mtime_ns, ino, digest))
            if found is None:
                pending_facts[rel] = (digest, kind)
                v.files[rel] = FileInfo(rel, kind, digest, size, {})
            else:
                if not found.get("partial"):  # facts that depend on a limit are not cached
                    new_facts.append((digest, kind, found))
                v.files[rel] = FileInfo(rel, kind, digest, size, found)
        if pending_facts:
            got = cache.facts(pending_facts.values())
            for rel, key in pending_facts.items():
                if key in got:
                    v.files[rel].facts = got[key]
                else:  # evicted between the two reads: inspect here
                    digest, size, found = inspect_file(
                        abs_paths[rel], key[1], max_pixels=data_cfg.max_pixels, max_bytes=max_bytes
                    )
                    v.files[rel] = FileInfo(rel, key[1], digest, size, found)
                    if digest and not found.get("partial"):
                        new_facts.append((digest, key[1], found))
        cache.store(new_stats, new_facts)
        v.cache_note = cache.problem
        v.timings["inspect"] = time.perf_counter() - started
        v.timings["inspected_files"] = float(len(jobs))
    finally:
        cache.close()
    apply_rules(v, data_cfg, images_dir, masks_dir)
    v.timings["total"] = time.perf_counter() - started
    return v


# ---------------------------------------------------------------------------- step + report
def raise_data_errors(
    v: Validation,
    *,
    hint: str,
    summary: str,
    outputs: dict[str, Any],
    what: str = "",
    report: dict[str, Any] | None = None,
) -> NoReturn:
    """Raise the DataError of a failed validation: the count, the first error and its file in the
    message; the whole report (default: the validation's) for `--json`."""
    first = v.errors[0]
    raise DataError(
        f"{len(v.errors)} data error(s) in {v.root}; {what}first: {first.message}",
        hint=hint,
        file=str(v.root / first.path) if first.path else None,
        summary=summary,
        outputs=outputs,
        data={"report": report if report is not None else v.report()},
    )


def render_summary(
    report: dict[str, Any], *, title: str, cap: int, extra_rows: Iterable[tuple[str, Any]] = ()
) -> str:
    from traingate.report import code_span, escape_cell

    ok = report["status"] == "pass"
    counts = report["counts"]
    lines = [f"### {'✅' if ok else '❌'} {title}", "", "| | count |", "|---|---:|"]
    for key in ("images", "masks", "pairs", "valid_pairs"):
        lines.append(f"| {key.replace('_', ' ')} | {counts.get(key, 0)} |")
    for key, value in extra_rows:
        lines.append(f"| {key} | {value} |")
    stats = report.get("statistics", {})
    if stats:
        lines += [
            "",
            "**Statistics:** " + ", ".join(f"{k} {v}" for k, v in stats.items() if k != "resolutions"),
        ]
    for heading, issues in (("Errors", report["errors"]), ("Warnings", report["warnings"])):
        if not issues:
            continue
        by_code = Counter(i["code"] for i in issues)
        lines += [
            "",
            f"**{heading} ({len(issues)}):** "
            + ", ".join(f"`{c}` ({n})" for c, n in sorted(by_code.items())),
            "",
            "| code | file | problem |",
            "|---|---|---|",
        ]
        for issue in issues[:cap]:
            # File names come from whoever pushed the data: escaped like every other report's.
            lines.append(
                f"| {code_span(issue['code'])} | {code_span(issue['path'])} "
                f"| {escape_cell(issue['message'])} |"
            )
        if len(issues) > cap:
            lines.append(f"| … | … | {len(issues) - cap} more in the JSON report |")
    if not ok:
        lines += [
            "",
            "**What to fix:** correct or remove the files listed above on the data branch and push "
            "again; the error codes are explained in docs/data.md.",
        ]
    return "\n".join(lines) + "\n"


def validate_step(
    cfg: Config,
    path: Path | None = None,
    use_cache: bool = True,
    report_path: Path | None = None,
) -> StepResult:
    from traingate.result import StepResult
    from traingate.state import atomic_write_json, reports_dir

    root = path if path is not None else cfg.data_root
    if not root.exists():
        raise DataError(
            f"dataset folder {root} does not exist",
            hint=f"pass the folder holding {cfg.data.images}/ and {cfg.data.masks}/, or set data.root",
            outputs={"validation_passed": False},
        )
    v = validate_dataset(
        root,
        cfg.data,
        cache_dir=resolve_cache_dir(cfg) if use_cache else None,
        workers=cfg.data.workers,
    )
    report = v.report()
    target = report_path or reports_dir(cfg.workspace_dir) / "validation-report.json"
    atomic_write_json(target, report)
    summary = render_summary(report, title=f"Data validation of `{root}`", cap=cfg.data.max_errors_in_summary)
    outputs = {
        "validation_passed": v.passed,
        "images": v.counts.get("images", 0),
        "pairs": v.counts.get("pairs", 0),
        "valid_pairs": v.counts.get("valid_pairs", 0),
        "report": str(target),
    }
    warnings = [w.message for w in v.warnings[: cfg.data.max_errors_in_summary]]
    if v.cache_note:
        warnings.append(v.cache_note)
    if not v.passed:
        raise_data_errors(
            v,
            hint=f"fix the files listed in the step summary / {target}, then re-run",
            summary=summary,
            outputs=outputs,
            report=report,
        )
    return StepResult(
        outputs=outputs,
        summary=summary,
        message=f"{root}: {v.counts['valid_pairs']} valid pairs, no errors ({len(v.warnings)} warnings)",
        data={"report": report},
        warnings=warnings,
    )
