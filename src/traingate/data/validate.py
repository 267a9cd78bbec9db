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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from traingate.contracts import DataIssue, DataReport, MergeSummary
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
    from traingate.data.cache import ValidationCache
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


# Every finding names its file; the same type is the report's (traingate.contracts).
Issue = DataIssue


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

    def data_report(self, merge: MergeSummary | None = None) -> DataReport:
        """The report of this validation (with the merge's section when a merge made it)."""
        return DataReport(
            status="pass" if self.passed else "fail",
            counts=dict(self.counts),
            errors=tuple(self.errors),
            warnings=tuple(self.warnings),
            statistics=dict(self.statistics),
            merge=merge,
        )

    def report(self) -> dict[str, Any]:
        """The report as JSON (what the report file holds)."""
        return self.data_report().to_json()


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


# (path to open, path relative to the scanned folder, its stat)
ScannedFile = tuple[str, str, os.stat_result]
# (code, relative path, message, is a file entry)
ScanProblem = tuple[str, str, str, bool]


def scan_folder(folder: Path, *, root: Path, max_bytes: int) -> tuple[list[ScannedFile], list[ScanProblem]]:
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
    scan = _Scan(os.path.realpath(root), max_bytes)
    top = os.path.realpath(folder)
    if not _inside(top, scan.root_real):
        scan.refuse(
            "unsafe_path", "", f"folder {folder} resolves to {top}, outside the dataset {scan.root_real}"
        )
        return scan.files, scan.problems
    stack: list[tuple[str, str]] = [(top, "")]
    while stack:
        stack.extend(reversed(scan.folder(*stack.pop())))
    return scan.files, scan.problems


@dataclass
class _Scan:
    """What `scan_folder` found so far; one method per kind of entry."""

    root_real: str
    max_bytes: int
    files: list[ScannedFile] = field(default_factory=list)
    problems: list[ScanProblem] = field(default_factory=list)

    def refuse(self, code: str, rel: str, message: str, as_file: bool = False) -> None:
        self.problems.append((code, rel, message, as_file))

    def folder(self, path: str, rel_dir: str) -> list[tuple[str, str]]:
        """Scan one folder; return its subfolders to walk."""
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            self.refuse(
                "unreadable_file", rel_dir.rstrip("/"), f"folder cannot be listed: {err.strerror or err}"
            )
            return []
        subdirs: list[tuple[str, str]] = []
        for entry in entries:
            if not entry.name.startswith("."):
                subdirs += self.entry(entry, rel_dir + entry.name)
        return subdirs

    def entry(self, entry: os.DirEntry[str], rel: str) -> list[tuple[str, str]]:
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as err:
            self.refuse("unreadable_file", rel, f"cannot be read: {err.strerror or err}", True)
            return []
        target = entry.path
        if stat.S_ISLNK(st.st_mode):
            followed = self.follow_link(entry.path, rel)
            if followed is None:
                return []
            target, st = followed
        if stat.S_ISDIR(st.st_mode):
            return self.subfolder(entry, rel, linked=target != entry.path)
        self.regular_file(target, rel, st)
        return []

    def follow_link(self, path: str, rel: str) -> tuple[str, os.stat_result] | None:
        """The link's target and its stat, or None (and the problem) when it may not be followed."""
        link = os.readlink(path)  # noqa: PTH115
        real = os.path.realpath(path)
        if not _inside(real, self.root_real):
            outside = f"symbolic link to {real}, outside the dataset {self.root_real}"
            self.refuse("unsafe_path", rel, outside, not os.path.isdir(real))  # noqa: PTH112
            return None
        try:
            return real, os.stat(real)  # noqa: PTH116
        except FileNotFoundError:
            self.refuse("unsafe_path", rel, f"dangling symbolic link to {link} (no such file)", True)
        except OSError as err:
            self.refuse("unreadable_file", rel, f"cannot be read: {err.strerror or err}", True)
        return None

    def subfolder(self, entry: os.DirEntry[str], rel: str, *, linked: bool) -> list[tuple[str, str]]:
        if linked:
            self.refuse("unsupported_format", rel, "a link to a folder is not followed; copy the files in")
        elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:  # noqa: PTH122
            # It poses as a file: listed as one, so its mask is not reported missing.
            self.refuse("unsupported_format", rel, "is a folder named like an image file", True)
        else:
            return [(entry.path, rel + "/")]
        return []

    def regular_file(self, target: str, rel: str, st: os.stat_result) -> None:
        if not stat.S_ISREG(st.st_mode):
            what = f"is {describe_mode(st.st_mode)}, not a regular file; it was not opened"
            self.refuse("unsupported_format", rel, what, True)
        elif st.st_size > self.max_bytes:
            limit = f"above data.max_file_mb ({self.max_bytes / 1e6:g} MB); it was not read"
            self.refuse("too_large", rel, f"file is {st.st_size} bytes, {limit}", True)
        else:
            self.files.append((target, rel, st))


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


