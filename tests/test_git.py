"""Git helpers against real git: a bare remote and two clones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from traingate.errors import ConfigError, GitError
from traingate.git import BOT_EMAIL, BOT_NAME, Git, author_for


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "main", str(bare)], check=True)
    seed = tmp_path / "seed"
    subprocess.run(["git", "clone", "-q", str(bare), str(seed)], check=True, capture_output=True)
    (seed / "README.md").write_text("seed\n")
    (seed / "shared.txt").write_text("one\n")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "seed")
    git(seed, "push", "-q", "origin", "HEAD:refs/heads/main")
    return bare


def clone(remote: Path, path: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(remote), str(path)], check=True, capture_output=True)
    return path


def test_commit_as_bot_and_only_given_paths(remote: Path, tmp_path: Path, monkeypatch) -> None:
    work = clone(remote, tmp_path / "a")
    (work / "mine.txt").write_text("x\n")
    (work / "theirs.txt").write_text("y\n")
    git(work, "add", "theirs.txt")  # staged by someone else: must not be swept into our commit
    g = Git(work, author=author_for(in_actions=True))
    sha = g.commit(["mine.txt"], "add mine")
    assert sha == g.head_sha() == git(work, "rev-parse", "HEAD")
    assert git(work, "log", "-1", "--format=%an <%ae>|%cn") == f"{BOT_NAME} <{BOT_EMAIL}>|{BOT_NAME}"
    assert git(work, "show", "--name-only", "--format=", "HEAD").splitlines() == ["mine.txt"]
    assert "theirs.txt" in git(work, "diff", "--cached", "--name-only")
    assert not g.is_clean()


def test_outside_actions_the_commit_is_the_users(remote: Path, tmp_path: Path, monkeypatch) -> None:
    work = clone(remote, tmp_path / "a")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL"):
        monkeypatch.delenv(name)
    git(work, "config", "user.name", "Ada Lovelace")
    git(work, "config", "user.email", "ada@example.org")
    (work / "mine.txt").write_text("x\n")
    g = Git(work)
    assert g.identity() == "Ada Lovelace <ada@example.org>"
    g.commit(["mine.txt"], "add mine")
    assert git(work, "log", "-1", "--format=%an <%ae>|%cn") == "Ada Lovelace <ada@example.org>|Ada Lovelace"


def test_outside_actions_without_an_identity_is_a_config_error(
    remote: Path, tmp_path: Path, monkeypatch
) -> None:
    work = clone(remote, tmp_path / "a")
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError) as info:
        Git(work).identity()
    assert info.value.exit_code == 2 and str(work) in info.value.message
    assert "git config --global user.email" in (info.value.hint or "")
    # In Actions the bot needs no configuration.
    assert Git(work, author=author_for(in_actions=True)).identity() == f"{BOT_NAME} <{BOT_EMAIL}>"


def test_missing_repository_folder_is_not_reported_as_missing_git(tmp_path: Path) -> None:
    with pytest.raises(GitError) as info:
        Git(tmp_path / "gone").head_sha()
    assert "does not exist" in info.value.message and "not installed" not in info.value.message


def test_commit_records_deletions_and_nothing_to_commit(remote: Path, tmp_path: Path) -> None:
    work = clone(remote, tmp_path / "a")
    g = Git(work)
    assert g.is_clean() and g.current_branch() == "main"
    (work / "shared.txt").unlink()
    before = g.head_sha()
    sha = g.commit(["shared.txt"], "remove shared")
    assert sha != before and "shared.txt" not in git(work, "ls-files")
    assert g.is_clean()
    assert g.commit(["shared.txt"], "again") == sha  # nothing staged: no empty commit
    with pytest.raises(GitError, match="empty message"):
        g.commit(["README.md"], "  ")


def test_push_rebases_when_remote_moved(remote: Path, tmp_path: Path) -> None:
    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    (b / "other.txt").write_text("from b\n")
    git(b, "add", "other.txt")
    git(b, "commit", "-q", "-m", "b moves main")
    git(b, "push", "-q", "origin", "main")

    g = Git(a)
    (a / "pointer.dvc").write_text("md5: 1\n")
    local_sha = g.commit(["pointer.dvc"], "pointer")
    sleeps: list[float] = []
    pushed = g.push("origin", "main", attempts=3, sleep=sleeps.append)
    assert pushed != local_sha  # rebased on top of b's commit
    assert git(remote, "rev-parse", "refs/heads/main") == pushed
    assert git(a, "log", "--format=%s", "-3").splitlines() == ["pointer", "b moves main", "seed"]
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 1.0  # jittered first backoff, no real wait


def test_push_conflict_aborts_rebase_and_names_files(remote: Path, tmp_path: Path) -> None:
    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    (b / "shared.txt").write_text("b's version\n")
    git(b, "commit", "-q", "-am", "b edits shared")
    git(b, "push", "-q", "origin", "main")

    g = Git(a)
    (a / "shared.txt").write_text("a's version\n")
    sha = g.commit(["shared.txt"], "a edits shared")
    with pytest.raises(GitError, match=r"shared\.txt") as info:
        g.push(sleep=lambda _s: None)
    assert info.value.exit_code == 1 and info.value.hint
    # The repository is as before the push: no rebase in progress, same HEAD, clean tree.
    assert not (a / ".git" / "rebase-merge").exists() and not (a / ".git" / "rebase-apply").exists()
    assert g.head_sha() == sha and g.is_clean() and g.current_branch() == "main"


def test_push_gives_up_after_bounded_attempts(remote: Path, tmp_path: Path, monkeypatch) -> None:
    a = clone(remote, tmp_path / "a")
    b = clone(remote, tmp_path / "b")
    g = Git(a)
    (a / "x.txt").write_text("x\n")
    g.commit(["x.txt"], "x")
    counter = {"n": 0}

    def racing_sleep(_s: float) -> None:  # another job pushes during every backoff
        counter["n"] += 1
        (b / f"b{counter['n']}.txt").write_text("b\n")
        git(b, "add", ".")
        git(b, "commit", "-q", "-m", f"b{counter['n']}")
        git(b, "push", "-q", "origin", "main")

    # Move the remote first so the very first push is rejected too.
    racing_sleep(0)
    with pytest.raises(GitError, match="after 3 attempts"):
        g.push(attempts=3, sleep=racing_sleep)
    assert counter["n"] == 3


def test_untrusted_names_never_reach_git_as_options(remote: Path, tmp_path: Path) -> None:
    a = clone(remote, tmp_path / "a")
    g = Git(a)
    marker = tmp_path / "pwned"
    with pytest.raises(GitError, match="invalid branch"):
        g.push(branch=f"--receive-pack=touch {marker}")
    with pytest.raises(GitError, match="invalid remote"):
        g.push(remote="--upload-pack=sh")
    assert not marker.exists()
    # A file whose name looks like an option is just a path after `--`.
    (a / "-rf").write_text("just a file\n")
    g.commit(["-rf"], "odd name")
    assert "-rf" in git(a, "ls-files").splitlines()


def test_push_failure_that_is_not_a_rejection_is_reported(tmp_path: Path) -> None:
    work = tmp_path / "w"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    git(work, "remote", "add", "origin", str(tmp_path / "does-not-exist.git"))
    g = Git(work)
    (work / "f").write_text("f\n")
    g.commit(["f"], "first")
    with pytest.raises(GitError, match="git push to origin main failed") as info:
        g.push(sleep=lambda _s: (_ for _ in ()).throw(AssertionError("must not retry")))
    assert "permissions" in (info.value.hint or "")


def test_detached_head_uses_the_fallback_the_caller_gives(remote: Path, tmp_path: Path, monkeypatch) -> None:
    a = clone(remote, tmp_path / "a")
    git(a, "checkout", "-q", "--detach")
    g = Git(a)
    with pytest.raises(GitError, match="detached"):
        g.current_branch()
    # The environment is not read: the caller passes the Actions context's branch.
    monkeypatch.setenv("GITHUB_REF_NAME", "data/2024-01-01")
    with pytest.raises(GitError, match="detached"):
        g.current_branch()
    assert g.current_branch(fallback="data/2024-01-01") == "data/2024-01-01"
    git(a, "checkout", "-q", "main")
    assert g.current_branch(fallback="data/2024-01-01") == "main"
