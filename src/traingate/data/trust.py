"""A data branch changes data only: the check behind `untrusted_change`.

A push to `data/**` is untrusted input. Whoever may push such a branch may add training data;
they may not change the code that trains the model, the `traingate.yml` that judges it, or
anything else that an auto-merge would carry into the base branch. So before a stage acts on a
branch that is not `pr.base`, it compares what the branch changed since it left the base (the
merge-base, not a two-dot diff: commits the base gained since are not the branch's doing) with
what a data push may change:

- anything under `data.incoming` (new files, and their removal once merged);
- the pointer files traingate itself writes: `<data.root>.dvc`, the `.gitignore` beside it
  (DVC's entry for the dataset folder), and on the very first merge the files `dvc init` adds
  (`.dvc/config`, `.dvc/.gitignore`, `.dvcignore`; added only: changing an existing DVC config
  could point every later run at another remote);
- paths matching `data.allowed_paths` (globs, relative to the folder holding traingate.yml).

The configuration file itself is never allowed, whatever the globs say: the rules must come
from the base, or a branch could widen them for itself.

`adopt_data_pointers` is the train job's side: it runs on a checkout of the base branch (its
code, its traingate.yml) and brings in only the `.dvc` pointer of `data.root` from the data
commit, after this same check and after making sure the file really is a plain pointer to
that folder (a `.dvc` file may name any output path, e.g. `../train.py`, or a command).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.data.globs import glob_regex
from traingate.errors import GitError, UntrustedChangeError
from traingate.gha import ActionsContext

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.git import Git

# Files `dvc init` adds on the first merge; allowed as additions only.
DVC_INIT_FILES = (".dvc/config", ".dvc/.gitignore", ".dvcignore")
_SHOWN = 20  # changed paths listed in a message; the rest are counted


@dataclass(frozen=True)
class Change:
    """One changed path: git's status letter (A, M, D, T) and the path."""

    status: str
    path: str


@dataclass(frozen=True)
class TrustRules:
    """What a data branch may change, as repository-relative POSIX paths."""

    incoming: str
    pointers: tuple[str, ...]
    added_only: tuple[str, ...] = DVC_INIT_FILES
    globs: tuple[str, ...] = ()
    never: tuple[str, ...] = ()
    # data.root: the dataset itself, which `store.kind: local` keeps in git (the merge writes it);
    # under DVC it is git-ignored, and a file committed there anyway is not allowed.
    dataset: str = ""
    dataset_tracked: bool = False
    # A SOURCE given to `data merge` instead of data.incoming (a flag of the run, not the push).
    sources: tuple[str, ...] = ()

    def allows(self, change: Change) -> bool:
        path = change.path
        if path in self.never:
            return False
        for folder in (self.incoming, *self.sources):
            if folder in ("", ".") or path == folder or path.startswith(folder + "/"):
                return True
        in_dataset = bool(self.dataset) and path.startswith(self.dataset + "/")
        if in_dataset and self.dataset_tracked:
            return True
        if path in self.pointers:
            return True
        if path in self.added_only and change.status == "A":
            return True
        return any(glob_regex(g).fullmatch(path) for g in self.globs)

    def describe(self) -> str:
        parts = [f"{folder}/**" for folder in (self.incoming, *self.sources)] + list(self.pointers)
        parts += [f"{p} (added by the first merge)" for p in self.added_only]
        parts += list(self.globs)
        return ", ".join(parts)


@dataclass
class TrustReport:
    """What was compared and what changed (every path allowed, or the check would have raised)."""

    base: str
    base_sha: str
    head_sha: str
    merge_base: str
    changes: list[Change] = field(default_factory=list)
    skipped: str = ""  # why the comparison did not apply (on the base branch, not a git repository)
    warnings: list[str] = field(default_factory=list)


def _rel(path: Path, repo_root: Path) -> str:
    try:
        rel = path.resolve().relative_to(repo_root.resolve())
    except ValueError:
        return ""  # outside the repository: nothing in git can match it
    return rel.as_posix()


