"""Each composite action installs what its command path imports.

The actions install traingate with only their stage's extras (`TRAINGATE_EXTRAS` in the
install step). The rest of the suite runs in the dev venv, which has every extra, so a stage
that imports a library its action does not install passes every other test and fails only on
a runner. Issue #15: `data merge` on invalid data posts the commit comment through PyGithub, but
merge-and-validate installed `data,aws`; the runner showed `No module named 'github'` instead
of the error list, no comment, and an empty `validation_passed`.

Here each action's own extras go into a fresh venv (built once per session with uv from the
local cache: `make test` installs `.[dev]` first, so the cache is warm and this takes seconds),
and the action's real `traingate` step runs in it on a success path and on a failure path that
goes through the error reporting, against the services the other tests use (moto's server for
S3 and EC2, a local HTTP server standing in for the GitHub API).
"""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.mlflow_server import *  # noqa: F403 - the session's MLflow server and its template
from tests.fixtures.mlflow_server import MlflowServer
from tests.workflows.conftest import ROOT, STAGES, action
from tests.workflows.test_actions_local import run_action

# The environment before the root conftest points HOME at a temporary folder: uv's cache is the
# developer's (warm) one, not an empty one per test.
_REAL_ENV = dict(os.environ)
UV = Path(sys.executable).parent / "uv"
TRACEBACK = ("Traceback (most recent call last)", "ModuleNotFoundError", "ImportError")

pytestmark = pytest.mark.slow


def action_extras(stage: str) -> str:
    """The extras the action's install step puts into its venv."""
    (install,) = [s for s in action(stage)["runs"]["steps"] if s.get("name") == "Install traingate"]
    return str(install["env"]["TRAINGATE_EXTRAS"])


def _venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # Under xdist every worker has its own basetemp inside the session's: share the venvs.
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "stage-venvs"


