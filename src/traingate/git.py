"""The one git module: every stage, `doctor` and the demo drive git through `Git`.

It sits below the stages (tests/test_layers.py): data commits pointers with it, the remote
executor archives the commit to train, `train` records the checked-out commit, `doctor` finds the
repository. The differences between those callers are named parameters, not five wrappers:
`error` (which TraingateError a failure raises: a merge's GitError, training's TrainError, the
demo's UsageError), `hint` (the next step that caller can give), `config` (`-c` settings such as
`commit.gpgsign=false`), and `fact()` for the optional facts a missing git may leave empty.

Field report 2: a long job pushed a commit to a branch that had moved and the push failed; the
team made the failure non-fatal. Here a rejected push fetches, rebases and retries (bounded,
jittered, injectable sleep); a real conflict aborts the rebase, leaves the repository as it
was, and raises a GitError naming the files.

Every value (branch names, paths, messages) goes through an argv list, never a shell string, and
paths follow `--`, so a branch called `--upload-pack=...` or a file called `-rf` is just a name.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from traingate.errors import ConfigError, GitError, TraingateError

BOT_NAME = "github-actions[bot]"
BOT_EMAIL = "41898282+github-actions[bot]@users.noreply.github.com"


def author_for(in_actions: bool) -> tuple[str, str] | None:
    """Who commits: the bot in GitHub Actions, where no person is at the keyboard; elsewhere
    None, the identity git is configured with (on a developer's machine the commit is theirs)."""
    return (BOT_NAME, BOT_EMAIL) if in_actions else None


# What git prints when the remote branch has commits we do not have.
_REJECTED = re.compile(
    r"\[rejected\]|\[remote rejected\].*(?:fetch first|non-fast-forward|stale info)"
    r"|non-fast-forward|fetch first|Updates were rejected|cannot lock ref",
    re.IGNORECASE,
)


def _check_ref_name(name: str, what: str) -> str:
    """Refuse names git would read as options or that are not valid refs."""
    if not name or name.startswith("-") or any(c in name for c in "\0\n\r"):
        raise GitError(
            f"invalid {what} name {name!r}",
            hint=f"use a plain {what} name such as `main` or `data/2024-01-01`",
        )
    return name


class Git:
    """A git working tree driven through `git` subprocesses (argv lists only)."""

    def __init__(
        self,
        repo_dir: str | Path,
        *,
        author: tuple[str, str] | None = None,
        timeout: float = 300,
        error: type[TraingateError] = GitError,
        hint: str | None = None,
        config: Sequence[str] = (),
        branch: str = "",
    ) -> None:
        self.repo_dir = Path(repo_dir)
        # The branch a detached checkout stands for (in Actions: `ActionsContext.branch`, because
        # `actions/checkout` of a SHA leaves HEAD detached); "" for none.
        self.branch = branch
        # What a failed command raises and the next step it names: the caller's own error class
        # (exit code and title), so `train` reports "training failed", not "git error".
        self.error = error
        self.hint = hint
        # `-c name=value` settings for every command (the demo disables commit signing).
        self.config = tuple(config)
        # None: the identity git is configured with (a developer committing locally); the
        # caller passes `author_for(actions.in_actions)` to commit as the bot in Actions.
        self.author: tuple[str, str] | None = author
        self.timeout = timeout

    # ------------------------------------------------------------------ plumbing
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["GIT_TERMINAL_PROMPT"] = "0"  # a missing credential fails instead of hanging the job
        env.setdefault("LC_ALL", "C")  # messages we match are English
        if self.author:
            name, email = self.author
            env.update(
                GIT_AUTHOR_NAME=name,
                GIT_AUTHOR_EMAIL=email,
                GIT_COMMITTER_NAME=name,
                GIT_COMMITTER_EMAIL=email,
            )
        return env

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run `git <args>` in the repository; raise GitError with git's own words on failure."""
        argv = ["git", *(f for c in self.config for f in ("-c", c)), *args]
        try:
            proc = subprocess.run(
                argv,
                cwd=self.repo_dir,
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError as err:
            if not self.repo_dir.is_dir():  # the same exception as a missing git binary
                raise self.error(
                    f"the repository folder {self.repo_dir} does not exist",
                    hint="run the command inside the repository (check --config and SOURCE)",
                ) from err
            raise self.error("git is not installed or not on PATH", hint="install git on the runner") from err
        except subprocess.TimeoutExpired as err:
            raise self.error(
                f"`git {args[0]}` did not finish within {self.timeout:.0f} s in {self.repo_dir}",
                hint="check the network to the git remote, then re-run the job",
            ) from err
        if check and proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            raise self.error(
                f"`git {' '.join(args[:2])}` failed in {self.repo_dir} (exit {proc.returncode}): {detail}",
                hint=self.hint or "see git's message above; the repository was left as it was",
            )
        return proc

    def out(self, *args: str) -> str:
        """`git <args>`'s stdout, stripped; a failure raises `self.error`."""
        return self.run(*args).stdout.strip()

    def ok(self, *args: str) -> bool:
        """Whether `git <args>` exits 0 (a question such as `cat-file -e`); git missing raises."""
        return self.run(*args, check=False).returncode == 0

    def fact(self, *args: str) -> str:
        """`git <args>`'s stdout, or "" when git is missing, the folder is not a repository or
        the command fails: for facts a record may lack (the commit of a run outside a clone)."""
        try:
            proc = self.run(*args, check=False)
        except TraingateError:
            return ""
        return proc.stdout.strip() if proc.returncode == 0 else ""

    # ------------------------------------------------------------------ queries
    def head_sha(self) -> str:
        return self.out("rev-parse", "HEAD")

    def current_branch(self, fallback: str = "") -> str:
        """The checked-out branch, else `fallback`, else the `branch` this Git was given: in
        Actions the caller passes the run's branch (`ActionsContext.branch`), because
        `actions/checkout` of a SHA leaves HEAD detached."""
        proc = self.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
        if fallback or self.branch:
            return fallback or self.branch
        raise GitError(
            f"HEAD is detached in {self.repo_dir} and no branch was given",
            hint="check out a branch (actions/checkout with `ref:`) or pass the branch explicitly",
        )

    def is_clean(self) -> bool:
        """No staged, unstaged or untracked changes (ignored files do not count)."""
        return self.out("status", "--porcelain", "--untracked-files=normal") == ""

    def is_repo(self) -> bool:
        proc = self.run("rev-parse", "--is-inside-work-tree", check=False)
        return proc.returncode == 0 and proc.stdout.strip() == "true"

    def has_commits(self) -> bool:
        return self.run("rev-parse", "--verify", "--quiet", "HEAD", check=False).returncode == 0

    def has_remote(self, remote: str = "origin") -> bool:
        _check_ref_name(remote, "remote")
        return self.run("remote", "get-url", "--", remote, check=False).returncode == 0

    def tracked(self, path: str | Path) -> bool:
        """Whether git tracks `path` (a file, or any file below a folder)."""
        return bool(self.run("ls-files", "-z", "--", str(path)).stdout.strip("\0"))

    def unpushed(self, remote: str = "origin", branch: str | None = None) -> int:
        """Commits on HEAD that `remote`/`branch` does not have (after a fetch); a branch the
        remote does not have yet counts every commit."""
        _check_ref_name(remote, "remote")
        branch = _check_ref_name(branch or self.current_branch(), "branch")
        fetch = self.run(
            "fetch", "--no-tags", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}", check=False
        )
        rev = "HEAD" if fetch.returncode != 0 else f"refs/remotes/{remote}/{branch}..HEAD"
        return int(self.out("rev-list", "--count", rev) or 0)

    def identity(self) -> str:
        """The `Name <email>` commits will carry; raise ConfigError when git has none configured.

        Asked before a stage changes anything, so a missing identity fails the step early instead
        of after the data was uploaded. Git's guess from the host name (`root@runner.(none)`) is
        not an identity: `user.useConfigOnly` makes git refuse to guess.
        """
        if self.author:
            return f"{self.author[0]} <{self.author[1]}>"
        proc = self.run("-c", "user.useConfigOnly=true", "var", "GIT_COMMITTER_IDENT", check=False)
        author = self.run("-c", "user.useConfigOnly=true", "var", "GIT_AUTHOR_IDENT", check=False)
        if proc.returncode != 0 or author.returncode != 0:
            raise ConfigError(
                f"git has no user identity configured in {self.repo_dir}: the commit would have "
                "no author (outside GitHub Actions traingate commits as you, not as the bot)",
                hint='set it once: git config --global user.name "Your Name" && '
                "git config --global user.email you@example.com",
            )
        ident = author.stdout.strip()
        return ident.rsplit(" ", 2)[0] if ident.count(" ") >= 2 else ident  # drop "<epoch> <tz>"

    def deleted_paths(self, paths: Sequence[str | Path] = ()) -> list[str]:
        """Tracked files that are missing from the working tree, limited to `paths`."""
        args = ["ls-files", "--deleted", "-z"]
        if paths:
            args += ["--", *(str(p) for p in paths)]
        return [p for p in self.run(*args).stdout.split("\0") if p]

    def changed_paths(self, paths: Sequence[str | Path] = ()) -> list[str]:
        """Paths with staged or unstaged changes (including untracked), limited to `paths`."""
        args = ["status", "--porcelain", "--untracked-files=all", "-z"]
        if paths:
            args += ["--", *(str(p) for p in paths)]
        out = self.run(*args).stdout
        return [entry[3:] for entry in out.split("\0") if len(entry) > 3]

    # ------------------------------------------------------------------ commit
    def commit(self, paths: Iterable[str | Path], message: str, *, allow_empty: bool = False) -> str:
        """Stage exactly `paths` (additions, changes and deletions) and commit them.

        Only these paths are committed, even if other files are staged: a stage never sweeps
        someone else's work into its commit. Returns the new HEAD sha; with nothing to commit
        returns the current HEAD unless `allow_empty`.
        """
        path_list = [str(p) for p in paths]
        if not path_list and not allow_empty:
            raise GitError("nothing to commit: no paths given", hint="pass the files the step changed")
        if not message.strip():
            raise GitError("refusing to commit with an empty message", hint="pass a commit message")
        # A path that is neither on disk nor tracked has nothing to record (already removed in
        # an earlier commit); git would reject it as an unmatched pathspec.
        path_list = self._known_paths(path_list)
        if not path_list and not allow_empty:
            return self.head_sha() if self.has_commits() else ""
        if path_list:
            # -A stages deletions too; --ignore-removal is not wanted: a removed raw file must go.
            self.run("add", "-A", "--", *path_list)
            staged = self.run("diff", "--cached", "--quiet", "--", *path_list, check=False)
            if staged.returncode == 0 and not allow_empty:
                return self.head_sha() if self.has_commits() else ""
        args = ["commit", "--no-verify", "-m", message]
        if allow_empty:
            args.append("--allow-empty")
        if path_list:
            args += ["--", *path_list]
        self.run(*args)
        return self.head_sha()

    def _known_paths(self, paths: list[str]) -> list[str]:
        if not paths:
            return []
        tracked = set(self.run("ls-files", "-z", "--", *paths).stdout.split("\0"))
        tracked.discard("")
        known = []
        for p in paths:
            rel = p.rstrip("/")
            on_disk = os.path.lexists(self.repo_dir / p)
            if on_disk or any(t == rel or t.startswith(rel + "/") for t in tracked):
                known.append(p)
        return known

    # ------------------------------------------------------------------ push
    def push(
        self,
        remote: str = "origin",
        branch: str | None = None,
        attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        *,
        base_delay: float = 1.0,
        max_delay: float = 20.0,
        rng: random.Random | None = None,
    ) -> str:
        """Push HEAD to `remote`/`branch`; when the branch moved, fetch, rebase and retry.

        Returns the sha that was pushed (it changes when a rebase happened). A rebase conflict
        aborts the rebase (the repository is left as before the call) and raises GitError naming
        the conflicting files.
        """
        _check_ref_name(remote, "remote")
        branch = _check_ref_name(branch or self.current_branch(), "branch")
        if attempts < 1:
            raise GitError(f"push attempts must be at least 1, got {attempts}")
        rng = rng or random.Random()
        refspec = f"HEAD:refs/heads/{branch}"
        last_error = ""
        for attempt in range(1, attempts + 1):
            proc = self.run("push", "--porcelain", remote, refspec, check=False)
            if proc.returncode == 0:
                return self.head_sha()
            last_error = (proc.stderr + proc.stdout).strip()
            if not _REJECTED.search(last_error):
                raise GitError(
                    f"git push to {remote} {branch} failed: {last_error}",
                    hint="check the remote URL and that the token may push to this branch "
                    "(workflow `permissions: contents: write`)",
                )
            if attempt == attempts:
                break
            self._rebase_onto_remote(remote, branch)
            # Jittered exponential backoff: concurrent jobs pushing to one branch spread out.
            delay = min(max_delay, base_delay * 2 ** (attempt - 1))
            sleep(delay * (0.5 + rng.random() / 2))
        raise GitError(
            f"git push to {remote} {branch} was still rejected after {attempts} attempts: {last_error}",
            hint="the branch keeps moving; re-run the job, or raise the number of attempts",
        )

    def _rebase_onto_remote(self, remote: str, branch: str) -> None:
        self.run("fetch", "--no-tags", remote, f"+refs/heads/{branch}:refs/remotes/{remote}/{branch}")
        upstream = f"refs/remotes/{remote}/{branch}"
        proc = self.run("rebase", upstream, check=False)
        if proc.returncode == 0:
            return
        conflicted = self.out("diff", "--name-only", "--diff-filter=U").splitlines()
        self.run("rebase", "--abort", check=False)
        files = ", ".join(conflicted) or "(git did not name them)"
        raise GitError(
            f"cannot rebase onto {remote}/{branch}: the remote changed the same files ({files})",
            hint="merge the branch by hand and resolve the conflict, then re-run the job; "
            "the local repository was left as it was before the push",
            file=conflicted[0] if conflicted else None,
        )


__all__ = ["BOT_EMAIL", "BOT_NAME", "Git", "author_for"]