def rules_for(cfg: Config, repo_root: Path, sources: Sequence[Path] = ()) -> TrustRules:
    """The rules of `cfg` (the base's configuration: the file may not change on the branch);
    `sources`: folders a merge was told to take the new data from instead of data.incoming."""
    from traingate.data.manifest import pointer_path

    config_dir = _rel(cfg.base_dir, repo_root)
    prefix = "" if config_dir in ("", ".") else config_dir + "/"
    config_file = cfg.source if cfg.source is not None else cfg.base_dir / "traingate.yml"
    never = tuple(p for p in (_rel(Path(config_file), repo_root),) if p)
    pointers = tuple(
        p
        for p in (
            _rel(pointer_path(cfg.data_root), repo_root),
            _rel(cfg.data_root.parent / ".gitignore", repo_root),
        )
        if p
    )
    globs = tuple(
        prefix + g.strip().lstrip("/").removeprefix("./") for g in cfg.data.allowed_paths if g.strip()
    )
    return TrustRules(
        incoming=_rel(cfg.path(cfg.data.incoming), repo_root) or cfg.data.incoming.strip("/"),
        pointers=pointers,
        globs=globs,
        never=never,
        dataset=_rel(cfg.data_root, repo_root),
        dataset_tracked=cfg.store.kind == "local",
        sources=tuple(r for r in (_rel(p, repo_root) for p in sources) if r and r != "."),
    )


def untrusted(changes: Iterable[Change], rules: TrustRules) -> list[Change]:
    return [c for c in changes if not rules.allows(c)]


def _refuse(
    bad: Sequence[Change], rules: TrustRules, *, what: str, base: str, outputs: dict[str, Any]
) -> None:
    shown = ", ".join(f"{c.path} ({_STATUS.get(c.status, c.status)})" for c in bad[:_SHOWN])
    more = f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else ""
    summary = (
        "### ❌ untrusted_change\n\n"
        f"{what} changes {len(bad)} path(s) that a data push may not change (compared with "
        f"`{base}` at the point the branch left it):\n\n"
        + "".join(f"- `{c.path}` ({_STATUS.get(c.status, c.status)})\n" for c in bad)
        + f"\nA data branch may change only: {rules.describe()}.\n"
        "Code and `traingate.yml` come from the base branch; change them there, through a reviewed "
        "pull request.\n"
    )
    raise UntrustedChangeError(
        f"untrusted_change: {what} changes {len(bad)} path(s) outside the data a push may change "
        f"(vs {base}): {shown}{more}",
        hint=f"push code and traingate.yml changes to {base} through a reviewed pull request, and push "
        f"only files under {rules.incoming}/ on the data branch (to allow more, add globs to "
        f"data.allowed_paths on {base})",
        file=bad[0].path,
        summary=summary,
        outputs=outputs,
    )


_STATUS = {"A": "added", "M": "modified", "D": "deleted", "T": "type changed"}


def check_changes(
    changes: Iterable[Change],
    rules: TrustRules,
    *,
    what: str,
    base: str,
    outputs: dict[str, Any] | None = None,
) -> list[Change]:
    """Raise UntrustedChangeError when any change is not allowed; return the changes otherwise."""
    listed = list(changes)
    bad = untrusted(listed, rules)
    if bad:
        _refuse(bad, rules, what=what, base=base, outputs=outputs or {})
    return listed


# ------------------------------------------------------------------------------------- git side
def _parse_name_status(out: str) -> list[Change]:
    items = [x for x in out.split("\0") if x]
    return [Change(items[i][:1], items[i + 1]) for i in range(0, len(items) - 1, 2)]


def _current_branch(git: Git, actions: ActionsContext) -> str | None:
    """The checked-out branch; a detached checkout (actions/checkout of a SHA) is the branch
    the Actions run is about."""
    proc = git.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return proc.stdout.strip()
    return actions.branch or None


def _verify(git: Git, rev: str) -> str | None:
    proc = git.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", check=False)
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None


