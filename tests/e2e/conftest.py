"""The end-to-end fixture set: every service of a workflow run, on loopback.

- moto's server (session, from tests/fixtures/aws.py): the shared EC2 instance (tagged, stopped),
  the S3 bucket of the DVC remote, the DynamoDB lease table;
- the SSM fake (tests/fixtures/ssm_fake.py) that really runs the watchdog in a sandbox disk,
  tied to moto's EC2 and injected with `traingate.infra.aws.override_clients(ssm=...)`;
- a real `mlflow server` (session) behind a per-test `FaultProxy` (503 bursts, dead server);
- `FakeGitHub` on `responses` (loopback traffic passes through to the real servers);
- a bare git remote whose `main` holds the water-meter example with a merged DVC dataset, and
  `data/...` branches with new images made per test.

The seed (initial dataset merged into S3 + the bare repository) is built once per session and
copied per test: moto is reset after every test, so the seed's S3 objects are re-uploaded.
Infra sleeps and clocks run on one `FakeClock` (the lease, the readiness polls and the SSM fake
share it), so the watchdog's TTL can be passed without waiting.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.harness import REPO, PipelineRun, World
from tests.fixtures.mlflow_server import *  # noqa: F403 - the server, proxy and template fixtures
from tests.fixtures.mlflow_server import FaultProxy, MlflowServer
from tests.fixtures.ssm_fake import FakeClock, FakeSsm
from tests.github.conftest import FakeGitHub

EXAMPLE = REPO / "examples" / "water-meters"
BUCKET = "traingate-e2e"
PREFIX = "wm"
LEASE_TABLE = "traingate-leases"
INSTANCE_NAME = "traingate-e2e"
INITIAL_PAIRS = 10
TRAIN_COMMAND = "python train.py --epochs 2 --pixels-per-image 800"


def git(cwd: Path, *args: str) -> str:
    out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd}: {out.stderr.strip()}")
    return out.stdout.strip()


def py(cwd: Path, *args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True)


def traingate_yml(names: dict[str, str], moto: str, tracking_uri: str, **over: Any) -> str:
    cfg: dict[str, Any] = {
        "project": "water-meters",
        "data": {
            "root": "data/training",
            "incoming": "data/new",
            "size": [128, 128],
            "mask_values": [0, 255],
            "min_foreground": 0.01,
        },
        "store": {"kind": "dvc", "remote": f"s3://{BUCKET}/{PREFIX}", "endpoint_url": moto, "git_push": True},
        "infra": {
            "backend": "ec2",
            "region": "us-east-1",
            "instance": {"tags": {"Name": INSTANCE_NAME}},
            "ready": ["running", "status-ok", "ssm"],
            "ttl_minutes": 30,
            "lease_table": LEASE_TABLE,
            # The instance's MLflow server is the loopback one (moto's public IPs lead nowhere).
            "mlflow_url": tracking_uri,
            "poll_cap_seconds": 2,
            "start_retry_budget_minutes": 1,
        },
        "train": {
            "command": TRAIN_COMMAND,
            "workdir": ".",
            "timeout_minutes": 5,
            "metrics_file": "outputs/metrics.json",
            "metrics_log": "outputs/metrics.jsonl",
            "artifacts": ["outputs/model.npz"],
            "artifacts_policy": "required",
        },
        "tracking": {
            "uri": tracking_uri,
            "experiment": names["experiment"],
            "max_retries": 3,
            "backoff_factor": 0.05,
            "retry_budget_seconds": 8,
            "health_timeout_seconds": 2,
        },
        "gate": {
            "model": names["model"],
            "alias": "champion",
            "metrics": [
                {"name": "dice", "direction": "max", "min_delta": 0.0},
                {"name": "iou", "direction": "max"},
            ],
            "require": "all",
        },
        "pr": {"base": "main", "auto_merge": "squash"},
    }
    for dotted, value in over.items():
        section, key = dotted.split("__", 1)
        cfg[section][key] = value
    return json.dumps(cfg, indent=2) + "\n"  # JSON is YAML


def _env_for_aws(moto: str) -> dict[str, str]:
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto,
    }


@dataclass
class Seed:
    bare: Path
    objects: Path  # the DVC remote's objects, relative keys under PREFIX
    moto: str


@pytest.fixture(scope="session")
def e2e_seed(moto_server: str, tmp_path_factory: pytest.TempPathFactory) -> Seed:
    """main = the example project + a merged initial dataset (DVC on S3); built once per worker."""
    import boto3
    from click.testing import CliRunner

    from traingate.cli import cli

    root = tmp_path_factory.mktemp("e2e-seed")
    home = root / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in _env_for_aws(moto_server).items():
            mp.setenv(k, v)
        mp.setenv("HOME", str(home))
        mp.setenv("DVC_NO_ANALYTICS", "1")
        for name in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
            mp.setenv(name, "traingate-test")
        for name in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
            mp.setenv(name, "test@example.invalid")
        for name in list(os.environ):
            if name.startswith(("GITHUB_", "TRAINGATE_", "MLFLOW_")):
                mp.delenv(name)
        bare = root / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
        work = root / "work"
        subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
        for name in ("generate.py", "train.py", "README.md", ".gitignore"):
            shutil.copy2(EXAMPLE / name, work / name)
        names = {"experiment": "seed", "model": "seed"}
        (work / "traingate.yml").write_text(traingate_yml(names, moto_server, "http://127.0.0.1:9"))
        py(work, "generate.py", "data/new", "--pairs", str(INITIAL_PAIRS), "--seed", "1")
        py(work, "-c", "import pathlib, train; train._make_holdout(pathlib.Path('holdout'))")
        git(work, "add", "-A")
        git(work, "add", "-f", "holdout")
        git(work, "commit", "-q", "-m", "water-meter example with its first images")
        git(work, "push", "-q", "-u", "origin", "main")
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        cwd = Path.cwd()
        os.chdir(work)
        try:
            result = CliRunner().invoke(cli, ["data", "merge"], catch_exceptions=False)
        finally:
            os.chdir(cwd)
        assert result.exit_code == 0, result.output + result.stderr
        objects = root / "objects"
        s3 = boto3.client("s3")
        for obj in s3.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX + "/").get("Contents", []):
            target = objects / obj["Key"]
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(BUCKET, obj["Key"], str(target))
    return Seed(bare=bare, objects=objects, moto=moto_server)


def seed_aws(seed: Seed) -> str:
    """One test's AWS on moto: the bucket holding the seed dataset, the lease table, and the
    stopped shared instance (its id returned). The e2e harness and the act suite start alike."""
    import boto3

    from tests.infra.conftest import make_instance

    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for path in sorted(seed.objects.rglob("*")):
        if path.is_file():
            s3.upload_file(str(path), BUCKET, str(path.relative_to(seed.objects)))
    boto3.client("dynamodb").create_table(
        TableName=LEASE_TABLE,
        KeySchema=[{"AttributeName": "instance_id", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "instance_id", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    return make_instance(INSTANCE_NAME)


class ServiceProbes:
    """What a scenario asks the services after a run: the instance, the lease, the registry.

    Shared by the in-process harness (`E2E`) and the act engine suite's `World`; both carry an
    `instance_id`, an `mlflow` server and the test's `names`.
    """

    instance_id: str
    mlflow: MlflowServer
    names: dict[str, str]

    def instance_state(self) -> str:
        import boto3

        ec2 = boto3.client("ec2", region_name="us-east-1")
        out = ec2.describe_instances(InstanceIds=[self.instance_id])
        return str(out["Reservations"][0]["Instances"][0]["State"]["Name"])

    def lease_holders(self) -> dict[str, float]:
        import boto3

        item = (
            boto3.client("dynamodb")
            .get_item(
                TableName=LEASE_TABLE, Key={"instance_id": {"S": self.instance_id}}, ConsistentRead=True
            )
            .get("Item")
        )
        if not item:
            return {}
        return {k: float(v["N"]) for k, v in item.get("holders", {}).get("M", {}).items()}

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.mlflow.url, registry_uri=self.mlflow.url)

    def aliases(self) -> dict[str, str]:
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client().get_registered_model(self.names["model"]).aliases)
        except MlflowException:
            return {}

    def make_champion(self, dice: float, iou: float) -> str:
        """Register a champion version directly (as an earlier round would have left it)."""
        client = self.client()
        exp = client.get_experiment_by_name(self.names["experiment"])
        exp_id = exp.experiment_id if exp else client.create_experiment(self.names["experiment"])
        run = client.create_run(exp_id, run_name="earlier-champion")
        client.log_metric(run.info.run_id, "dice", dice)
        client.log_metric(run.info.run_id, "iou", iou)
        client.set_terminated(run.info.run_id, "FINISHED")
        try:
            client.create_registered_model(self.names["model"])
        except Exception:
            pass
        mv = client.create_model_version(
            self.names["model"], f"runs:/{run.info.run_id}/model", run_id=run.info.run_id
        )
        client.set_registered_model_alias(self.names["model"], "champion", str(mv.version))
        return str(mv.version)


@dataclass
class E2E(ServiceProbes):
    """One test's world and the probes its assertions use."""

    world: World
    seed: Seed
    work: Path
    clock: FakeClock
    ssm: FakeSsm
    proxy: FaultProxy
    mlflow: MlflowServer
    github: FakeGitHub
    instance_id: str
    names: dict[str, str]
    runs: list[PipelineRun] = field(default_factory=list)
    aws_calls: dict[str, int] = field(default_factory=dict)
    moto: _MotoRequests = field(default_factory=lambda: _MotoRequests())
    setup_seconds: float = 0.0
    recorded: list[dict[str, Any]] = field(default_factory=list)
    _run_counter: int = 1000

    # ------------------------------------------------------------------------- set-up
    def configure(self, **over: Any) -> None:
        """Commit a traingate.yml change on main (e.g. train__artifacts_policy='best-effort')."""
        git(self.work, "checkout", "-q", "main")
        (self.work / "traingate.yml").write_text(
            traingate_yml(self.names, self.seed.moto, self.proxy.url, **over)
        )
        git(self.work, "commit", "-q", "-am", "configure traingate for this test")
        git(self.work, "push", "-q", "origin", "main")

    def push_data(
        self,
        branch: str = "data/20261124-101500",
        *,
        pairs: int = 4,
        seed: int = 7,
        degrade: bool = False,
        prefix: str = "new",
        corrupt: bool = False,
        also: Mapping[str, str] | None = None,
    ) -> str:
        """A data push: a branch off main with new pairs under data/new (and, with `also`, other
        files written in the same commit: path -> text). Returns the branch."""
        git(self.work, "checkout", "-q", "main")
        git(self.work, "checkout", "-q", "-b", branch)
        args = ["generate.py", "data/new", "--pairs", str(pairs), "--seed", str(seed), "--prefix", prefix]
        py(self.work, *args, *(["--degrade"] if degrade else []))
        if corrupt:
            images = sorted((self.work / "data" / "new" / "images").iterdir())
            images[0].write_bytes(images[0].read_bytes()[:200])  # truncated upload
            (self.work / "data" / "new" / "masks" / f"{images[1].stem}.png").unlink()  # missing mask
        for rel, text in (also or {}).items():
            (self.work / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.work / rel).write_text(text)
            git(self.work, "add", rel)
        git(self.work, "add", "data/new")
        git(self.work, "commit", "-q", "-m", f"new training data ({pairs} pairs)")
        git(self.work, "push", "-q", "origin", branch)
        git(self.work, "checkout", "-q", "main")
        return branch

    def pipeline(self, branch: str, **kwargs: Any) -> PipelineRun:
        if "run_id" not in kwargs:
            self._run_counter += 1
            kwargs["run_id"] = str(self._run_counter)
        run = PipelineRun(self.world, branch=branch, **kwargs)
        self.runs.append(run)
        return run

    def mark(self) -> None:
        """Start counting service calls from here (set-up and probes before it are not counted)."""
        self.aws_calls.clear()
        self.moto.requests.clear()
        self.proxy.requests.clear()
        self.github.log.clear()
        self.ssm.calls.update({k: 0 for k in self.ssm.calls})

    def figures(self, run: PipelineRun) -> dict[str, Any]:
        """What bench/bench_e2e.py reports for one run (read before any probe adds calls)."""
        t = run.timing
        train_seconds = 0.0
        report = run.artifacts.get("traingate-train-reports")
        if report is not None and (report / "train-report.json").is_file():
            train_seconds = float(json.loads((report / "train-report.json").read_text())["duration_seconds"])
        return {
            "wall_seconds": round(t.wall_seconds, 3),
            "cli_seconds": round(t.cli_seconds, 3),
            "cli_cpu_seconds": round(t.cli_cpu_seconds, 3),
            "harness_seconds": round(t.harness_seconds, 3),
            "train_command_seconds": round(train_seconds, 3),
            "cli_calls": t.cli_calls,
            "per_job_seconds": {n: round(sum(s.seconds for s in j.steps), 3) for n, j in run.jobs.items()},
            "aws_boto3_calls": dict(sorted(self.aws_calls.items())),
            "aws_http_requests": len(self.moto.requests),
            "aws_http_by_kind": self.moto.by_kind(),
            "ssm_calls": dict(self.ssm.calls),
            "mlflow_requests": len(self.proxy.requests),
            "github_requests": len(self.github.log),
            "github_by_route": sorted(f"{m} {p}" for m, p in self.github.log),
            "fixture_setup_seconds": round(self.setup_seconds, 3),
        }

    # ------------------------------------------------------------------------- probes
    def run_status(self, run_id: str) -> str:
        return str(self.client().get_run(run_id).info.status)

    def experiment_runs(self) -> list[Any]:
        client = self.client()
        exp = client.get_experiment_by_name(self.names["experiment"])
        return [] if exp is None else list(client.search_runs([exp.experiment_id]))

    def branch_sha(self, branch: str) -> str:
        return git(self.world.bare, "rev-parse", f"refs/heads/{branch}")

    def branch_files(self, ref: str) -> list[str]:
        return git(self.world.bare, "ls-tree", "-r", "--name-only", ref).splitlines()

    def s3_keys(self) -> set[str]:
        import boto3

        out = boto3.client("s3").list_objects_v2(Bucket=BUCKET)
        return {o["Key"] for o in out.get("Contents", [])}

    def cli(self, *argv: str, ref: str = "main", env: dict[str, str] | None = None) -> Any:
        """A traingate command outside the pipeline (e.g. a scheduled `infra reap`)."""
        from click.testing import CliRunner

        from traingate.cli import cli

        folder = self.world.root / f"cli-{len(os.listdir(self.world.root))}"
        git(self.world.root, "clone", "-q", str(self.world.bare), str(folder))
        git(folder, "checkout", "-q", ref)
        cwd = Path.cwd()
        os.chdir(folder)
        try:
            return CliRunner().invoke(cli, list(argv), env={**self.world.env, **(env or {})})
        finally:
            os.chdir(cwd)


