"""Where the merged dataset lives: a DVC-tracked folder with a remote, or a plain local folder.

`DvcStore` talks to the DVC remote through DVC's own object database (in-process, so the remote
configuration, credentials and `endpointurl` are DVC's), but decides itself what to move: the
manifest (one `.dir` object) comes down, only new objects go up, and the pointer is written
after the remote has confirmed every object. Field report 3: `.dvc` pointers committed after a
failed `dvc push` lost data; here a failed upload raises before any pointer exists.

Functions other stages call: `dataset_version(cfg)` and `pull_dataset(cfg)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from traingate.data.manifest import (
    Pointer,
    ensure_gitignored,
    parse_tree,
    read_pointer,
    tree_bytes,
    tree_hash,
    write_pointer,
)
from traingate.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from traingate.config import Config

log = logging.getLogger(__name__)

# Remote options traingate writes for S3 only (DVC rejects them on a folder remote).
_S3_ONLY_KEYS = ("region", "endpointurl")


def dvc_remote_url(url: str) -> str:
    """store.remote as DVC must be given it: a `file://` URL becomes its folder, because DVC
    takes it for a relative path and would store the data in `./file:/...` under the working
    directory. `doctor` checks the same folder."""
    if url.startswith("file://"):
        from urllib.parse import unquote, urlsplit

        return str(Path(unquote(urlsplit(url).path)).resolve())
    return url


@dataclass
class NewObject:
    rel: str  # relative to the dataset root: images/a.jpg
    source: Path
    md5: str
    size: int


@dataclass
class Transfer:
    """What crossed the wire, for the report and the benchmark (objects, not bytes guessed)."""

    downloaded: int = 0
    uploaded: int = 0


class Store(Protocol):
    kind: str
    transfer: Transfer

    def describe(self) -> str: ...

    def prepare(self) -> list[Path]:
        """Create what the store needs (DVC repo, remote config); return files to commit."""
        ...

    def pointer(self) -> Pointer | None: ...

    def manifest(self) -> dict[str, str]:
        """relpath -> md5 of every stored file, without reading the files."""
        ...

    def sizes(self, md5s: list[str]) -> dict[str, int]: ...

    def put(self, objects: list[NewObject], entries: dict[str, str]) -> str:
        """Store the new objects and the new listing; verify; return the new data version."""
        ...

    def finalize(self, entries: dict[str, str], version: str, size: int, meta: dict[str, Any]) -> list[Path]:
        """Write the pointer (after put succeeded); return files to commit."""
        ...


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _folder_entries(root: Path) -> dict[str, str]:
    if not root.is_dir():
        return {}
    return {
        p.relative_to(root).as_posix(): _md5_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    }


def _quiet_dvc() -> None:
    """DVC logs its INFO lines (`Initialized DVC repository.`) to stdout, which belongs to
    `--json` and to Actions workflow commands; keep its warnings and errors (on stderr)."""
    import dvc  # noqa: F401  (its import configures the "dvc" logger at INFO; override after)

    dvc_logger = logging.getLogger("dvc")
    if dvc_logger.getEffectiveLevel() < logging.WARNING:
        dvc_logger.setLevel(logging.WARNING)


def find_repo_root(start: Path) -> Path:
    """The git top level above `start` (DVC's repo root), else `start` itself."""
    from traingate.git import Git

    git = Git(start, author=None)
    proc = git.run("rev-parse", "--show-toplevel", check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return Path(proc.stdout.strip()).resolve()
    return start.resolve()


# ------------------------------------------------------------------------------------ local
class LocalStore:
    """`store.kind: local`: the dataset is a plain folder (no DVC, no remote)."""

    kind = "local"

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.root = cfg.data_root
        self.transfer = Transfer()

    def describe(self) -> str:
        return f"local folder {self.root}"

    def prepare(self) -> list[Path]:
        return []

    def pointer(self) -> Pointer | None:
        return None

    def manifest(self) -> dict[str, str]:
        return _folder_entries(self.root)

    def sizes(self, md5s: list[str]) -> dict[str, int]:
        return {}

    def put(self, objects: list[NewObject], entries: dict[str, str]) -> str:
        for obj in objects:
            target = self.root / obj.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.traingate-tmp")
            shutil.copyfile(obj.source, tmp)
            tmp.replace(target)
            self.transfer.uploaded += 1
        actual = _folder_entries(self.root)
        # Files the merged listing dropped (replaced under another name, --on-conflict replace).
        for rel in sorted(set(actual) - set(entries)):
            (self.root / rel).unlink()
            del actual[rel]
        missing = [o.rel for o in objects if actual.get(o.rel) != o.md5]
        if missing:
            raise StoreError(
                f"copying into {self.root} did not keep {len(missing)} file(s): {missing[:5]}",
                hint="check free disk space and permissions of the dataset folder",
            )
        return tree_hash(actual)

    def finalize(self, entries: dict[str, str], version: str, size: int, meta: dict[str, Any]) -> list[Path]:
        return [self.root]


# -------------------------------------------------------------------------------------- dvc
class DvcStore:
    """A DVC-tracked folder (`<data.root>.dvc`) with a folder or S3 remote."""

    kind = "dvc"

    def __init__(self, cfg: Config, repo_root: Path | None = None, jobs: int = 8) -> None:
        self.cfg = cfg
        self.data_root = cfg.data_root.resolve()
        self.repo_root = (repo_root or find_repo_root(cfg.base_dir)).resolve()
        self.jobs = jobs
        self.transfer = Transfer()
        self.remote_name = cfg.store.remote_name
        self._odb: Any = None
        self._repo: Any = None
        _quiet_dvc()
        try:
            self.data_root.relative_to(self.repo_root)
        except ValueError as err:
            raise StoreError(
                f"data.root {self.data_root} is outside the repository {self.repo_root}",
                hint="set data.root to a folder inside the repository (e.g. data/training)",
            ) from err

    # ---------------------------------------------------------------- repository + remote
    def describe(self) -> str:
        return f"DVC remote {self.remote_name!r} ({self.remote_url()})"

    def remote_url(self) -> str:
        return dvc_remote_url(self.cfg.store_remote)

    def _open_repo(self) -> Any:
        if self._repo is None:
            from dvc.repo import Repo

            self._repo = Repo(str(self.repo_root))
        return self._repo

    def _reset(self) -> None:
        if self._repo is not None:
            self._repo.close()
        self._repo = None
        self._odb = None

    def prepare(self) -> list[Path]:
        """`dvc init` when needed and point the remote at store.remote; return changed files."""
        from dvc.repo import Repo

        changed: list[Path] = []
        dvc_dir = self.repo_root / ".dvc"
        if not dvc_dir.is_dir():
            has_git = (self.repo_root / ".git").exists()
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    Repo.init(str(self.repo_root), no_scm=not has_git).close()
            except Exception as err:
                raise StoreError(
                    f"cannot initialise DVC in {self.repo_root}: {err}",
                    hint="run `dvc init` there by hand to see the full error",
                ) from err
            changed += [dvc_dir / "config", dvc_dir / ".gitignore", self.repo_root / ".dvcignore"]
        url = self.remote_url()
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
        repo = self._open_repo()
        current = repo.config.get("remote", {}).get(self.remote_name, {})
        wanted: dict[str, Any] = {"url": url}
        # DVC's schema allows `region`/`endpointurl` only on cloud remotes: set on a folder
        # remote (the no-flag `traingate init` writes store.region) they make every DVC command
        # fail with "extra keys not allowed". Left over from an earlier S3 remote, they go.
        s3 = url.startswith("s3://")
        if s3 and self.cfg.store.endpoint_url:
            wanted["endpointurl"] = self.cfg.store.endpoint_url
        if s3 and self.cfg.store.region:
            wanted["region"] = self.cfg.store.region
        stale = [] if s3 else [k for k in _S3_ONLY_KEYS if k in current]
        default = repo.config.get("core", {}).get("remote")
        if stale or any(current.get(k) != v for k, v in wanted.items()) or default != self.remote_name:
            try:
                with repo.config.edit("repo") as conf:
                    entry = {**conf["remote"].get(self.remote_name, {}), **wanted}
                    for key in stale:
                        entry.pop(key, None)
                    conf["remote"][self.remote_name] = entry
                    conf["core"]["remote"] = self.remote_name
            except Exception as err:  # dvc.config.ConfigError: the merged config is invalid
                raise StoreError(
                    f"cannot point DVC remote {self.remote_name!r} at {url} in {dvc_dir / 'config'}: {err}",
                    hint="fix or remove the remote's section in .dvc/config (and .dvc/config.local), "
                    "then re-run; nothing was uploaded",
                    file=str(dvc_dir / "config"),
                ) from err
            changed.append(dvc_dir / "config")
            self._reset()
        return sorted(set(changed))

    def _remote_odb(self) -> Any:
        if self._odb is None:
            repo = self._open_repo()
            try:
                self._odb = repo.cloud.get_remote_odb(self.remote_name, "push")
            except Exception as err:
                raise StoreError(
                    f"cannot open {self.describe()}: {err}",
                    hint="check store.remote / store.endpoint_url in traingate.yml and .dvc/config",
                ) from err
        return self._odb

    def _local_odb(self) -> Any:
        return self._open_repo().cache.local

    # ---------------------------------------------------------------------- manifest
    def pointer(self) -> Pointer:
        return read_pointer(self.data_root)

    def manifest(self) -> dict[str, str]:
        pointer = self.pointer()
        if not pointer.tracked:
            return {}
        oid = pointer.md5
        local = self._local_odb()
        local_path = Path(local.oid_to_path(oid))
        if local_path.exists():
            raw = local_path.read_bytes()
        else:
            odb = self._remote_odb()
            try:
                with odb.fs.open(odb.oid_to_path(oid), "rb") as fh:
                    raw = fh.read()
            except FileNotFoundError as err:
                raise StoreError(
                    f"the dataset listing {oid} named by {pointer.path.name} is not on {self.describe()}",
                    hint="the pointer was committed without its data; push the dataset from the "
                    "machine that has it (`dvc push`), or revert the pointer commit",
                    file=str(pointer.path),
                ) from err
            except Exception as err:
                raise StoreError(
                    f"cannot read the dataset listing {oid} from {self.describe()}: {err}",
                    hint="check the remote's credentials and endpoint (`traingate doctor`)",
                ) from err
            self.transfer.downloaded += 1
            local.add_bytes(oid, raw)  # later runs on this machine read it locally
        entries = parse_tree(raw, oid)
        if tree_hash(entries) != oid:
            raise StoreError(
                f"the dataset listing {oid} does not match its hash (damaged object)",
                hint="delete it from the local cache (.dvc/cache) and re-run; if it persists, the "
                "remote copy is damaged",
            )
        return entries

    def sizes(self, md5s: list[str]) -> dict[str, int]:
        """Sizes of stored objects (for replaced files), by asking the remote, not downloading."""
        if not md5s:
            return {}
        odb = self._remote_odb()
        result = {}
        for md5 in md5s:
            try:
                result[md5] = int(odb.fs.size(odb.oid_to_path(md5)) or 0)
            except Exception:  # informational only: the pointer's size field
                result[md5] = 0
        return result

    # ---------------------------------------------------------------------- upload
    def put(self, objects: list[NewObject], entries: dict[str, str]) -> str:
        from dvc_objects.fs.local import LocalFileSystem

        odb = self._remote_odb()
        local = self._local_odb()
        version = tree_hash(entries)
        unique: dict[str, NewObject] = {}
        for obj in objects:
            unique.setdefault(obj.md5, obj)
        failures: list[str] = []

        def on_error(oid: str, exc: BaseException) -> None:
            failures.append(f"{oid}: {exc}")

        try:
            present = set(odb.oids_exist(list(unique), jobs=self.jobs))
            to_send = [o for md5, o in unique.items() if md5 not in present]
            if to_send:
                fs = LocalFileSystem()
                sent = odb.add(
                    [str(o.source) for o in to_send],
                    fs,
                    [o.md5 for o in to_send],
                    check_exists=False,
                    on_error=on_error,
                    jobs=self.jobs,
                )
                self.transfer.uploaded += sent
            if failures:
                raise StoreError(
                    f"uploading {len(failures)} object(s) to {self.describe()} failed: {failures[0]}",
                    hint="check write access to the remote (bucket policy, credentials); nothing was "
                    "committed, so re-running after the fix is safe",
                )
            # The listing goes last: a listing on the remote means its files are there too.
            if not odb.exists(version):
                odb.add_bytes(version, tree_bytes(entries))
                self.transfer.uploaded += 1
        except StoreError:
            raise
        except Exception as err:
            raise StoreError(
                f"uploading to {self.describe()} failed: {type(err).__name__}: {err}",
                hint="check write access to the remote (bucket policy, credentials, endpoint); nothing "
                "was committed, so re-running after the fix is safe",
            ) from err
        self.verify([*unique, version])
        # Keep a local copy in DVC's cache, so `dvc status`/`checkout` here need no download.
        for obj in unique.values():
            try:
                local.add(str(obj.source), LocalFileSystem(), obj.md5)
            except Exception as err:  # the remote has it; a local cache miss only costs a pull
                log.warning("could not add %s to the local DVC cache: %s", obj.rel, err)
        if not local.exists(version):
            local.add_bytes(version, tree_bytes(entries))
        return version

    def verify(self, oids: list[str]) -> None:
        """Ask the remote for every object again (the `dvc status -c` of what we pushed)."""
        odb = self._remote_odb()
        try:
            present = set(odb.oids_exist(list(oids), jobs=self.jobs))
        except Exception as err:
            raise StoreError(
                f"cannot verify the upload on {self.describe()}: {err}",
                hint="re-run: objects already on the remote are not sent again",
            ) from err
        missing = [o for o in oids if o not in present]
        if missing:
            raise StoreError(
                f"{len(missing)} object(s) are missing on {self.describe()} after the upload: {missing[:5]}",
                hint="the remote did not keep what was sent; check its permissions and retry",
            )

    def finalize(self, entries: dict[str, str], version: str, size: int, meta: dict[str, Any]) -> list[Path]:
        pointer = self.pointer()
        pointer.md5 = version
        pointer.size = size
        pointer.nfiles = len(entries)
        pointer.meta = meta
        write_pointer(pointer, self.data_root)
        gitignore = ensure_gitignored(self.data_root)
        return [pointer.path, gitignore]

    def close(self) -> None:
        self._reset()


def require_durable_remote(cfg: Config, in_actions: bool) -> None:
    """In GitHub Actions, refuse a DVC remote on the runner's own disk, before anything moves.

    The runner is deleted when the job ends: the data would be "stored" there, the pointer
    committed and the raw files removed from the branch, and the next job could not find it.
    """
    from traingate.locality import is_runner_local

    if not in_actions or cfg.store.kind != "dvc" or not is_runner_local(cfg.store_remote):
        return
    shown = cfg.store.remote or f"(empty: the default {cfg.store_remote})"
    raise ConfigError(
        f"store.remote {shown} is on the runner's disk, which GitHub Actions deletes when the job "
        "ends: the merged data would be lost and the next job could not pull it",
        hint="set store.remote to a bucket that outlives the job (s3://bucket/prefix; with "
        "store.endpoint_url for MinIO); a folder remote is for `traingate run` on one machine",
        file=str(cfg.source) if cfg.source else None,
    )


def open_store(cfg: Config, repo_root: Path | None = None) -> Store:
    if cfg.store.kind == "local":
        return LocalStore(cfg)
    return DvcStore(cfg, repo_root)


# -------------------------------------------------------------- used by the train stage
def dataset_version(cfg: Config) -> str:
    """The dataset's content version: the DVC `.dir` md5 of `<data.root>.dvc` ("" when not
    tracked); with `store.kind: local`, the same hash computed from the folder's files."""
    if cfg.store.kind == "local":
        entries = _folder_entries(cfg.data_root)
        return tree_hash(entries) if entries else ""
    return read_pointer(cfg.data_root).md5


def unsaved_changes(cfg: Config) -> list[str]:
    """Files of the checked-out dataset that differ from its pointer and exist nowhere else.

    DVC's own rule for what a checkout may overwrite, widened to the remote: a file whose
    content is in the local DVC cache (an earlier version, pulled or added here) or on the
    remote (`data merge` uploads the new files and copies them into the checkout) can be
    restored, so replacing it loses nothing; an edited or added file whose content is in
    neither is somebody's work. A deleted file is not listed: pulling brings it back, and
    nothing is lost. Returns paths relative to the repository root, sorted; [] when the folder
    is not checked out.
    """
    if cfg.store.kind != "dvc" or not cfg.data_root.is_dir():
        return []
    pointer = read_pointer(cfg.data_root)
    if not pointer.tracked:
        return []
    store = DvcStore(cfg)
    try:
        return _unsaved(store, pointer)
    finally:
        store.close()


def _unsaved(store: DvcStore, pointer: Pointer) -> list[str]:
    """`unsaved_changes` with the store and pointer the caller already opened and read."""
    if not store.data_root.is_dir():
        return []
    try:
        repo = store._open_repo()
        target = str(store.data_root.relative_to(store.repo_root))
        status = repo.data_status(targets=[target], granular=True)
        uncommitted = status.get("uncommitted") or {}
        candidates = [
            rel
            for rel in (*uncommitted.get("modified", []), *uncommitted.get("added", []))
            if not rel.endswith("/")
        ]
        local = store._local_odb()
        not_local: dict[str, str] = {}
        for rel in candidates:
            path = store.repo_root / rel
            if path.is_file():
                md5 = _md5_file(path)
                if not local.exists(md5):
                    not_local[rel] = md5
        on_remote = _on_remote(store, pointer, not_local)
        unsaved = [rel for rel, md5 in not_local.items() if md5 not in on_remote]
    except StoreError:
        raise
    except Exception as err:
        raise StoreError(
            f"cannot compare the dataset {store.cfg.data_root} with its pointer {pointer.path}: {err}",
            hint="run `dvc data status --granular` there to see the full error",
            file=str(pointer.path),
        ) from err
    return sorted(set(unsaved))


def _on_remote(store: DvcStore, pointer: Pointer, files: dict[str, str]) -> set[str]:
    """Which of these md5s the remote `pull` would use holds. A remote that cannot be asked
    answers "none": the files are then treated as local work (refusing is the safe side)."""
    if not files:
        return set()
    remote = _pull_remote(store, pointer)
    try:
        odb = store._open_repo().cloud.get_remote_odb(remote, "fetch")
        return set(odb.oids_exist(sorted(set(files.values()))))
    except Exception as err:
        log.warning("could not ask DVC remote %r which files it holds: %s", remote, err)
        return set()


def _pull_remote(store: DvcStore, pointer: Pointer) -> str:
    """The remote `pull` reads: the pointer's own, else DVC's default, else traingate's."""
    repo = store._open_repo()
    return pointer.remote or repo.config.get("core", {}).get("remote") or store.remote_name


def _refuse_to_overwrite(cfg: Config, unsaved: list[str], pointer: Pointer) -> StoreError:
    shown = "\n".join(f"  {rel}" for rel in unsaved[:50])
    more = f"\n  and {len(unsaved) - 50} more" if len(unsaved) > 50 else ""
    return StoreError(
        f"the dataset {cfg.data_root} has {len(unsaved)} local change(s) that pulling {pointer.md5} "
        f"would overwrite (they are in no DVC cache or remote):\n{shown}{more}",
        hint="keep them: merge them as new data (`traingate data merge`) or `dvc add` + commit the "
        "pointer; or discard them: train again with --force-pull (or `dvc checkout --force`)",
        file=str(pointer.path),
    )


def pull_dataset(cfg: Config, *, force: bool = False) -> str:
    """Bring the tracked dataset into the workspace, downloading only what is missing.

    Returns the data version. Raises StoreError naming the remote and the missing objects
    when the remote cannot provide them, and (unless `force`) naming the local edits a pull
    would overwrite: local work is never replaced silently.
    """
    if cfg.store.kind == "local":
        if not cfg.data_root.is_dir():
            raise StoreError(
                f"the dataset folder {cfg.data_root} does not exist (store.kind: local)",
                hint="run `traingate data merge` first, or point data.root at the dataset",
            )
        return dataset_version(cfg)
    pointer = read_pointer(cfg.data_root)
    if not pointer.tracked:
        return ""
    store = DvcStore(cfg)
    try:
        if not force:
            unsaved = _unsaved(store, pointer)
            if unsaved:
                raise _refuse_to_overwrite(cfg, unsaved, pointer)
        from dvc.exceptions import DvcException

        repo = store._open_repo()
        remote = _pull_remote(store, pointer)
        try:
            # Forced: what it may overwrite was checked above (DVC's own guard only knows the
            # local cache, and would refuse files `data merge` stored on the remote).
            repo.pull(targets=[str(pointer.path)], remote=remote, force=True, jobs=store.jobs)
        except DvcException as err:
            missing = _missing_objects(store, pointer)
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise StoreError(
                f"cannot pull the dataset {pointer.md5} from DVC remote {remote!r}: "
                + (f"{len(missing)} object(s) missing: {shown}" if missing else str(err)),
                hint="push the missing data from the machine that has it (`dvc push`), or check the "
                "remote's credentials (`traingate doctor`)",
                file=str(pointer.path),
            ) from err
    finally:
        store.close()
    return pointer.md5


def _missing_objects(store: DvcStore, pointer: Pointer) -> list[str]:
    """Objects neither in the local cache nor on the remote (best effort, for the message)."""
    try:
        entries = store.manifest()
    except StoreError:
        return [pointer.md5]
    oids = sorted(set(entries.values()))
    local = store._local_odb()
    not_local = [o for o in oids if not local.exists(o)]
    try:
        odb = store._remote_odb()
        present = set(odb.oids_exist(not_local))
    except Exception:
        present = set()
    by_oid = {md5: rel for rel, md5 in entries.items()}
    return [f"{by_oid.get(o, o)} ({o})" for o in not_local if o not in present]
