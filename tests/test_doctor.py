"""`traingate doctor`: each check against a real counterpart (HTTP servers on loopback, moto's S3,
real folders and git), the table, the exit codes, and bounded time against a dead server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from traingate.config import parse_config
from traingate.doctor import DoctorError, doctor_step, run_checks
from traingate.gha import ActionsContext

from .fixtures.aws import free_port


class _Health(BaseHTTPRequestHandler):
    # MLflow's /health answers 200 "OK"; `status` lets a test play a broken proxy.
    status = 200
    delay = 0.0

    def do_GET(self) -> None:
        time.sleep(self.delay)
        code = self.status if self.path == "/health" else 404
        body = b"OK" if code == 200 else b"error"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, type[_Health]]]:
    handler = type("Handler", (_Health,), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung server behind a load balancer)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _cfg(tmp_path: Path, raw: dict | None = None):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    return parse_config(raw or {}, base_dir=tmp_path, source=None)


def _by_name(checks):
    return {c.name: c for c in checks}


IN_ACTIONS = ActionsContext(in_actions=True)
PATH_WITH_PYTHON = {"PATH": str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")}


def test_defaults_pass_with_no_config_and_no_credentials(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    (tmp_path / "train.py").write_text("print('training')\n")
    result = doctor_step(cfg, env=PATH_WITH_PYTHON)
    assert result.outputs == {"ok": True}
    checks = _by_name(run_checks(cfg, env=PATH_WITH_PYTHON))
    assert checks["train command"].status == "ok"
    assert checks["AWS credentials"].status == "skip"
    assert checks["GitHub token"].status == "warn"
    assert "rendered to" in checks["GitHub token"].detail
    # The embedded SQLite store is fine here, and said to be no store for GitHub Actions.
    assert checks["tracking"].status == "warn"
    assert "not for GitHub Actions" in checks["tracking"].detail
    assert checks["DVC remote"].status == "ok"
    assert checks["git repository"].status == "ok"
    assert "GitHub token" in result.message and "fix: export GITHUB_TOKEN" in result.message
    assert "| tracking |" in result.summary


def test_unreachable_tracking_server_fails_fast_with_url(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    cfg = _cfg(tmp_path, {"tracking": {"uri": f"http://127.0.0.1:{port}"}})
    with pytest.raises(DoctorError) as info:
        doctor_step(cfg, env={}, timeout=2)
    err = info.value
    assert err.exit_code == 1
    assert f"http://127.0.0.1:{port}/health unreachable" in err.message
    assert "tracking" in err.message.splitlines()[0]
    assert err.outputs == {"ok": False}
    assert "start the MLflow server" in err.message


def test_hung_tracking_server_is_bounded_by_timeout(tmp_path: Path, silent_port: int) -> None:
    cfg = _cfg(tmp_path, {"tracking": {"uri": f"http://127.0.0.1:{silent_port}"}})
    checks = _by_name(run_checks(cfg, env={}, timeout=0.5))
    assert checks["tracking"].status == "FAIL"
    assert "timed out" in checks["tracking"].detail


def test_healthy_and_unhealthy_tracking_server(tmp_path: Path, http_server) -> None:
    url, handler = http_server
    cfg = _cfg(tmp_path, {"tracking": {"uri": url}})
    assert _by_name(run_checks(cfg, env={}))["tracking"].status == "ok"
    handler.status = 503
    check = _by_name(run_checks(cfg, env={}))["tracking"]
    assert check.status == "FAIL"
    assert "HTTP 503" in check.detail


def test_corrupt_sqlite_tracking_db_fails(tmp_path: Path) -> None:
    (tmp_path / ".traingate").mkdir()
    (tmp_path / ".traingate" / "mlflow.db").write_bytes(b"this is not sqlite" * 100)
    check = _by_name(run_checks(_cfg(tmp_path), env={}))["tracking"]
    assert check.status == "FAIL"
    assert "not a readable SQLite database" in check.detail


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_read_only_folder_remote_fails(tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    remote.mkdir()
    remote.chmod(0o500)
    try:
        check = _by_name(run_checks(_cfg(tmp_path, {"store": {"remote": str(remote)}}), env={}))["DVC remote"]
    finally:
        remote.chmod(0o700)
    assert check.status == "FAIL"
    assert str(remote) in check.detail


def test_remote_that_is_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "remote").write_text("x")
    check = _by_name(run_checks(_cfg(tmp_path, {"store": {"remote": "remote"}}), env={}))["DVC remote"]
    assert check.status == "FAIL"
    assert "is a file" in check.detail


def test_s3_remote_on_moto(tmp_path: Path, aws_env: str) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="wm-data")
    cfg = _cfg(tmp_path, {"store": {"remote": "s3://wm-data/datasets"}})
    checks = _by_name(run_checks(cfg, env=dict(os.environ)))
    assert checks["DVC remote"].status == "ok", checks["DVC remote"]
    assert checks["AWS credentials"].status == "ok"
    assert "store.remote on S3" in checks["AWS credentials"].detail

    cfg = _cfg(tmp_path, {"store": {"remote": "s3://no-such-bucket/x"}})
    check = _by_name(run_checks(cfg, env=dict(os.environ)))["DVC remote"]
    assert check.status == "FAIL"
    assert "does not exist" in check.detail


def test_s3_remote_without_credentials_fails(tmp_path: Path, moto_server: str, monkeypatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    cfg = _cfg(tmp_path, {"store": {"remote": "s3://wm-data/x", "endpoint_url": moto_server}})
    with pytest.raises(DoctorError) as info:
        doctor_step(cfg, env={"AWS_ENDPOINT_URL": moto_server}, timeout=2)
    msg = info.value.message
    assert "AWS credentials" in msg.splitlines()[0]
    assert "fix: export AWS_ACCESS_KEY_ID" in msg


def test_s3_endpoint_down_is_bounded(tmp_path: Path, aws_env: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cfg = _cfg(tmp_path, {"store": {"remote": "s3://wm-data/x", "endpoint_url": dead}})
    check = _by_name(run_checks(cfg, env=dict(os.environ), timeout=1))["DVC remote"]
    assert check.status == "FAIL"
    assert "unreachable" in check.detail


@pytest.mark.parametrize("remote", ["", "remote", "file:///srv/dvc"])
def test_in_actions_a_remote_on_the_runner_fails(tmp_path: Path, remote: str) -> None:
    """Issue #11: the runner's disk dies with the job; `data merge` refuses such a remote in
    Actions (exit 2), and doctor says so first. On a developer's machine it is fine."""
    cfg = _cfg(tmp_path, {"store": {"remote": remote}})
    check = _by_name(run_checks(cfg, env={}, actions=IN_ACTIONS))["DVC remote"]
    assert check.status == "FAIL"
    assert "store.remote" in check.detail and "s3://" in check.fix
    assert _by_name(run_checks(cfg, env={}))["DVC remote"].status != "FAIL"


