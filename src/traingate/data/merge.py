"""`traingate data merge`: validate new files and merge them into the stored dataset, loss-free.

Order matters and is the point of this module (field report 3):
1. validate the new files and check them against the stored dataset's manifest (names, content,
   resolution) — the manifest is one small object, the data is never downloaded;
2. upload the new objects, then the new listing, and ask the remote for all of them again;
3. only then write the `.dvc` pointer, drop the raw files from git, commit, and push the commit
   (fetch-rebase-retry when the branch moved).
A failure at 1 or 2 raises before anything is committed; re-running after any interruption
converges to the same result, because uploads skip what the remote already has and files that
are already stored with the same content count as merged, not as conflicts.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.contracts import DataReport, MergeCheck, MergeSummary, Replacement
from traingate.data.globs import glob_regex
from traingate.data.images import IMAGE_EXTENSIONS
from traingate.data.store import NewObject, Store, find_repo_root, open_store
from traingate.data.trust import check_branch
from traingate.data.validate import (
    FileInfo,
    Issue,
    Validation,
    data_error,
    render_summary,
    resolve_cache_dir,
    split_rel,
    validate_dataset,
)
from traingate.errors import ConfigError, DataError, StoreError, UsageError

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.data.manifest import Pointer
    from traingate.gha import ActionsContext
    from traingate.git import Git
    from traingate.result import StepResult


@dataclass
class MergePlan:
    entries: dict[str, str]  # the merged listing: relpath -> md5
    new: list[NewObject] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    replaced: list[Replacement] = field(default_factory=list)
    removed_for_replace: list[str] = field(default_factory=list)
    checks: list[MergeCheck] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.new or self.replaced)


@dataclass(frozen=True)
class _Stored:
    """The stored dataset's listing, indexed the ways the plan asks it."""

    manifest: dict[str, str]
    images_dir: str
    masks_dir: str
    by_stem: dict[tuple[str, str], list[str]]
    image_md5: dict[str, str]  # md5 -> the first stored image with that content

    @classmethod
    def index(cls, manifest: dict[str, str], images_dir: str, masks_dir: str) -> _Stored:
        stored = cls(manifest, images_dir, masks_dir, {}, {})
        for rel, md5 in manifest.items():
            k = stored.key(rel)
            if k is not None:
                stored.by_stem.setdefault(k, []).append(rel)
            if k is not None and k[0] == "image":
                stored.image_md5.setdefault(md5, rel)
        return stored

    def key(self, rel: str) -> tuple[str, str] | None:
        return split_rel(rel, self.images_dir, self.masks_dir)

    def completes(self, issue: Issue) -> bool:
        """A pairing error of the new set that the stored dataset completes (a corrected mask
        for a stored image): not an error in a merge."""
        k = self.key(issue.path)
        if k is None:
            return False
        partner = {"missing_mask": "mask", "missing_image": "image"}.get(issue.code)
        return partner is not None and (partner, k[1]) in self.by_stem

    def clashing(self, rel: str) -> list[str]:
        """Stored files the new `rel` would take the place of: same name, or same stem."""
        k = self.key(rel)
        siblings = [s for s in self.by_stem.get(k, []) if s != rel] if k is not None else []
        return ([rel] if rel in self.manifest else []) + siblings


