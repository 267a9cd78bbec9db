"""Issue #11: the merge never loses or moves what it did not store.

Real git (bare remote), real DVC (folder remote), generated images, as in test_merge.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.data.conftest import MakePair
from tests.data.test_merge import Project, git, make_project
from traingate.config import load_config
from traingate.data.manifest import read_pointer
from traingate.data.merge import merge_step
from traingate.errors import ConfigError, DataError, TraingateError, UsageError
from traingate.gha import ActionsContext

# A run outside GitHub Actions: the tests state the context instead of the environment.
LOCAL = ActionsContext()

pytestmark = pytest.mark.slow


def no_sleep(_s: float) -> None:
    pass


def snapshot(root: Path, skip: tuple[str, ...] = (".traingate",)) -> dict[str, bytes]:
    """Every file below `root`, .git included, but the workspace (reports): what "nothing
    moved" is checked against."""
    return {
        rel: p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not (rel := p.relative_to(root).as_posix()).startswith(skip)
    }


# ----------------------------------------------------------------------- case 1: SOURCE
@pytest.fixture
def root_with_pairs(tmp_path: Path, make_pair: MakePair) -> Project:
    """A repository whose top level holds images/ and masks/ (valid pairs), plus uncommitted work."""
    p = make_project(tmp_path)
    make_pair(p.root, "r0")
    make_pair(p.root, "r1")
    git(p.root, "add", "images", "masks")
    git(p.root, "commit", "-q", "-m", "pairs at the top level")
    (p.root / "WIP.txt").write_text("uncommitted work\n")
    return p


def test_source_repository_root_is_refused_and_nothing_moves(root_with_pairs: Project) -> None:
    p = root_with_pairs
    before = snapshot(p.root)
    head = git(p.root, "rev-parse", "HEAD")
    with pytest.raises(UsageError) as info:
        merge_step(p.cfg, p.root, sleep=no_sleep, actions=LOCAL)
    assert info.value.exit_code == 2
    assert str(p.root) in info.value.message and "repository" in info.value.message
    assert info.value.hint
    assert snapshot(p.root) == before  # .git, WIP.txt, the pairs: all there, unchanged
    assert git(p.root, "rev-parse", "HEAD") == head
    assert not p.remote.exists()  # nothing was uploaded, not even the remote folder made


def test_cli_merge_dot_is_exit_2_naming_the_folder(root_with_pairs: Project, monkeypatch) -> None:
    from click.testing import CliRunner

    from traingate.cli import cli

    p = root_with_pairs
    before = snapshot(p.root)
    monkeypatch.chdir(p.root)
    res = CliRunner().invoke(cli, ["data", "merge", "."])
    assert res.exit_code == 2, res.output
    assert str(p.root) in res.output and "git is not installed" not in res.output
    assert snapshot(p.root) == before


@pytest.mark.parametrize(
    ("where", "words"),
    [
        ("data/training", "dataset"),  # data.root itself
        ("data/training/images", "dataset"),  # inside data.root
        ("data", "dataset"),  # holds data.root (and its .dvc pointer)
        ("nested", ".git"),  # the top of another repository (a submodule, a nested clone)
        (".git/lost", ".git"),  # git's own folder
        (".dvc/tmp", ".dvc"),  # DVC's
        ("../elsewhere", "outside"),  # not in the repository at all
    ],
)
def test_source_must_be_a_plain_folder_inside_the_repository(
    tmp_path: Path, make_pair: MakePair, where: str, words: str
) -> None:
    p = make_project(tmp_path)
    source = (p.root / where).resolve()
    make_pair(source, "s0")
    if where == "nested":
        subprocess.run(["git", "init", "-q", str(source)], check=True)
    before = snapshot(p.root)
    with pytest.raises(UsageError) as info:
        merge_step(p.cfg, source, sleep=no_sleep, actions=LOCAL)
    assert info.value.exit_code == 2
    assert str(source) in info.value.message and words in info.value.message
    assert snapshot(p.root) == before


def test_source_holding_the_configuration_is_refused(tmp_path: Path, make_pair: MakePair) -> None:
    """A project in a sub-folder of its repository (like examples/water-meters): `data merge .`
    there would take train.py and traingate.yml for part of a batch."""
    p = make_project(tmp_path, extra={"data": {"root": "../datasets/training"}})
    project = p.root / "project"
    project.mkdir()
    (p.root / "traingate.yml").rename(project / "traingate.yml")
    make_pair(project, "s0")
    cfg = load_config(project / "traingate.yml")
    with pytest.raises(UsageError) as info:
        merge_step(cfg, project, sleep=no_sleep, actions=LOCAL)
    assert "traingate.yml" in info.value.message and str(project) in info.value.message


