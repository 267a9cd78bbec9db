"""A data branch changes data only (`untrusted_change`), against real git: a bare remote, clones,
a DVC folder remote for the merges."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.data.conftest import MakePair
from tests.data.test_merge import Project, git, make_project
from traingate.config import load_config
from traingate.data.merge import merge_step
from traingate.data.trust import (
    Change,
    TrustRules,
    adopt_data_pointers,
    check_branch,
    rules_for,
    verify_pointer_text,
)
from traingate.errors import UntrustedChangeError
from traingate.gha import ActionsContext

# A run outside GitHub Actions: the tests state the context instead of the environment.
LOCAL = ActionsContext()

pytestmark = pytest.mark.slow


def _write_commit(p: Project, rel: str, text: str, message: str = "change") -> None:
    path = p.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    git(p.root, "add", rel)
    git(p.root, "commit", "-q", "-m", message)


@pytest.fixture
def project(tmp_path: Path, make_pair: MakePair) -> Project:
    """main = traingate.yml + train.py; data/upload cut from it with four new pairs."""
    p = make_project(tmp_path)
    git(p.root, "checkout", "-q", "main")
    _write_commit(p, "train.py", "print('honest training')\n", "code")
    git(p.root, "push", "-q", "origin", "main")
    git(p.root, "checkout", "-q", "-B", "data/upload", "main")
    p.add_incoming(make_pair, [f"a{i}" for i in range(4)])
    git(p.root, "push", "-q", "-f", "origin", "data/upload")
    return p


def _merge(p: Project):
    return merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)


def test_merge_refuses_a_data_branch_that_also_changes_train_py(project: Project) -> None:
    _write_commit(project, "train.py", "import os; os.system('curl evil')\n")
    head = git(project.root, "rev-parse", "HEAD")
    with pytest.raises(UntrustedChangeError) as info:
        _merge(project)
    err = info.value
    assert err.message.startswith("untrusted_change:") and "train.py (modified)" in err.message
    assert err.code == "untrusted_change" and err.exit_code == 1
    assert err.outputs == {"validation_passed": False} and err.file == "train.py"
    assert "`train.py` (modified)" in (err.summary or "") and "main" in (err.hint or "")
    # Nothing validated, stored, committed or pushed.
    assert git(project.root, "rev-parse", "HEAD") == head
    assert not project.remote.exists() or not any(project.remote.rglob("*.dir"))
    assert not (project.root / "data" / "training.dvc").exists()


def test_merge_refuses_a_branch_that_widens_its_own_rules(project: Project) -> None:
    """traingate.yml is never allowed, even when the branch's own copy allows everything."""
    text = (project.root / "traingate.yml").read_text()
    _write_commit(project, "traingate.yml", text + "pr:\n  base: main\n")
    (project.root / "traingate.yml").write_text(
        text.replace("incoming: data/new", "incoming: data/new\n  allowed_paths: ['**']")
    )
    git(project.root, "commit", "-q", "-am", "allow everything")
    with pytest.raises(UntrustedChangeError) as info:
        _merge(project)
    assert "traingate.yml (modified)" in info.value.message


def test_every_path_is_listed_and_deleted_files_count(project: Project) -> None:
    git(project.root, "rm", "-q", "train.py")
    git(project.root, "commit", "-q", "-m", "drop")
    _write_commit(project, ".github/workflows/steal.yml", "on: push\n")
    with pytest.raises(UntrustedChangeError) as info:
        _merge(project)
    assert "train.py (deleted)" in info.value.message
    assert ".github/workflows/steal.yml (added)" in info.value.message
    assert "2 path(s)" in info.value.message


def test_uncommitted_changes_count_untracked_files_do_not(project: Project) -> None:
    """The working tree is what a local `traingate run` would train; untracked files are in no push."""
    (project.root / "train.py").write_text("print('edited, not committed')\n")
    with pytest.raises(UntrustedChangeError) as info:
        check_branch(project.cfg)
    assert "train.py (modified)" in info.value.message
    git(project.root, "checkout", "--", "train.py")
    (project.root / "helper.py").write_text("x = 1\n")
    (project.root / "outputs").mkdir()
    (project.root / "outputs" / "model.npz").write_bytes(b"x")
    assert check_branch(project.cfg).skipped == ""