@pytest.fixture(scope="session")
def stage_venv(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """extras -> a venv holding traingate (editable) with exactly those extras; built once."""
    root = _venv_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:12]

    def build(extras: str) -> Path:
        target = root / f"{extras.replace(',', '+') or 'core'}-{key}"
        with (root / f"{target.name}.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (target / "ready").exists():
                return target
            shutil.rmtree(target, ignore_errors=True)
            env = {k: v for k, v in _REAL_ENV.items() if k not in ("VIRTUAL_ENV", "UV_OFFLINE")}
            subprocess.run(
                [UV, "venv", "--quiet", "--python", sys.executable, target], env=env, check=True, timeout=120
            )
            install = [UV, "pip", "install", "--quiet", "--python", target / "bin" / "python"]
            install += ["-e", f"{ROOT}[{extras}]"]
            done = subprocess.run([*install, "--offline"], env=env, capture_output=True, timeout=600)
            if done.returncode != 0:  # a cache without some package: fetch it from the index
                subprocess.run(install, env=env, check=True, timeout=600)
            (target / "ready").touch()
            return target

    return build


def runner_temp_for(tmp_path: Path, venv: Path, name: str) -> Path:
    """A RUNNER_TEMP whose traingate-venv is the stage's venv, as the install step leaves it."""
    temp = tmp_path / f"runner-temp-{name}"
    temp.mkdir(exist_ok=True)
    link = temp / "traingate-venv"
    if not link.exists():
        link.symlink_to(venv)
    return temp


class _GitHubSaysNo(http.server.BaseHTTPRequestHandler):
    """Answers every API call like GitHub does for a revoked token: 401 Bad credentials."""

    def _deny(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({"message": "Bad credentials", "status": "401"}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        type(self).calls.append(f"{self.command} {self.path}")

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _deny
    calls: list[str] = []

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def github_api() -> Iterator[str]:
    _GitHubSaysNo.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GitHubSaysNo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _project(tmp_path: Path, moto: str, instance_id: str, tracking_uri: str) -> Path:
    """The water-meter example on S3 and EC2 (moto) and an MLflow server, as a git repository
    with new data: the backends a workflow job uses, not the example's local ones."""
    import uuid

    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket="stage-installs")
    example = tmp_path / "water-meters"
    shutil.copytree(ROOT / "examples" / "water-meters", example)
    cfg = yaml.safe_load((example / "traingate.yml").read_text())
    cfg["store"] = {**cfg["store"], "remote": "s3://stage-installs/datasets", "endpoint_url": moto}
    cfg["infra"] = {
        "backend": "ec2",
        "instance": {"id": instance_id},
        "ready": ["running"],  # moto has no SSM DescribeInstanceInformation
        "poll_cap_seconds": 0.05,
    }
    unique = uuid.uuid4().hex[:8]  # the MLflow server is shared by the session's tests
    cfg["tracking"] = {**cfg["tracking"], "uri": tracking_uri, "experiment": f"stage-installs-{unique}"}
    cfg["gate"] = {**cfg["gate"], "model": f"stage-installs-{unique}"}
    (example / "traingate.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=example, check=True)
    subprocess.run([*git, "add", "."], cwd=example, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "example"], cwd=example, check=True)
    subprocess.run(
        [sys.executable, "generate.py", "data/new", "--pairs", "6", "--seed", "3"], cwd=example, check=True
    )
    return example


def _job_python(tmp_path: Path) -> None:
    """train.command is `python train.py`: the job's own python (with numpy) comes first on PATH,
    as in self-test.yml, without putting the dev venv's other programs there."""
    bin_dir = tmp_path / "job-bin"
    bin_dir.mkdir()
    shim = bin_dir / "python"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def assert_clean(log: str, stage: str) -> None:
    for marker in TRACEBACK:
        assert marker not in log, f"{stage} (extras {action_extras(stage)!r}): {marker} in\n{log}"


def test_every_stage_action_names_its_extras() -> None:
    assert {stage: action_extras(stage) for stage in STAGES} == {
        "merge-and-validate": "data,aws,github",
        "start-infra": "aws",
        "train": "data,aws,tracking",
        "stop-infra": "aws",
        "create-pr": "github",
        "auto-merge": "github",
    }


def test_each_stage_runs_with_only_its_actions_extras(
    stage_venv: Callable[[str], Path],
    tmp_path: Path,
    aws_env: str,
    github_api: str,
    mlflow_server: MlflowServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.infra.conftest import make_instance

    monkeypatch.setenv("PATH", os.environ["PATH"])  # restored after _job_python's change
    _job_python(tmp_path)
    instance_id = make_instance("stage-installs")
    example = _project(tmp_path, aws_env, instance_id, mlflow_server.url)
    temps = {stage: runner_temp_for(tmp_path, stage_venv(action_extras(stage)), stage) for stage in STAGES}
    wd = {"working-directory": "water-meters"}
    actions_env = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/meters",
        "GITHUB_SHA": "0" * 40,
        "GITHUB_API_URL": github_api,
        "GITHUB_RUN_ID": "15",
        "GITHUB_RUN_ATTEMPT": "1",
    }

    def run(stage: str, inputs: dict[str, str]) -> tuple[int, dict[str, str], str]:
        code, outputs, log = run_action(stage, {**wd, **inputs}, temps[stage], tmp_path, actions_env)
        assert_clean(log, stage)
        return code, outputs, log

    # --- failure paths through the error reporting -----------------------------------------
    bad = example / "data" / "bad"
    shutil.copytree(example / "data" / "new", bad)
    next(iter(sorted((bad / "masks").iterdir()))).unlink()  # an image without its mask
    code, outputs, log = run(
        "merge-and-validate", {"source": "data/bad", "no-push": "true", "github-token": "revoked"}
    )
    assert code == 1, log
    assert outputs.get("validation_passed") == "false", log
    assert "could not post the validation comment" in log and "Bad credentials" in log, log
    assert any("/repos/acme/meters" in call for call in _GitHubSaysNo.calls), _GitHubSaysNo.calls

    # --- the success path: the chain the pipeline runs --------------------------------------
    results = {}
    for stage, inputs in [
        ("merge-and-validate", {"no-push": "true", "comment": "false"}),
        ("start-infra", {}),
        ("train", {}),
        ("stop-infra", {}),
        ("create-pr", {"render-only": "true"}),
    ]:
        code, outputs, log = run(stage, inputs)
        assert code == 0, f"{stage}: {log}"
        results[stage] = outputs
    assert results["merge-and-validate"]["validation_passed"] == "true"
    assert results["start-infra"]["state"] == "running"
    assert results["train"]["improved"] == "true"
    assert results["stop-infra"]["stopped"] == "true"

    # (stage, inputs, exit code: 1 step failed, 2 credentials, text the error must name)
    failures: list[tuple[str, dict[str, str], int, str]] = [
        ("start-infra", {"config": "bad-instance.yml"}, 1, "i-0000000000000dead"),
        ("stop-infra", {"config": "bad-instance.yml", "force": "true"}, 1, "i-0000000000000dead"),
        ("train", {"config": "bad-train.yml", "no-pull": "true"}, 1, "no_such_train.py"),
        ("create-pr", {"github-token": "revoked", "head": "data/x"}, 2, "Bad credentials"),
        ("auto-merge", {"github-token": "revoked", "pr-number": "7"}, 2, "Bad credentials"),
    ]
    cfg = (example / "traingate.yml").read_text()
    (example / "bad-instance.yml").write_text(cfg.replace(instance_id, "i-0000000000000dead"))
    (example / "bad-train.yml").write_text(cfg.replace("python train.py", "python no_such_train.py"))
    for stage, inputs, expected, named in failures:
        code, outputs, log = run(stage, inputs)
        assert code == expected, f"{stage}: {log}"
        assert named in log, f"{stage}: {log}"
        assert "true" not in {outputs.get("improved"), outputs.get("stopped")}, f"{stage}: {outputs}"


def root_action_calls() -> list[tuple[str, str, str]]:
    """(command, args, extras) of every `uses: traingate/traingate@<ref>` step we ship."""
    from tests.workflows.conftest import OWN, TEMPLATES, WORKFLOWS, load

    calls = set()
    for path in [*sorted(WORKFLOWS.glob("*.yml")), *sorted(TEMPLATES.glob("*.yml"))]:
        for job in load(path)["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith(f"{OWN}@"):
                    with_ = step.get("with") or {}
                    calls.add((with_["command"], with_.get("args", ""), with_.get("extras", "all")))
    return sorted(calls)


@pytest.mark.parametrize(("command", "args", "extras"), root_action_calls())
def test_root_action_steps_run_with_only_their_extras(
    command: str,
    args: str,
    extras: str,
    stage_venv: Callable[[str], Path],
    tmp_path: Path,
    aws_env: str,
    github_api: str,
) -> None:
    """The root action steps of the workflows and templates (`promote --reconcile`, `infra reap`)
    install their own `extras:`; their command must import nothing beyond them."""
    from tests.infra.conftest import make_instance

    example = _project(tmp_path, aws_env, make_instance("root-action"), "http://127.0.0.1:9")
    venv = stage_venv(extras)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINGATE_", "GITHUB_"))}
    env.update(GITHUB_ACTIONS="true", GITHUB_REPOSITORY="acme/meters", GITHUB_TOKEN="revoked")
    env.update(GITHUB_API_URL=github_api, GITHUB_RUN_ID="15", GITHUB_RUN_ATTEMPT="1")
    done = subprocess.run(
        [venv / "bin" / "traingate", *command.split(), *args.split()],
        cwd=example,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    for marker in TRACEBACK:
        assert marker not in log, f"{command} {args} (extras {extras!r}): {marker} in\n{log}"
    assert done.returncode in (0, 1, 2), log
    if "github" in extras:  # it got as far as asking GitHub
        assert done.returncode == 2 and "Bad credentials" in log, log
    if command == "infra reap":  # the sweep ran to its end
        assert done.returncode == 0 and "expired lease" in log, log