def resolve_base(git: Git, base: str, remote: str) -> tuple[str, list[str]]:
    """The base branch's ref: fetched from `remote`, else the local branch when there is no remote."""
    if not base or base.startswith("-") or any(c in base for c in "\0\n\r "):
        raise UntrustedChangeError(
            f"invalid base branch name {base!r}", hint="set pr.base to a plain branch name such as `main`"
        )
    warnings: list[str] = []
    tracking = f"refs/remotes/{remote}/{base}"
    if git.has_remote(remote):
        fetch = git.run("fetch", "--no-tags", remote, f"+refs/heads/{base}:{tracking}", check=False)
        if fetch.returncode == 0 and _verify(git, tracking):
            return tracking, warnings
        detail = (fetch.stderr or fetch.stdout).strip().splitlines()
        if _verify(git, tracking):
            warnings.append(
                f"could not fetch {base} from {remote} ({detail[-1] if detail else 'no message'}): "
                f"compared with the last fetched {tracking}"
            )
            return tracking, warnings
        raise UntrustedChangeError(
            f"untrusted_change: cannot compare this branch with its base: branch {base!r} could not be "
            f"fetched from remote {remote!r} ({detail[-1] if detail else 'no message'})",
            hint="set pr.base in traingate.yml to the branch data branches start from, and check that "
            "the job may fetch it",
        )
    local = f"refs/heads/{base}"
    if _verify(git, local):
        return local, warnings
    raise UntrustedChangeError(
        f"untrusted_change: cannot compare this branch with its base: there is no remote {remote!r} "
        f"and no local branch {base!r}",
        hint="set pr.base in traingate.yml to the branch data branches start from (or create it)",
    )