def test_data_incoming_in_the_config_is_named_when_it_is_refused(tmp_path: Path, make_pair: MakePair) -> None:
    p = make_project(tmp_path, extra={"data": {"incoming": "data/training"}})
    make_pair(p.root / "data" / "training", "s0")
    with pytest.raises(ConfigError) as info:
        merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    assert info.value.exit_code == 2 and "data.incoming" in info.value.message


# ------------------------------------------------------------- case 2: other files in SOURCE
def add_strays(p: Project) -> None:
    incoming = p.root / "data" / "new"
    (incoming / "README.md").write_text("what this batch is\n")
    git(p.root, "add", "data/new/README.md")
    git(p.root, "commit", "-q", "-m", "tracked readme")
    (incoming / "NOTES.txt").write_text("untracked notes\n")
    (incoming / ".thumbs").mkdir()
    (incoming / ".thumbs" / "a0.jpg").write_bytes(b"thumbnail cache")
    (incoming / ".gitkeep").write_text("")


def test_files_that_are_not_pairs_are_errors_before_anything_moves(
    tmp_path: Path, make_pair: MakePair
) -> None:
    p = make_project(tmp_path)
    p.add_incoming(make_pair, ["a0", "a1"])
    add_strays(p)
    # The store's own set-up (`dvc init`, which stages its files, the remote folder) may happen
    # before the report; no data file may move and no commit may be made.
    skip = (".traingate", ".dvc", ".git/")
    before = snapshot(p.root, skip=skip)
    head = git(p.root, "rev-parse", "HEAD")
    with pytest.raises(DataError) as info:
        merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    assert info.value.exit_code == 1 and info.value.outputs["validation_passed"] is False
    report = json.loads(Path(info.value.outputs["report"]).read_text())
    unexpected = sorted(e["path"] for e in report["errors"] if e["code"] == "unexpected_file")
    assert unexpected == [".thumbs/a0.jpg", "NOTES.txt", "README.md"]  # .gitkeep is tolerated
    assert all(e["code"] == "unexpected_file" for e in report["errors"])
    assert "data.ignore" in (info.value.summary or "") + (info.value.hint or "")
    assert snapshot(p.root, skip=skip) == before
    assert git(p.root, "rev-parse", "HEAD") == head
    assert not p.remote.exists() or not p.remote_objects()


def test_ignored_files_are_left_alone_and_only_stored_pairs_are_removed(
    tmp_path: Path, make_pair: MakePair
) -> None:
    p = make_project(tmp_path, extra={"data": {"ignore": ["**/*.md", "NOTES.txt", ".thumbs"]}})
    p.add_incoming(make_pair, ["a0", "a1"])
    add_strays(p)
    git(p.root, "add", "data/new/.gitkeep")
    git(p.root, "commit", "-q", "-m", "keep the folder")
    result = merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    assert result.outputs["new_images"] == 2
    incoming = p.root / "data" / "new"
    # Left alone on disk, with their content ...
    assert (incoming / "README.md").read_text() == "what this batch is\n"
    assert (incoming / "NOTES.txt").read_text() == "untracked notes\n"
    assert (incoming / ".thumbs" / "a0.jpg").read_bytes() == b"thumbnail cache"
    assert (incoming / ".gitkeep").exists()
    # ... and in the branch: the commit removed exactly the four stored pair files.
    files = p.head_files()
    assert "data/new/README.md" in files and "data/new/.gitkeep" in files
    assert "data/new/NOTES.txt" not in files  # untracked stays untracked: not swept into the commit
    assert not any(f.startswith(("data/new/images/", "data/new/masks/")) for f in files)
    removed = git(p.root, "show", "--name-status", "--format=", "HEAD").splitlines()
    deleted = sorted(line.split("\t")[1] for line in removed if line.startswith("D"))
    assert deleted == [
        "data/new/images/a0.jpg",
        "data/new/images/a1.jpg",
        "data/new/masks/a0.png",
        "data/new/masks/a1.png",
    ]
    assert not (incoming / "images").exists() and not (incoming / "masks").exists()


def test_a_lone_gitkeep_stays_after_the_merge(tmp_path: Path, make_pair: MakePair) -> None:
    p = make_project(tmp_path)
    (p.root / "data" / "new").mkdir(parents=True)
    (p.root / "data" / "new" / ".gitkeep").write_text("")
    p.add_incoming(make_pair, ["a0"])
    merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    assert "data/new/.gitkeep" in p.head_files()
    assert (p.root / "data" / "new" / ".gitkeep").exists()


# ----------------------------------------------------- case 7: the no-flag `init` config
def test_config_of_init_without_flags_merges_locally(tmp_path: Path, make_pair: MakePair) -> None:
    from traingate.templates import init_step

    root = tmp_path / "fresh"
    root.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    init_step(root)
    make_pair(root / "data" / "new", "a0")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init + data")
    cfg = load_config(root / "traingate.yml")
    result = merge_step(cfg, push=False, sleep=no_sleep, actions=LOCAL)
    assert result.outputs["new_images"] == 1
    assert read_pointer(root / "data" / "training").tracked
    assert "region" not in (root / ".dvc" / "config").read_text()


