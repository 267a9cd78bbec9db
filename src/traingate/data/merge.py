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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.data.globs import glob_regex
from traingate.data.images import IMAGE_EXTENSIONS
from traingate.data.store import NewObject, Store, find_repo_root, open_store
from traingate.data.trust import check_branch
from traingate.data.validate import (
    Issue,
    Validation,
    raise_data_errors,
    render_summary,
    resolve_cache_dir,
    split_rel,
    validate_dataset,
)
from traingate.errors import ConfigError, DataError, StoreError, UsageError

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.git import Git
    from traingate.result import StepResult


@dataclass
class MergePlan:
    entries: dict[str, str]  # the merged listing: relpath -> md5
    new: list[NewObject] = field(default_factory=list)
    already_stored: list[str] = field(default_factory=list)
    replaced: list[dict[str, str]] = field(default_factory=list)
    removed_for_replace: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.new or self.replaced)


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
    plan = MergePlan(entries=dict(manifest))

    def key(rel: str) -> tuple[str, str] | None:
        return split_rel(rel, images_dir, masks_dir)

    stored_by_stem: dict[tuple[str, str], list[str]] = {}
    stored_image_md5: dict[str, str] = {}
    for rel, md5 in manifest.items():
        k = key(rel)
        if k is not None:
            stored_by_stem.setdefault(k, []).append(rel)
        if k is not None and k[0] == "image":
            stored_image_md5.setdefault(md5, rel)

    # Pairing completed by the stored dataset is not an error in a merge.
    kept: list[Issue] = []
    for issue in v.errors:
        k = key(issue.path)
        if k is not None and issue.code == "missing_mask" and ("mask", k[1]) in stored_by_stem:
            continue
        if k is not None and issue.code == "missing_image" and ("image", k[1]) in stored_by_stem:
            continue
        kept.append(issue)
    v.errors = kept

    conflicts = duplicates = 0
    for rel, info in sorted(v.files.items()):
        stored_same_name = manifest.get(rel)
        if stored_same_name == info.md5:
            plan.already_stored.append(rel)
            continue
        k = key(rel)
        siblings = [s for s in stored_by_stem.get(k, []) if s != rel] if k is not None else []
        clashing = ([rel] if stored_same_name is not None else []) + siblings
        if clashing:
            if replace:
                for old in clashing:
                    plan.replaced.append(
                        {"path": rel, "replaces": old, "old": manifest[old], "new": info.md5}
                    )
                    plan.entries.pop(old, None)
                    plan.removed_for_replace.append(old)
            else:
                conflicts += 1
                olds = ", ".join(f"{old} (md5 {manifest[old]})" for old in clashing)
                v.errors.append(
                    Issue(
                        "name_conflict",
                        rel,
                        f"{rel} (md5 {info.md5}) has the name of stored {olds}; nothing was changed",
                    )
                )
                continue
        if info.kind == "image" and info.md5 in stored_image_md5 and stored_image_md5[info.md5] != rel:
            duplicates += 1
            v.errors.append(
                Issue(
                    "duplicate_content",
                    rel,
                    f"{rel}: same content as stored {stored_image_md5[info.md5]} (md5 {info.md5})",
                )
            )
            continue
        plan.entries[rel] = info.md5
        plan.new.append(NewObject(rel, v.root / rel, info.md5, info.size))

    resolution_errors = 0
    stored_res = stored_meta.get("resolution")
    if not size_configured and stored_res and stored_res != "mixed" and manifest:
        for rel, info in sorted(v.files.items()):
            facts = info.facts
            if info.kind == "image" and "width" in facts and not facts.get("error"):
                res = f"{facts['width']}x{facts['height']}"
                if res != stored_res:
                    resolution_errors += 1
                    v.errors.append(
                        Issue(
                            "resolution_mismatch",
                            rel,
                            f"{rel}: image is {res}, the stored dataset is {stored_res} "
                            "(set data.size to make the resolution explicit)",
                        )
                    )
    v.errors.sort(key=lambda i: (i.path, i.code))
    plan.checks = [
        {"name": "names", "passed": conflicts == 0, "detail": f"{conflicts} conflict(s)"},
        {"name": "content duplicates", "passed": duplicates == 0, "detail": f"{duplicates} duplicate(s)"},
        {
            "name": "resolution consistency",
            "passed": resolution_errors == 0,
            "detail": f"stored {stored_res or 'unknown'}",
        },
    ]
    return plan


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