def _merge_base(git: Git, base_ref: str, head: str, remote: str) -> str:
    proc = git.run("merge-base", base_ref, head, check=False)
    shallow = git.run("rev-parse", "--is-shallow-repository").stdout.strip() == "true"
    if proc.returncode != 0 and shallow and git.has_remote(remote):
        # A shallow checkout (actions/checkout's default depth 1) hides the common history.
        git.run("fetch", "--no-tags", "--unshallow", remote, check=False)
        proc = git.run("merge-base", base_ref, head, check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise UntrustedChangeError(
            f"untrusted_change: {head} shares no history with the base {base_ref}: everything it holds "
            "would be new",
            hint="cut data branches from the base branch (`git switch -c data/<name> <base>`); in a "
            "workflow check out with `fetch-depth: 0`",
        )
    return proc.stdout.strip()


def branch_changes(git: Git, merge_base: str, head: str | None) -> list[Change]:
    """What `head` changed since `merge_base`; with head None: the working tree's tracked files,
    committed or not (what a local run trains is what it would propose). Untracked files are
    not part of any push (and `.traingate/`, `outputs/` of a local run would be noise)."""
    args = ["diff", "--name-status", "-z", "--no-renames", merge_base]
    if head is not None:
        args.append(head)
    args.append("--")
    return _parse_name_status(git.run(*args).stdout)


def check_data_only(
    repo_dir: Path,
    *,
    base: str,
    rules: TrustRules,
    remote: str = "origin",
    head: str | None = None,
    what: str | None = None,
    outputs: dict[str, Any] | None = None,
    actions: ActionsContext,
) -> TrustReport:
    """Compare `head` (default: the checked-out branch and its working tree) with `base` and
    raise UntrustedChangeError listing every change outside `rules`.

    Not a git repository, no commit yet, or on `base` itself: nothing to compare (the report
    says why). A base that cannot be found is a refusal, never a pass.
    """
    from traingate.git import Git

    git = Git(repo_dir, author=None)
    if not git.is_repo() or not git.has_commits():
        return TrustReport(base, "", "", "", skipped=f"{repo_dir} is not a git repository with commits")
    if head is None:
        branch = _current_branch(git, actions)
        if branch == base:
            return TrustReport(base, "", git.head_sha(), "", skipped=f"on the base branch {base}")
    base_ref, warnings = resolve_base(git, base, remote)
    head_rev = head or "HEAD"
    head_sha = _verify(git, head_rev)
    if head_sha is None:
        raise GitError(
            f"cannot compare {head_rev!r} with {base}: no such commit in {repo_dir}",
            hint="pass a commit of this repository (fetch it first)",
        )
    merge_base = _merge_base(git, base_ref, head_sha, remote)
    changes = branch_changes(git, merge_base, head)
    label = what or (f"branch {_current_branch(git, actions) or head_sha[:12]}" if head is None else head)
    check_changes(changes, rules, what=label, base=base, outputs=outputs)
    return TrustReport(base, _verify(git, base_ref) or "", head_sha, merge_base, changes, warnings=warnings)


def check_branch(
    cfg: Config,
    *,
    source: Path | None = None,
    outputs: dict[str, Any] | None = None,
    actions: ActionsContext | None = None,
) -> TrustReport:
    """The check `data merge` and `traingate run` make before acting on the current branch;
    `source`: the folder the merge takes new data from when it is not data.incoming."""
    from traingate.data.store import find_repo_root

    repo_root = find_repo_root(cfg.base_dir)
    return check_data_only(
        repo_root,
        base=cfg.pr.base,
        rules=rules_for(cfg, repo_root, [source] if source is not None else []),
        remote=cfg.store.git_remote,
        outputs=outputs,
        actions=ActionsContext.given(actions),
    )


def check_paths(cfg: Config, changes: Iterable[Change], *, what: str, base: str) -> list[Change]:
    """The same rules applied to a list of changes from elsewhere (the PR's diff on GitHub)."""
    from traingate.data.store import find_repo_root

    return check_changes(changes, rules_for(cfg, find_repo_root(cfg.base_dir)), what=what, base=base)


# ------------------------------------------------------------------------------- train job side
def verify_pointer_text(text: str, data_root_name: str, where: str) -> str:
    """The md5 of a plain DVC pointer to `data_root_name`; UntrustedChangeError for anything else."""
    import yaml

    def refuse(why: str) -> UntrustedChangeError:
        return UntrustedChangeError(
            f"untrusted_change: {where} is not a plain DVC pointer to {data_root_name}/: {why}",
            hint="a data branch may only carry the pointer `traingate data merge` writes; "
            "re-run the merge on a branch cut from the base",
            file=where,
        )

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise refuse(f"not YAML ({err})") from None
    if not isinstance(doc, dict) or set(doc) - {"outs", "meta"}:
        keys = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise refuse(f"unexpected top-level keys {keys} (only outs and meta are written)")
    outs = doc.get("outs")
    if not isinstance(outs, list) or len(outs) != 1 or not isinstance(outs[0], dict):
        raise refuse("`outs` must hold exactly one entry")
    out = outs[0]
    allowed = {"md5", "size", "nfiles", "hash", "path", "remote"}
    if set(out) - allowed:
        raise refuse(f"unexpected keys {sorted(set(out) - allowed)} in outs[0]")
    if out.get("path") != data_root_name:
        raise refuse(f"outs[0].path is {out.get('path')!r}")
    md5 = str(out.get("md5", ""))
    if not re.fullmatch(r"[0-9a-f]{32}\.dir", md5):
        raise refuse(f"outs[0].md5 is {md5!r}, not a DVC directory hash")
    return md5


@dataclass
class Adopted:
    """What `adopt_data_pointers` brought in."""

    data_commit: str
    base: str
    pointer: str  # repository-relative path, "" when the data commit did not change it
    data_version: str
    changes: list[Change]
    warnings: list[str]

    def summary(self) -> str:
        what = (
            f"dataset pointer `{self.pointer}` (`{self.data_version}`)"
            if self.pointer
            else "no pointer change: the base's dataset"
        )
        return (
            f"Code and traingate.yml from `{self.base}`; from data commit `{self.data_commit[:12]}` "
            f"only the {what} ({len(self.changes)} changed path(s), all data).\n\n"
        )


def adopt_data_pointers(cfg: Config, ref: str, *, actions: ActionsContext | None = None) -> Adopted:
    """On a checkout of the base branch, take only the dataset pointer from the data commit `ref`.

    `cfg` is the checked-out base's configuration. `ref`'s changes since it left HEAD are checked
    with the same rules as `data merge`; the pointer is verified to be a plain pointer to
    `data.root` and checked out into the working tree. Nothing else of `ref` is used.
    """
    from traingate.data.manifest import pointer_path
    from traingate.data.store import find_repo_root
    from traingate.git import Git

    repo_root = find_repo_root(cfg.base_dir)
    git = Git(repo_root, author=None)
    if not git.is_repo() or not git.has_commits():
        raise GitError(
            f"--data-from {ref}: {repo_root} is not a git repository",
            hint="check out the base branch first (actions/checkout with `fetch-depth: 0`)",
        )
    warnings: list[str] = []
    remote = cfg.store.git_remote
    sha = _data_commit(git, ref, remote, repo_root)
    head_sha = git.head_sha()
    branch = _current_branch(git, ActionsContext.given(actions)) or head_sha[:12]
    if branch != cfg.pr.base:
        warnings.append(
            f"the code checked out is {branch}, not pr.base ({cfg.pr.base}): "
            "it trains and judges this candidate"
        )
    rules = rules_for(cfg, repo_root)
    merge_base = _merge_base(git, head_sha, sha, remote)
    changes = branch_changes(git, merge_base, sha)
    check_changes(changes, rules, what=f"data commit {sha[:12]}", base=branch)
    pointer = pointer_path(cfg.data_root)
    rel = _rel(pointer, repo_root)
    touched = {c.path: c.status for c in changes}
    if rel not in touched:
        return Adopted(sha, branch, "", "", changes, warnings)
    if touched[rel] == "D":
        raise UntrustedChangeError(
            f"untrusted_change: data commit {sha[:12]} deletes the dataset pointer {rel}",
            hint="a data push adds data; restore the pointer on the data branch",
            file=rel,
        )
    text = git.run("show", f"{sha}:{rel}").stdout
    md5 = verify_pointer_text(text, cfg.data_root.name, rel)
    git.run("checkout", sha, "--", rel)
    _prepare_store(cfg, repo_root)
    return Adopted(sha, branch, rel, md5, changes, warnings)


def _data_commit(git: Git, ref: str, remote: str, repo_root: Path) -> str:
    """`ref` as a commit of this repository, fetched from `remote` when it is not here yet."""
    if ref.startswith("-") or any(c in ref for c in "\0\n\r "):
        raise GitError(f"invalid data commit {ref!r}", hint="pass a commit sha or a branch name")
    sha = _verify(git, ref)
    if sha is None and git.has_remote(remote):
        git.run("fetch", "--no-tags", remote, ref, check=False)
        sha = _verify(git, ref) or _verify(git, "FETCH_HEAD")
    if sha is None:
        raise GitError(
            f"the data commit {ref} is not in {repo_root}",
            hint="check out with `fetch-depth: 0` so the data branch's commits are present",
        )
    return sha


def _prepare_store(cfg: Config, repo_root: Path) -> None:
    """The first merge ran `dvc init` on the data branch; the base has no DVC set-up yet.
    Make it here from the base's traingate.yml rather than take the branch's .dvc/config."""
    if cfg.store.kind != "dvc" or (repo_root / ".dvc").is_dir():
        return
    from traingate.data.store import open_store

    store = open_store(cfg, repo_root)
    try:
        store.prepare()
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()


__all__ = [
    "Adopted",
    "Change",
    "TrustReport",
    "TrustRules",
    "adopt_data_pointers",
    "check_branch",
    "check_changes",
    "check_data_only",
    "check_paths",
    "rules_for",
    "untrusted",
    "verify_pointer_text",
]
