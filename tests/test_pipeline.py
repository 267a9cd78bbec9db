"""`traingate run` and `traingate demo`, end to end with the real stages: DVC with a folder
remote, git, the local infra backend, MLflow on SQLite, the real gate and the PR renderer.

The MLflow schema takes many seconds to create, so the run tests copy one database made per
session (`mlflow_template`); the demo creates its own, as a user's first run does.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from traingate.demo import _fresh_workdir, _generate, _setup_project, isolated_env
from traingate.errors import CredentialsError, TraingateError, UsageError
from traingate.gha import ActionsContext
from traingate.pipeline import run_step

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One schema for all xdist workers (the temp root's parent is shared), made under a lock."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent
    db = shared / "traingate-mlflow-template.db"
    with FileLock(str(db) + ".lock"):
        if not db.exists():
            from mlflow.tracking import MlflowClient

            partial = shared / "traingate-mlflow-template.partial.db"
            partial.unlink(missing_ok=True)
            MlflowClient(f"sqlite:///{partial}").search_experiments()
            partial.replace(db)
    return db


@pytest.fixture
def bare_project(tmp_path: Path):
    """The example as a fresh git repository (for tests that stop before MLflow)."""
    workdir = tmp_path / "project"
    workdir.mkdir()
    return _setup_project(workdir)


@pytest.fixture
def project(bare_project, mlflow_template: Path):
    """The example as a fresh git repository, with the MLflow schema already in place."""
    bare_project.workspace_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(mlflow_template, bare_project.workspace_dir / "mlflow.db")
    return bare_project


def _py(code: str) -> str:
    return shlex.join([sys.executable, "-c", code])


def _lease_holders(cfg) -> list[str]:
    from traingate.infra.stage import status_step

    return json.loads(json.dumps(status_step(cfg).outputs["holders"])) or []


def test_training_failure_still_stops_infra_and_opens_no_pr(project) -> None:
    cfg = project
    cfg.train.command = _py("import sys; print('loading data'); print('CUDA out of memory'); sys.exit(3)")
    with pytest.raises(TraingateError) as info:
        run_step(cfg, env={})
    err = info.value
    assert err.exit_code == 1
    # The stage's own message; where the run stopped and the stages so far are its context.
    assert "3" in err.message and "CUDA out of memory" in err.message
    assert "stage 'train' failed" in str(err)
    lines = str(err).splitlines()
    stop = next(line for line in lines if line.startswith("infra stop"))
    assert " ok " in stop
    assert next(line for line in lines if line.startswith("train")).split()[1] == "failed"
    assert "Pipeline so far" in (err.summary or "")
    assert not _lease_holders(cfg)
    assert not cfg.path(cfg.pr.render_to).exists()
    assert not any(v is True for v in err.outputs.values())


def test_gate_without_a_gated_metric_fails_closed(project) -> None:
    cfg = project
    cfg.train.artifacts = []
    cfg.gate.eval_set = ""  # the one-line command below measures on no holdout set
    cfg.train.command = _py(
        "import json, pathlib; p = pathlib.Path('outputs'); p.mkdir(exist_ok=True);"
        "(p / 'metrics.json').write_text(json.dumps({'dice': 0.99}))"
    )
    with pytest.raises(TraingateError) as info:
        run_step(cfg, env={})
    err = info.value
    assert err.exit_code == 1
    assert "iou" in err.message
    assert "infra stop" in str(err)
    assert not _lease_holders(cfg)
    assert not cfg.path(cfg.pr.render_to).exists()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.tracking_uri)
    with pytest.raises(Exception, match=r"alias|not found|RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version_by_alias(cfg.gate.model, cfg.gate.alias)


def test_half_a_github_setup_is_refused_before_anything_runs(bare_project) -> None:
    project = bare_project
    with pytest.raises(CredentialsError) as info:
        run_step(project, env={}, actions=ActionsContext(repository="octo/meters"))
    assert info.value.exit_code == 2
    assert "GITHUB_TOKEN" in info.value.message
    with pytest.raises(UsageError) as info2:
        run_step(project, env={"GITHUB_TOKEN": "ghs_secret"})
    assert "GITHUB_REPOSITORY" in info2.value.hint
    assert "ghs_secret" not in str(info2.value)
    assert not (project.workspace_dir / "state.json").exists()


def test_run_merges_trains_gates_and_renders_the_pr(project) -> None:
    cfg = project
    workdir = cfg.base_dir
    _generate(workdir, cfg.path(cfg.data.incoming), 12, seed=1, prefix="meter", degrade=False)
    cfg.train.command = shlex.join([sys.executable, "train.py", "--epochs", "1"])
    result = run_step(cfg, env={})
    assert result.outputs["improved"] is True
    assert result.outputs["run_id"]
    assert result.outputs["pr_url"] == ""
    body = cfg.path(cfg.pr.render_to).read_text()
    assert "dice" in body
    stages = [s["stage"] for s in result.data["stages"]]
    assert stages == ["validate", "merge", "infra start", "train", "gate", "infra stop", "pr create"]
    assert "result: improved" in result.message
    # The merge committed the DVC pointer and removed the raw files from the branch.
    log = subprocess.run(["git", "log", "--name-status", "-1"], cwd=workdir, capture_output=True, text=True)
    assert "data/training.dvc" in log.stdout
    assert not cfg.path(cfg.data.incoming).exists()
    assert not _lease_holders(cfg)


def test_run_with_only_a_gitkeep_in_incoming_trains_on_the_stored_dataset(project) -> None:
    cfg = project
    workdir = cfg.base_dir
    _generate(workdir, cfg.path(cfg.data.incoming), 12, seed=1, prefix="meter", degrade=False)
    cfg.train.command = shlex.join([sys.executable, "train.py", "--epochs", "1"])
    run_step(cfg, env={})
    incoming = cfg.path(cfg.data.incoming)
    incoming.mkdir(parents=True, exist_ok=True)
    (incoming / ".gitkeep").write_text("")
    result = run_step(cfg, env={})
    stages = {s["stage"]: s["status"] for s in result.data["stages"]}
    assert stages["validate"] == "skipped" and stages["merge"] == "skipped"
    assert stages["train"] == "ok"


def test_demo_workdir_must_be_new(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        _fresh_workdir(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_demo_repository_has_an_identity_for_the_merge_commit(bare_project, monkeypatch) -> None:
    """Outside Actions the merge commits as the user (issue #11); the demo's throwaway repository
    must work for someone whose git has no identity configured."""
    from traingate.git import Git

    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    assert Git(bare_project.base_dir).identity() == "traingate demo <demo@traingate.invalid>"


def test_isolated_env_hides_and_restores_github_variables(monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghs_x")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere")
    with isolated_env():
        assert "GITHUB_TOKEN" not in os.environ
        assert "MLFLOW_TRACKING_URI" not in os.environ
        os.environ["GITHUB_REF_NAME"] = "leak"
    assert os.environ["GITHUB_TOKEN"] == "ghs_x"
    assert "GITHUB_REF_NAME" not in os.environ


def _cli(args: list[str], cwd: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "TRAINGATE_"))}
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "traingate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )


@pytest.mark.e2e
def test_demo_end_to_end(tmp_path: Path) -> None:
    """`traingate demo` as a user runs it, inside a job that has GitHub credentials: it must
    not call GitHub (the API URL is dead, any call would fail the demo)."""
    out = tmp_path / "github_output"
    workdir = tmp_path / "demo"
    proc = _cli(
        ["--json", "demo", "--workdir", str(workdir)],
        tmp_path,
        {
            "GITHUB_TOKEN": "ghs_demo_token",
            "GITHUB_REPOSITORY": "octo/meters",
            "GITHUB_API_URL": "http://127.0.0.1:9",
            "GITHUB_OUTPUT": str(out),
        },
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    payload = json.loads(proc.stdout)
    assert payload["outputs"] == {"improved": False, "run_id": payload["rounds"][1]["run_id"], "pr_url": ""}
    assert [r["improved"] for r in payload["rounds"]] == [True, False]
    outputs = out.read_text()
    assert "improved<<" in outputs and "\nfalse\n" in outputs

    # The table says what each stage did; round 2 ends with no PR.
    for row in ("setup merge", "round 1 gate", "round 1 pr create", "round 2 gate", "round 2 pr create"):
        assert row in proc.stderr
    assert "round 2 pr create    skipped" in proc.stderr
    assert "ghs_demo_token" not in proc.stderr + proc.stdout

    # The champion is round 1's model; round 2's run exists but was not promoted.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir / '.traingate' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("water-meter-segmentation", "champion")
    assert champion.run_id == payload["rounds"][0]["run_id"]
    assert client.get_run(payload["rounds"][1]["run_id"]).info.status == "FINISHED"
    rows = payload["rounds"][1]["gate"]["metrics"]
    rows = json.loads(rows) if isinstance(rows, str) else rows
    dice = {row["name"]: row for row in rows}
    assert dice["dice"]["candidate"] < dice["dice"]["baseline"]

    assert (workdir / ".traingate" / "pr.md").is_file()
    assert (workdir / "data" / "training.dvc").is_file()
    assert any((workdir / ".traingate" / "remote").rglob("*.dir"))
    log = subprocess.run(["git", "log", "--format=%s"], cwd=workdir, capture_output=True, text=True).stdout
    assert log.count("data:") >= 3

    # The data reached main only through the "PR": round 1 (improved) was merged, round 2 (not
    # improved) stays on its own branch, so a round 3 would train on round 1's dataset.
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=workdir, capture_output=True, text=True, check=True).stdout

    def pointer(ref: str) -> dict:
        import yaml

        return yaml.safe_load(git("show", f"{ref}:data/training.dvc"))["outs"][0]

    assert git("rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    assert pointer("main") == pointer("data/demo-round-1")
    assert pointer("main")["nfiles"] == 2 * (36 + 12)
    assert pointer("data/demo-round-2")["nfiles"] == 2 * (36 + 12 + 48)
    assert subprocess.run(
        ["git", "merge-base", "--is-ancestor", "data/demo-round-2", "main"], cwd=workdir
    ).returncode
    images = list((workdir / "data" / "training" / "images").iterdir())
    assert len(images) == 36 + 12  # the checkout holds main's dataset, not round 2's
    # The demo's duration is measured by bench/bench_pipeline.py, not asserted here.


@pytest.mark.parametrize(
    ("yml", "named"),
    [
        ("train:\n  comand: python train.py\n", "train.comand: unknown key"),
        ("gate:\n  require: most\n", "gate.require"),
        ("infra:\n  backend: k8s\n", "infra.backend"),
    ],
)
def test_run_with_a_bad_config_exits_2_naming_the_key(tmp_path: Path, yml: str, named: str) -> None:
    (tmp_path / "traingate.yml").write_text(yml)
    proc = _cli(["run"], tmp_path, {})
    assert proc.returncode == 2, proc.stderr
    assert named in proc.stderr
    assert not (tmp_path / ".traingate").exists()


def test_invalid_new_data_stops_before_the_instance_is_started(bare_project) -> None:
    cfg = bare_project
    incoming = cfg.path(cfg.data.incoming)
    _generate(cfg.base_dir, incoming, 4, seed=1, prefix="meter", degrade=False)
    (incoming / "masks" / "meter-0001.png").unlink()
    with pytest.raises(TraingateError) as info:
        run_step(cfg, env={})
    err = info.value
    assert err.exit_code == 1
    assert "stage 'validate' failed" in str(err)
    assert "meter-0001" in err.message
    assert "infra start" not in str(err)
    assert not (cfg.data_root.parent / "training.dvc").exists()
    assert (incoming / "images" / "meter-0001.jpg").exists()


def test_run_with_a_token_opens_the_pr_and_posts_the_gate_status(project) -> None:
    """With GITHUB_TOKEN and GITHUB_REPOSITORY the PR goes to GitHub (the `responses` fake of
    tests/github, which answers like GitHub); a run that does not improve opens none."""
    import responses

    from tests.github.conftest import FakeGitHub
    from traingate.github.forge import PyGithubForge

    cfg = project
    _generate(cfg.base_dir, cfg.path(cfg.data.incoming), 12, seed=1, prefix="meter", degrade=False)
    cfg.train.command = shlex.join([sys.executable, "train.py", "--epochs", "1"])
    env = {"GITHUB_TOKEN": "ghs_pipeline", "TRAINGATE_HEAD": "data/20240501-101500"}
    actions = ActionsContext(repository="o/r")

    def forge(token: str, repo: str) -> PyGithubForge:
        return PyGithubForge(
            token,
            repo,
            sleep=lambda _s: None,
            rand=lambda: 1.0,
            seconds_between_requests=None,
            seconds_between_writes=None,
        )

    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeGitHub(rsps)
        result = run_step(cfg, env=env, actions=actions, forge_factory=forge)
        assert result.outputs["improved"] is True
        (pr,) = fake.pulls.values()
        assert pr["head"] == "data/20240501-101500" and pr["base"] == "main"
        assert result.outputs["pr_url"].endswith(f"/pull/{pr['number']}")
        assert [s["state"] for s in fake.statuses] == ["success"]

        # Nothing new: retrain on the stored data; the same model is not better than itself.
        again = run_step(cfg, env=env, actions=actions, forge_factory=forge)
        assert again.outputs["improved"] is False
        assert again.outputs["pr_url"] == ""
        assert [s["status"] for s in again.data["stages"]][:2] == ["skipped", "skipped"]
        assert again.data["stages"][-1]["detail"] == "not improved: no pull request"
        assert len(fake.pulls) == 1
        assert len(fake.statuses) == 1
    assert "ghs_pipeline" not in result.message + result.summary


def _git_in(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_run_on_a_data_branch_that_changes_train_py_trains_nothing(bare_project) -> None:
    """Issue #11 case 3: a data branch that also edits train.py must not be merged or trained."""
    cfg = bare_project
    workdir = cfg.base_dir
    _git_in(workdir, "checkout", "-q", "-b", "data/20240501-101500")
    _generate(workdir, cfg.path(cfg.data.incoming), 4, seed=1, prefix="meter", degrade=False)
    train = workdir / "train.py"
    train.write_text(train.read_text() + "\n# and a little something else\n")
    _git_in(workdir, "commit", "-q", "-am", "data: new pairs (and train.py)")
    head = _git_in(workdir, "rev-parse", "HEAD")
    with pytest.raises(TraingateError) as info:
        run_step(cfg, env={})
    err = info.value
    assert err.exit_code == 1 and getattr(err, "code", "") == "untrusted_change"
    assert "stage 'trust' failed" in str(err) and "train.py (modified)" in err.message
    assert "validate" not in str(err).split("stage 'trust' failed")[1].split("\n", 1)[1]
    assert "infra start" not in str(err)
    assert _git_in(workdir, "rev-parse", "HEAD") == head  # nothing merged or committed
    assert not (cfg.data_root.parent / "training.dvc").exists()
    assert not (cfg.workspace_dir / "mlflow.db").exists()
    assert not cfg.path(cfg.pr.render_to).exists()


def test_run_on_a_data_only_branch_merges_and_trains(project) -> None:
    """The data branch of a `traingate run` (or the demo's rounds) passes the check."""
    cfg = project
    workdir = cfg.base_dir
    _git_in(workdir, "checkout", "-q", "-b", "data/20240501-101500")
    _generate(workdir, cfg.path(cfg.data.incoming), 12, seed=1, prefix="meter", degrade=False)
    cfg.train.command = shlex.join([sys.executable, "train.py", "--epochs", "1"])
    result = run_step(cfg, env={})
    assert result.outputs["improved"] is True
    assert [s["status"] for s in result.data["stages"]][:2] == ["ok", "ok"]


def test_run_without_new_data_on_a_branch_that_changes_code_trains_nothing(bare_project) -> None:
    """No merge to refuse it: the pipeline's own check stops a code-only branch before training."""
    cfg = bare_project
    workdir = cfg.base_dir
    _git_in(workdir, "checkout", "-q", "-b", "data/retrain")
    (workdir / "traingate.yml").write_text((workdir / "traingate.yml").read_text() + "\n# tweak\n")
    _git_in(workdir, "commit", "-q", "-am", "loosen the gate")
    with pytest.raises(TraingateError) as info:
        run_step(cfg, env={})
    assert "traingate.yml (modified)" in info.value.message
    assert "infra start" not in str(info.value) and not _lease_holders(cfg)


def test_an_interrupted_run_whose_infra_stop_fails_still_raises_the_interrupt(project, monkeypatch) -> None:
    """Ctrl-C during training and then a failing `infra stop`: the interrupt goes up, naming the
    failed stop (it used to become AttributeError: there is no stage failure to append to)."""
    import traingate.infra.stage as infra_stage
    import traingate.pipeline.train as runner
    from traingate.errors import InfraError
    from traingate.interrupt import Interrupted

    def interrupted(*_args, **_kwargs):
        raise Interrupted(signal.SIGINT)

    def stop_fails(*_args, **_kwargs):
        raise InfraError("the lease table is unreachable", hint="retry")

    monkeypatch.setattr(runner, "train_step", interrupted)
    monkeypatch.setattr(infra_stage, "stop_step", stop_fails)
    with pytest.raises(Interrupted) as info:
        run_step(project, env={})
    assert any("infra stop failed (the lease table is unreachable)" in s for s in info.value.stopped)


def test_run_of_data_the_champion_was_trained_on_skips_training(project) -> None:
    # Issue #15: the same images merged again make the same dataset version: nothing to learn.
    cfg = project
    workdir = cfg.base_dir
    cfg.train.command = shlex.join([sys.executable, "train.py", "--epochs", "1"])
    _generate(workdir, cfg.path(cfg.data.incoming), 12, seed=1, prefix="meter", degrade=False)
    first = run_step(cfg, env={})
    assert first.outputs["improved"] is True
    _generate(workdir, cfg.path(cfg.data.incoming), 12, seed=1, prefix="meter", degrade=False)
    again = run_step(cfg, env={})
    assert again.outputs["improved"] is False and again.outputs["run_id"] == ""
    stages = {s["stage"]: s["status"] for s in again.data["stages"]}
    assert stages["merge"] == "ok" and stages["train"] == "skipped" and stages["infra start"] == "skipped"
    assert "nothing new to learn, training skipped" in again.summary
    assert not _lease_holders(cfg)


def test_a_failure_carries_the_stages_so_far_and_the_warnings_gathered_before_it() -> None:
    """#13: `explained` adds where the run stopped as context and carries earlier warnings on the
    error (nothing is annotated in the pipeline; cli.run_step writes both). Nested, as the demo
    wraps `run_pipeline`, it adds them once."""
    from traingate.errors import InfraError
    from traingate.pipeline import Progress, explained, run_stage
    from traingate.result import StepResult

    def fails() -> StepResult:
        raise InfraError("the instance did not start", hint="retry")

    progress = Progress(label="round 1")
    with pytest.raises(InfraError) as info, explained(progress), explained(progress):
        run_stage(progress, "merge", lambda: StepResult(message="merged", warnings=["no comment posted"]))
        run_stage(progress, "infra start", fails)
    err = info.value
    assert err.message == "the instance did not start" and err.exit_code == 1
    assert err.warnings == ["no comment posted"]
    (context,) = err.context
    assert "stage 'round 1 infra start' failed" in context
    assert [line.split()[-1] for line in context.splitlines()[2:]] == ["merged", "start"]
    assert (err.summary or "").count("Pipeline so far") == 1
    assert "**Next step:** retry" in (err.summary or "")


def test_the_verdict_is_read_from_the_gates_typed_value() -> None:

    from traingate.contracts import GateReport
    from traingate.pipeline import _improved
    from traingate.result import StepResult
    from traingate.tracking.gate import GateResult

    def verdict(improved: bool) -> GateResult:
        return GateResult(GateReport(improved=improved), Path("gate-report.json"))

    assert _improved(StepResult(outputs={"improved": "true"}, value=verdict(False))) is False
    assert _improved(StepResult(outputs={"improved": False}, value=verdict(True))) is True
    with pytest.raises(TraingateError, match="no verdict"):  # no string stands in for the verdict
        _improved(StepResult(outputs={"improved": "true"}))
