"""`traingate train` end to end on this machine: a real subprocess and a real MLflow."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fixtures.mlflow_server import FaultProxy
from tests.tracking.helpers import Project, open_adapter
from traingate import gha
from traingate.cli import cli
from traingate.contracts import TrainJob, TrainOutcome
from traingate.errors import StoreError, TrackingError, TrainError
from traingate.gha import ActionsContext
from traingate.interrupt import Interrupted
from traingate.outputs import OUTPUTS, outputs_of
from traingate.pipeline.train import train_step
from traingate.state import read_state


def quiet(_line: str) -> None:
    pass


def runs_of(cfg: Any) -> list[Any]:
    tr = open_adapter(cfg)
    exp = tr._client.get_experiment_by_name(cfg.tracking.experiment)
    return list(tr._client.search_runs([exp.experiment_id])) if exp else []


def test_success_logs_everything_into_the_run_it_created(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(project.root.parent))  # no checkout: the sha
    actions = ActionsContext(
        in_actions=True,
        sha="0123456789abcdef",
        ref_name="data/20260101-120000",
        repository="acme/meters",
        run_id="42",
    )
    cfg = project.config(train={"env": {"DICE": "0.81", "IOU": "0.7", "EPOCHS": "5", "MODE": "mlflow"}})
    result = train_step(cfg, log=quiet, actions=actions)
    run_id = result.outputs["run_id"]
    assert result.outputs["metrics"] == {"dice": 0.81, "iou": 0.7}
    tr = open_adapter(cfg)
    run = tr.get_run(run_id)
    assert run.status == "FINISHED"
    assert run.metrics == {"dice": 0.81, "iou": 0.7, "loss": 0.2}
    assert len(tr._client.get_metric_history(run_id, "loss")) == 5
    assert run.tags["traingate.git_commit"] == "0123456789abcdef"
    assert run.tags["traingate.git_branch"] == "data/20260101-120000"
    assert run.tags["traingate.actions_run_url"] == "https://github.com/acme/meters/actions/runs/42"
    assert run.tags["traingate.version"]
    assert run.tags["script"] == "logged-itself"  # the script's own MLflow calls landed here
    assert tr._client.get_run(run_id).data.params == {"lr": "0.01"}
    assert len(runs_of(cfg)) == 1
    assert tr.list_artifacts(run_id, "model") == ["model/model.bin"]
    assert run.artifact_uri.startswith((cfg.workspace_dir / "mlartifacts").resolve().as_uri())
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert report["run_id"] == run_id and report["metric_batches"] == 1
    assert report["artifacts"] == ["model/model.bin"] and report["commit"] == "0123456789abcdef"
    assert (cfg.workspace_dir / "reports" / "metrics.jsonl").read_text().count("\n") == 5
    assert read_state(cfg.workspace_dir).run_id == run_id
    assert "| dice | 0.81 |" in result.summary


def test_failing_command_fails_the_run_and_forgets_the_candidate(project: Project) -> None:
    cfg = project.config(train={"env": {"MODE": "fail"}})
    train_step(project.config(train={"env": {"DICE": "0.5"}}), log=quiet)  # an earlier success
    with pytest.raises(TrainError) as info:
        train_step(cfg, log=quiet)
    assert "exited with code 3" in info.value.message
    assert "CUDA out of memory" in info.value.message
    assert "CUDA out of memory" in (info.value.summary or "")
    assert read_state(cfg.workspace_dir).run_id is None  # `gate` cannot pick the earlier run
    statuses = sorted(r.info.status for r in runs_of(cfg))
    assert statuses == ["FAILED", "FINISHED"]


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("nometrics", "did not write its metrics file"),
        ("badmetrics", "metric 'dice' is 'high', not a number"),
    ],
)
def test_metrics_problems_fail_naming_the_path(project: Project, mode: str, message: str) -> None:
    cfg = project.config(train={"env": {"MODE": mode}})
    # A metrics file from an earlier run must not pass for this one.
    (project.root / "outputs").mkdir(exist_ok=True)
    (project.root / "outputs" / "metrics.json").write_text('{"dice": 0.99, "iou": 0.99}')
    with pytest.raises(TrainError) as info:
        train_step(cfg, log=quiet)
    assert message in info.value.message
    assert "outputs/metrics.json" in info.value.message
    assert [r.info.status for r in runs_of(cfg)] == ["FAILED"]


def test_missing_and_stale_artifacts_fail(project: Project) -> None:
    cfg = project.config(train={"env": {"MODE": "nomodel"}})
    with pytest.raises(TrainError, match=r"did not produce the artifact .*outputs/model\.bin"):
        train_step(cfg, log=quiet)
    old = project.root / "outputs" / "model.bin"
    old.write_bytes(b"yesterday")
    past = time.time() - 3600
    os.utime(old, (past, past))
    with pytest.raises(TrainError, match="was not written by this training run"):
        train_step(cfg, log=quiet)


def test_glob_artifacts(project: Project) -> None:
    cfg = project.config(train={"artifacts": ["outputs/*.bin"]})
    result = train_step(cfg, log=quiet)
    assert result.outputs["run_id"]
    assert tuple(result.outputs) == OUTPUTS["train"] and result.value is not None
    assert result.value.outputs() == result.outputs and result.value.skipped is False
    cfg = project.config(train={"artifacts": ["outputs/*.pt"]})
    with pytest.raises(TrainError, match=r"no file matches the artifact pattern 'outputs/\*.pt'"):
        train_step(cfg, log=quiet)


def test_timeout(project: Project) -> None:
    cfg = project.config(train={"env": {"MODE": "sleep"}, "timeout_minutes": 0.03})
    with pytest.raises(TrainError, match=r"timed out after 0\.03 minutes"):
        train_step(cfg, log=quiet)


def test_a_dataset_that_cannot_be_pulled_stops_before_training(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traingate.data import store

    def broken_pull(cfg: Any, force: bool = False) -> str:
        raise StoreError("cannot pull data/training from s3://bucket/data: 3 objects missing (ab12…)")

    monkeypatch.setattr(store, "pull_dataset", broken_pull)
    cfg = project.config(train={"pull_data": True})
    with pytest.raises(StoreError, match="3 objects missing"):
        train_step(cfg, log=quiet)
    assert not (project.root / "outputs").exists()  # the command never ran
    assert runs_of(cfg) == []
    # --no-pull skips it (and says the data version is unknown only if it cannot be read).
    monkeypatch.setattr(store, "dataset_version", lambda cfg: "f00d")
    assert train_step(cfg, pull=False, log=quiet).outputs["data_version"] == "f00d"


def test_warnings_gathered_before_a_failure_travel_with_the_error(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage annotates nothing itself: the warnings so far ride on the error (#13)."""
    from traingate.data import store

    def unreadable(cfg: Any) -> str:
        raise StoreError("no DVC pointer data/training.dvc")

    monkeypatch.setattr(store, "dataset_version", unreadable)
    monkeypatch.setattr(gha, "warning", lambda *_a, **_k: pytest.fail("a stage wrote an annotation"))
    cfg = project.config(train={"env": {"MODE": "fail"}})
    with pytest.raises(TrainError) as info:
        train_step(cfg, pull=False, log=quiet)
    assert "exited with code 3" in info.value.message
    assert any("could not read the dataset version" in w for w in info.value.warnings)
    assert [r.info.status for r in runs_of(cfg)] == ["FAILED"]