def test_remote_changed_from_s3_to_a_folder_drops_the_s3_settings(
    tmp_path: Path, make_pair: MakePair
) -> None:
    p = make_project(tmp_path)
    (p.root / ".dvc").mkdir()
    (p.root / ".dvc" / "config").write_text(
        "[core]\n    remote = storage\n"
        "['remote \"storage\"']\n    url = s3://old/bucket\n    region = eu-west-1\n"
        "    endpointurl = http://127.0.0.1:9\n"
    )
    (p.root / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    git(p.root, "add", ".dvc")
    git(p.root, "commit", "-q", "-m", "dvc on s3")
    p.add_incoming(make_pair, ["a0"])
    merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    text = (p.root / ".dvc" / "config").read_text()
    assert str(p.remote) in text and "region" not in text and "endpointurl" not in text


# --------------------------------------------- case 8: a remote on the runner in Actions
@pytest.mark.parametrize("remote", ["folder", "file", ""])
def test_actions_refuses_a_remote_on_the_runner_before_anything_moves(
    tmp_path: Path, make_pair: MakePair, monkeypatch, remote: str
) -> None:
    folder = tmp_path / "proj-dvc-remote"  # make_project's folder remote
    value = {"folder": str(folder), "file": folder.as_uri(), "": ""}[remote]
    # In the base commit: a data branch may not change traingate.yml (untrusted_change).
    p = make_project(tmp_path, extra={"store": {"remote": value}})
    assert p.remote == folder
    p.add_incoming(make_pair, ["a0"])
    before = snapshot(p.root)
    with pytest.raises(ConfigError) as info:
        merge_step(p.cfg, sleep=no_sleep, actions=ActionsContext(in_actions=True))
    err = info.value
    assert err.exit_code == 2 and "store.remote" in err.message and "s3://" in (err.hint or "")
    assert snapshot(p.root) == before
    assert not p.remote.exists() and not (p.root / ".traingate" / "remote").exists()


# ------------------------------------------------- case 10: who authors the pointer commit
def test_outside_actions_the_pointer_commit_is_the_users(tmp_path: Path, make_pair: MakePair) -> None:
    p = make_project(tmp_path)
    p.add_incoming(make_pair, ["a0"])
    merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    # conftest.py gives the test process the identity `traingate-test` (as a developer's git would).
    who = git(p.root, "log", "-1", "--format=%an <%ae>|%cn")
    assert who == "traingate-test <test@example.invalid>|traingate-test"


def test_outside_actions_without_a_git_identity_fails_before_anything_moves(
    tmp_path: Path, make_pair: MakePair, monkeypatch
) -> None:
    p = make_project(tmp_path)
    p.add_incoming(make_pair, ["a0"])
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    before = snapshot(p.root)
    with pytest.raises(TraingateError) as info:
        merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    assert info.value.exit_code == 2
    assert "identity" in info.value.message and "git config" in (info.value.hint or "")
    assert snapshot(p.root) == before and not p.remote.exists()


def test_only_ignored_files_left_means_no_new_data(tmp_path: Path) -> None:
    """After a merge with data.ignore the incoming folder keeps those files: the next run (and
    `traingate run`'s skip of validate/merge) must not take them for a new batch."""
    from traingate.data.merge import holds_files

    incoming = tmp_path / "new"
    (incoming / ".thumbs").mkdir(parents=True)
    (incoming / "NOTES.txt").write_text("x")
    (incoming / ".thumbs" / "a0.jpg").write_bytes(b"x")
    (incoming / ".gitkeep").write_text("")
    assert holds_files(incoming)  # not ignored: the merge reports them (unexpected_file)
    assert not holds_files(incoming, ["NOTES.txt", ".thumbs"])
    assert not holds_files(incoming, ["*.txt", ".thumbs/*.jpg"])
    assert holds_files(incoming, ["*.txt", "*.jpg"])  # `*` stays within one folder level
    assert not holds_files(incoming, ["**/*.???"])
    assert not holds_files(incoming, ["[A-N]*.txt", ".thumbs"])
    assert holds_files(incoming, ["[!A-N]*", ".thumbs"]) and not holds_files(incoming, ["[!a-m]*", ".thumbs"])


def test_a_file_url_remote_is_that_folder(tmp_path: Path, make_pair: MakePair) -> None:
    """`store.remote: file:///srv/dvc` stored the data in `./file:/srv/dvc` inside the repository
    (DVC takes the URL for a relative path), where a `git add -A` would commit it."""
    p = make_project(tmp_path, extra={"store": {"remote": (tmp_path / "proj-dvc-remote").as_uri()}})
    p.add_incoming(make_pair, ["a0"])
    merge_step(p.cfg, sleep=no_sleep, actions=LOCAL)
    assert len(p.remote_objects()) == 3
    assert not (p.root / "file:").exists()