@dataclass
class _Rules:
    """What the rules share while they run: the validation they fill in, the configured limits,
    and the files already found bad (a bad file is not judged again as part of a pair)."""

    v: Validation
    cfg: DataConfig
    images_dir: str
    masks_dir: str
    bad_files: set[str] = field(default_factory=set)

    def err(self, code: str, rel: str, msg: str) -> None:
        self.v.errors.append(Issue(code, rel, msg))
        self.bad_files.add(rel)


# A per-file rule: record its finding; True when the file needs no further checks.
FileRule = Callable[[_Rules, FileInfo, str], bool]


def _rule_not_read(r: _Rules, info: FileInfo, ext: str) -> bool:
    facts = info.facts
    if not info.md5 and facts.get("error"):  # never read: why matters more than its name
        r.err(facts["error"], info.rel, f"{info.rel}: {facts.get('detail', facts['error'])}")
        return True
    return False


def _rule_extension(r: _Rules, info: FileInfo, ext: str) -> bool:
    rel = info.rel
    if info.kind == "image" and ext not in IMAGE_EXTENSIONS:
        r.err("unsupported_format", rel, f"{rel}: extension {ext or '(none)'} is not one of jpg, jpeg, png")
        return True
    if info.kind == "mask" and ext not in MASK_EXTENSIONS:
        r.err(
            "unsupported_format",
            rel,
            f"{rel}: masks must be lossless .png (a {ext or 'file without extension'} mask "
            "would carry compression artefacts as label values)",
        )
        return True
    return False


def _rule_decoded(r: _Rules, info: FileInfo, ext: str) -> bool:
    facts = info.facts
    if facts.get("error"):
        r.err(facts["error"], info.rel, f"{info.rel}: {facts.get('detail', facts['error'])}")
        return True
    return False


def _rule_max_pixels(r: _Rules, info: FileInfo, ext: str) -> bool:
    facts = info.facts
    if facts.get("width", 0) * facts.get("height", 0) <= r.cfg.max_pixels:
        return False
    # Cached facts of a file read under a higher limit: the rule still holds.
    r.err(
        "too_large",
        info.rel,
        f"{info.rel}: {_fmt_size(facts)} is {facts['width'] * facts['height']} pixels, "
        f"above data.max_pixels {r.cfg.max_pixels}",
    )
    return True


def _rule_content_format(r: _Rules, info: FileInfo, ext: str) -> bool:
    content = info.facts.get("format")
    if info.kind != "image" or not content or content == _CONTENT_FORMAT[ext]:
        return False
    better = ".png" if content == "PNG" else ".jpg"
    r.err(
        "wrong_extension",
        info.rel,
        f"{info.rel}: the content is {content} but the name ends in {ext}; rename it to "
        f"{Path(info.rel).stem}{better} (or re-export it as {_CONTENT_FORMAT[ext]})",
    )
    return True


