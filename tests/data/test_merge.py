"""`data merge` with real git (bare remote), real DVC (folder remote) and generated images."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.data.conftest import MakePair
from traingate.config import load_config
from traingate.data.manifest import read_pointer, tree_hash
from traingate.data.merge import merge_step
from traingate.data.store import DvcStore, _folder_entries, dataset_version, pull_dataset
from traingate.errors import DataError, GitError, StoreError
from traingate.gha import ActionsContext
from traingate.git import BOT_NAME
from traingate.result import StepResult

# A run outside GitHub Actions: the tests state the context instead of the environment.
LOCAL = ActionsContext()

pytestmark = pytest.mark.slow


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


class Project:
    def __init__(self, root: Path, bare: Path, remote: Path) -> None:
        self.root, self.bare, self.remote = root, bare, remote

    @property
    def cfg(self):
        return load_config(self.root / "traingate.yml")

    def add_incoming(self, make_pair: MakePair, stems: list[str], *, commit: bool = True, **kw) -> None:
        for stem in stems:
            make_pair(self.root / "data" / "new", stem, **kw)
        if commit:
            git(self.root, "add", "data/new")
            git(self.root, "commit", "-q", "-m", f"new data {stems}")

    def remote_objects(self) -> set[str]:
        return {p.parent.name + p.name for p in (self.remote / "files" / "md5").rglob("*") if p.is_file()}

    def head_files(self) -> list[str]:
        return git(self.root, "ls-tree", "-r", "--name-only", "HEAD").splitlines()


def make_project(tmp_path: Path, name: str = "proj", extra: dict | None = None) -> Project:
    bare = tmp_path / f"{name}.git"
    subprocess.run(["git", "init", "--bare", "-q", "-b", "data/upload", str(bare)], check=True)
    root = tmp_path / name
    subprocess.run(["git", "clone", "-q", str(bare), str(root)], check=True, capture_output=True)
    git(root, "checkout", "-q", "-b", "data/upload")
    remote = tmp_path / f"{name}-dvc-remote"
    config = {
        "project": "t",
        "data": {"root": "data/training", "incoming": "data/new", "workers": 1},
        "store": {"remote": str(remote)},
    }
    for key, value in (extra or {}).items():
        config.setdefault(key, {}).update(value)
    (root / "traingate.yml").write_text(yaml.safe_dump(config))
    (root / ".gitignore").write_text(".traingate/\n")
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    git(root, "push", "-q", "origin", "data/upload")
    # The base the data branch was cut from (pr.base): the merge compares the branch with it.
    git(root, "push", "-q", "origin", "HEAD:refs/heads/main")
    return Project(root, bare, remote)


@pytest.fixture
def project(tmp_path: Path, make_pair: MakePair) -> Project:
    p = make_project(tmp_path)
    p.add_incoming(make_pair, [f"a{i}" for i in range(4)])
    return p


def first_merge(p: Project):
    return merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)


def test_first_merge_initialises_dvc_pushes_data_then_commits(project: Project, tmp_path: Path) -> None:
    result = first_merge(project)
    out = result.outputs
    assert out["validation_passed"] is True
    assert (out["new_images"], out["existing_images"], out["total_images"]) == (4, 0, 4)
    pointer = read_pointer(project.root / "data" / "training")
    assert pointer.tracked and pointer.nfiles == 8 and out["data_version"] == pointer.md5
    assert pointer.meta["resolution"] == "64x64"
    # Data on the remote: 8 files + the listing; raw files gone from git; commit pushed, authored
    # by the user's own git identity outside Actions (conftest.py's `traingate-test`).
    assert len(project.remote_objects()) == 9
    files = project.head_files()
    assert "data/training.dvc" in files and ".dvc/config" in files
    assert not any(f.startswith("data/new/") for f in files)
    assert "/training" in (project.root / "data" / ".gitignore").read_text()
    assert git(project.bare, "rev-parse", "refs/heads/data/upload") == out["commit_sha"]
    assert git(project.root, "log", "-1", "--format=%an") == "traingate-test" != BOT_NAME
    assert "merge 4 new image(s)" in git(project.root, "log", "-1", "--format=%s")
    report = json.loads(Path(out["report"]).read_text())
    assert report["merge"]["new_images"] == 4 and report["merge"]["commit"] == out["commit_sha"]
    assert all(c["passed"] for c in report["merge"]["checks"])

    # What we wrote is real DVC: a fresh clone pulls the dataset with `dvc pull` itself.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "data/upload", str(project.bare), str(clone)], check=True)
    import sys

    dvc = Path(sys.executable).parent / "dvc"
    proc = subprocess.run([str(dvc), "pull"], cwd=clone, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    pulled = _folder_entries(clone / "data" / "training")
    assert len(pulled) == 8 and tree_hash(pulled) == pointer.md5  # byte-identical to what was merged


def test_second_merge_reads_only_the_manifest(project: Project, make_pair: MakePair) -> None:
    first_merge(project)
    before = project.remote_objects()
    # A fresh machine: no local DVC cache, no checked-out dataset.
    import shutil

    shutil.rmtree(project.root / ".dvc" / "cache", ignore_errors=True)
    shutil.rmtree(project.root / "data" / "training", ignore_errors=True)
    project.add_incoming(make_pair, ["b0", "b1"])
    store = DvcStore(project.cfg)
    result = merge_step(project.cfg, store=store, sleep=lambda _s: None, actions=LOCAL)
    assert (result.outputs["new_images"], result.outputs["existing_images"]) == (2, 4)
    assert result.outputs["total_images"] == 6
    assert store.transfer.downloaded == 1  # the listing, not the dataset
    assert store.transfer.uploaded == 5  # 4 new files + the new listing
    assert len(project.remote_objects() - before) == 5
    assert dataset_version(project.cfg) == result.outputs["data_version"]
    assert read_pointer(project.root / "data" / "training").nfiles == 12


def test_name_conflict_fails_and_changes_nothing(project: Project, make_pair: MakePair) -> None:
    first_merge(project)
    objects = project.remote_objects()
    project.add_incoming(make_pair, ["a1"], seed=12345)  # same name, new content
    project.add_incoming(make_pair, ["c0"])
    head = git(project.root, "rev-parse", "HEAD")
    with pytest.raises(DataError) as info:
        merge_step(project.cfg, sleep=lambda _s: None, actions=LOCAL)
    err = info.value
    assert err.exit_code == 1 and err.outputs["validation_passed"] is False
    assert "name_conflict" in (err.summary or "") and "--on-conflict replace" in (err.summary or "")
    report = json.loads(Path(err.outputs["report"]).read_text())
    conflict = next(e for e in report["errors"] if e["code"] == "name_conflict")
    assert conflict["path"] == "images/a1.jpg" and conflict["message"].count("md5") == 2
    assert git(project.root, "rev-parse", "HEAD") == head
    assert project.remote_objects() == objects  # not even c0 was uploaded
    assert (project.root / "data" / "new" / "images" / "a1.jpg").exists()


def test_replace_is_explicit_and_recorded(project: Project, make_pair: MakePair) -> None:
    first_merge(project)
    project.add_incoming(make_pair, ["a1"], seed=12345)
    result = merge_step(project.cfg, on_conflict="replace", sleep=lambda _s: None, actions=LOCAL)
    report = json.loads(Path(result.outputs["report"]).read_text())
    replaced = {r["path"] for r in report["merge"]["replaced"]}
    assert "images/a1.jpg" in replaced
    assert result.outputs["total_images"] == 4 and result.outputs["new_images"] == 1
    body = git(project.root, "log", "-1", "--format=%B")
    assert "--on-conflict replace" in body and "images/a1.jpg" in body


def test_duplicate_of_stored_content_and_resolution(project: Project, make_pair: MakePair) -> None:
    stored = (project.root / "data" / "new" / "images" / "a0.jpg").read_bytes()
    first_merge(project)
    project.add_incoming(make_pair, ["copy"])
    (project.root / "data" / "new" / "images" / "copy.jpg").write_bytes(stored)
    project.add_incoming(make_pair, ["wide"], size=(96, 64))
    with pytest.raises(DataError) as info:
        merge_step(project.cfg, sleep=lambda _s: None, actions=LOCAL)
    codes = {
        e["path"]: e["code"] for e in json.loads(Path(info.value.outputs["report"]).read_text())["errors"]
    }
    assert codes == {"images/copy.jpg": "duplicate_content", "images/wide.jpg": "resolution_mismatch"}


def test_rerun_with_already_stored_files_is_idempotent(project: Project, make_pair: MakePair) -> None:
    """Interrupted after the upload and pointer, before the commit: the re-run only commits."""
    cfg = project.cfg
    store = DvcStore(cfg)
    original_commit = __import__("traingate.git", fromlist=["Git"]).Git.commit

    def crash(*_a, **_k):
        raise KeyboardInterrupt

    __import__("traingate.git", fromlist=["Git"]).Git.commit = crash
    try:
        with pytest.raises(KeyboardInterrupt):
            merge_step(cfg, store=store, sleep=lambda _s: None, actions=LOCAL)
    finally:
        __import__("traingate.git", fromlist=["Git"]).Git.commit = original_commit
    objects = project.remote_objects()
    assert len(objects) == 9
    store2 = DvcStore(project.cfg)
    result = merge_step(project.cfg, store=store2, sleep=lambda _s: None, actions=LOCAL)
    assert store2.transfer.uploaded == 0  # everything was already there
    assert result.outputs["total_images"] == 4 and result.outputs["commit_sha"]
    assert "data/training.dvc" in project.head_files()
    assert not any(f.startswith("data/new/") for f in project.head_files())  # the removal committed
    assert project.remote_objects() == objects


def test_rerun_after_commit_pushes_pending(project: Project, make_pair: MakePair) -> None:
    git(project.root, "remote", "set-url", "origin", str(project.bare) + "-gone")
    with pytest.raises(Exception, match="push"):
        first_merge(project)
    git(project.root, "remote", "set-url", "origin", str(project.bare))
    result = first_merge(project)  # data/new is gone: only the push is left to do
    assert git(project.bare, "rev-parse", "refs/heads/data/upload") == result.outputs["commit_sha"]


def test_push_of_data_fails_nothing_committed(project: Project) -> None:
    project.remote.mkdir(parents=True)
    (project.remote / "files").write_text("a file where the remote's folder should be")
    head = git(project.root, "rev-parse", "HEAD")
    with pytest.raises(StoreError) as info:
        first_merge(project)
    assert info.value.exit_code == 1 and "nothing" in (info.value.hint or "")
    assert git(project.root, "rev-parse", "HEAD") == head
    assert not (project.root / "data" / "training.dvc").exists()
    assert (project.root / "data" / "new" / "images" / "a0.jpg").exists()


def test_push_rebases_onto_moved_branch(project: Project, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", "-b", "data/upload", str(project.bare), str(other)], check=True)
    (other / "NOTES.md").write_text("someone else pushed\n")
    git(other, "add", "NOTES.md")
    git(other, "commit", "-q", "-m", "notes")
    git(other, "push", "-q", "origin", "data/upload")
    result = first_merge(project)
    log = git(project.bare, "log", "--format=%s", "refs/heads/data/upload").splitlines()
    assert log[0].startswith("data: merge") and "notes" in log
    assert git(project.bare, "rev-parse", "refs/heads/data/upload") == result.outputs["commit_sha"]


def test_pull_dataset_and_missing_objects(project: Project, tmp_path: Path) -> None:
    version = first_merge(project).outputs["data_version"]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "data/upload", str(project.bare), str(clone)], check=True)
    cfg = load_config(clone / "traingate.yml")
    assert dataset_version(cfg) == version
    assert pull_dataset(cfg) == version
    assert tree_hash(_folder_entries(clone / "data" / "training")) == version
    # An object lost on the remote is named in the error.
    clone2 = tmp_path / "clone2"
    subprocess.run(["git", "clone", "-q", "-b", "data/upload", str(project.bare), str(clone2)], check=True)
    victim = next(
        p for p in (project.remote / "files" / "md5").rglob("*") if p.is_file() and ".dir" not in p.name
    )
    victim.unlink()
    with pytest.raises(StoreError) as info:
        pull_dataset(load_config(clone2 / "traingate.yml"))
    assert victim.parent.name + victim.name in info.value.message
    assert "remote" in info.value.message and info.value.hint


def test_dataset_version_untracked_and_local_store(tmp_path: Path, make_pair: MakePair) -> None:
    p = make_project(tmp_path, "loc", {"store": {"kind": "local"}})
    cfg = p.cfg
    assert dataset_version(cfg) == ""
    p.add_incoming(make_pair, ["x0", "x1"], commit=False)
    result = merge_step(cfg, commit=False, sleep=lambda _s: None, actions=LOCAL)
    assert result.outputs["total_images"] == 2
    assert dataset_version(cfg) == result.outputs["data_version"] == pull_dataset(cfg)
    assert len(_folder_entries(p.root / "data" / "training")) == 4


def test_local_store_replace_removes_the_replaced_file(tmp_path: Path, make_pair: MakePair) -> None:
    p = make_project(tmp_path, "locr", {"store": {"kind": "local"}})
    p.add_incoming(make_pair, ["x0", "x1"], commit=False)
    merge_step(p.cfg, commit=False, sleep=lambda _s: None, actions=LOCAL)
    shutil.rmtree(p.root / "data" / "new")
    make_pair(p.root / "data" / "new", "x0", ext="png", seed=7)  # x0.jpg's replacement
    result = merge_step(p.cfg, commit=False, on_conflict="replace", sleep=lambda _s: None, actions=LOCAL)
    stored = _folder_entries(p.root / "data" / "training")
    assert "images/x0.jpg" not in stored and "images/x0.png" in stored
    assert result.outputs["total_images"] == 2
    assert result.outputs["data_version"] == dataset_version(p.cfg)


def test_untracked_existing_dataset_is_refused(tmp_path: Path, make_pair: MakePair) -> None:
    p = make_project(tmp_path, "raw")
    make_pair(p.root / "data" / "training", "old")
    p.add_incoming(make_pair, ["n0"])
    with pytest.raises(StoreError, match="not tracked by DVC"):
        merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)


def test_cli_merge_writes_outputs(project: Project, monkeypatch) -> None:
    from click.testing import CliRunner

    from traingate import gha
    from traingate.cli import cli

    monkeypatch.chdir(project.root)
    out = project.root / ".traingate" / "gh_output"
    out.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    res = CliRunner().invoke(cli, ["data", "merge", "--no-push"])
    assert res.exit_code == 0, res.output
    values = gha.read_outputs(out)
    assert values["validation_passed"] == "true" and values["new_images"] == "4"
    assert values["existing_images"] == "0" and values["total_images"] == "4"
    assert Path(values["report"]).exists() and values["data_version"].endswith(".dir")
    # No new data: exit 1 with a clear message.
    res = CliRunner().invoke(cli, ["data", "merge", "--no-push"])
    assert res.exit_code == 1 and "no new data" in res.output


def test_json_stdout_is_one_object_even_when_dvc_initialises(project: Project) -> None:
    """DVC logs `Initialized DVC repository.` to stdout; `--json` consumers must not see it."""
    import sys

    exe = Path(sys.executable).parent / "traingate"
    proc = subprocess.run(
        [str(exe), "--json", "data", "merge", "--no-push"],
        cwd=project.root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    payload = json.loads(proc.stdout)  # the whole of stdout, nothing else
    assert payload["ok"] is True and payload["outputs"]["new_images"] == 4


def test_rerun_after_pointer_written_before_commit(project: Project, monkeypatch) -> None:
    """Interrupted half-way through removing the raw files, after the pointer was written: the
    re-run finds every file already stored, uploads nothing, and commits pointer + every removal
    (those of the interrupted run included)."""
    import traingate.data.merge as merge_mod

    real_remove = merge_mod._remove_stored
    calls = {"n": 0}

    def interrupt_once(src, rels):
        if calls["n"] == 0:
            calls["n"] += 1
            real_remove(src, sorted(rels)[:3])
            raise KeyboardInterrupt
        return real_remove(src, rels)

    monkeypatch.setattr(merge_mod, "_remove_stored", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        first_merge(project)
    assert read_pointer(project.root / "data" / "training").tracked
    assert "data/training.dvc" not in project.head_files()
    store = DvcStore(project.cfg)
    result = merge_step(project.cfg, store=store, sleep=lambda _s: None, actions=LOCAL)
    assert store.transfer.uploaded == 0 and result.outputs["new_images"] == 0
    assert result.outputs["total_images"] == 4
    files = project.head_files()
    assert "data/training.dvc" in files and not any(f.startswith("data/new/") for f in files)
    assert git(project.bare, "rev-parse", "refs/heads/data/upload") == result.outputs["commit_sha"]


def test_corrected_mask_for_a_stored_image(project: Project) -> None:
    """Only a mask arrives: it pairs with the stored image; replacing needs --on-conflict."""
    from tests.data.conftest import mask_bytes

    first_merge(project)
    masks = project.root / "data" / "new" / "masks"
    masks.mkdir(parents=True)
    (masks / "a2.png").write_bytes(mask_bytes(fg=0.33))
    (project.root / "data" / "new" / "images").mkdir()
    git(project.root, "add", "data/new")
    git(project.root, "commit", "-q", "-m", "fix mask")
    with pytest.raises(DataError) as info:
        merge_step(project.cfg, sleep=lambda _s: None, actions=LOCAL)
    report = json.loads(Path(info.value.outputs["report"]).read_text())
    assert [e["code"] for e in report["errors"]] == ["name_conflict"]  # not missing_image
    result = merge_step(project.cfg, on_conflict="replace", sleep=lambda _s: None, actions=LOCAL)
    assert result.outputs["total_images"] == 4 and result.outputs["new_images"] == 0
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert [r["path"] for r in report["merge"]["replaced"]] == ["masks/a2.png"]


def test_failed_merge_posts_comment_when_asked(project: Project, make_pair: MakePair, monkeypatch) -> None:
    """The merge stage returns the refused batch; the `data merge` composer posts the comment."""
    import traingate.github.status as status
    from traingate.gha import ActionsContext
    from traingate.pipeline.merge import data_merge_step

    first_merge(project)
    project.add_incoming(make_pair, ["a0"], seed=999)  # name conflict
    calls: list[dict] = []

    def fake_comment_step(cfg, *args, **kw):
        calls.append({"args": args, **kw})
        return StepResult(message="commented")

    monkeypatch.setattr(status, "comment_step", fake_comment_step)
    actions = ActionsContext(repository="o/r", sha="abc")
    with pytest.raises(DataError) as info:
        data_merge_step(project.cfg, comment=True, token="t0ken", actions=actions, sleep=lambda _s: None)
    token, repo, sha, report = calls[0]["args"]
    assert len(calls) == 1 and (token, repo, sha) == ("t0ken", "o/r", "abc")
    assert calls[0]["actions"] is actions  # the run's one context, passed down
    assert Path(report).exists() and info.value.warnings == []
    with pytest.raises(DataError):
        data_merge_step(project.cfg, comment=False, actions=actions, sleep=lambda _s: None)
    assert len(calls) == 1
    with pytest.raises(DataError):
        merge_step(project.cfg, actions=actions, sleep=lambda _s: None)  # the stage alone never comments
    assert len(calls) == 1


def test_comment_not_posted_is_a_warning_on_the_merge_error(
    project: Project, make_pair: MakePair, monkeypatch
) -> None:
    """Issue #13: a failed comment travels on the DataError (no string stands in for it)."""
    import traingate.github.status as status
    from traingate.errors import GitHubError
    from traingate.gha import ActionsContext
    from traingate.pipeline.merge import data_merge_step

    first_merge(project)
    project.add_incoming(make_pair, ["a0"], seed=999)  # name conflict

    def denied(cfg, *args, **kw):
        raise GitHubError("403 Resource not accessible by integration", hint="grant contents: write")

    monkeypatch.setattr(status, "comment_step", denied)
    with pytest.raises(DataError) as info:
        data_merge_step(
            project.cfg,
            comment=True,
            token="t",
            actions=ActionsContext(repository="o/r", sha="abc"),
            sleep=lambda _s: None,
        )
    assert info.value.warnings == [
        "could not post the validation comment: 403 Resource not accessible by integration "
        "(grant contents: write)"
    ]
    assert info.value.outputs["validation_passed"] is False
    with pytest.raises(DataError) as info:
        data_merge_step(project.cfg, comment=True, actions=ActionsContext(), sleep=lambda _s: None)
    assert info.value.warnings[0].startswith("could not post the validation comment: not running in GitHub")