def test_git_identity_outside_actions(tmp_path: Path, monkeypatch) -> None:
    """The pointer commit is the user's outside Actions: doctor fails when git has no identity."""
    cfg = _cfg(tmp_path)
    assert _by_name(run_checks(cfg, env={}))["git repository"].status == "ok"
    for name in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(name, raising=False)
    check = _by_name(run_checks(cfg, env={}))["git repository"]
    assert check.status == "FAIL" and "identity" in check.detail and "user.email" in check.fix
    assert _by_name(run_checks(cfg, env={}, actions=IN_ACTIONS))["git repository"].status == "ok"


def test_actions_without_token_or_oidc_role_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    cfg = _cfg(tmp_path, {"infra": {"backend": "ec2", "instance": {"id": "i-0123"}}})
    checks = _by_name(run_checks(cfg, env={}, actions=IN_ACTIONS))
    assert checks["GitHub token"].status == "FAIL"
    assert "secrets.GITHUB_TOKEN" in checks["GitHub token"].fix
    assert checks["AWS credentials"].status == "FAIL"
    assert "role-to-assume" in checks["AWS credentials"].fix
    assert "id-token: write" in checks["AWS credentials"].fix

    # The token is a credential read from the environment; the repository is the Actions context's.
    env = {
        "GITHUB_TOKEN": "ghs_x",
        "AWS_WEB_IDENTITY_TOKEN_FILE": "/tmp/t",
        "AWS_ROLE_ARN": "arn:aws:iam::1:role/r",
    }
    checks = _by_name(run_checks(cfg, env=env, actions=ActionsContext(in_actions=True, repository="o/r")))
    assert checks["GitHub token"].status == "ok"
    assert checks["AWS credentials"].status == "ok"
    assert "ghs_x" not in json.dumps([c.__dict__ for c in checks.values()])


def test_ec2_backend_without_instance_selector_fails(tmp_path: Path) -> None:
    check = _by_name(run_checks(_cfg(tmp_path, {"infra": {"backend": "ec2"}}), env={}))["infra"]
    assert check.status == "FAIL"
    assert "infra.instance.id" in check.fix


def test_not_a_git_repository_warns(tmp_path: Path) -> None:
    cfg = parse_config({}, base_dir=tmp_path)
    check = _by_name(run_checks(cfg, env={}))["git repository"]
    assert check.status == "warn"
    assert "git init" in check.fix


