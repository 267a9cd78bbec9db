"""Fixtures of the engine suite: the shipped caller templates run by nektos/act against loopback.

Session (per xdist worker): the `Engine` (act, its HOME and tool cache, the exported traingate
source), moto's server, a real `mlflow server`, and the e2e seed (the water-meter example with
a merged DVC dataset on S3, in a bare repository; shared with tests/e2e).

Per test (`world`): the seed's S3 objects re-uploaded, the lease table and a stopped instance in
moto, a copy of the bare remote that `https://github.com/acme/water-meters` resolves to (for
act's checkout and for pushes), a developer clone with the caller templates committed on main
as `traingate init` would, and the GitHub fake served over HTTP (tests/engine/github_http.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (  # the e2e seed is the engine suite's starting repository too
    BUCKET,
    Seed,
    ServiceProbes,
    e2e_seed,  # noqa: F401 - fixture
    git,
    py,
    seed_aws,
    traingate_yml,
)
from tests.engine.act import (
    REPO,
    ActRun,
    Engine,
    act_binary,
    actions_folder,
    export_source,
    extras_sets,
    for_act,
    internal_refs,
    run_act,
    template_ref,
    why_act_cannot_run,
)
from tests.engine.github_http import GitHubServer
from tests.fixtures.mlflow_server import *  # noqa: F403 - the server and proxy fixtures
from tests.fixtures.mlflow_server import FaultProxy, MlflowServer

GH_REPO = "acme/water-meters"
TOKEN = "ghs_engineGITHUBTOKEN0000000000000000000"
TEMPLATES = REPO / "workflows-templates"
TRAIN_COMMAND = f"{sys.executable} train.py --epochs 2 --pixels-per-image 800"


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    reason = why_act_cannot_run()
    if reason:
        pytest.skip(f"engine suite: {reason}")
    root = tmp_path_factory.mktemp("engine")
    # One uv cache for every worker and job: the first install fills it, the others link from it.
    uv_cache = tmp_path_factory.getbasetemp().parent / "engine-uv-cache"
    uv_cache.mkdir(exist_ok=True)
    source = export_source(root / "traingate")
    act = act_binary()
    assert act is not None
    eng = Engine(root=root, act=act, source=source, uv_cache=uv_cache, actions=actions_folder())
    _warm_uv_cache(eng)
    return eng


def _warm_uv_cache(eng: Engine) -> None:
    """Install every extras set a job installs once, so the jobs' installs (run with UV_OFFLINE)
    find each resolution and wheel in the cache: a subset resolves differently from `[all]`.

    Done once per cache (a stamp names the pyproject and the extras sets), under a file lock so
    the second xdist worker waits for the first instead of downloading the same wheels.
    """
    import fcntl
    import hashlib

    sets = sorted(extras_sets())
    key = hashlib.sha256((REPO / "pyproject.toml").read_bytes() + repr(sets).encode()).hexdigest()[:16]
    stamp = eng.uv_cache / f".traingate-engine-warm-{key}"
    uv = Path(sys.executable).parent / "uv"
    env = {**os.environ, "UV_CACHE_DIR": str(eng.uv_cache), "UV_LINK_MODE": "symlink"}
    env.pop("VIRTUAL_ENV", None)
    with open(eng.uv_cache / ".traingate-engine-warm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return
        for i, extras in enumerate(sets):
            venv = eng.root / f"warm-venv-{i}"
            subprocess.run([str(uv), "venv", "--quiet", str(venv)], env=env, check=True)
            python = str(venv / "bin" / "python")
            install = [str(uv), "pip", "install", "--quiet", "--python", python, f"{eng.source}[{extras}]"]
            subprocess.run(install, env=env, check=True)
            shutil.rmtree(venv, ignore_errors=True)
        stamp.touch()


@dataclass
class World(ServiceProbes):
    """One test's repository, services and probes."""

    engine: Engine
    seed: Seed
    bare: Path
    work: Path
    root: Path
    github: GitHubServer
    mlflow: MlflowServer
    proxy: FaultProxy
    instance_id: str
    names: dict[str, str]
    runs: list[ActRun] = field(default_factory=list)

    # ------------------------------------------------------------------ set-up
    def configure(self, **over: Any) -> None:
        """Commit traingate.yml (engine defaults + overrides) and the caller templates on main."""
        git(self.work, "checkout", "-q", "main")
        over.setdefault("train__command", TRAIN_COMMAND)
        # moto has no SSM DescribeInstanceInformation: readiness stops at EC2's status checks.
        over.setdefault("infra__ready", ["running", "status-ok"])
        (self.work / "traingate.yml").write_text(
            traingate_yml(self.names, self.seed.moto, self.proxy.url, **over)
        )
        target = self.work / ".github" / "workflows"
        target.mkdir(parents=True, exist_ok=True)
        for template in TEMPLATES.glob("*.yml"):
            (target / template.name).write_text(for_act(template.read_text()))
        git(self.work, "add", "-A")
        git(self.work, "commit", "-q", "-m", "configure traingate and add its workflows")
        git(self.work, "push", "-q", "origin", "main")

    def push_data(
        self, branch: str = "data/20261124-101500", *, pairs: int = 4, seed: int = 7, **kw: Any
    ) -> str:
        git(self.work, "checkout", "-q", "main")
        git(self.work, "checkout", "-q", "-b", branch)
        args = ["generate.py", "data/new", "--pairs", str(pairs), "--seed", str(seed), "--prefix", "new"]
        py(self.work, *args, *(["--degrade"] if kw.get("degrade") else []))
        if kw.get("corrupt"):
            images = sorted((self.work / "data" / "new" / "images").iterdir())
            images[0].write_bytes(images[0].read_bytes()[:200])  # truncated upload
            (self.work / "data" / "new" / "masks" / f"{images[1].stem}.png").unlink()  # missing mask
        git(self.work, "add", "data/new")
        git(self.work, "commit", "-q", "-m", f"new training data ({pairs} pairs)")
        git(self.work, "push", "-q", "origin", branch)
        return branch

    # ------------------------------------------------------------------ running
    def repository(self) -> dict[str, Any]:
        owner, name = GH_REPO.split("/")
        return {
            "full_name": GH_REPO,
            "name": name,
            "owner": {"login": owner},
            "default_branch": "main",
            "clone_url": f"https://github.com/{GH_REPO}.git",
        }

    def act(
        self,
        event_name: str,
        template: str,
        event: dict[str, Any],
        *,
        checkout: str,
        secrets: dict[str, str] | None = None,
    ) -> ActRun:
        """Run `.github/workflows/<template>` of the developer clone, checked out at `checkout`."""
        git(self.work, "checkout", "-q", checkout)
        workflow = self.work / ".github" / "workflows" / template
        refs = {template_ref(workflow), *internal_refs()}
        moto = self.seed.moto
        env = {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": moto,
            "GITHUB_API_URL": self.github.url,
            "TRAINGATE_ENGINE_UV_CACHE": str(self.engine.uv_cache),
            "UV_OFFLINE": "1",
            "DVC_NO_ANALYTICS": "1",
        }
        all_secrets = {
            "GITHUB_TOKEN": TOKEN,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            **(secrets or {}),
        }
        variables = {"AWS_REGION": "us-east-1", "TRAINGATE_INSTANCE_ID": self.instance_id}
        index = len(self.runs) + 1
        artifacts = self.root / f"run-{index}" / "artifacts"
        artifacts.mkdir(parents=True)
        run = run_act(
            self.engine,
            workdir=self.work,
            event_name=event_name,
            workflow=workflow,
            event={"repository": self.repository(), **event},
            refs=refs,
            env=env,
            secrets=all_secrets,
            variables=variables,
            artifacts=artifacts,
        )
        self.runs.append(run)
        return run

    def push_event(self, branch: str) -> ActRun:
        sha = self.branch_sha(branch)
        event = {
            "ref": f"refs/heads/{branch}",
            "before": "0" * 40,
            "after": sha,
            "head_commit": {"id": sha},
        }
        return self.act("push", "training-data-pipeline.yml", event, checkout=branch)

    def dispatch(self, template: str, inputs: dict[str, Any], ref: str = "main") -> ActRun:
        """`workflow_dispatch` of a template on a branch (Run workflow in the UI)."""
        event = {"ref": f"refs/heads/{ref}", "inputs": inputs}
        return self.act("workflow_dispatch", template, event, checkout=ref)

    def schedule(self, template: str) -> ActRun:
        """The `schedule` event on the default branch."""
        return self.act("schedule", template, {"schedule": "*/30 * * * *"}, checkout="main")

    def pr_merged(self, number: int, branch: str, labels: list[str]) -> ActRun:
        """`pull_request: closed` for a merged PR: GitHub's refs/pull/N/merge is the merge commit."""
        git(self.work, "checkout", "-q", "main")
        git(self.work, "fetch", "-q", str(self.bare), f"+refs/heads/{branch}:refs/remotes/origin/{branch}")
        git(self.work, "merge", "-q", "--no-ff", "-m", f"Merge pull request #{number}", f"origin/{branch}")
        git(self.work, "push", "-q", "origin", "main")
        merged = self.branch_sha("main")
        git(self.bare, "update-ref", f"refs/pull/{number}/merge", merged)
        if number in self.github.fake.pulls:
            self.github.fake.merge(number)  # GitHub's side of the merge (auto-merge or a person)
        event = {
            "action": "closed",
            "number": number,
            "pull_request": {
                "number": number,
                "merged": True,
                "merge_commit_sha": merged,
                "labels": [{"name": name} for name in labels],
                "head": {"ref": branch, "sha": self.branch_sha(branch)},
                "base": {"ref": "main", "sha": merged},
            },
        }
        return self.act("pull_request", "promote-on-merge.yml", event, checkout="main")

    # ------------------------------------------------------------------ probes
    def branch_sha(self, branch: str) -> str:
        return git(self.bare, "rev-parse", f"refs/heads/{branch}")

    def branch_files(self, ref: str) -> list[str]:
        return git(self.bare, "ls-tree", "-r", "--name-only", ref).splitlines()

    def s3_keys(self) -> set[str]:
        import boto3

        s3 = boto3.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}