class _MotoRequests(logging.Handler):
    """Every HTTP request moto's server answers (boto3, DVC's s3fs and the SSM fake's `aws` shim)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.requests: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.args and isinstance(record.args, tuple):
            line = re.sub(r"\x1b\[[0-9;]*m", "", str(record.args[0]))  # werkzeug colours by status
            if line.count(" ") >= 2:
                self.requests.append(line)

    def by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.requests:
            method, path = line.split(" ")[:2]
            kind = (
                "s3"
                if path.startswith(f"/{BUCKET}")
                else ("moto-api" if "moto-api" in path else "ec2/dynamodb")
            )
            key = f"{kind} {method}"
            out[key] = out.get(key, 0) + 1
        return out


def _count_boto_calls(counter: dict[str, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Count every AWS API call made through botocore (traingate's and the fixtures' own)."""
    from botocore.client import BaseClient

    original = BaseClient._make_api_call

    def counted(self: Any, operation_name: str, api_params: Any) -> Any:
        key = f"{self.meta.service_model.service_name}:{operation_name}"
        counter[key] = counter.get(key, 0) + 1
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counted)


FIGURES_ENV = "TRAINGATE_E2E_FIGURES"


def _write_figures(t: E2E) -> None:
    """bench/bench_e2e.py sets TRAINGATE_E2E_FIGURES: append one JSON line per recorded run."""
    target = os.environ.get(FIGURES_ENV)
    if target and t.recorded:
        with open(target, "a", encoding="utf-8") as fh:
            for item in t.recorded:
                fh.write(json.dumps(item) + "\n")