def plan_merge(
    v: Validation,
    manifest: dict[str, str],
    stored_meta: dict[str, Any],
    *,
    replace: bool,
    images_dir: str,
    masks_dir: str,
    size_configured: bool,
) -> MergePlan:
    """Check the new files against the stored dataset and compute the merged listing.

    Adds `name_conflict`, `duplicate_content` and `resolution_mismatch` errors to `v`; drops the
    new set's pairing errors that the stored dataset completes (a corrected mask for a stored
    image). Nothing stored is removed unless `replace`, and then it is recorded.
    """
    stored = _Stored.index(manifest, images_dir, masks_dir)
    plan = MergePlan(entries=dict(manifest))
    v.errors = [issue for issue in v.errors if not stored.completes(issue)]
    placed = Counter(
        _place(v, plan, stored, rel, info, replace=replace) for rel, info in sorted(v.files.items())
    )
    stored_res = stored_meta.get("resolution")
    mismatches = 0 if size_configured else _check_resolution(v, stored_res, manifest)
    v.errors.sort(key=lambda i: (i.path, i.code))
    plan.checks = [
        MergeCheck("names", placed["conflict"] == 0, f"{placed['conflict']} conflict(s)"),
        MergeCheck("content duplicates", placed["duplicate"] == 0, f"{placed['duplicate']} duplicate(s)"),
        MergeCheck("resolution consistency", mismatches == 0, f"stored {stored_res or 'unknown'}"),
    ]
    return plan


def _place(
    v: Validation, plan: MergePlan, stored: _Stored, rel: str, info: FileInfo, *, replace: bool
) -> str:
    """Decide one new file: "stored" already (same content), a "conflict" or a "duplicate"
    (an error in `v`), or "new" (in the plan, replacing what it clashes with when `replace`)."""
    if stored.manifest.get(rel) == info.md5:
        plan.already_stored.append(rel)
        return "stored"
    clashing = stored.clashing(rel)
    if clashing and not replace:
        olds = ", ".join(f"{old} (md5 {stored.manifest[old]})" for old in clashing)
        msg = f"{rel} (md5 {info.md5}) has the name of stored {olds}; nothing was changed"
        v.errors.append(Issue("name_conflict", rel, msg))
        return "conflict"
    for old in clashing:
        plan.replaced.append(Replacement(rel, old, stored.manifest[old], info.md5))
        plan.entries.pop(old, None)
        plan.removed_for_replace.append(old)
    same = stored.image_md5.get(info.md5)
    if info.kind == "image" and same is not None and same != rel:
        v.errors.append(
            Issue("duplicate_content", rel, f"{rel}: same content as stored {same} (md5 {info.md5})")
        )
        return "duplicate"
    plan.entries[rel] = info.md5
    plan.new.append(NewObject(rel, v.root / rel, info.md5, info.size))
    return "new"


def _check_resolution(v: Validation, stored_res: str | None, manifest: dict[str, str]) -> int:
    """New images whose resolution differs from the stored dataset's single one (when data.size
    does not state it): `resolution_mismatch` errors in `v`; returns how many."""
    if not stored_res or stored_res == "mixed" or not manifest:
        return 0
    mismatches = 0
    for rel, info in sorted(v.files.items()):
        facts = info.facts
        if info.kind != "image" or "width" not in facts or facts.get("error"):
            continue
        res = f"{facts['width']}x{facts['height']}"
        if res != stored_res:
            mismatches += 1
            msg = (
                f"{rel}: image is {res}, the stored dataset is {stored_res} "
                "(set data.size to make the resolution explicit)"
            )
            v.errors.append(Issue("resolution_mismatch", rel, msg))
    return mismatches


def _count_images(entries: dict[str, str], images_dir: str) -> int:
    prefix = images_dir + "/"
    return sum(
        1 for rel in entries if rel.startswith(prefix) and Path(rel).suffix.lower() in IMAGE_EXTENSIONS
    )


def _merged_meta(v: Validation, plan: MergePlan, stored: dict[str, Any], images_dir: str) -> dict[str, Any]:
    res_new: Counter[str] = Counter()
    for obj in plan.new:
        facts = v.files[obj.rel].facts
        if obj.rel.startswith(images_dir + "/") and "width" in facts:
            res_new[f"{facts['width']}x{facts['height']}"] += 1
    stored_res = stored.get("resolution")
    resolutions = set(res_new) | ({stored_res} if stored_res else set())
    meta = dict(stored)
    if resolutions:
        meta["resolution"] = resolutions.pop() if len(resolutions) == 1 else "mixed"
    meta["images"] = _count_images(plan.entries, images_dir)
    return meta