def _rule_size(r: _Rules, info: FileInfo, ext: str) -> bool:
    size = tuple(r.cfg.size) if r.cfg.size else None
    facts = info.facts
    if info.kind == "image" and size and (facts["width"], facts["height"]) != size:
        msg = f"{info.rel}: image is {_fmt_size(facts)}, data.size requires {size[0]}x{size[1]}"
        r.err("resolution_mismatch", info.rel, msg)
    return False


def _rule_mask_values(r: _Rules, info: FileInfo, ext: str) -> bool:
    if info.kind != "mask":
        return False
    allowed = set(r.cfg.mask_values)
    extra = sorted({int(k) for k in info.facts.get("values", {})} - allowed)
    if info.facts.get("colour"):
        r.err("non_binary_mask", info.rel, f"{info.rel}: mask has different colour channels; use a gray mask")
    elif extra:
        shown = ", ".join(map(str, extra[:6])) + (" …" if len(extra) > 6 else "")
        msg = f"{info.rel}: mask values {shown} are not in data.mask_values {sorted(allowed)}"
        r.err("non_binary_mask", info.rel, msg)
    return False


# In order: the first rule that settles a file ends its checks (an unreadable file has no
# extension worth reporting, a mislabelled one no resolution).
FILE_RULES: tuple[FileRule, ...] = (
    _rule_not_read,
    _rule_extension,
    _rule_decoded,
    _rule_max_pixels,
    _rule_content_format,
    _rule_size,
    _rule_mask_values,
)


def _check_files(r: _Rules) -> None:
    for _rel, info in sorted(r.v.files.items()):
        ext = Path(info.rel).suffix.lower()
        for rule in FILE_RULES:
            if rule(r, info, ext):
                break


def _pair_by_stem(r: _Rules) -> dict[str, tuple[str, str]]:
    """Pair images and masks by stem; report stems with no partner or several files."""
    images: dict[str, list[str]] = defaultdict(list)
    masks: dict[str, list[str]] = defaultdict(list)
    for rel, info in r.v.files.items():
        folder = r.images_dir if info.kind == "image" else r.masks_dir
        (images if info.kind == "image" else masks)[_stem_key(rel[len(folder) + 1 :])].append(rel)
    paired: dict[str, tuple[str, str]] = {}
    for stem in sorted(set(images) | set(masks)):
        imgs, msks = images.get(stem, []), masks.get(stem, [])
        for what, rels in (("images", imgs), ("masks", msks)):
            if len(rels) > 1:
                for rel in rels:
                    r.err("name_conflict", rel, f"{rel}: {len(rels)} {what} share the name {stem!r}: {rels}")
        if imgs and not msks:
            r.err("missing_mask", imgs[0], f"{imgs[0]}: no mask {r.masks_dir}/{stem}.png")
        elif msks and not imgs:
            r.err("missing_image", msks[0], f"{msks[0]}: no image {r.images_dir}/{stem}.jpg|.jpeg|.png")
        elif len(imgs) == 1 and len(msks) == 1:
            paired[stem] = (imgs[0], msks[0])
    return paired


def _foreground(r: _Rules, img_rel: str, mask_rel: str, msk: dict[str, Any]) -> float:
    """The mask's foreground fraction; an empty or (by data.min_foreground) near-empty mask is
    an error, below the default threshold only a warning."""
    fraction: float = msk["foreground"] / msk["pixels"] if msk["pixels"] else 0.0
    threshold = r.cfg.min_foreground
    if msk["foreground"] == 0:
        r.err("empty_mask", mask_rel, f"{mask_rel}: mask has no foreground pixels (image {img_rel})")
    elif threshold is not None and fraction < threshold:
        # The user chose the threshold: below it the pair is not trained on.
        msg = f"{mask_rel}: foreground is {fraction:.5f} of the mask, below data.min_foreground {threshold}"
        r.err("near_empty_mask", mask_rel, msg)
    elif threshold is None and fraction < DEFAULT_MIN_FOREGROUND:
        r.v.warnings.append(
            Issue(
                "near_empty_mask",
                mask_rel,
                f"{mask_rel}: foreground is {fraction:.5f} of the mask, below the default "
                f"{DEFAULT_MIN_FOREGROUND} (set data.min_foreground to make this an error)",
            )
        )
    return fraction