FIGURES_ENV = "TRAINGATE_ENGINE_FIGURES"


def record_figures(world: World, run: ActRun) -> None:
    """bench/bench_engine.py sets TRAINGATE_ENGINE_FIGURES: append this run's figures (JSON line)."""
    target = os.environ.get(FIGURES_ENV)
    if not target:
        return
    jobs: dict[str, Any] = {}
    for job in run.jobs.values():
        if not job.result:
            continue
        main = {k[5:]: v for k, v in job.timings.items() if k.startswith("Main ")}
        command = next((v for k, v in main.items() if k.startswith("traingate ")), 0.0)
        jobs[job.leaf] = {
            "wall_seconds": round(job.seconds, 2),
            "install_seconds": round(main.get("Install traingate", 0.0), 2),
            "command_seconds": round(command, 2),
            "steps": {k: round(v, 2) for k, v in job.timings.items()},
        }
    train_seconds = 0.0
    try:
        report = json.loads(run.artifact("traingate-train-reports")["train-report.json"])
        train_seconds = float(report["duration_seconds"])
    except (AssertionError, KeyError):
        pass
    figures = {
        "act_wall_seconds": round(run.wall_seconds, 2),
        "jobs": jobs,
        "train_command_seconds": round(train_seconds, 2),
        "github_requests": len(world.github.fake.log),
        "github_by_route": sorted(f"{m} {p}" for m, p in world.github.fake.log),
        "mlflow_requests": len(world.proxy.requests),
    }
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(figures) + "\n")