def test_data_only_branch_merges_and_its_pointer_commit_still_passes(project: Project) -> None:
    out = _merge(project).outputs
    assert out["validation_passed"] is True and out["new_images"] == 4
    report = check_branch(project.cfg)
    paths = {c.path for c in report.changes}
    # The pointer, DVC's .gitignore entry and the first merge's `dvc init` files are allowed.
    assert {"data/training.dvc", "data/.gitignore", ".dvc/config"} <= paths
    assert not any(path.startswith("train") for path in paths)


def test_compares_with_the_merge_base_not_the_moved_base(project: Project, tmp_path: Path) -> None:
    """main changing train.py after the branch was cut is not the branch's change."""
    other = tmp_path / "maintainer"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(project.bare), str(other)], check=True)
    (other / "train.py").write_text("print('better training')\n")
    git(other, "commit", "-q", "-am", "improve training")
    git(other, "push", "-q", "origin", "main")
    report = check_branch(project.cfg)
    assert report.base_sha == git(other, "rev-parse", "HEAD")  # fetched, not the stale local main
    assert report.merge_base != report.base_sha
    assert {c.path for c in report.changes} == {
        f"data/new/{k}/a{i}.{e}" for i in range(4) for k, e in (("images", "jpg"), ("masks", "png"))
    }


def test_the_base_branch_itself_is_not_compared(project: Project) -> None:
    git(project.root, "checkout", "-q", "main")
    (project.root / "train.py").write_text("print('maintainer edit')\n")
    report = check_branch(project.cfg)
    assert report.skipped == "on the base branch main"


def test_allowed_paths_globs_extend_the_rules(project: Project) -> None:
    git(project.root, "checkout", "-q", "main")
    text = (project.root / "traingate.yml").read_text()
    (project.root / "traingate.yml").write_text(
        text.replace("incoming: data/new", "incoming: data/new\n  allowed_paths: ['data/notes/**', '*.md']")
    )
    git(project.root, "commit", "-q", "-am", "allow notes")
    git(project.root, "push", "-q", "origin", "main")
    git(project.root, "checkout", "-q", "-B", "data/notes", "main")
    _write_commit(project, "data/notes/2024/batch.txt", "from the field\n")
    _write_commit(project, "CHANGES.md", "notes\n")
    assert check_branch(project.cfg).skipped == ""
    _write_commit(project, "docs/CHANGES.md", "`*` stays within one folder\n")
    with pytest.raises(UntrustedChangeError) as info:
        check_branch(project.cfg)
    assert "docs/CHANGES.md" in info.value.message and "CHANGES.md (added)" not in info.value.message.replace(
        "docs/CHANGES.md (added)", ""
    )


def test_missing_base_is_a_refusal_not_a_pass(project: Project) -> None:
    cfg = project.cfg
    cfg.pr.base = "trunk"
    with pytest.raises(UntrustedChangeError) as info:
        check_branch(cfg)
    assert "'trunk' could not be fetched from remote 'origin'" in info.value.message
    assert "pr.base" in (info.value.hint or "")


def test_without_a_remote_the_local_base_branch_is_used(project: Project) -> None:
    git(project.root, "remote", "remove", "origin")
    _write_commit(project, "train.py", "changed\n")
    with pytest.raises(UntrustedChangeError):
        check_branch(project.cfg)
    cfg = project.cfg
    cfg.pr.base = "nowhere"
    with pytest.raises(UntrustedChangeError) as info:
        check_branch(cfg)
    assert "no local branch 'nowhere'" in info.value.message


def test_a_shallow_checkout_is_deepened(project: Project, tmp_path: Path) -> None:
    """actions/checkout fetches one commit by default: the merge-base is not there yet."""
    git(project.root, "push", "-q", "origin", "data/upload")
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", "-b", "data/upload", f"file://{project.bare}", str(shallow)],
        check=True,
    )
    assert check_branch(load_config(shallow / "traingate.yml")).merge_base


def test_unrelated_history_is_refused(project: Project) -> None:
    git(project.root, "checkout", "-q", "--orphan", "data/orphan")
    git(project.root, "commit", "-q", "-m", "everything new")
    with pytest.raises(UntrustedChangeError) as info:
        check_branch(project.cfg)
    assert "shares no history" in info.value.message