def _check_pairs(r: _Rules, paired: dict[str, tuple[str, str]]) -> tuple[list[float], Counter[str]]:
    """Image vs mask size and the mask's foreground; returns the fractions and resolutions seen."""
    fractions: list[float] = []
    resolutions: Counter[str] = Counter()
    for img_rel, mask_rel in paired.values():
        img, msk = r.v.files[img_rel].facts, r.v.files[mask_rel].facts
        if img.get("error") or msk.get("error"):
            continue
        if (
            "width" in img
            and "width" in msk
            and (img["width"], img["height"]) != (msk["width"], msk["height"])
        ):
            msg = f"{mask_rel}: mask is {_fmt_size(msk)} but its image {img_rel} is {_fmt_size(img)}"
            r.err("resolution_mismatch", mask_rel, msg)
        if "pixels" in msk and mask_rel not in r.bad_files:
            fractions.append(_foreground(r, img_rel, mask_rel, msk))
        if "width" in img:
            resolutions[_fmt_size(img)] += 1
    return fractions, resolutions


def _check_duplicates(r: _Rules) -> None:
    """Identical images under different names leak between train and validation splits.
    Identical masks are normal (two empty backgrounds), so only images are checked."""
    by_md5: dict[str, list[str]] = defaultdict(list)
    for rel, info in r.v.files.items():
        if info.kind == "image" and info.md5:  # "" = never read (an unsafe or unreadable file)
            by_md5[info.md5].append(rel)
    for md5, rels in sorted(by_md5.items()):
        rels.sort()
        for rel in rels[1:]:
            r.err("duplicate_content", rel, f"{rel}: same content as {rels[0]} (md5 {md5})")


def _statistics(fractions: list[float], resolutions: Counter[str]) -> dict[str, Any]:
    stats: dict[str, Any] = {}
    if resolutions:
        stats["resolution"] = resolutions.most_common(1)[0][0] if len(resolutions) == 1 else "mixed"
        stats["resolutions"] = dict(sorted(resolutions.items()))
    if fractions:
        stats["foreground_median"] = round(statistics.median(fractions), 6)
        stats["foreground_std"] = round(statistics.pstdev(fractions), 6)
        stats["foreground_min"] = round(min(fractions), 6)
        stats["foreground_max"] = round(max(fractions), 6)
    return stats


def apply_rules(v: Validation, data_cfg: DataConfig, images_dir: str, masks_dir: str) -> None:
    """Turn the facts into errors, warnings, counts and statistics (cheap: no file access)."""
    r = _Rules(v, data_cfg, images_dir, masks_dir)
    _check_files(r)
    v.pairs = paired = _pair_by_stem(r)
    fractions, resolutions = _check_pairs(r, paired)
    _check_duplicates(r)
    n_images = sum(1 for i in v.files.values() if i.kind == "image")
    valid_pairs = sum(1 for a, b in paired.values() if a not in r.bad_files and b not in r.bad_files)
    v.counts = {
        "images": n_images,
        "masks": len(v.files) - n_images,
        "pairs": len(paired),
        "valid_pairs": valid_pairs,
    }
    v.statistics = _statistics(fractions, resolutions)
    v.errors.sort(key=lambda i: (i.path, i.code))
    v.warnings.sort(key=lambda i: (i.path, i.code))


# ------------------------------------------------------------------------------------- main
def resolve_cache_dir(cfg: Config) -> Path:
    from traingate.data.cache import default_cache_dir

    return cfg.path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()