@pytest.fixture
def e2e(
    e2e_seed: Seed,
    aws_env: str,
    mlflow_server: MlflowServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> Iterator[E2E]:
    import boto3
    import responses

    began = time.perf_counter()
    from traingate.github.forge import PyGithubForge
    from traingate.infra import stage
    from traingate.infra.aws import override_clients
    from traingate.infra.ec2 import Boto3Ec2

    # AWS: the bucket with the seed dataset, the lease table, the stopped shared instance.
    instance_id = seed_aws(e2e_seed)

    # One clock for every infra wait: polls cost nothing and the watchdog TTL can be passed.
    clock = FakeClock()
    for fn in (stage.start_step, stage.stop_step, stage.reap_step, stage.status_step):
        monkeypatch.setitem(fn.__kwdefaults__, "runtime", clock.runtime())
    # The lease/watchdog renewal while `train` runs on the runner (#14) runs on the same clock
    # (with real sleeps: it runs beside the training, which must not move the clock).
    from traingate.infra.keepalive import KeepAlive
    from traingate.runtime import Runtime

    monkeypatch.setitem(KeepAlive.__init__.__kwdefaults__, "runtime", Runtime(clock=clock))
    # PyGithub's polite throttling (1 s between writes) and the retry back-off are real sleeps.
    monkeypatch.setitem(PyGithubForge.__init__.__kwdefaults__, "seconds_between_requests", 0)
    monkeypatch.setitem(PyGithubForge.__init__.__kwdefaults__, "seconds_between_writes", 0)
    monkeypatch.setitem(PyGithubForge.__init__.__kwdefaults__, "sleep", lambda _s: None)

    ssm = FakeSsm(
        tmp_path / "instances", ec2=Boto3Ec2(boto3.client("ec2", region_name="us-east-1")), clock=clock
    )
    ssm.register(instance_id)

    bare = tmp_path / "remote.git"
    shutil.copytree(e2e_seed.bare, bare)
    work = tmp_path / "dev"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    names = {"experiment": f"e2e-{slug}", "model": f"e2e-{slug}"}

    env = {
        **{k: os.environ[k] for k in ("HOME", "XDG_CACHE_HOME") if k in os.environ},
        **_env_for_aws(aws_env),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    # The instance's training image has this interpreter (numpy, PIL, dvc) first on its PATH.
    monkeypatch.setenv("PATH", env["PATH"])
    proxy = FaultProxy(mlflow_server.url).start()
    aws_calls: dict[str, int] = {}
    _count_boto_calls(aws_calls, monkeypatch)
    try:
        with (
            override_clients(ssm=ssm),
            responses.RequestsMock(assert_all_requests_are_fired=False) as rsps,
        ):
            rsps.add_passthru(re.compile(r"https?://(127\.0\.0\.1|localhost)(:\d+)?"))
            fake = FakeGitHub(rsps)
            fake.git_dir = bare  # the compare API (the PR's diff) answers from the real branches

            def sync_forge() -> None:
                refs = git(bare, "for-each-ref", "--format=%(refname:short) %(objectname)", "refs/heads")
                fake.branches = dict(line.split(" ", 1) for line in refs.splitlines())

            world = World(bare=bare, root=tmp_path / "runners", env=env, sync_forge=sync_forge)
            world.root.mkdir()
            t = E2E(world, e2e_seed, work, clock, ssm, proxy, mlflow_server, fake, instance_id, names)
            t.aws_calls = aws_calls
            t.configure()
            moto_log = logging.getLogger("werkzeug")
            moto_log.addHandler(t.moto)
            if moto_log.level == logging.NOTSET or moto_log.level > logging.INFO:
                monkeypatch.setattr(moto_log, "level", logging.INFO)
            t.setup_seconds = time.perf_counter() - began
            try:
                yield t
            finally:
                moto_log.removeHandler(t.moto)
                _write_figures(t)
    finally:
        proxy.stop()
        ssm.close()
