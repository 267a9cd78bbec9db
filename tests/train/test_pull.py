"""`train` pulls the dataset with real git and real DVC (folder remote), and never overwrites
local work (issue #11 case 4); the run records the commit and the data version it trained on
(issue #12 case 7)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from tests.tracking.helpers import Project, open_adapter
from traingate.cli import cli
from traingate.config import Config
from traingate.data.manifest import read_pointer
from traingate.errors import StoreError
from traingate.gha import ActionsContext
from traingate.pipeline.train import train_step

pytestmark = pytest.mark.slow


def quiet(_line: str) -> None:
    pass


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def dvc(cwd: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True, capture_output=True, text=True)


class DvcProject:
    """A git repository whose data/training is tracked by DVC and pushed to a folder remote."""

    def __init__(self, project: Project, remote: Path) -> None:
        self.project = project
        self.root = project.root
        self.remote = remote
        self.data = project.root / "data" / "training"

    def config(self, **train: object) -> Config:
        return self.project.config(store={"remote": str(self.remote)}, train={"pull_data": True, **train})

    def commit_version(self, files: dict[str, str], message: str) -> str:
        for rel, text in files.items():
            (self.data / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.data / rel).write_text(text)
        dvc(self.root, "add", "-q", "data/training")
        dvc(self.root, "push", "-q")
        git(self.root, "add", "data/training.dvc", "data/.gitignore")
        git(self.root, "commit", "-q", "-m", message)
        return git(self.root, "rev-parse", "HEAD")

    def yml(self) -> Path:
        """traingate.yml for the CLI (the same settings as `config()`)."""
        path = self.root / "traingate.yml"
        path.write_text(
            yaml.safe_dump(
                {
                    "project": "tg-test",
                    "store": {"remote": str(self.remote)},
                    "train": {
                        "command": f"{sys.executable} train.py",
                        "artifacts": ["outputs/model.bin"],
                        "timeout_minutes": 1,
                    },
                    "tracking": {"retry_budget_seconds": 3, "health_timeout_seconds": 2, "max_retries": 0},
                    "gate": {"model": "tg-model"},
                }
            )
        )
        return path


@pytest.fixture
def dvc_project(project: Project, tmp_path_factory: pytest.TempPathFactory) -> DvcProject:
    root = project.root
    git(root, "init", "-q", "-b", "main")
    (root / ".gitignore").write_text(".traingate/\noutputs/\ntraingate.yml\n")
    dvc(root, "init", "-q")
    remote = tmp_path_factory.mktemp("dvc-remote")
    dvc(root, "remote", "add", "-d", "storage", str(remote))
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "init")
    p = DvcProject(project, remote)
    p.commit_version({"images/a.png": "a1", "images/b.png": "b1", "masks/a.png": "ma"}, "data v1")
    return p


def test_train_refuses_to_pull_over_local_edits_and_force_pull_accepts(dvc_project: DvcProject) -> None:
    p = dvc_project
    cfg = p.config()
    (p.data / "images" / "a.png").write_text("my hand-fixed label")  # edited
    (p.data / "images" / "c.png").write_text("a new image")  # added
    (p.data / "masks" / "a.png").unlink()  # deleted: pulling restores it, nothing is lost
    with pytest.raises(StoreError) as info:
        train_step(cfg, log=quiet)
    err = info.value
    assert err.exit_code == 1
    assert "data/training/images/a.png" in err.message and "data/training/images/c.png" in err.message
    assert "masks/a.png" not in err.message
    assert "--force-pull" in (err.hint or "")
    assert (p.data / "images" / "a.png").read_text() == "my hand-fixed label"
    assert (p.data / "images" / "c.png").read_text() == "a new image"
    assert not (p.root / "outputs").exists()  # the command never ran

    result = train_step(cfg, force_pull=True, log=quiet)
    assert (p.data / "images" / "a.png").read_text() == "a1"
    assert (p.data / "masks" / "a.png").read_text() == "ma"
    assert result.outputs["data_version"] == read_pointer(p.data).md5


def test_cli_train_exits_1_listing_the_edits_and_force_pull_overwrites(
    dvc_project: DvcProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = dvc_project
    p.yml()
    monkeypatch.chdir(p.root)
    (p.data / "images" / "b.png").write_text("edited")
    result = CliRunner().invoke(cli, ["train"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert "data/training/images/b.png" in result.output
    assert (p.data / "images" / "b.png").read_text() == "edited"
    result = CliRunner().invoke(cli, ["train", "--force-pull"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (p.data / "images" / "b.png").read_text() == "b1"


def test_an_older_version_in_the_workspace_is_replaced_without_force(dvc_project: DvcProject) -> None:
    """Not local work: the files checked out from an earlier pointer are in the DVC cache."""
    p = dvc_project
    p.commit_version({"images/a.png": "a2", "images/d.png": "d2"}, "data v2")
    git(p.root, "checkout", "-q", "HEAD~1", "--", "data/training.dvc")  # the pointer moved back
    result = train_step(p.config(), log=quiet)
    assert (p.data / "images" / "a.png").read_text() == "a1"
    assert not (p.data / "images" / "d.png").exists()
    assert result.outputs["data_version"] == read_pointer(p.data).md5


def test_files_stored_on_the_remote_only_are_replaced_without_force(dvc_project: DvcProject) -> None:
    """`data merge` uploads new files and copies them into the checkout, not into the local
    cache: they are safe on the remote, so a pull may replace them."""
    import shutil

    p = dvc_project
    p.commit_version({"images/f.png": "f2"}, "data v2")
    shutil.rmtree(p.root / ".dvc" / "cache")
    git(p.root, "checkout", "-q", "HEAD~1", "--", "data/training.dvc")
    train_step(p.config(), log=quiet)
    assert not (p.data / "images" / "f.png").exists()


def test_the_run_records_the_checked_out_commit_and_the_pointer_md5(
    dvc_project: DvcProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In Actions GITHUB_SHA is the push; the checkout may be the merged pointer commit."""
    p = dvc_project
    pushed = git(p.root, "rev-parse", "HEAD")
    merged = p.commit_version({"images/e.png": "e"}, "data: merge the push")
    result = train_step(p.config(), log=quiet, actions=ActionsContext(sha=pushed))
    run = open_adapter(p.config()).get_run(result.outputs["run_id"])
    assert run.tags["traingate.git_commit"] == merged
    assert run.tags["mlflow.source.git.commit"] == merged
    md5 = read_pointer(p.data).md5
    assert run.tags["traingate.data_version"] == md5 == result.outputs["data_version"]


def test_without_git_the_run_records_github_sha(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(project.root.parent))
    cfg = project.config()
    result = train_step(cfg, log=quiet, actions=ActionsContext(sha="0123456789abcdef"))
    run = open_adapter(cfg).get_run(result.outputs["run_id"])
    assert run.tags["traingate.git_commit"] == "0123456789abcdef"