@dataclass
class _Listing:
    """The files `validate_dataset` will inspect, from the scan: (path to open, kind, dataset-
    relative path) with the scan's stat (of the target for a link: no second stat pass)."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)
    stats: dict[str, os.stat_result] = field(default_factory=dict)
    refused: int = 0

    @property
    def abs_paths(self) -> dict[str, str]:
        return {rel: p for p, _, rel in self.entries}

    @property
    def kinds(self) -> dict[str, str]:
        return {rel: kind for _p, kind, rel in self.entries}


_NO_COUNTS = {"images": 0, "masks": 0, "pairs": 0, "valid_pairs": 0}


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
    started = time.perf_counter()
    v = Validation(root=root)
    images_dir, masks_dir = data_cfg.images.strip("/"), data_cfg.masks.strip("/")
    img_folder, mask_folder = root / images_dir, root / masks_dir
    if not _folders_exist(
        v, (img_folder, images_dir, "missing_images_dir"), (mask_folder, masks_dir, "missing_masks_dir")
    ):
        v.counts = dict(_NO_COUNTS)
        return v
    max_bytes = int(data_cfg.max_file_mb * 1_000_000)
    listing = _list_files(v, ((img_folder, images_dir, "image"), (mask_folder, masks_dir, "mask")), max_bytes)
    if not listing.entries and not listing.refused:
        if require_data:
            v.errors.append(Issue("no_data", "", f"{img_folder} and {mask_folder} hold no files"))
        v.counts = dict(_NO_COUNTS)
        return v
    _inspect(
        v,
        listing,
        data_cfg,
        max_bytes,
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
        stream=stream,
        started=started,
    )
    apply_rules(v, data_cfg, images_dir, masks_dir)
    v.timings["total"] = time.perf_counter() - started
    return v


def _folders_exist(v: Validation, *folders: tuple[Path, str, str]) -> bool:
    missing = False
    for folder, name, code in folders:
        if not folder.is_dir():
            v.errors.append(Issue(code, name, f"no folder {folder}"))
            missing = True
    return not missing


def _list_files(v: Validation, folders: Iterable[tuple[Path, str, str]], max_bytes: int) -> _Listing:
    """Scan the images and masks folders; what the scan refused goes into `v` at once."""
    listing = _Listing()
    for folder, prefix, kind in folders:
        scanned, problems = scan_folder(folder, root=v.root, max_bytes=max_bytes)
        for abs_path, rel, st in scanned:
            listing.entries.append((abs_path, kind, f"{prefix}/{rel}"))
            listing.stats[f"{prefix}/{rel}"] = st
        for code, rel, message, as_file in problems:
            full = f"{prefix}/{rel}" if rel else prefix
            if as_file:
                # A file: it stays in the listing (never read), so its partner is not blamed.
                v.files[full] = FileInfo(full, kind, "", 0, {"error": code, "detail": message})
            else:
                v.errors.append(Issue(code, full, f"{full}: {message}"))
            listing.refused += 1
    return listing


def _inspect(
    v: Validation,
    listing: _Listing,
    data_cfg: DataConfig,
    max_bytes: int,
    *,
    cache_dir: Path | None,
    workers: int,
    progress: bool | None,
    stream: TextIO | None,
    started: float,
) -> None:
    """Facts for every listed file: from the cache when its stat and content are known, else
    read and inspected (in parallel), then remembered."""
    from traingate.data.cache import ValidationCache

    cache = ValidationCache.open(cache_dir, FACTS_VERSION)
    try:
        jobs = _from_cache(v, listing, cache, data_cfg, max_bytes)
        # Content seen before under another path (a fresh checkout has new mtimes): hash, reuse.
        known_md5s = frozenset(cache.known_content()) if cache.enabled and jobs else frozenset()
        v.timings["lookup"] = time.perf_counter() - started
        show = progress if progress is not None else len(jobs) >= 200
        bar = Progress(len(jobs), "validating", stream=stream) if show and jobs else None
        found = inspect_files(jobs, workers=workers or os.cpu_count() or 1, known=known_md5s, progress=bar)
        new = _record_inspected(v, listing, found)
        _fill_known_facts(v, listing, cache, new, data_cfg, max_bytes)
        cache.store(new.stats, new.facts)
        v.cache_note = cache.problem
        v.timings["inspect"] = time.perf_counter() - started
        v.timings["inspected_files"] = float(len(jobs))
    finally:
        cache.close()


def _from_cache(
    v: Validation, listing: _Listing, cache: ValidationCache, data_cfg: DataConfig, max_bytes: int
) -> list[tuple[str, str, str, int, int]]:
    """Fill `v.files` from the cache where the file's stat and its content's facts are known;
    return the jobs for the rest."""
    from traingate.data.cache import stat_key

    abs_paths = listing.abs_paths
    memo = cache.stat_hashes(abs_paths.values())
    hashed: dict[str, str] = {}
    for _p, _kind, rel in listing.entries:
        hit = memo.get(abs_paths[rel])
        if hit and hit[:3] == stat_key(listing.stats[rel]):
            hashed[rel] = hit[3]
    facts = cache.facts((hashed[rel], kind) for _, kind, rel in listing.entries if rel in hashed)
    jobs: list[tuple[str, str, str, int, int]] = []
    for _p, kind, rel in listing.entries:
        md5 = hashed.get(rel)
        if md5 is not None and (md5, kind) in facts:
            v.files[rel] = FileInfo(rel, kind, md5, listing.stats[rel].st_size, facts[(md5, kind)])
        else:
            jobs.append((abs_paths[rel], kind, rel, data_cfg.max_pixels, max_bytes))
    return jobs


@dataclass
class _Inspected:
    """What the inspection adds to the cache, and the files whose facts the cache holds."""

    stats: list[tuple[str, int, int, int, str]] = field(default_factory=list)
    facts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    pending: dict[str, tuple[str, str]] = field(default_factory=dict)


def _record_inspected(
    v: Validation,
    listing: _Listing,
    found: Iterable[tuple[str, str, int, dict[str, Any] | None, int, int, int]],
) -> _Inspected:
    new = _Inspected()
    abs_paths, kinds = listing.abs_paths, listing.kinds
    for rel, digest, size, facts, st_size, mtime_ns, ino in found:
        kind = kinds[rel]
        if not digest:  # not read (see _work): nothing to remember about it
            v.files[rel] = FileInfo(rel, kind, "", 0, facts or {})
            continue
        new.stats.append((abs_paths[rel], st_size, mtime_ns, ino, digest))
        if facts is None:
            new.pending[rel] = (digest, kind)
            v.files[rel] = FileInfo(rel, kind, digest, size, {})
        else:
            if not facts.get("partial"):  # facts that depend on a limit are not cached
                new.facts.append((digest, kind, facts))
            v.files[rel] = FileInfo(rel, kind, digest, size, facts)
    return new


def _fill_known_facts(
    v: Validation,
    listing: _Listing,
    cache: ValidationCache,
    new: _Inspected,
    data_cfg: DataConfig,
    max_bytes: int,
) -> None:
    """Facts of content the cache knew (hashed by a worker, not inspected again)."""
    if not new.pending:
        return
    got = cache.facts(new.pending.values())
    abs_paths = listing.abs_paths
    for rel, key in new.pending.items():
        if key in got:
            v.files[rel].facts = got[key]
            continue
        # Evicted between the two reads: inspect here.
        digest, size, found = inspect_file(
            abs_paths[rel], key[1], max_pixels=data_cfg.max_pixels, max_bytes=max_bytes
        )
        v.files[rel] = FileInfo(rel, key[1], digest, size, found)
        if digest and not found.get("partial"):
            new.facts.append((digest, key[1], found))


# ---------------------------------------------------------------------------- step + report
@dataclass(frozen=True)
class ValidationResult:
    """What `data validate` found and where it wrote the report."""

    root: Path
    report: DataReport
    report_path: Path

    @property
    def passed(self) -> bool:
        return self.report.passed

    def outputs(self) -> dict[str, Any]:
        counts = self.report.counts
        return {
            "validation_passed": self.passed,
            "images": counts.get("images", 0),
            "pairs": counts.get("pairs", 0),
            "valid_pairs": counts.get("valid_pairs", 0),
            "report": str(self.report_path),
        }


def data_error(
    root: Path, report: DataReport, *, hint: str, summary: str, outputs: dict[str, Any], what: str = ""
) -> DataError:
    """The DataError of a failed validation of `root`: the count, the first error and its file
    in the message; the whole report for `--json`."""
    first = report.errors[0]
    return DataError(
        f"{len(report.errors)} data error(s) in {root}; {what}first: {first.message}",
        hint=hint,
        file=str(root / first.path) if first.path else None,
        summary=summary,
        outputs=outputs,
        data={"report": report.to_json()},
    )


def render_summary(
    report: DataReport | Mapping[str, Any],
    *,
    title: str,
    cap: int,
    extra_rows: Iterable[tuple[str, Any]] = (),
) -> str:
    if not isinstance(report, DataReport):
        report = DataReport.from_json(report)
    lines = [f"### {'✅' if report.passed else '❌'} {title}", "", "| | count |", "|---|---:|"]
    for key in ("images", "masks", "pairs", "valid_pairs"):
        lines.append(f"| {key.replace('_', ' ')} | {report.counts.get(key, 0)} |")
    for key, value in extra_rows:
        lines.append(f"| {key} | {value} |")
    stats = report.statistics
    if stats:
        lines += [
            "",
            "**Statistics:** " + ", ".join(f"{k} {v}" for k, v in stats.items() if k != "resolutions"),
        ]
    for heading, issues in (("Errors", report.errors), ("Warnings", report.warnings)):
        lines += _summary_issues(heading, issues, cap)
    if not report.passed:
        lines += [
            "",
            "**What to fix:** correct or remove the files listed above on the data branch and push "
            "again; the error codes are explained in docs/data.md.",
        ]
    return "\n".join(lines) + "\n"


def _summary_issues(heading: str, issues: tuple[DataIssue, ...], cap: int) -> list[str]:
    from traingate.report import code_span, escape_cell

    if not issues:
        return []
    by_code = Counter(i.code for i in issues)
    lines = [
        "",
        f"**{heading} ({len(issues)}):** " + ", ".join(f"`{c}` ({n})" for c, n in sorted(by_code.items())),
        "",
        "| code | file | problem |",
        "|---|---|---|",
    ]
    # File names come from whoever pushed the data: escaped like every other report's.
    lines += [
        f"| {code_span(i.code)} | {code_span(i.path)} | {escape_cell(i.message)} |" for i in issues[:cap]
    ]
    if len(issues) > cap:
        lines.append(f"| … | … | {len(issues) - cap} more in the JSON report |")
    return lines


def validate_step(
    cfg: Config,
    path: Path | None = None,
    use_cache: bool = True,
    report_path: Path | None = None,
) -> StepResult[ValidationResult]:
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
    result = ValidationResult(
        root, v.data_report(), report_path or reports_dir(cfg.workspace_dir) / "validation-report.json"
    )
    atomic_write_json(result.report_path, result.report.to_json())
    summary = render_summary(
        result.report, title=f"Data validation of `{root}`", cap=cfg.data.max_errors_in_summary
    )
    warnings = [w.message for w in v.warnings[: cfg.data.max_errors_in_summary]]
    if v.cache_note:
        warnings.append(v.cache_note)
    if not v.passed:
        hint = f"fix the files listed in the step summary / {result.report_path}, then re-run"
        raise data_error(root, result.report, hint=hint, summary=summary, outputs=result.outputs())
    return StepResult(
        outputs=result.outputs(),
        summary=summary,
        message=f"{root}: {v.counts['valid_pairs']} valid pairs, no errors ({len(v.warnings)} warnings)",
        data={"report": result.report.to_json()},
        warnings=warnings,
        value=result,
    )