def test_a_detached_checkout_pushes_to_the_runs_branch(project: Project) -> None:
    """`actions/checkout` of a SHA leaves HEAD detached: the merge pushes the pointer commit to
    the run's branch from the context it was given (ActionsContext.branch), not from GITHUB_*
    read inside git.py."""
    git(project.root, "checkout", "-q", "--detach")
    out = merge_step(
        project.cfg, sleep=lambda _s: None, actions=ActionsContext(ref_name="data/upload")
    ).outputs
    assert git(project.bare, "rev-parse", "refs/heads/data/upload") == out["commit_sha"]


def test_the_pointer_commit_is_the_bots_when_the_context_says_actions(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traingate.data.merge import _open_git

    monkeypatch.setenv("GITHUB_ACTIONS", "true")  # the environment does not decide; the context does
    assert _open_git(project.root, LOCAL).identity() == "traingate-test <test@example.invalid>"
    in_actions = ActionsContext(in_actions=True)
    assert _open_git(project.root, in_actions).identity().startswith(BOT_NAME)


def test_a_detached_checkout_without_a_branch_is_refused_naming_it(project: Project) -> None:
    git(project.root, "checkout", "-q", "--detach")
    with pytest.raises(GitError, match="HEAD is detached"):
        merge_step(project.cfg, sleep=lambda _s: None, actions=LOCAL)
    assert project.remote_objects() == set()  # refused before anything was stored