def _cli(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "AWS_")) and k != "CI"}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "traingate", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_cli_exit_codes_and_outputs(tmp_path: Path) -> None:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "train.py").write_text("print('training')\n")
    out = tmp_path / "gh_output"
    ok = _cli(["--json", "doctor"], tmp_path, {"GITHUB_OUTPUT": str(out), **PATH_WITH_PYTHON})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["outputs"] == {"ok": True}
    assert "GitHub token" in ok.stderr
    assert "ok<<" in out.read_text() and "\ntrue\n" in out.read_text()

    (tmp_path / "traingate.yml").write_text(f"tracking:\n  uri: http://127.0.0.1:{free_port()}\n")
    out.unlink()
    bad = _cli(["doctor"], tmp_path, {"GITHUB_OUTPUT": str(out)})
    assert bad.returncode == 1
    assert "unreachable" in bad.stderr and "next step" in bad.stderr
    assert "true" not in out.read_text()

    (tmp_path / "traingate.yml").write_text("infra:\n  backend: ec3\n")
    usage = _cli(["doctor"], tmp_path)
    assert usage.returncode == 2
    assert "infra.backend" in usage.stderr and "ec2" in usage.stderr


def test_train_command_program_and_script_must_exist(tmp_path: Path) -> None:
    (tmp_path / "train.py").write_text("print('hi')\n")
    ok = _by_name(run_checks(_cfg(tmp_path, {"train": {"command": f"{sys.executable} train.py"}}), env={}))
    assert ok["train command"].status == "ok"

    typo = _cfg(tmp_path, {"train": {"command": f"{sys.executable} trian.py --epochs 3"}})
    check = _by_name(run_checks(typo, env={}))["train command"]
    assert check.status == "FAIL"
    assert "trian.py not found" in check.detail

    missing = _cfg(tmp_path, {"train": {"command": "no-such-python-xyz train.py"}})
    check = _by_name(run_checks(missing, env={}))["train command"]
    assert check.status == "FAIL"
    assert "'no-such-python-xyz' is not on PATH" in check.detail

    remote = _cfg(tmp_path, {"train": {"command": "python nowhere.py", "where": "instance"}})
    assert _by_name(run_checks(remote, env={}))["train command"].status == "skip"


def test_remote_under_a_file_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    cfg = _cfg(tmp_path, {"store": {"remote": "blocker/remote"}})
    check = _by_name(run_checks(cfg, env={}))["DVC remote"]
    assert check.status == "FAIL"
    assert "is a file" in check.detail


def test_sqlite_tracking_under_a_file_fails(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    cfg = _cfg(tmp_path, {"tracking": {"uri": "sqlite:///blocker/mlflow.db"}})
    check = _by_name(run_checks(cfg, env={}))["tracking"]
    assert check.status == "FAIL"
    assert "is a file" in check.detail


@pytest.mark.parametrize("ci_env", [{"GITHUB_ACTIONS": "true"}, {"CI": "true"}])
def test_local_tracking_store_fails_in_ci(tmp_path: Path, ci_env: dict[str, str]) -> None:
    """Issue #12: in CI the embedded SQLite file dies with the job; doctor used to say "ok"."""
    cfg = _cfg(tmp_path)
    check = _by_name(run_checks(cfg, env=ci_env))["tracking"]
    assert check.status == "FAIL"
    assert "an SQLite file, on this machine only" in check.detail
    assert "outlives the job" in check.fix
    with pytest.raises(DoctorError, match="tracking"):
        doctor_step(cfg, env={**ci_env, **PATH_WITH_PYTHON})


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "mlruns"])
def test_local_file_store_fails_in_ci_and_warns_locally(tmp_path: Path, uri: str) -> None:
    cfg = _cfg(tmp_path, {"tracking": {"uri": uri}})
    assert _by_name(run_checks(cfg, env={"CI": "1"}))["tracking"].status == "FAIL"
    local = _by_name(run_checks(cfg, env={}))["tracking"]
    assert local.status == "warn" and "file store" in local.detail


def test_server_tracking_is_fine_in_ci(tmp_path: Path, http_server) -> None:
    url, _handler = http_server
    cfg = _cfg(tmp_path, {"tracking": {"uri": url}})
    assert _by_name(run_checks(cfg, env={}, actions=IN_ACTIONS))["tracking"].status == "ok"


def test_the_actions_context_comes_from_the_cli_not_the_environment(tmp_path: Path) -> None:
    """#13: the checks ask the context they are given; without one, the environment passed in."""
    cfg = _cfg(tmp_path, {"store": {"remote": "remote"}})
    outside = _by_name(run_checks(cfg, env={"GITHUB_ACTIONS": "true"}, actions=ActionsContext()))
    assert outside["DVC remote"].status != "FAIL" and outside["GitHub token"].status == "warn"
    inside = _by_name(run_checks(cfg, env={"GITHUB_ACTIONS": "true"}))
    assert inside["DVC remote"].status == "FAIL" and inside["GitHub token"].status == "FAIL"


def test_doctor_step_returns_its_typed_result(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, {"train": {"command": f"{sys.executable} train.py"}})
    (tmp_path / "train.py").write_text("")
    result = doctor_step(cfg, env=PATH_WITH_PYTHON, actions=ActionsContext())
    assert result.value is not None and result.value.ok is True
    assert result.outputs == result.value.outputs() == {"ok": True}
    assert [c["name"] for c in result.data["checks"]] == [c.name for c in result.value.checks]