def _commit_message(req: MergeRequest, plan: MergePlan, version: str) -> str:
    cfg = req.cfg
    new_images = sum(1 for o in plan.new if o.rel.startswith(req.images_dir + "/"))
    total = _count_images(plan.entries, req.images_dir)
    head = req.message or f"data: merge {new_images} new image(s) into {cfg.data.root} ({total} total)"
    lines = [head, "", f"Data version: {version}", f"Source: {req.src}"]
    if plan.replaced:
        lines += ["", "Replaced with --on-conflict replace (old md5 -> new md5):"]
        lines += [f"- {r.replaces} -> {r.path}: {r.old} -> {r.new}" for r in plan.replaced]
    return "\n".join(lines) + "\n"


def holds_files(folder: Path, ignore: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether `folder` brings anything to merge: a file that is neither hidden by name
    (`.gitkeep`) nor matched by `data.ignore` (left alone by design)."""
    return folder.is_dir() and any(
        p.is_file() and not _ignored(p.relative_to(folder).as_posix(), ignore)
        for p in folder.rglob("*")
        if not p.name.startswith(".")
    )


# Kept in the incoming folder so git keeps the (otherwise empty) folder: never data, never removed.
KEEP_FILES = frozenset({".gitkeep"})


def _ignored(rel: str, ignore: list[str] | tuple[str, ...]) -> bool:
    """`rel` (posix, relative to the incoming folder) or one of its parent folders matches a
    `data.ignore` glob: `.thumbs` covers `.thumbs/a.jpg`, `**/*.md` any Markdown file."""
    if not ignore:
        return False
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    return any(glob_regex(g.strip("/")).fullmatch(c) for c in candidates for g in ignore)


def _is_pair_candidate(rel: str, images_dir: str, masks_dir: str) -> bool:
    """A file the validation inspects: below images/ or masks/, no hidden part below them."""
    for folder in (images_dir, masks_dir):
        if rel.startswith(folder + "/"):
            return not any(part.startswith(".") for part in rel[len(folder) + 1 :].split("/"))
    return False


def unexpected_files(src: Path, images_dir: str, masks_dir: str, ignore: list[str]) -> list[Issue]:
    """Every file in the incoming folder that is not an image/mask candidate, a `.gitkeep`, or
    ignored by `data.ignore`: the merge would neither store it nor may it remove it, so it says
    so before anything moves. Hidden files and folders count (`.thumbs/`): nothing is skipped."""
    found: list[Issue] = []
    if not src.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = Path(dirpath).relative_to(src).as_posix()
        prefix = "" if rel_dir == "." else rel_dir + "/"
        names = sorted(filenames) + sorted(d for d in dirnames if Path(dirpath, d).is_symlink())
        dirnames[:] = sorted(d for d in dirnames if not Path(dirpath, d).is_symlink())
        for name in names:
            rel = prefix + name
            if name in KEEP_FILES or _ignored(rel, ignore) or _is_pair_candidate(rel, images_dir, masks_dir):
                continue
            found.append(
                Issue(
                    "unexpected_file",
                    rel,
                    f"{rel} is not an image/mask pair file: the merge stores only pairs and removes only "
                    "what it stored, so it refuses the batch rather than leave this file behind unsaid "
                    "(move it out of the folder, or list it in data.ignore to keep it there)",
                )
            )
    return found


def check_source(cfg: Config, src: Path, repo_root: Path, *, explicit: bool) -> None:
    """SOURCE must be a plain folder inside the repository: the merge removes the files it stored
    from it, so the repository root (`.git`, uncommitted work), another repository's top, or the
    dataset itself must never be one. Raise exit 2 naming the folder before anything is read."""
    data_root = cfg.data_root.resolve()
    problem = ""
    if not src.is_relative_to(repo_root):
        problem = f"is outside the repository {repo_root}"
    elif src == repo_root:
        problem = "is the top of the repository (it holds .git and everything else)"
    elif (src / ".git").exists():
        problem = "holds a .git: it is the top of another repository"
    elif {".git", ".dvc"} & set(src.relative_to(repo_root).parts):
        problem = "is inside git's or DVC's own folder (.git, .dvc)"
    elif cfg.source is not None and cfg.source.resolve().is_relative_to(src):
        problem = f"holds the configuration {cfg.source.resolve()}"
    elif src == data_root or src.is_relative_to(data_root):
        problem = f"is {'' if src == data_root else 'inside '}the dataset data.root ({data_root})"
    elif data_root.is_relative_to(src):
        problem = f"holds the dataset data.root ({data_root}) and its pointer"
    if not problem:
        return
    incoming = cfg.data.incoming
    if explicit:
        raise UsageError(
            f"SOURCE {src} {problem}; the merge removes the files it stores from SOURCE, so it must be "
            "a folder of new data inside the repository",
            hint=f"pass the folder that holds the new images/ and masks/ (default data.incoming: {incoming})",
        )
    raise ConfigError(
        f"data.incoming {incoming!r} ({src}) {problem}; the merge removes the files it stores from it, "
        "so it must be a folder of new data inside the repository",
        hint="set data.incoming to a folder such as data/new (not data.root, not the repository root)",
        file=str(cfg.source) if cfg.source else None,
    )


def _remove_stored(src: Path, rels: list[str]) -> list[Path]:
    """Remove exactly the pair files the store now holds (nothing else), then the folders this
    emptied; return the removed files. A folder that still holds anything stays."""
    removed: list[Path] = []
    folders: set[Path] = set()
    for rel in sorted(rels):
        path = src / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
            removed.append(path)
            folders.update(parent for parent in path.parents if parent.is_relative_to(src))
    for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    return removed


def _pending_removals(git: Git, src: Path, repo_root: Path, images_dir: str, masks_dir: str) -> list[str]:
    """Pair files of SOURCE that git tracks and that are gone from disk: removed by this merge or
    by an interrupted one, not committed yet. Only pair files: any other deletion is not ours."""
    if not src.is_relative_to(repo_root):
        return []
    rel_src = src.relative_to(repo_root).as_posix()
    pending = []
    for path in git.deleted_paths([rel_src]):
        inner = path[len(rel_src) + 1 :] if path.startswith(rel_src + "/") else ""
        if inner and _is_pair_candidate(inner, images_dir, masks_dir):
            pending.append(path)
    return pending


def _open_git(repo_root: Path, actions: ActionsContext) -> Git | None:
    """The repository the pointer is committed in: as the bot in Actions (else the user's own
    identity), pushing a detached checkout to the run's branch."""
    from traingate.git import Git, author_for

    git = Git(repo_root, author=author_for(actions.in_actions), branch=actions.branch)
    return git if git.is_repo() else None


# ----------------------------------------------------------------------------------- merge
@dataclass(frozen=True)
class MergeRequest:
    """What `data merge` was asked to do, resolved once; every phase reads it."""

    cfg: Config
    src: Path
    explicit: bool  # SOURCE given on the command line (not data.incoming)
    replace: bool
    commit: bool
    push: bool  # push the commit (asked, store.git_push, and there is a commit)
    message: str | None
    repo_root: Path
    report_path: Path

    @property
    def images_dir(self) -> str:
        return self.cfg.data.images.strip("/")

    @property
    def masks_dir(self) -> str:
        return self.cfg.data.masks.strip("/")

    @classmethod
    def resolve(
        cls,
        cfg: Config,
        source: Path | None,
        on_conflict: str | None,
        push: bool,
        commit: bool,
        message: str | None,
    ) -> MergeRequest:
        from traingate.state import reports_dir

        return cls(
            cfg=cfg,
            src=(source if source is not None else cfg.path(cfg.data.incoming)).resolve(),
            explicit=source is not None,
            replace=(on_conflict or cfg.data.on_conflict.value) == "replace",
            commit=commit,
            push=push and cfg.store.git_push and commit,
            message=message,
            repo_root=find_repo_root(cfg.base_dir),
            report_path=reports_dir(cfg.workspace_dir) / "data-report.json",
        )


@dataclass(frozen=True)
class MergeResult:
    """A merge that went through, or an interrupted one finished (`resumed`)."""

    report: DataReport  # with its `merge` section
    report_path: Path
    summary: str = ""
    message: str = ""
    warnings: tuple[str, ...] = ()
    resumed: bool = False

    @property
    def merge(self) -> MergeSummary:
        return self.report.merge or MergeSummary()

    def outputs(self) -> dict[str, Any]:
        return {
            **_count_outputs(True, self.merge, self.report_path),
            "data_version": self.merge.data_version,
            "commit_sha": self.merge.commit,
        }

    def step_result(self) -> StepResult[MergeResult]:
        from traingate.result import StepResult

        return StepResult(
            outputs=self.outputs(),
            summary=self.summary,
            message=self.message,
            data={} if self.resumed else {"report": self.report.to_json()},
            warnings=list(self.warnings),
            value=self,
        )


@dataclass(frozen=True)
class MergeRejected:
    """A batch the merge refused: nothing was stored or committed; the report says why.
    A value, not an exception, so the composer can act on it (post the commit comment)
    before it raises `error()`."""

    src: Path
    report: DataReport
    report_path: Path
    summary: str

    def outputs(self) -> dict[str, Any]:
        return _count_outputs(False, self.report.merge or MergeSummary(), self.report_path)

    def error(self) -> DataError:
        return data_error(
            self.src,
            self.report,
            what="nothing was merged; ",
            hint=f"fix the files listed in the step summary / {self.report_path}, then push again",
            summary=self.summary,
            outputs=self.outputs(),
        )


def _count_outputs(passed: bool, merge: MergeSummary, report_path: Path) -> dict[str, Any]:
    return {
        "validation_passed": passed,
        "total_images": merge.total_images,
        "new_images": merge.new_images,
        "existing_images": merge.existing_images,
        "report": str(report_path),
    }


def _count_rows(merge: MergeSummary) -> list[tuple[str, Any]]:
    return [
        ("stored before", merge.existing_images),
        ("new images", merge.new_images),
        ("total images", merge.total_images),
        ("replaced", len(merge.replaced)),
    ]


def merge_step(
    cfg: Config,
    source: Path | None = None,
    on_conflict: str | None = None,
    push: bool = True,
    commit: bool = True,
    message: str | None = None,
    *,
    actions: ActionsContext,
    store: Store | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> StepResult[MergeResult]:
    """`data merge` without the commit comment (`traingate.pipeline.merge` adds it): the
    merge's result, or its DataError when the batch was refused."""
    outcome = run_merge(
        cfg, source, on_conflict, push, commit, message, actions=actions, store=store, sleep=sleep
    )
    if isinstance(outcome, MergeRejected):
        raise outcome.error()
    return outcome.step_result()


def run_merge(
    cfg: Config,
    source: Path | None = None,
    on_conflict: str | None = None,
    push: bool = True,
    commit: bool = True,
    message: str | None = None,
    *,
    actions: ActionsContext,
    store: Store | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> MergeResult | MergeRejected:
    """Refuse early, validate and plan, then store the data, then commit the pointer.

    A refused batch comes back as `MergeRejected` (its report written); anything that stops
    the merge otherwise raises. `actions`: where this runs (in Actions the remote must outlive
    the runner; the branch a detached checkout is about).
    """
    started = time.perf_counter()
    req = MergeRequest.resolve(cfg, source, on_conflict, push, commit, message)
    git = _refuse_early(req, actions)
    if not holds_files(req.src, cfg.data.ignore):
        return _nothing_new(req, git, sleep)
    store = store or open_store(cfg, req.repo_root)
    try:
        checked = _check(req, store)
        if not checked.v.passed:
            return _reject(req, checked)
        version, to_commit = _store_data(req, checked, store)
        sha, warnings = _commit_and_push(req, git, checked, version, to_commit, sleep)
        merge = dataclass_replace(
            checked.merge,
            data_version=version,
            commit=sha,
            uploaded_objects=store.transfer.uploaded,
            downloaded_objects=store.transfer.downloaded,
            duration_seconds=round(time.perf_counter() - started, 3),
        )
        return _merged(req, checked, merge, warnings)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


def _refuse_early(req: MergeRequest, actions: ActionsContext) -> Git | None:
    """Refusals that need no data and move nothing come first (exit 2); returns the repository
    to commit in (None when there is none and none is needed)."""
    from traingate.data.store import require_durable_remote

    cfg = req.cfg
    check_source(cfg, req.src, req.repo_root, explicit=req.explicit)
    require_durable_remote(cfg, actions.in_actions)
    git = _open_git(req.repo_root, actions) if cfg.store.kind == "dvc" or req.commit else None
    if req.commit and git is not None:
        git.identity()
        if req.push and git.has_remote(cfg.store.git_remote):
            # The branch the pointer commit goes to, known before any data is stored: a detached
            # checkout with no branch in the context would upload the batch and then fail to push.
            git.current_branch()
    # A data branch changes data only: refuse before anything is validated, stored or committed.
    check_branch(cfg, source=req.src, outputs={"validation_passed": False}, actions=actions)
    return git


@dataclass(frozen=True)
class _Checked:
    """The new files validated and planned against the stored dataset."""

    v: Validation
    plan: MergePlan
    pointer: Pointer | None
    stored_meta: dict[str, Any]
    prepared: list[Path]  # files the store's set-up wrote (to commit)
    merge: MergeSummary  # the report's merge section as far as it is known before storing


def _check(req: MergeRequest, store: Store) -> _Checked:
    cfg = req.cfg
    v = validate_dataset(
        req.src, cfg.data, cache_dir=resolve_cache_dir(cfg), workers=cfg.data.workers, require_data=True
    )
    v.errors += unexpected_files(req.src, req.images_dir, req.masks_dir, cfg.data.ignore)
    prepared = store.prepare()
    pointer = store.pointer()
    if pointer is not None and not pointer.tracked and holds_files(cfg.data_root):
        raise StoreError(
            f"{cfg.data_root} holds files but is not tracked by DVC ({pointer.path.name} is missing)",
            hint=f"track the existing dataset first (`dvc add {cfg.data.root} && dvc push`), or move "
            f"its files into {cfg.data.incoming} so this merge adds them",
        )
    manifest = store.manifest()
    stored_meta = pointer.meta if pointer is not None else {}
    plan = plan_merge(
        v,
        manifest,
        stored_meta,
        replace=req.replace,
        images_dir=req.images_dir,
        masks_dir=req.masks_dir,
        size_configured=cfg.data.size is not None,
    )
    merge = MergeSummary(
        existing_images=_count_images(manifest, req.images_dir),
        new_images=sum(1 for o in plan.new if o.rel.startswith(req.images_dir + "/")),
        total_images=_count_images(plan.entries, req.images_dir),
        already_stored=len(plan.already_stored),
        replaced=tuple(plan.replaced),
        data_version=pointer.md5 if pointer is not None else "",
        checks=tuple(plan.checks),
        store=store.describe(),
    )
    return _Checked(v, plan, pointer, stored_meta, prepared, merge)


def _reject(req: MergeRequest, checked: _Checked) -> MergeRejected:
    from traingate.state import atomic_write_json

    report = checked.v.data_report(checked.merge)
    atomic_write_json(req.report_path, report.to_json())
    summary = render_summary(
        report,
        title=f"Data merge of `{req.src}`: rejected",
        cap=req.cfg.data.max_errors_in_summary,
        extra_rows=_count_rows(checked.merge),
    )
    codes = {e.code for e in report.errors}
    if "unexpected_file" in codes:
        summary += (
            f"\nThe merge removes from `{req.src.name}` only the image/mask files it stored. Move the "
            "other files out of it, or list them in `data.ignore` (globs) to leave them there.\n"
        )
    if "name_conflict" in codes:
        summary += (
            "\nA stored file has the same name but different content. Rename the new file, or "
            "re-run with `--on-conflict replace` to replace the stored version on purpose "
            "(recorded in the commit message).\n"
        )
    return MergeRejected(req.src, report, req.report_path, summary)


def _store_data(req: MergeRequest, checked: _Checked, store: Store) -> tuple[str, list[Path]]:
    """Data first: upload and verify, then the pointer. Returns the data version and the files
    to commit."""
    plan, pointer = checked.plan, checked.pointer
    version = checked.merge.data_version
    if plan.changed or not version:
        version = store.put(plan.new, plan.entries)
    old_size = pointer.size if pointer is not None else 0
    removed_sizes = store.sizes([r.old for r in plan.replaced])
    size = old_size + sum(o.size for o in plan.new) - sum(removed_sizes.values())
    meta = _merged_meta(checked.v, plan, checked.stored_meta, req.images_dir)
    changed_files = store.finalize(plan.entries, version, max(size, 0), meta)
    _update_workspace(req.cfg, plan)
    return version, [*checked.prepared, *changed_files]


def _commit_and_push(
    req: MergeRequest,
    git: Git | None,
    checked: _Checked,
    version: str,
    to_commit: list[Path],
    sleep: Callable[[float], None],
) -> tuple[str, list[str]]:
    """Commit the pointer (and the removal of the stored raw files), then push; returns the
    commit and the warnings of what was not done."""
    if not req.commit:
        return "", []
    if git is None:
        return "", [f"{req.repo_root} is not a git repository: the pointer was written but not committed"]
    if git.tracked(req.src):
        # The raw pair files now live in the store; the branch keeps only the pointer.
        # Exactly those: every other file in SOURCE was refused or ignored above.
        _remove_stored(req.src, list(checked.v.files))
        removals = _pending_removals(git, req.src, req.repo_root, req.images_dir, req.masks_dir)
        to_commit = [*to_commit, *(Path(rel) for rel in removals)]
    rel_paths = [p.resolve().relative_to(req.repo_root) if p.is_absolute() else p for p in to_commit]
    sha = git.commit(rel_paths, _commit_message(req, checked.plan, version))
    remote = req.cfg.store.git_remote
    if not req.push:
        return sha, []
    if not git.has_remote(remote):
        return sha, [f"git remote {remote!r} is not configured: the commit was not pushed"]
    return git.push(remote, sleep=sleep), []


def _merged(req: MergeRequest, checked: _Checked, merge: MergeSummary, warnings: list[str]) -> MergeResult:
    """Write the report of a merge that went through and say what it did."""
    from traingate.state import atomic_write_json, update_state

    cfg, v = req.cfg, checked.v
    report = v.data_report(merge)
    atomic_write_json(req.report_path, report.to_json())
    update_state(cfg.workspace_dir, data_report=str(req.report_path))
    summary = render_summary(
        report,
        title=f"Data merge of `{req.src.name}`: {merge.new_images} new image(s)",
        cap=cfg.data.max_errors_in_summary,
        extra_rows=[
            *_count_rows(merge),
            ("objects uploaded", merge.uploaded_objects),
            ("objects downloaded", merge.downloaded_objects),
            ("data version", f"`{merge.data_version}`"),
            ("commit", f"`{merge.commit[:12]}`" if merge.commit else "(none)"),
        ],
    )
    return MergeResult(
        report,
        req.report_path,
        summary=summary,
        message=(
            f"merged {merge.new_images} new image(s) into {cfg.data.root}: "
            f"{merge.total_images} total, {len(merge.replaced)} replaced, "
            f"{merge.uploaded_objects} object(s) uploaded, data version {merge.data_version}"
        ),
        warnings=(*warnings, *(w.message for w in v.warnings[: cfg.data.max_errors_in_summary])),
    )


# ------------------------------------------------------------------- interrupted, nothing new
def _nothing_new(req: MergeRequest, git: Git | None, sleep: Callable[[float], None]) -> MergeResult:
    finished = _finish_interrupted(req, git, sleep)
    if finished is not None:
        return finished
    incoming = req.cfg.data.incoming
    raise DataError(
        f"no new data to merge: {req.src} has no files",
        hint=f"push the new files under {incoming}/{req.images_dir} and "
        f"{incoming}/{req.masks_dir}, or pass the folder as SOURCE",
        outputs={"validation_passed": False},
    )


def _finish_interrupted(
    req: MergeRequest, git: Git | None, sleep: Callable[[float], None]
) -> MergeResult | None:
    """A re-run after an interruption between "data stored" and "commit pushed": commit the
    pointer (and the removal of the raw files) if that did not happen, then push. None when
    there is nothing pending, i.e. there really is no new data."""
    from traingate.data.manifest import read_pointer

    cfg = req.cfg
    if git is None or not git.has_commits() or cfg.store.kind != "dvc":
        return None
    pointer = read_pointer(cfg.data_root)
    if not pointer.tracked:
        return None
    rel = _pointer_files(req, git)
    pending_files = git.changed_paths(rel) if req.commit else []
    sha = git.head_sha()
    if pending_files:
        head = req.message or f"data: finish merge into {cfg.data.root} (data version {pointer.md5})"
        sha = git.commit(rel, f"{head}\n\nData version: {pointer.md5}\n")
    pushed = 0
    if req.push and git.has_remote(cfg.store.git_remote):
        pushed = git.unpushed(cfg.store.git_remote)
        if pushed:
            sha = git.push(cfg.store.git_remote, sleep=sleep)
    if not pending_files and not pushed:
        return None
    return _resumed(req, pointer, sha, f"committed {len(pending_files)} file(s), pushed {pushed} commit(s)")


def _pointer_files(req: MergeRequest, git: Git) -> list[Path]:
    """What an interrupted merge may have left uncommitted (repository-relative)."""
    from traingate.data.manifest import pointer_path

    root = req.cfg.data_root
    candidates = [pointer_path(root), root.parent / ".gitignore", req.repo_root / ".dvc" / "config"]
    rel = [p.relative_to(req.repo_root) for p in candidates if p.is_relative_to(req.repo_root)]
    if req.commit:
        rel += [
            Path(p) for p in _pending_removals(git, req.src, req.repo_root, req.images_dir, req.masks_dir)
        ]
    return rel


def _resumed(req: MergeRequest, pointer: Pointer, sha: str, what: str) -> MergeResult:
    from traingate.state import atomic_write_json

    total = int(pointer.meta.get("images") or 0)
    report = DataReport(
        status="pass",
        counts={"images": 0, "masks": 0, "pairs": 0, "valid_pairs": 0},
        merge=MergeSummary(
            existing_images=total,
            new_images=0,
            total_images=total,
            data_version=pointer.md5,
            commit=sha,
            checks=(MergeCheck("finished an interrupted merge", True, ""),),
        ),
    )
    atomic_write_json(req.report_path, report.to_json())
    return MergeResult(
        report, req.report_path, message=f"finished an interrupted merge: {what} ({sha[:12]})", resumed=True
    )


def _update_workspace(cfg: Config, plan: MergePlan) -> None:
    """If the dataset is checked out here, make it match the new pointer (new files in, replaced
    files out), so `dvc status` stays clean; if it is not, `pull_dataset` fetches it later."""
    root = cfg.data_root
    if cfg.store.kind != "dvc" or not root.is_dir():
        return
    for old in plan.removed_for_replace:
        (root / old).unlink(missing_ok=True)
    for obj in plan.new:
        target = root / obj.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        shutil.copyfile(obj.source, target)