def _commit_message(cfg: Config, plan: MergePlan, version: str, source: Path, message: str | None) -> str:
    new_images = sum(1 for o in plan.new if o.rel.startswith(cfg.data.images.strip("/") + "/"))
    total = _count_images(plan.entries, cfg.data.images.strip("/"))
    head = message or f"data: merge {new_images} new image(s) into {cfg.data.root} ({total} total)"
    lines = [head, "", f"Data version: {version}", f"Source: {source}"]
    if plan.replaced:
        lines += ["", "Replaced with --on-conflict replace (old md5 -> new md5):"]
        lines += [f"- {r['replaces']} -> {r['path']}: {r['old']} -> {r['new']}" for r in plan.replaced]
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


def _open_git(repo_root: Path) -> Git | None:
    from traingate.git import Git

    git = Git(repo_root)
    return git if git.is_repo() else None


def merge_step(
    cfg: Config,
    source: Path | None = None,
    on_conflict: str | None = None,
    push: bool = True,
    commit: bool = True,
    message: str | None = None,
    comment: bool = False,
    *,
    token: str | None = None,
    store: Store | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> StepResult:
    from traingate import gha
    from traingate.data.store import require_durable_remote
    from traingate.result import StepResult
    from traingate.state import atomic_write_json, reports_dir, update_state

    started = time.perf_counter()
    src = (source if source is not None else cfg.path(cfg.data.incoming)).resolve()
    replace = (on_conflict or cfg.data.on_conflict.value) == "replace"
    images_dir, masks_dir = cfg.data.images.strip("/"), cfg.data.masks.strip("/")
    repo_root = find_repo_root(cfg.base_dir)
    # Refusals that need no data and move nothing come first (exit 2).
    check_source(cfg, src, repo_root, explicit=source is not None)
    require_durable_remote(cfg, gha.in_actions())
    git = _open_git(repo_root) if cfg.store.kind == "dvc" or commit else None
    if commit and git is not None:
        git.identity()
    report_path = reports_dir(cfg.workspace_dir) / "data-report.json"
    warnings: list[str] = []
    do_push = push and cfg.store.git_push and commit
    # A data branch changes data only: refuse before anything is validated, stored or committed.
    check_branch(cfg, source=src, outputs={"validation_passed": False})

    if not holds_files(src, cfg.data.ignore):
        finished = _finish_interrupted(cfg, git, src, repo_root, commit, do_push, message, sleep, report_path)
        if finished is not None:
            return finished
        raise DataError(
            f"no new data to merge: {src} has no files",
            hint=f"push the new files under {cfg.data.incoming}/{images_dir} and "
            f"{cfg.data.incoming}/{masks_dir}, or pass the folder as SOURCE",
            outputs={"validation_passed": False},
        )

    store = store or open_store(cfg, repo_root)
    try:
        v = validate_dataset(
            src, cfg.data, cache_dir=resolve_cache_dir(cfg), workers=cfg.data.workers, require_data=True
        )
        v.errors += unexpected_files(src, images_dir, masks_dir, cfg.data.ignore)
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
            replace=replace,
            images_dir=images_dir,
            masks_dir=masks_dir,
            size_configured=cfg.data.size is not None,
        )
        existing_images = _count_images(manifest, images_dir)
        merge_info: dict[str, Any] = {
            "existing_images": existing_images,
            "new_images": sum(1 for o in plan.new if o.rel.startswith(images_dir + "/")),
            "total_images": _count_images(plan.entries, images_dir),
            "already_stored": len(plan.already_stored),
            "replaced": plan.replaced,
            "data_version": pointer.md5 if pointer is not None else "",
            "commit": "",
            "checks": plan.checks,
            "store": store.describe(),
        }
        report = v.report()
        report["merge"] = merge_info
        summary_rows = [
            ("stored before", existing_images),
            ("new images", merge_info["new_images"]),
            ("total images", merge_info["total_images"]),
            ("replaced", len(plan.replaced)),
        ]
        outputs: dict[str, Any] = {
            "validation_passed": v.passed,
            "total_images": merge_info["total_images"],
            "new_images": merge_info["new_images"],
            "existing_images": existing_images,
            "report": str(report_path),
        }
        if not v.passed:
            atomic_write_json(report_path, report)
            summary = render_summary(
                report,
                title=f"Data merge of `{src}`: rejected",
                cap=cfg.data.max_errors_in_summary,
                extra_rows=summary_rows,
            )
            if any(e.code == "unexpected_file" for e in v.errors):
                summary += (
                    f"\nThe merge removes from `{src.name}` only the image/mask files it stored. Move the "
                    "other files out of it, or list them in `data.ignore` (globs) to leave them there.\n"
                )
            if any(e.code == "name_conflict" for e in v.errors):
                summary += (
                    "\nA stored file has the same name but different content. Rename the new file, or "
                    "re-run with `--on-conflict replace` to replace the stored version on purpose "
                    "(recorded in the commit message).\n"
                )
            _maybe_comment(cfg, comment, token, report_path, warnings)
            raise_data_errors(
                v,
                what="nothing was merged; ",
                hint=f"fix the files listed in the step summary / {report_path}, then push again",
                summary=summary,
                outputs=outputs,
            )

        # Data first: upload and verify, then the pointer.
        version = merge_info["data_version"]
        if plan.changed or not version:
            version = store.put(plan.new, plan.entries)
        old_size = pointer.size if pointer is not None else 0
        removed_sizes = store.sizes([r["old"] for r in plan.replaced])
        size = old_size + sum(o.size for o in plan.new) - sum(removed_sizes.values())
        meta = _merged_meta(v, plan, stored_meta, images_dir)
        changed_files = store.finalize(plan.entries, version, max(size, 0), meta)
        merge_info["data_version"] = version
        merge_info["uploaded_objects"] = store.transfer.uploaded
        merge_info["downloaded_objects"] = store.transfer.downloaded
        _update_workspace(cfg, plan)

        sha = ""
        if commit and git is not None:
            to_commit = [*prepared, *changed_files]
            if git.tracked(src):
                # The raw pair files now live in the store; the branch keeps only the pointer.
                # Exactly those: every other file in SOURCE was refused or ignored above.
                _remove_stored(src, list(v.files))
                removals = _pending_removals(git, src, repo_root, images_dir, masks_dir)
                to_commit += [Path(rel) for rel in removals]
            rel_paths = [p.resolve().relative_to(repo_root) if p.is_absolute() else p for p in to_commit]
            sha = git.commit(rel_paths, _commit_message(cfg, plan, version, src, message))
            if do_push:
                if git.has_remote(cfg.store.git_remote):
                    sha = git.push(cfg.store.git_remote, sleep=sleep)
                else:
                    warnings.append(
                        f"git remote {cfg.store.git_remote!r} is not configured: the commit was not pushed"
                    )
        elif commit:
            warnings.append(f"{repo_root} is not a git repository: the pointer was written but not committed")
        merge_info["commit"] = sha
        merge_info["duration_seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(report_path, report)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()

    update_state(cfg.workspace_dir, data_report=str(report_path))
    outputs.update({"report": str(report_path), "data_version": version, "commit_sha": sha})
    summary = render_summary(
        report,
        title=f"Data merge of `{src.name}`: {merge_info['new_images']} new image(s)",
        cap=cfg.data.max_errors_in_summary,
        extra_rows=[
            *summary_rows,
            ("objects uploaded", store.transfer.uploaded),
            ("objects downloaded", store.transfer.downloaded),
            ("data version", f"`{version}`"),
            ("commit", f"`{sha[:12]}`" if sha else "(none)"),
        ],
    )
    warnings += [w.message for w in v.warnings[: cfg.data.max_errors_in_summary]]
    return StepResult(
        outputs=outputs,
        summary=summary,
        message=(
            f"merged {merge_info['new_images']} new image(s) into {cfg.data.root}: "
            f"{merge_info['total_images']} total, {len(plan.replaced)} replaced, "
            f"{store.transfer.uploaded} object(s) uploaded, data version {version}"
        ),
        data={"report": report},
        warnings=warnings,
    )


def _finish_interrupted(
    cfg: Config,
    git: Git | None,
    src: Path,
    repo_root: Path,
    commit: bool,
    do_push: bool,
    message: str | None,
    sleep: Callable[[float], None],
    report_path: Path,
) -> StepResult | None:
    """A re-run after an interruption between "data stored" and "commit pushed": commit the
    pointer (and the removal of the raw files) if that did not happen, then push. None when
    there is nothing pending, i.e. there really is no new data."""
    from traingate.data.manifest import pointer_path, read_pointer
    from traingate.result import StepResult
    from traingate.state import atomic_write_json

    if git is None or not git.has_commits() or cfg.store.kind != "dvc":
        return None
    pointer = read_pointer(cfg.data_root)
    if not pointer.tracked:
        return None
    candidates = [
        pointer_path(cfg.data_root),
        cfg.data_root.parent / ".gitignore",
        repo_root / ".dvc" / "config",
    ]
    rel = [p.relative_to(repo_root) for p in candidates if p.is_relative_to(repo_root)]
    if commit:
        images_dir, masks_dir = cfg.data.images.strip("/"), cfg.data.masks.strip("/")
        rel += [Path(p) for p in _pending_removals(git, src, repo_root, images_dir, masks_dir)]
    pending_files = git.changed_paths(rel) if commit else []
    sha = git.head_sha()
    if pending_files:
        head = message or f"data: finish merge into {cfg.data.root} (data version {pointer.md5})"
        sha = git.commit(rel, f"{head}\n\nData version: {pointer.md5}\n")
    pushed = 0
    if do_push and git.has_remote(cfg.store.git_remote):
        pushed = git.unpushed(cfg.store.git_remote)
        if pushed:
            sha = git.push(cfg.store.git_remote, sleep=sleep)
    if not pending_files and not pushed:
        return None
    total = int(pointer.meta.get("images") or 0)
    report = {
        "status": "pass",
        "counts": {"images": 0, "masks": 0, "pairs": 0, "valid_pairs": 0},
        "errors": [],
        "warnings": [],
        "statistics": {},
        "merge": {
            "existing_images": total,
            "new_images": 0,
            "total_images": total,
            "replaced": [],
            "data_version": pointer.md5,
            "commit": sha,
            "checks": [{"name": "finished an interrupted merge", "passed": True, "detail": ""}],
        },
    }
    atomic_write_json(report_path, report)
    return StepResult(
        outputs={
            "validation_passed": True,
            "total_images": total,
            "new_images": 0,
            "existing_images": total,
            "report": str(report_path),
            "data_version": pointer.md5,
            "commit_sha": sha,
        },
        message=f"finished an interrupted merge: committed {len(pending_files)} file(s), "
        f"pushed {pushed} commit(s) ({sha[:12]})",
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


def _maybe_comment(
    cfg: Config, comment: bool, token: str | None, report_path: Path, warnings: list[str]
) -> None:
    """Post the errors as a commit comment when asked (the github stage owns the API call).

    Never raises: the validation error is what must decide the exit code; a comment that could
    not be posted becomes a warning instead of being lost.
    """
    if not comment:
        return
    from traingate.github.status import comment_validation_failure

    line = comment_validation_failure(cfg, report_path, token=token)
    if line.startswith("could not"):
        # Raised right before a DataError, so it cannot wait for the StepResult's warnings.
        from traingate import gha

        gha.warning(line)
        warnings.append(line)
