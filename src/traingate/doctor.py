"""`traingate doctor`: check, before a pipeline runs, what would make it fail half-way.

Every check is bounded in time (a dead tracking server or S3 endpoint answers "unreachable"
within `timeout` seconds, never MLflow's or botocore's multi-minute retry budgets) and says what
to fix. A check that the configuration does not need (AWS credentials with the local backend
and a folder remote) is reported as skipped, not as a failure. Nothing is written except a probe
file in a folder remote, which is removed again.

Exit 1 when a required check fails; warnings (no GitHub token outside Actions, data root not
created yet) keep exit 0 because the pipeline still runs, with the consequence stated.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.errors import TraingateError
from traingate.gha import ActionsContext
from traingate.locality import is_runner_local

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.result import StepResult

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


class DoctorError(TraingateError):
    title = "traingate doctor found problems"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.status == FAIL


# An HTTP GET for the health check: (url, timeout) -> status code; raises OSError when the
# server cannot be reached. Injectable so a test can count calls; the default is urllib.
HttpGet = Callable[[str, float], int]


def _urllib_get(url: str, timeout: float) -> int:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers={"User-Agent": "traingate-doctor"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)
    except urllib.error.URLError as err:
        reason = err.reason
        raise OSError(str(reason)) from err


# ---------------------------------------------------------------------------------- checks
def check_config(cfg: Config) -> Check:
    where = str(cfg.source) if cfg.source else f"no traingate.yml in {cfg.base_dir}: embedded defaults"
    workdir = cfg.path(cfg.train.workdir)
    if not workdir.is_dir():
        return Check(
            "config",
            FAIL,
            f"{where}; train.workdir {workdir} does not exist",
            f"set train.workdir to the folder that holds `{cfg.train.command}`",
        )
    return Check(
        "config",
        OK,
        f"{where}; project {cfg.project!r}, infra {cfg.infra.backend.value}, store {cfg.store.kind.value}",
    )


def check_train_command(cfg: Config, env: Mapping[str, str]) -> Check:
    """The program and the script of train.command exist (on the runner): a typo here would
    otherwise surface only after the instance was started and the data pulled."""
    import shlex
    import shutil

    if cfg.train.where.value != "runner":
        return Check("train command", SKIP, f"runs on the instance: {cfg.train.command}")
    workdir = cfg.path(cfg.train.workdir)
    try:
        argv = shlex.split(cfg.train.command)
    except ValueError as err:
        return Check("train command", FAIL, f"cannot parse {cfg.train.command!r}: {err}", "fix the quoting")
    if not argv:
        return Check(
            "train command", FAIL, "train.command is empty", "set train.command, e.g. python train.py"
        )
    program = argv[0]
    local = workdir / program
    found = (
        shutil.which(program, path=env.get("PATH"))
        if "/" not in program
        else (program if local.exists() else None)
    )
    if found is None:
        return Check(
            "train command",
            FAIL,
            f"{program!r} is not on PATH (from {workdir})",
            "install it, activate the environment that has it, or use train.setup to install it",
        )
    scripts = [a for a in argv[1:] if a.endswith((".py", ".sh", ".R", ".jl")) and not a.startswith("-")]
    missing = [a for a in scripts if not (workdir / a).exists() and not Path(a).is_absolute()]
    if missing:
        return Check(
            "train command",
            FAIL,
            f"{missing[0]} not found in {workdir}",
            "fix train.command or train.workdir (relative to traingate.yml)",
        )
    return Check("train command", OK, f"{cfg.train.command} (program: {found})")


def _aws_needed(cfg: Config) -> list[str]:
    reasons = []
    if cfg.infra.backend.value in ("ec2", "launch"):
        reasons.append(f"infra.backend: {cfg.infra.backend.value}")
    if cfg.store.kind.value == "dvc" and cfg.store_remote.startswith("s3://"):
        reasons.append("store.remote on S3")
    if cfg.infra.lease_table:
        reasons.append("infra.lease_table")
    if cfg.infra.s3_prefix:
        reasons.append("infra.s3_prefix")
    return reasons


def check_aws_credentials(cfg: Config, env: Mapping[str, str], actions: ActionsContext) -> Check:
    needed = _aws_needed(cfg)
    if not needed:
        return Check("AWS credentials", SKIP, "not needed (local infra backend, no S3 remote)")
    why = ", ".join(needed)
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        source = "environment variables" + (
            " (temporary: session token)" if env.get("AWS_SESSION_TOKEN") else ""
        )
        return Check("AWS credentials", OK, f"{source}; needed for {why}")
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
        return Check(
            "AWS credentials", OK, f"web identity (OIDC) for role {env['AWS_ROLE_ARN']}; needed for {why}"
        )
    fix = (
        "add `aws-actions/configure-aws-credentials` with `role-to-assume` before this step "
        "(the job needs `permissions: id-token: write`)"
        if actions.in_actions
        else "export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run `aws configure`"
    )
    try:
        import botocore.session
    except ImportError:
        return Check(
            "AWS credentials",
            FAIL,
            f"boto3 is not installed; needed for {why}",
            "install the AWS extra: pip install 'traingate[aws]'",
        )
    session = botocore.session.get_session()
    if env.get("AWS_PROFILE"):
        session.set_config_variable("profile", env["AWS_PROFILE"])
    # IMDS answers in milliseconds on EC2 and not at all elsewhere: one short attempt.
    session.set_config_variable("metadata_service_timeout", 1)
    session.set_config_variable("metadata_service_num_attempts", 1)
    try:
        creds = session.get_credentials()
    except Exception as err:
        return Check("AWS credentials", FAIL, f"cannot resolve credentials: {err}; needed for {why}", fix)
    if creds is None:
        return Check(
            "AWS credentials",
            FAIL,
            f"none found (environment, profile, OIDC, instance role); needed for {why}",
            fix,
        )
    method = getattr(creds, "method", "") or "credential chain"
    return Check("AWS credentials", OK, f"{method}; needed for {why}")


def check_github(cfg: Config, env: Mapping[str, str], actions: ActionsContext) -> Check:
    # The token is a credential: read from the environment here, where it is checked.
    token = env.get("GITHUB_TOKEN", "")
    repo = actions.repository
    if token and repo:
        return Check("GitHub token", OK, f"GITHUB_TOKEN set; repository {repo}")
    missing = " and ".join(n for n, v in (("GITHUB_TOKEN", token), ("GITHUB_REPOSITORY", repo)) if not v)
    if actions.in_actions:
        return Check(
            "GitHub token",
            FAIL,
            f"{missing} not set: `traingate pr create` cannot open the pull request",
            "pass `GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}` in the step's env (the job needs "
            "`permissions: pull-requests: write, contents: write, statuses: write`)",
        )
    return Check(
        "GitHub token",
        WARN,
        f"{missing} not set: the PR body is rendered to {cfg.path(cfg.pr.render_to)} instead of being sent",
        "export GITHUB_TOKEN and GITHUB_REPOSITORY=owner/name to open real pull requests",
    )


def check_tracking(
    cfg: Config,
    timeout: float,
    http_get: HttpGet,
    env: Mapping[str, str] | None = None,
    actions: ActionsContext | None = None,
) -> Check:
    """The store answers; and, for a verdict, it outlives the job (issue #12: a runner's SQLite
    file is empty in every job, so every candidate "beat" no champion and was promoted)."""
    check = _check_tracking_reachable(cfg, timeout, http_get)
    from traingate.tracking.durable import in_ci, local_store_kind

    kind = local_store_kind(cfg.tracking.uri)
    if kind is None or check.failed:
        return check
    detail = f"{check.detail}: {kind}, on this machine only"
    fix = (
        "set tracking.uri to an MLflow server that outlives the job (http(s)://... or databricks); "
        "`traingate gate`, `train --gate` and `run` refuse a local store in GitHub Actions"
    )
    if (actions is not None and actions.in_actions) or in_ci(dict(os.environ) if env is None else env):
        return Check("tracking", FAIL, detail + "; a CI machine loses it with the job", fix)
    return Check("tracking", WARN, detail + "; fine for local runs, not for GitHub Actions", fix)


def _check_tracking_reachable(cfg: Config, timeout: float, http_get: HttpGet) -> Check:
    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        if db.exists():
            import sqlite3

            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=timeout) as conn:
                    conn.execute("select count(*) from sqlite_master").fetchone()
            except sqlite3.Error as err:
                return Check(
                    "tracking",
                    FAIL,
                    f"{db} is not a readable SQLite database: {err}",
                    "move the file away (MLflow creates a new one) or point tracking.uri elsewhere",
                )
            return Check("tracking", OK, f"MLflow on SQLite {db}")
        parent = _existing_parent(db.parent)
        if not parent.is_dir() or not os.access(parent, os.W_OK):
            return Check(
                "tracking",
                FAIL,
                f"cannot create {db}: {parent} is " + ("not writable" if parent.is_dir() else "a file"),
                "set tracking.uri to a writable path, e.g. sqlite:///.traingate/mlflow.db",
            )
        return Check("tracking", OK, f"MLflow on SQLite {db} (created on first run)")
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        started = time.perf_counter()
        try:
            status = http_get(url, timeout)
        except (OSError, ValueError) as err:
            return Check(
                "tracking",
                FAIL,
                f"{url} unreachable after {time.perf_counter() - started:.1f}s: {err}",
                "start the MLflow server (`traingate infra start` for the shared instance), or fix "
                "tracking.uri; check the security group allows this runner",
            )
        if status != 200:
            return Check(
                "tracking",
                FAIL,
                f"{url} answered HTTP {status}",
                "is this an MLflow server? check tracking.uri and the server's log",
            )
        return Check("tracking", OK, f"{url} answered 200 in {time.perf_counter() - started:.2f}s")
    return Check("tracking", WARN, f"cannot check tracking.uri {uri!r} (not sqlite or http)", "")


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_folder_remote(folder: Path) -> Check:
    if not folder.exists():
        parent = _existing_parent(folder)
        if not parent.is_dir():
            return Check(
                "DVC remote",
                FAIL,
                f"{folder} cannot be created: {parent} is a file",
                "set store.remote to a folder path",
            )
        if not os.access(parent, os.W_OK):
            return Check(
                "DVC remote",
                FAIL,
                f"{folder} does not exist and {parent} is not writable",
                "set store.remote to a writable folder",
            )
        return Check("DVC remote", OK, f"folder {folder} (created on first merge)")
    if not folder.is_dir():
        return Check("DVC remote", FAIL, f"{folder} is a file, not a folder", "set store.remote to a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".traingate-doctor-")
        os.close(fd)
        Path(probe).unlink()
    except OSError as err:
        return Check("DVC remote", FAIL, f"cannot write to {folder}: {err}", "fix the folder's permissions")
    return Check("DVC remote", OK, f"folder {folder} is writable")


def _check_s3_remote(cfg: Config, url: str, timeout: float, env: Mapping[str, str]) -> Check:
    try:
        import boto3
        from botocore.config import Config as BotoConfig
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
    except ImportError:
        return Check("DVC remote", FAIL, f"{url}: boto3 is not installed", "pip install 'traingate[aws]'")
    bucket = url[len("s3://") :].split("/", 1)[0]
    endpoint = cfg.store.endpoint_url or env.get("AWS_ENDPOINT_URL") or None
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=cfg.store.region or cfg.infra.region or None,
        config=BotoConfig(
            connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 1, "mode": "standard"}
        ),
    )
    where = f"{url}" + (f" at {endpoint}" if endpoint else "")
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        return Check("DVC remote", FAIL, f"{where}: no AWS credentials", "see the AWS credentials row")
    except ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return Check(
                "DVC remote",
                FAIL,
                f"{where}: bucket {bucket!r} does not exist",
                "create it, or fix store.remote",
            )
        if code in ("403", "AccessDenied"):
            return Check(
                "DVC remote",
                FAIL,
                f"{where}: access denied to bucket {bucket!r}",
                "grant the role s3:ListBucket, s3:GetObject and s3:PutObject on it",
            )
        return Check("DVC remote", FAIL, f"{where}: {code or err}", "check store.remote and the credentials")
    except BotoCoreError as err:
        return Check(
            "DVC remote", FAIL, f"{where} unreachable: {err}", "check store.endpoint_url / the network"
        )
    return Check("DVC remote", OK, f"bucket {bucket!r} reachable" + (f" at {endpoint}" if endpoint else ""))


def check_store(cfg: Config, timeout: float, env: Mapping[str, str], actions: ActionsContext) -> Check:
    if cfg.store.kind.value == "local":
        root = cfg.data_root
        if root.is_dir():
            return Check("DVC remote", SKIP, f"store.kind: local; dataset folder {root}")
        return Check(
            "DVC remote", WARN, f"store.kind: local; {root} does not exist yet", "run `traingate data merge`"
        )
    import importlib.util

    if importlib.util.find_spec("dvc") is None:
        return Check("DVC remote", FAIL, "dvc is not installed", "pip install 'traingate[data]'")
    url = cfg.store_remote
    if url.startswith("s3://"):
        return _check_s3_remote(cfg, url, timeout, env)
    if actions.in_actions and is_runner_local(url):
        return Check(
            "DVC remote",
            FAIL,
            f"store.remote {cfg.store.remote or '(empty)'} is {url} on the runner's disk, which "
            "GitHub Actions deletes when the job ends: `data merge` refuses it (exit 2)",
            "set store.remote to a bucket that outlives the job (s3://bucket/prefix; "
            "store.endpoint_url for MinIO)",
        )
    from traingate.data.store import dvc_remote_url

    url = dvc_remote_url(url)  # the folder the merge uses
    if "://" in url:
        return Check("DVC remote", WARN, f"cannot check remote {url!r} (not S3 or a folder)")
    return _check_folder_remote(Path(url))


def check_git(cfg: Config, actions: ActionsContext | None = None) -> Check:
    if cfg.store.kind.value != "dvc":
        return Check("git repository", SKIP, "not needed with store.kind: local")
    from traingate.errors import ConfigError, GitError
    from traingate.git import Git

    try:
        proc = Git(cfg.base_dir, author=None, timeout=10).run("rev-parse", "--show-toplevel", check=False)
    except GitError as err:
        return Check("git repository", FAIL, f"cannot run git: {err.message}", err.hint or "install git")
    if proc.returncode != 0:
        return Check(
            "git repository",
            WARN,
            f"{cfg.base_dir} is not in a git repository: `data merge` cannot commit the .dvc pointer",
            "run `git init` (or work in a clone of the repository)",
        )
    top = proc.stdout.strip()
    if actions is None or not actions.in_actions:
        # Outside Actions `data merge` commits the pointer as the user, not as the bot.
        try:
            who = Git(top, author=None).identity()
        except ConfigError as err:
            return Check(
                "git repository",
                FAIL,
                f"{top}: git has no user identity: `data merge` cannot commit the .dvc pointer",
                err.hint or "",
            )
        return Check("git repository", OK, f"{top}; commits as {who}")
    return Check("git repository", OK, top)


def check_infra(cfg: Config) -> Check:
    if cfg.infra.backend.value == "local":
        return Check("infra", OK, f"local backend; lease file under {cfg.path(cfg.infra.local_dir)}")
    if cfg.infra.backend.value == "launch":
        spec = cfg.infra.launch
        if not spec.template and not (spec.image_id and spec.instance_type):
            return Check(
                "infra",
                FAIL,
                "infra.backend is launch but infra.launch has no template (nor image_id and instance_type)",
                "set infra.launch.template, or infra.launch.image_id and infra.launch.instance_type",
            )
        what = spec.template or f"{spec.image_id} {spec.instance_type}"
        return Check("infra", OK, f"launch {what} ({spec.market.value}) in {cfg.infra.region}")
    selector = cfg.infra.instance
    if not selector.id and not selector.tags:
        return Check(
            "infra",
            FAIL,
            "infra.backend is ec2 but neither infra.instance.id nor infra.instance.tags is set",
            "set infra.instance.id (i-...) or infra.instance.tags (e.g. {Name: my-trainer})",
        )
    what = selector.id or ", ".join(f"{k}={v}" for k, v in selector.tags.items())
    return Check("infra", OK, f"ec2 instance {what} in {cfg.infra.region}")


# ---------------------------------------------------------------------------------- report
def render_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check'.ljust(width)}  status  detail"]
    for c in checks:
        lines.append(f"{c.name.ljust(width)}  {c.status.ljust(6)}  {c.detail}")
        if c.fix and c.status in (FAIL, WARN):
            lines.append(f"{''.ljust(width)}          fix: {c.fix}")
    return "\n".join(lines)


def render_markdown(checks: list[Check]) -> str:
    from traingate.report import escape_cell

    icon = {OK: "✅", WARN: "⚠️", FAIL: "❌", SKIP: "—"}
    rows = [
        f"| {escape_cell(c.name)} | {icon[c.status]} {c.status} | {escape_cell(c.detail)} "
        f"| {escape_cell(c.fix)} |"
        for c in checks
    ]
    return (
        "### traingate doctor\n\n| check | status | detail | what to do |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n"
    )


def run_checks(
    cfg: Config,
    *,
    actions: ActionsContext | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    http_get: HttpGet = _urllib_get,
) -> list[Check]:
    """Every check, in the table's order. `actions` is the CLI's Actions context (default: read
    from `env`); `env` is still asked for PATH, the AWS credential chain and the GitHub token."""
    env = dict(os.environ) if env is None else env
    actions = actions if actions is not None else ActionsContext.from_env(env)
    limit = timeout if timeout is not None else min(cfg.tracking.request_timeout_seconds, 10.0)
    return [
        check_config(cfg),
        check_train_command(cfg, env),
        check_git(cfg, actions),
        check_infra(cfg),
        check_aws_credentials(cfg, env, actions),
        check_github(cfg, env, actions),
        check_tracking(cfg, limit, http_get, env, actions),
        check_store(cfg, limit, env, actions),
    ]


@dataclass(frozen=True)
class DoctorResult:
    """The doctor's typed value: every check; `ok` when none failed (warnings keep exit 0)."""

    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)

    @property
    def warned(self) -> list[Check]:
        return [c for c in self.checks if c.status == WARN]

    def outputs(self) -> dict[str, Any]:
        return {"ok": self.ok}

    def to_json(self) -> dict[str, Any]:
        return {"checks": [c.__dict__ for c in self.checks]}


def doctor_step(
    cfg: Config,
    *,
    actions: ActionsContext | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    http_get: HttpGet = _urllib_get,
) -> StepResult[DoctorResult]:
    from traingate.result import StepResult

    checks = run_checks(cfg, actions=actions, env=env, timeout=timeout, http_get=http_get)
    result = DoctorResult(tuple(checks))
    table = render_table(checks)
    failed = [c for c in checks if c.failed]
    if failed:
        names = ", ".join(c.name for c in failed)
        raise DoctorError(
            f"{len(failed)} check(s) failed ({names}):\n{table}",
            hint="fix the rows marked FAIL (each says how), then run `traingate doctor` again",
            summary=render_markdown(checks),
            outputs=result.outputs(),
        )
    warned = result.warned
    return StepResult(
        outputs=result.outputs(),
        summary=render_markdown(checks),
        message=table
        + ("\n\nall required checks passed" + (f" ({len(warned)} warning(s))" if warned else "")),
        data=result.to_json(),
        value=result,
    )


__all__ = ["Check", "DoctorError", "DoctorResult", "doctor_step", "render_table", "run_checks"]