def explain(run: ActRun, world: World | None = None) -> str:
    """Assertion context: job results, the GitHub fake's state and the end of act's log."""
    extra = ""
    if world is not None:
        from tests.engine.github_http import summary

        extra = json.dumps(summary(world.github.fake), indent=1)[:4000]
    return f"act exit {run.returncode}; results {run.results}\n{extra}\n{run.tail()}"


@pytest.fixture
def world(
    engine: Engine,
    e2e_seed: Seed,  # noqa: F811
    aws_env: str,
    mlflow_server: MlflowServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[World]:
    import re

    instance_id = seed_aws(e2e_seed)

    bare = tmp_path / "remote.git"
    shutil.copytree(e2e_seed.bare, bare)
    work = tmp_path / "dev"
    git(tmp_path, "clone", "-q", str(bare), str(work))
    # act reads the repository from origin; pushes from this clone still land in the bare one.
    git(work, "remote", "set-url", "origin", f"https://github.com/{GH_REPO}")
    git(work, "remote", "set-url", "--push", "origin", str(bare))
    (engine.home / ".gitconfig").write_text("")
    engine.point_github_at(GH_REPO, bare)

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60]
    names = {"experiment": f"engine-{slug}", "model": f"engine-{slug}"}
    github = GitHubServer(bare, GH_REPO).start()
    proxy = FaultProxy(mlflow_server.url).start()
    w = World(engine, e2e_seed, bare, work, tmp_path, github, mlflow_server, proxy, instance_id, names)
    try:
        w.configure()
        yield w
    finally:
        github.stop()
        proxy.stop()