def test_cli_merge_exits_1_with_the_code(project: Project, monkeypatch) -> None:
    from click.testing import CliRunner

    from traingate import gha
    from traingate.cli import cli

    _write_commit(project, "train.py", "evil\n")
    monkeypatch.chdir(project.root)
    out = project.root / ".traingate" / "gh_output"
    out.parent.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    res = CliRunner().invoke(cli, ["data", "merge", "--no-push"])
    assert res.exit_code == 1
    assert "error (train.py): untrusted_change: branch data/upload changes 1 path(s)" in res.output
    assert gha.read_outputs(out) == {"validation_passed": "false"}


# ------------------------------------------------------------------------------ rules, pointers
def test_rules_are_repository_relative_for_a_config_in_a_subfolder(tmp_path: Path) -> None:
    from traingate.config import parse_config

    root = tmp_path / "repo"
    (root / "ml").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    cfg = parse_config(
        {"data": {"root": "data/training", "incoming": "data/new", "allowed_paths": ["notes/*"]}},
        base_dir=root / "ml",
        source=root / "ml" / "traingate.yml",
    )
    rules = rules_for(cfg, root)
    assert rules.incoming == "ml/data/new"
    assert rules.pointers == ("ml/data/training.dvc", "ml/data/.gitignore")
    assert rules.globs == ("ml/notes/*",) and rules.never == ("ml/traingate.yml",)


def test_dvc_init_files_only_as_additions() -> None:
    rules = TrustRules(incoming="data/new", pointers=("data/training.dvc",))
    assert rules.allows(Change("A", ".dvc/config"))
    assert not rules.allows(Change("M", ".dvc/config"))  # pointing every later run at another remote
    assert rules.allows(Change("D", "data/new/images/a.jpg"))  # merged raw files are removed
    assert not rules.allows(Change("A", "data/newer/x"))


POINTER = "outs:\n- md5: {md5}\n  size: 10\n  nfiles: 2\n  hash: md5\n  path: {path}\n"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (POINTER.format(md5="0" * 32 + ".dir", path="../train.py"), "outs[0].path is '../train.py'"),
        (POINTER.format(md5="0" * 32 + ".dir", path="training") + "cmd: curl evil\n", "top-level keys"),
        (POINTER.format(md5="0" * 32 + ".dir", path="training") + "wdir: ..\n", "top-level keys"),
        (POINTER.format(md5="0" * 32, path="training"), "not a DVC directory hash"),
        ("outs: []\n", "exactly one entry"),
        ("- a\n", "top-level keys"),
    ],
)
def test_only_a_plain_pointer_is_adopted(text: str, why: str) -> None:
    with pytest.raises(UntrustedChangeError) as info:
        verify_pointer_text(text, "training", "data/training.dvc")
    assert why in info.value.message


def test_plain_pointer_with_meta_is_accepted() -> None:
    text = "meta:\n  traingate:\n    images: 4\n" + POINTER.format(md5="a" * 32 + ".dir", path="training")
    assert verify_pointer_text(text, "training", "data/training.dvc") == "a" * 32 + ".dir"


# --------------------------------------------------------------------------------- the train job
def _base_checkout(p: Project, tmp_path: Path) -> Path:
    """What the train job checks out: the base branch, full history."""
    work = tmp_path / "train-job"
    subprocess.run(["git", "clone", "-q", "-b", "main", str(p.bare), str(work)], check=True)
    return work


def test_train_job_takes_only_the_pointer_from_the_data_commit(project: Project, tmp_path: Path) -> None:
    data_sha = _merge(project).outputs["commit_sha"]
    work = _base_checkout(project, tmp_path)
    cfg = load_config(work / "traingate.yml")
    adopted = adopt_data_pointers(cfg, data_sha)
    assert adopted.pointer == "data/training.dvc" and adopted.data_version.endswith(".dir")
    assert adopted.base == "main" and adopted.warnings == []
    pointer = git(project.root, "show", "HEAD:data/training.dvc")
    assert (work / "data" / "training.dvc").read_text().strip() == pointer
    assert (work / "train.py").read_text() == "print('honest training')\n"
    assert not (work / "data" / "new").exists()


def test_train_job_refuses_a_data_commit_that_changes_code(project: Project, tmp_path: Path) -> None:
    _merge(project)
    _write_commit(project, "train.py", "print('pwned')\n")
    git(project.root, "push", "-q", "origin", "data/upload")
    work = _base_checkout(project, tmp_path)
    with pytest.raises(UntrustedChangeError) as info:
        adopt_data_pointers(load_config(work / "traingate.yml"), git(project.root, "rev-parse", "HEAD"))
    assert "train.py (modified)" in info.value.message
    assert not (work / "data" / "training.dvc").exists()
    assert (work / "train.py").read_text() == "print('honest training')\n"