def test_the_pulled_data_version_is_tagged(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    from traingate.data import store

    monkeypatch.setattr(store, "pull_dataset", lambda cfg, force=False: "d1r.md5")
    cfg = project.config(train={"pull_data": True})
    result = train_step(cfg, log=quiet)
    assert result.outputs["data_version"] == "d1r.md5"
    assert open_adapter(cfg).get_run(result.outputs["run_id"]).tags["traingate.data_version"] == "d1r.md5"


class FakeRemote:
    """Stands in for the SSM executor (no instance here): brings outputs back into a folder."""

    def __init__(self, outputs: Path) -> None:
        self.outputs = outputs
        self.jobs: list[TrainJob] = []

    def run(self, job: TrainJob, log: Any) -> TrainOutcome:
        self.jobs.append(job)
        (self.outputs / "outputs").mkdir(parents=True, exist_ok=True)
        (self.outputs / "outputs" / "metrics.json").write_text('{"dice": 0.7, "iou": 0.6}')
        (self.outputs / "outputs" / "model.bin").write_bytes(b"w")
        return TrainOutcome(exit_code=0, log_tail="ok", outputs_dir=self.outputs, duration_seconds=1.0)

    def attach(self, run_ref: str, job: TrainJob, log: Any) -> TrainOutcome:
        return self.run(job, log)


def test_instance_branch_uses_the_executor_and_does_not_pull(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traingate.data import store

    monkeypatch.setattr(store, "pull_dataset", lambda cfg, **kw: pytest.fail("the runner must not pull"))
    monkeypatch.setattr(store, "dataset_version", lambda cfg: "v1")
    remote = FakeRemote(tmp_path / "fetched")
    cfg = project.config(train={"where": "instance", "pull_data": True})
    with pytest.raises(TrainError, match=r"pointer .*training\.dvc does not exist"):
        train_step(cfg, executor=remote, log=quiet)
    assert remote.jobs == []  # nothing shipped
    # Refused before a run was created: no run left RUNNING in MLflow, none pending to attach to.
    assert [r.info.status for r in runs_of(cfg)] == []
    assert read_state(cfg.workspace_dir).pending_run_id is None
    (project.root / ".dvc").mkdir()
    (project.root / "data").mkdir(exist_ok=True)
    (project.root / "data" / "training.dvc").write_text("outs:\n- md5: abc.dir\n  path: training\n")
    result = train_step(cfg, executor=remote, log=quiet)
    job = remote.jobs[0]
    # The instance pulls the dataset itself; the runner only names the pointer.
    assert job.datasets == ["data/training.dvc"]
    assert job.env["MLFLOW_RUN_ID"] == result.outputs["run_id"]
    assert job.env["MLFLOW_TRACKING_URI"] == cfg.tracking_uri
    assert job.env["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert result.outputs["metrics"] == {"dice": 0.7, "iou": 0.6}


def test_train_with_gate_merges_outputs(project: Project) -> None:
    cfg = project.config(train={"env": {"DICE": "0.8", "IOU": "0.7"}})
    first = train_step(cfg, with_gate=True, log=quiet)
    assert first.outputs["improved"] is True and first.outputs["baseline"] == "none"
    assert first.outputs["model_version"] == "1"
    assert first.outputs["metrics"] == {"dice": 0.8, "iou": 0.7}
    assert tuple(first.outputs) == outputs_of("train", gate=True)
    assert first.value is not None and first.value.run_id == first.outputs["run_id"]
    assert first.value.gate_outputs is not None and first.value.gate_outputs["improved"] is True
    assert "Quality gate: ✅ improved" in first.summary
    again = train_step(cfg, with_gate=True, log=quiet)
    assert again.outputs["improved"] is False and again.outputs["baseline"] == "1"


def test_cli_train_then_gate_writes_outputs(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg_file = project.root / "traingate.yml"
    cfg_file.write_text(
        "project: tg-test\n"
        f"train: {{command: '{os.sys.executable} train.py', pull_data: false, artifacts: [outputs/model.bin],"
        " env: {DICE: '0.8', IOU: '0.7'}}\n"
        "tracking: {retry_budget_seconds: 3}\n"
        "gate: {model: tg-cli}\n"
    )
    out = project.root / "gh-output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(cli, ["train"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    run_id = gha.read_outputs(out)["run_id"]
    result = CliRunner().invoke(cli, ["--json", "gate"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outputs = gha.read_outputs(out)
    assert outputs["improved"] == "true" and outputs["run_id"] == run_id and outputs["model_version"] == "1"
    result = CliRunner().invoke(cli, ["gate", "--run-id", "doesnotexist"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "unknown candidate run 'doesnotexist'" in result.output


def test_gate_with_a_dead_server_exits_1_without_improved(
    project: Project, monkeypatch: pytest.MonkeyPatch, dead_url: str
) -> None:
    cfg_file = project.root / "traingate.yml"
    cfg_file.write_text(
        f"project: tg-test\ntracking: {{uri: '{dead_url}', retry_budget_seconds: 1, max_retries: 0}}\n"
    )
    out = project.root / "gh-output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    monkeypatch.chdir(project.root)
    result = CliRunner().invoke(cli, ["gate", "--run-id", "abc"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "could not read the candidate run abc" in result.output
    assert dead_url in result.output
    assert "improved" not in (gha.read_outputs(out) if out.exists() else {})


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["required", "best-effort"])
def test_artifact_upload_denied(project: Project, fault_proxy: FaultProxy, policy: str) -> None:
    cfg = project.config(
        project="tg-http",
        tracking={"uri": fault_proxy.url, "experiment": f"art-{policy}"},
        train={"artifacts_policy": policy},
    )
    fault_proxy.always(403, path_contains="/mlflow-artifacts/", method="PUT", body=b"AccessDenied")
    if policy == "required":
        with pytest.raises(TrainError) as info:
            train_step(cfg, log=quiet)
        assert "uploading the artifact" in info.value.message
        assert "artifacts_policy: best-effort" in (info.value.hint or "")
        return
    result = train_step(cfg, log=quiet)
    assert any("artifact upload failed" in w for w in result.warnings)
    assert "artifact upload failed" in result.summary
    run = open_adapter(cfg).get_run(result.outputs["run_id"])
    assert run.status == "FINISHED"
    # The gate must know the model never reached the store (it then registers nothing).
    assert run.tags.get("traingate.artifacts") == "missing"
    assert fault_proxy.count("/runs/log-batch") == 2  # the metrics in one request, then that tag


@pytest.mark.slow
def test_train_waits_for_health_and_names_the_url(project: Project, dead_url: str) -> None:
    cfg = project.config(tracking={"uri": dead_url, "health_timeout_seconds": 0.5})
    with pytest.raises(TrackingError) as info:
        train_step(cfg, log=quiet)
    assert f"{dead_url}/health did not answer" in info.value.message
    assert not (project.root / "outputs").exists()


class InterruptedRemote(FakeRemote):
    """The runner's cancel arrives while the instance trains (detached: it goes on there)."""

    def run(self, job: TrainJob, log: Any) -> TrainOutcome:
        self.jobs.append(job)
        raise Interrupted(signal.SIGINT)


def test_a_cancel_leaves_an_instance_run_running_for_re_attach(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from traingate.data import store

    monkeypatch.setattr(store, "dataset_version", lambda cfg: "v1")
    cfg = project.config(train={"where": "instance", "pull_data": False})
    with pytest.raises(Interrupted) as info:
        train_step(cfg, executor=InterruptedRemote(tmp_path / "fetched"), log=quiet)
    (run,) = runs_of(cfg)
    assert run.info.status == "RUNNING"
    assert read_state(cfg.workspace_dir).pending_run_id == run.info.run_id
    assert "goes on" in info.value.line() and "--attach" in info.value.line()
