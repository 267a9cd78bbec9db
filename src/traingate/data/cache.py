"""The validation cache: facts by content hash, and content hash by file stat.

Two tables in one SQLite file (WAL, busy timeout), so concurrent runs on one machine share it
safely:
- `facts(md5, kind, version) -> json`: what `images.inspect_file` found. Keyed by content, so a
  fresh checkout (new mtimes) still reuses it after one hashing pass.
- `stat(path, size, mtime_ns, inode) -> md5`: lets an unchanged file skip even the read, as git
  and DVC do.

The cache is an accelerator, never a source of truth: if it cannot be opened or written, the
validation runs without it and says so once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    md5 TEXT NOT NULL, kind TEXT NOT NULL, version INTEGER NOT NULL, facts TEXT NOT NULL,
    PRIMARY KEY (md5, kind, version));
CREATE TABLE IF NOT EXISTS stat (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, md5 TEXT NOT NULL);
"""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "traingate"


def stat_key(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class ValidationCache:
    """Open with `ValidationCache.open(dir)`; `None` backend means disabled."""

    def __init__(self, conn: sqlite3.Connection | None, path: Path | None, version: int) -> None:
        self._conn = conn
        self.path = path
        self.version = version
        self.problem = ""

    @classmethod
    def open(cls, directory: Path | None, version: int) -> ValidationCache:
        if directory is None:
            return cls(None, None, version)
        path = directory / "validate.sqlite"
        problem: Exception
        for attempt in range(40):
            try:
                directory.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=30, isolation_level=None)
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    conn.executescript(_SCHEMA)
                except BaseException:
                    conn.close()
                    raise
                return cls(conn, path, version)
            except sqlite3.OperationalError as err:
                # Switching to WAL and creating the schema take locks that SQLite's busy timeout
                # does not always cover when several runs open a new cache at the same moment:
                # retry briefly rather than run the whole validation without the cache.
                if "locked" in str(err) or "busy" in str(err):
                    time.sleep(0.02 + random.random() * 0.08 * (1 + attempt % 5))
                    continue
                problem = err
                break
            except (OSError, sqlite3.Error) as err:
                problem = err
                break
        else:
            problem = sqlite3.OperationalError("still locked after 40 attempts")
        cache = cls(None, path, version)
        cache.problem = f"validation cache {path} unusable ({problem}); validating without it"
        log.warning(cache.problem)
        return cache

    @property
    def enabled(self) -> bool:
        return self._conn is not None

    def _disable(self, err: Exception) -> None:
        self.problem = f"validation cache {self.path} failed ({err}); continuing without it"
        log.warning(self.problem)
        self.close()

    def stat_hashes(self, paths: Iterable[str]) -> dict[str, tuple[int, int, int, str]]:
        if self._conn is None:
            return {}
        wanted = list(paths)
        found: dict[str, tuple[int, int, int, str]] = {}
        try:
            # Chunked IN queries: SQLite limits host parameters per statement.
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT path, size, mtime_ns, inode, md5 FROM stat WHERE path IN ({marks})",  # noqa: S608
                    chunk,
                )
                for path, size, mtime_ns, inode, md5 in rows:
                    found[path] = (size, mtime_ns, inode, md5)
        except sqlite3.Error as err:
            self._disable(err)
            return {}
        return found

    def facts(self, md5s: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        if self._conn is None:
            return {}
        wanted = list(set(md5s))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        try:
            for i in range(0, len(wanted), 400):
                chunk = wanted[i : i + 400]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT md5, kind, facts FROM facts WHERE version = ? AND md5 IN ({marks})",  # noqa: S608
                    [self.version, *(m for m, _ in chunk)],
                )
                kinds = set(chunk)
                for md5, kind, text in rows:
                    if (md5, kind) in kinds:
                        found[(md5, kind)] = json.loads(text)
        except (sqlite3.Error, ValueError) as err:
            self._disable(err)
            return {}
        return found

    def known_content(self) -> set[tuple[str, str]]:
        """Every (md5, kind) with cached facts: workers skip inspecting content seen before."""
        if self._conn is None:
            return set()
        try:
            rows = self._conn.execute("SELECT md5, kind FROM facts WHERE version = ?", (self.version,))
            return {(m, k) for m, k in rows}
        except sqlite3.Error as err:
            self._disable(err)
            return set()

    def store(
        self,
        stats: Iterable[tuple[str, int, int, int, str]],
        facts: Iterable[tuple[str, str, dict[str, Any]]],
    ) -> None:
        """Write in one transaction, so a concurrent reader sees all of it or none of it."""
        if self._conn is None:
            return
        try:
            with self._conn:
                self._conn.execute("BEGIN IMMEDIATE")
                self._conn.executemany("INSERT OR REPLACE INTO stat VALUES (?, ?, ?, ?, ?)", list(stats))
                self._conn.executemany(
                    "INSERT OR REPLACE INTO facts VALUES (?, ?, ?, ?)",
                    [(m, k, self.version, json.dumps(f, sort_keys=True)) for m, k, f in facts],
                )
        except sqlite3.Error as err:
            self._disable(err)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