def test_train_job_refuses_a_pointer_that_points_elsewhere(project: Project, tmp_path: Path) -> None:
    _write_commit(project, "data/training.dvc", POINTER.format(md5="0" * 32 + ".dir", path="../train.py"))
    git(project.root, "push", "-q", "origin", "data/upload")
    work = _base_checkout(project, tmp_path)
    with pytest.raises(UntrustedChangeError) as info:
        adopt_data_pointers(load_config(work / "traingate.yml"), "origin/data/upload")
    assert "not a plain DVC pointer" in info.value.message
    assert not (work / "data" / "training.dvc").exists()


def test_train_job_on_the_base_commit_itself_adopts_nothing(project: Project, tmp_path: Path) -> None:
    work = _base_checkout(project, tmp_path)
    adopted = adopt_data_pointers(load_config(work / "traingate.yml"), "main")
    assert adopted.pointer == "" and adopted.changes == []


def test_train_job_on_a_base_without_dvc_pulls_the_first_merge(project: Project, tmp_path: Path) -> None:
    """The first merge ran `dvc init` on the data branch: the base checkout gets its DVC set-up
    from its own traingate.yml (not the branch's .dvc/config) and pulls the merged dataset."""
    from traingate.data.store import pull_dataset

    data_sha = _merge(project).outputs["commit_sha"]
    work = _base_checkout(project, tmp_path)
    assert not (work / ".dvc").exists()
    cfg = load_config(work / "traingate.yml")
    adopted = adopt_data_pointers(cfg, data_sha)
    assert pull_dataset(cfg) == adopted.data_version
    assert len(list((work / "data" / "training" / "images").iterdir())) == 4


def test_a_merge_source_other_than_incoming_is_data_too(project: Project, make_pair: MakePair) -> None:
    """`data merge SOURCE` (the pipeline's `source` input): that folder is the new data."""
    git(project.root, "checkout", "-q", "-B", "data/batch", "main")
    for stem in ("b0", "b1"):
        make_pair(project.root / "uploads" / "batch", stem)
    git(project.root, "add", "uploads")
    git(project.root, "commit", "-q", "-m", "a batch elsewhere")
    with pytest.raises(UntrustedChangeError):
        check_branch(project.cfg)  # not data.incoming
    with pytest.raises(UntrustedChangeError, match=r"uploads/batch/images/b0\.jpg"):
        check_branch(project.cfg, source=project.root / "uploads" / "other")
    out = merge_step(
        project.cfg, project.root / "uploads" / "batch", sleep=lambda _s: None, actions=LOCAL
    ).outputs
    assert out["new_images"] == 2
    # Merged and removed: the branch's net change is the pointer, which any check accepts.
    assert {c.path for c in check_branch(project.cfg).changes} >= {"data/training.dvc"}


def test_an_unreachable_remote_falls_back_to_the_last_fetched_base_and_says_so(project: Project) -> None:
    check_branch(project.cfg)  # fetches origin/main once
    git(project.root, "remote", "set-url", "origin", str(project.bare) + "-gone")
    report = check_branch(project.cfg)
    assert report.base_sha and len(report.warnings) == 1
    assert "could not fetch main from origin" in report.warnings[0]
    git(project.root, "update-ref", "-d", "refs/remotes/origin/main")
    with pytest.raises(UntrustedChangeError, match="could not be fetched from remote 'origin'"):
        check_branch(project.cfg)


def test_a_detached_checkout_is_the_branch_the_actions_context_names(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #13: the branch of a detached checkout comes from the ActionsContext passed in,
    not from GITHUB_* read inside the stage."""
    git(project.root, "checkout", "-q", "--detach", "main")
    monkeypatch.setenv("GITHUB_REF_NAME", "data/upload")  # ignored: the context is what counts
    on_base = check_branch(project.cfg, actions=ActionsContext(ref_name="main"))
    assert on_base.skipped == "on the base branch main"
    on_pr = check_branch(project.cfg, actions=ActionsContext(ref_name="7/merge", head_ref="main"))
    assert on_pr.skipped == "on the base branch main"
    assert check_branch(project.cfg, actions=LOCAL).skipped == ""  # detached, no context: compared
