"""`infra.backend: sagemaker`: every run is one SageMaker training job.

The job is the machine. `infra start` has nothing to launch: it checks what a job will need and
that it can see (the execution role exists and SageMaker may assume it, the image exists in ECR,
the account's quota for the instance type), so a wrong key fails the start step, not ten
minutes into `train`. `train` (`train.where: instance`) gets `SageMakerChannel` as its run
channel: it packs the code at the commit (infra/remote.py's `pack_code`) to `code_s3`, creates
the job with the same `train.command`, polls it with capped backoff, and hands the runner the
metrics file, the metrics log and the artifacts from the job's output archive, exactly what the
local and SSM channels hand it. `infra stop` stops every job of the run that is still running
(StopTrainingJob), so a cancelled workflow never leaves a job billing; `infra reap` stops jobs
whose lease (tags on the job, renewed while `train` polls) expired.

Inside the job (a bring-your-own image; SageMaker's `/opt/ml` layout):

    /opt/ml/input/data/code/code.tar.gz   the code at the commit (input channel `code`)
    /opt/ml/input/data/code/run.sh        the entry script (ContainerEntrypoint: bash run.sh)
    /opt/ml/code/                         the code, unpacked; the command runs here
    /opt/ml/checkpoints/                  TRAINGATE_CHECKPOINT_DIR, synced to checkpoint_s3
    /opt/ml/model/                        metrics file, metrics log, artifacts -> model.tar.gz
    /opt/ml/output/failure                `traingate exit N` + the log tail -> FailureReason

The dataset is pulled by the job (`dvc pull` of the pointers at the commit, with the execution
role), not passed as an input channel: the DVC remote is content-addressed, so a channel would
hand the job the cache, not the dataset, and the version trained is exactly the commit's pointer.
The environment (MLflow run id, tracking URI) travels in run.sh on S3, not in the job's
Environment, which anyone with sagemaker:DescribeTrainingJob can read.
"""

from __future__ import annotations

import re
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Protocol

from traingate.config import Config
from traingate.errors import ConfigError, InfraError, TrainError
from traingate.gha import ActionsContext
from traingate.infra.backend import Acquired, Machine, Readiness, run_prefix
from traingate.infra.base import WALL, Runtime, backoff_delays
from traingate.infra.lease import TAG_PREFIX, LeaseState, Release, TagLease, _claim_name

if TYPE_CHECKING:
    from traingate.contracts import LogSink, TrainJob, TrainOutcome
    from traingate.infra.lease import Lease

TAG_BACKEND = "traingate:backend"
TAG_PROJECT = "traingate:project"
TAG_HOLDER = "traingate:holder"
#: Job states that bill (or are about to stop billing).
ACTIVE = ("InProgress", "Stopping")
TERMINAL = ("Completed", "Failed", "Stopped")
#: The slot a run's jobs live in before (and after) there is a job: `start`'s machine.
SLOT_PREFIX = "sagemaker:"
CODE_DIR = "/opt/ml/input/data/code"
EXIT_MARK = re.compile(r"traingate exit (-?\d+)")


@dataclass
class JobInfo:
    name: str
    status: str
    secondary: str = ""
    failure_reason: str = ""
    model_s3: str = ""
    instance_type: str = ""
    started_at: float | None = None
    tags: dict[str, str] = field(default_factory=dict)
    billable_seconds: int | None = None


class Jobs(Protocol):
    """The SageMaker (and IAM/ECR) calls this backend makes; the boto3 adapter is below, tests
    run it on moto's server with a fake that really executes the job."""

    def create(self, request: dict[str, Any]) -> None: ...

    def describe(self, name: str) -> JobInfo: ...

    def stop(self, name: str) -> None:
        """StopTrainingJob; a job no longer running is not an error."""
        ...

    def find(self, tags: dict[str, str], statuses: tuple[str, ...]) -> list[JobInfo]:
        """Jobs with all these tags (Search), in these statuses, tags filled in."""
        ...

    def tags(self, name: str) -> dict[str, str]: ...

    def set_tags(self, name: str, tags: dict[str, str]) -> None: ...

    def delete_tags(self, name: str, keys: list[str]) -> None: ...

    def log_lines(self, name: str, token: str) -> tuple[list[str], str]:
        """New lines of the job's CloudWatch log after `token`, and the next token."""
        ...

    def check_role(self, role_arn: str) -> str:
        """'' when the role exists and trusts sagemaker.amazonaws.com, else what is wrong."""
        ...

    def check_image(self, image: str) -> str:
        """'' when the ECR image exists, `unchecked: ...` when it cannot be seen, else the problem."""
        ...

    def quota(self, instance_type: str, spot: bool) -> float | None:
        """The account's quota of this type for training jobs; None when it cannot be read."""
        ...


def _err(err: Exception, action: str, resource: str) -> Exception:
    from traingate.infra.aws import translate_client_error

    return translate_client_error(err, action=action, resource=resource)


def _code(err: Exception) -> str:
    return str(getattr(err, "response", {}).get("Error", {}).get("Code", ""))


class Boto3Jobs:
    """`Jobs` over boto3's sagemaker, iam, ecr, service-quotas and logs clients."""

    LOG_GROUP = "/aws/sagemaker/TrainingJobs"

    def __init__(self, region: str) -> None:
        from traingate.infra.aws import boto_client

        self.region = region
        self.sm = boto_client("sagemaker", region)
        self._client = boto_client

    def create(self, request: dict[str, Any]) -> None:
        try:
            self.sm.create_training_job(**request)
        except Exception as err:
            raise _err(err, "sagemaker:CreateTrainingJob", request["TrainingJobName"]) from err

    @staticmethod
    def _info(d: dict[str, Any], tags: dict[str, str] | None = None) -> JobInfo:
        start = d.get("TrainingStartTime")
        return JobInfo(
            name=d["TrainingJobName"],
            status=d.get("TrainingJobStatus", ""),
            secondary=d.get("SecondaryStatus", "") or "",
            failure_reason=d.get("FailureReason", "") or "",
            model_s3=(d.get("ModelArtifacts") or {}).get("S3ModelArtifacts", ""),
            instance_type=(d.get("ResourceConfig") or {}).get("InstanceType", ""),
            started_at=start.timestamp() if start else None,
            tags=tags if tags is not None else {t["Key"]: t["Value"] for t in d.get("Tags", [])},
            billable_seconds=d.get("BillableTimeInSeconds"),
        )

    def describe(self, name: str) -> JobInfo:
        try:
            return self._info(self.sm.describe_training_job(TrainingJobName=name), {})
        except Exception as err:
            raise _err(err, "sagemaker:DescribeTrainingJob", name) from err

    def stop(self, name: str) -> None:
        try:
            self.sm.stop_training_job(TrainingJobName=name)
        except Exception as err:
            if _code(err) == "ValidationException" and self.describe(name).status not in ACTIVE:
                return  # already over: idempotent
            raise _err(err, "sagemaker:StopTrainingJob", name) from err

    def find(self, tags: dict[str, str], statuses: tuple[str, ...]) -> list[JobInfo]:
        # One Search per status, filtered by the service (a project's finished jobs pile up over
        # months; reading them all on every stop would grow without bound), and again here.
        tag_filters = [{"Name": f"Tags.{k}", "Operator": "Equals", "Value": v} for k, v in tags.items()]
        found: dict[str, JobInfo] = {}
        for status in statuses:
            state = {"Name": "TrainingJobStatus", "Operator": "Equals", "Value": status}
            kwargs: dict[str, Any] = {
                "Resource": "TrainingJob",
                "SearchExpression": {"Filters": [*tag_filters, state]},
            }
            try:
                while True:
                    page = self.sm.search(**kwargs)
                    for item in page.get("Results", []):
                        info = self._info(item["TrainingJob"])
                        if info.status in statuses:
                            found.setdefault(info.name, info)
                    if not page.get("NextToken"):
                        break
                    kwargs["NextToken"] = page["NextToken"]
            except Exception as err:
                raise _err(err, "sagemaker:Search", "training jobs") from err
        return list(found.values())

    def _arn(self, name: str) -> str:
        try:
            return str(self.sm.describe_training_job(TrainingJobName=name)["TrainingJobArn"])
        except Exception as err:
            raise _err(err, "sagemaker:DescribeTrainingJob", name) from err

    def tags(self, name: str) -> dict[str, str]:
        try:
            out = self.sm.list_tags(ResourceArn=self._arn(name))
        except Exception as err:
            raise _err(err, "sagemaker:ListTags", name) from err
        return {t["Key"]: t["Value"] for t in out.get("Tags", [])}

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        try:
            self.sm.add_tags(
                ResourceArn=self._arn(name), Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
            )
        except Exception as err:
            raise _err(err, "sagemaker:AddTags", name) from err

    def delete_tags(self, name: str, keys: list[str]) -> None:
        try:
            self.sm.delete_tags(ResourceArn=self._arn(name), TagKeys=keys)
        except Exception as err:
            raise _err(err, "sagemaker:DeleteTags", name) from err

    def log_lines(self, name: str, token: str) -> tuple[list[str], str]:
        # Best effort: the job's log is a convenience while it runs; FailureReason carries the tail.
        try:
            logs = self._client("logs", self.region)
            streams = logs.describe_log_streams(logGroupName=self.LOG_GROUP, logStreamNamePrefix=name + "/")
            names = [s["logStreamName"] for s in streams.get("logStreams", [])]
            if not names:
                return [], token
            kwargs: dict[str, Any] = {"logGroupName": self.LOG_GROUP, "logStreamName": names[0]}
            kwargs.update({"nextToken": token} if token else {"startFromHead": True})
            out = logs.get_log_events(**kwargs)
            return [e["message"] for e in out.get("events", [])], out.get("nextForwardToken", token)
        except Exception:
            return [], token

    def check_role(self, role_arn: str) -> str:
        import json
        from urllib.parse import unquote

        name = role_arn.rsplit("/", 1)[-1]
        try:
            role = self._client("iam", self.region).get_role(RoleName=name)["Role"]
        except Exception as err:
            if _code(err) == "NoSuchEntity":
                return f"the role {name} does not exist"
            return f"unchecked: iam:GetRole failed ({_code(err) or err})"
        if role.get("Arn") and role["Arn"] != role_arn:
            return f"the role {name} has the ARN {role['Arn']}, not {role_arn}"
        doc = role.get("AssumeRolePolicyDocument") or {}
        if isinstance(doc, str):
            try:
                doc = json.loads(unquote(doc))
            except ValueError:
                return ""
        if "sagemaker.amazonaws.com" not in json.dumps(doc):
            return f"the role {name} does not trust sagemaker.amazonaws.com (its trust policy)"
        return ""

    def check_image(self, image: str) -> str:
        m = re.match(r"^(\d{12})\.dkr\.ecr\.([a-z0-9-]+)\.amazonaws\.com/([^:@]+)(?:[:@](.+))?$", image)
        if not m:
            return f"unchecked: {image} is not an ECR image URI"
        registry, region, repo, ref = m.groups()
        ref = ref or "latest"
        image_id = {"imageDigest": ref} if ref.startswith("sha256:") else {"imageTag": ref}
        try:
            self._client("ecr", region).describe_images(
                registryId=registry, repositoryName=repo, imageIds=[image_id]
            )
        except Exception as err:
            code = _code(err)
            if code in ("RepositoryNotFoundException", "ImageNotFoundException"):
                return f"{image}: {code}"
            return f"unchecked: ecr:DescribeImages failed ({code or err})"
        return ""

    def quota(self, instance_type: str, spot: bool) -> float | None:
        wanted = f"{instance_type} for {'spot ' if spot else ''}training job usage"
        try:
            client = self._client("service-quotas", self.region)
            kwargs: dict[str, Any] = {"ServiceCode": "sagemaker"}
            while True:
                page = client.list_service_quotas(**kwargs)
                for q in page.get("Quotas", []):
                    if q.get("QuotaName") == wanted:
                        return float(q["Value"])
                if not page.get("NextToken"):
                    return None
                kwargs["NextToken"] = page["NextToken"]
        except Exception:
            return None


# --------------------------------------------------------------------------------- the lease
class _TagView:
    """What TagLease needs of EC2 (describe().tags, set_tags, delete_tags), over a job's tags."""

    def __init__(self, jobs: Jobs) -> None:
        self.jobs = jobs

    def describe(self, name: str) -> Any:
        return SimpleNamespace(tags=self.jobs.tags(name))

    def set_tags(self, name: str, tags: dict[str, str]) -> None:
        self.jobs.set_tags(name, tags)

    def delete_tags(self, name: str, keys: list[str]) -> None:
        self.jobs.delete_tags(name, keys)


class RunLease:
    """The lease of a run's slot before it has a job: one holder, nobody to contend with (a job
    belongs to exactly one run), so it always grants and a release may always stop."""

    def read(self) -> LeaseState:
        return LeaseState()

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> LeaseState:
        return LeaseState(holders={holder: now + ttl_seconds})

    def release(self, holder: str, now: float, *, claim_stop: bool = True) -> Release:
        return Release([], claim_stop)

    def claim_stop(self, claimer: str, now: float, *, force: bool = False) -> bool:
        return True

    def clear_stop(self, claimer: str) -> None:
        return None


# ------------------------------------------------------------------------------- the backend
def _s3(url: str, key: str) -> tuple[str, str]:
    if not url.startswith("s3://") or len(url) <= 5:
        raise ConfigError(
            f"infra.sagemaker.{key} must be an s3://bucket/prefix URL, got {url!r}",
            hint=f"set infra.sagemaker.{key} (docs/infra.md, SageMaker training jobs)",
        )
    bucket, _, prefix = url[5:].partition("/")
    return bucket, prefix.strip("/")


class SageMakerBackend:
    persistent = False
    reap_states: tuple[str, ...] = ("running",)
    owns_unleased = True
    acquire_backoff = (1.0, 5.0)

    def __init__(
        self,
        cfg: Config,
        jobs: Jobs | None = None,
        *,
        actions: ActionsContext,
        runtime: Runtime = WALL,
    ) -> None:
        self.cfg = cfg
        self.spec = cfg.infra.sagemaker
        self._jobs = jobs
        self.actions = actions
        self.runtime = runtime

    def log(self, line: str) -> None:
        self.runtime.log(line)

    @property
    def jobs(self) -> Jobs:
        if self._jobs is None:
            from traingate.infra import aws

            found = aws._override("sagemaker")
            self._jobs = found if found is not None else Boto3Jobs(self.cfg.infra.region)
        return self._jobs

    def _scope(self) -> dict[str, str]:
        return {TAG_BACKEND: "sagemaker", TAG_PROJECT: self.cfg.project[:256]}

    def _check_config(self) -> None:
        missing = [k for k in ("role_arn", "image", "code_s3") if not getattr(self.spec, k)]
        if missing:
            raise ConfigError(
                f"infra.backend is sagemaker but infra.sagemaker.{', '.join(missing)} is empty",
                hint="set them in traingate.yml (docs/infra.md, SageMaker training jobs)",
            )
        _s3(self.spec.code_s3, "code_s3")
        if self.spec.checkpoint_s3:
            _s3(self.spec.checkpoint_s3, "checkpoint_s3")
        if self.spec.spot and 0 < self.spec.max_wait_minutes < self.cfg.train.timeout_minutes:
            raise ConfigError(
                f"infra.sagemaker.max_wait_minutes {self.spec.max_wait_minutes:g} is below "
                f"train.timeout_minutes {self.cfg.train.timeout_minutes:g}",
                hint="SageMaker requires MaxWaitTimeInSeconds >= MaxRuntimeInSeconds: raise max_wait_minutes",
            )

    def slot(self, holder: str, state: str = "running") -> Machine:
        return Machine(
            id=SLOT_PREFIX + self.spec.instance_type,
            state=state,
            instance_type=self.spec.instance_type,
            market="spot" if self.spec.spot else "on-demand",
            hourly_usd=self.cfg.infra.hourly_cost_usd or None,
        )

    def _job_machine(self, info: JobInfo) -> Machine:
        state = {"InProgress": "running", "Stopping": "stopping"}.get(info.status, "terminated")
        return Machine(
            id=info.name,
            state=state,
            instance_type=info.instance_type or self.spec.instance_type,
            started_at=info.started_at,
            market="spot" if self.spec.spot else "on-demand",
            hourly_usd=self.cfg.infra.hourly_cost_usd or None,
        )

    def acquire(self, holder: str, ttl_seconds: float, now: float) -> Acquired:
        """Nothing to launch: check what the job will need, so a wrong key fails here."""
        self._check_config()
        problems: list[str] = []
        warnings: list[str] = []
        role = self.jobs.check_role(self.spec.role_arn)
        image = self.jobs.check_image(self.spec.image)
        for what, found in (("role", role), ("image", image)):
            if found.startswith("unchecked"):
                warnings.append(f"infra.sagemaker.{what} {found}")
            elif found:
                problems.append(found)
        quota = self.jobs.quota(self.spec.instance_type, self.spec.spot)
        if quota is None:
            warnings.append(
                f"quota for {self.spec.instance_type} training jobs unchecked (service-quotas not readable)"
            )
        elif quota < self.spec.instance_count:
            problems.append(
                f"the account's quota for {self.spec.instance_type} "
                f"{'spot ' if self.spec.spot else ''}training jobs is {quota:g}, the job needs "
                f"{self.spec.instance_count}"
            )
        if problems:
            raise InfraError(
                "infra.sagemaker cannot run a training job: " + "; ".join(problems),
                hint="fix infra.sagemaker.role_arn / image, or request a quota increase in Service Quotas",
            )
        for text in warnings:
            self.log(text)
        quota_text = "unchecked" if quota is None else f"{quota:g}"
        rows = [
            f"| sagemaker | {self.spec.instance_count} x {self.spec.instance_type}"
            f"{' (managed spot)' if self.spec.spot else ''} |",
            f"| checks | role {'ok' if not role else 'unchecked'}, "
            f"image {'ok' if not image else 'unchecked'}, quota {quota_text} |",
        ]
        return Acquired(self.slot(holder), warnings=warnings, summary_rows=rows)

    def lease(self, machine: Machine) -> Lease:
        if machine.id.startswith(SLOT_PREFIX):
            return RunLease()
        return TagLease(_TagView(self.jobs), machine.id)  # type: ignore[arg-type]

    def ready(self, machine: Machine) -> Readiness:
        return Readiness(machine, 0.0, 0, "role, image, quota (the job starts in `train`)")

    def run_channel(self, machine: Machine) -> None:
        # No shell to reach: `train` creates the job through job_channel().
        return None

    def job_channel(self) -> SageMakerChannel:
        return SageMakerChannel(self.cfg, self, runtime=self.runtime)

    def release(self, machine: Machine, *, wait: bool) -> Machine:
        """Stop the job (the slot: every job of this run still running). Idempotent."""
        names = [machine.id] if not machine.id.startswith(SLOT_PREFIX) else []
        for name in names:
            if self.jobs.describe(name).status == "InProgress":
                self.jobs.stop(name)
                self.log(f"stopped training job {name}")
        if not names:
            return self.slot("", "stopped")
        return self._job_machine(self.jobs.describe(names[0]))

    def _active(self, tags: dict[str, str] | None = None) -> list[Machine]:
        found = self.jobs.find({**self._scope(), **(tags or {})}, ACTIVE)
        return [self._job_machine(i) for i in found]

    def locate(self, holder: str) -> list[Machine]:
        """The run's running jobs (a cancelled `train` leaves one); else none: nothing bills."""
        ours = self._active({TAG_HOLDER: holder[:256]})
        prefix = run_prefix(self.actions)
        if prefix:
            seen = {m.id for m in ours}
            for info in self.jobs.find(self._scope(), ACTIVE):
                if info.name not in seen and info.tags.get(TAG_HOLDER, "").startswith(prefix):
                    ours.append(self._job_machine(info))
        return ours

    def reap_candidates(self) -> list[Machine]:
        return self._active()


# ---------------------------------------------------------------------------- the run channel
def job_name(project: str, stamp: str) -> str:
    """63 characters of [a-zA-Z0-9-], unique per account and region (SageMaker's rule)."""
    base = re.sub(r"[^a-zA-Z0-9-]+", "-", project).strip("-")[:30] or "traingate"
    return f"{base}-{stamp}-{secrets.token_hex(3)}"[:63]


def entry_script(job: TrainJob, ref: str) -> str:
    """run.sh: unpack the code, run setup, `dvc pull` and the command (infra/remote.py's job
    script), then put the outputs in /opt/ml/model and, on failure, the exit code and log tail in
    /opt/ml/output/failure (SageMaker's FailureReason)."""
    from traingate.infra.remote import _job_script

    wanted = " ".join(shlex.quote(n) for n in [job.metrics_file, job.metrics_log, *job.artifacts] if n)
    ml = "${TRAINGATE_ML_ROOT:-/opt/ml}"
    return (
        "#!/bin/bash\nset -u\n"
        f'ml="{ml}"\n'
        'code="$ml/code"; mkdir -p "$code" "$ml/model" "$ml/output" "$ml/checkpoints"\n'
        'tar -xzf "$ml/input/data/code/code.tar.gz" -C "$code"\n'
        'export TRAINGATE_CHECKPOINT_DIR="$ml/checkpoints"\n'
        "cat > \"$ml/job.sh\" <<'TRAINGATE_JOB_EOF'\n"
        # SageMaker syncs /opt/ml/checkpoints itself (CheckpointConfig): no sync of our own.
        f"{_job_script(replace(job, checkpoint_url=''), ref)}TRAINGATE_JOB_EOF\n"
        'cd "$code"\n'
        'bash "$ml/job.sh" 2>&1 | tee "$ml/output/train.log"\n'
        "rc=${PIPESTATUS[0]}\n"
        f"for f in {wanted}; do\n"
        '  if [ -e "$f" ]; then mkdir -p "$ml/model/$(dirname "$f")" && cp -r "$f" "$ml/model/$f"; '
        'else echo "== traingate: not produced in the job: $f"; fi\n'
        "done\n"
        'if [ "$rc" != 0 ]; then\n'
        '  { echo "traingate exit $rc"; tail -c 800 "$ml/output/train.log"; } > "$ml/output/failure"\n'
        "fi\n"
        'exit "$rc"\n'
    )


@dataclass
class _Watched:
    """What following a job leaves for the outcome: its last description, the log tail, and
    whether we stopped it for running past the deadline."""

    info: JobInfo
    tail: list[str]
    killed: bool = False


class SageMakerChannel:
    """The run channel of `infra.backend: sagemaker`: an Executor whose machine is a training job."""

    def __init__(self, cfg: Config, backend: SageMakerBackend, *, runtime: Runtime = WALL) -> None:
        self.cfg = cfg
        self.backend = backend
        self.runtime = runtime
        self.outputs_root = cfg.workspace_dir / "remote-runs"
        self.grace_seconds = 300.0

    @property
    def jobs(self) -> Jobs:
        return self.backend.jobs

    def _s3(self) -> Any:
        from traingate.infra.aws import boto_client

        return boto_client("s3", self.cfg.infra.region)

    def _holder(self) -> str:
        from traingate.infra.stage import resolve_holder

        return resolve_holder(None, self.cfg, actions=self.backend.actions, for_stop=True)

    def _stopping(self, job: TrainJob) -> dict[str, int]:
        spec = self.cfg.infra.sagemaker
        runtime = max(1, int(job.timeout_seconds))
        stopping: dict[str, int] = {"MaxRuntimeInSeconds": runtime}
        if spec.spot:
            wait = int(spec.max_wait_minutes * 60) if spec.max_wait_minutes else runtime * 2
            stopping["MaxWaitTimeInSeconds"] = max(wait, runtime)
        return stopping

    def _tags(self, holder: str) -> dict[str, str]:
        """Scope, holder and the lease (TagLease's format) from the job's first moment."""
        expiry = self.runtime.clock() + self.cfg.infra.ttl_minutes * 60
        return {
            **self.backend._scope(),
            TAG_HOLDER: holder[:256],
            TAG_PREFIX + _claim_name(holder): f"{expiry:.0f} {holder}"[:256],
        }

    def request(self, job: TrainJob, name: str, code_url: str, holder: str) -> dict[str, Any]:
        spec = self.cfg.infra.sagemaker
        bucket, prefix = _s3(spec.code_s3, "code_s3")
        code = {"S3DataType": "S3Prefix", "S3Uri": code_url, "S3DataDistributionType": "FullyReplicated"}
        req: dict[str, Any] = {
            "TrainingJobName": name,
            "RoleArn": spec.role_arn,
            "AlgorithmSpecification": {
                "TrainingImage": spec.image,
                "TrainingInputMode": "File",
                "ContainerEntrypoint": ["/bin/bash", f"{CODE_DIR}/run.sh"],
            },
            "InputDataConfig": [{"ChannelName": "code", "DataSource": {"S3DataSource": code}}],
            "OutputDataConfig": {
                "S3OutputPath": f"s3://{bucket}/{'/'.join(p for p in (prefix, 'output') if p)}"
            },
            "ResourceConfig": {
                "InstanceType": spec.instance_type,
                "InstanceCount": spec.instance_count,
                "VolumeSizeInGB": 30,
            },
            "StoppingCondition": self._stopping(job),
            "EnableManagedSpotTraining": spec.spot,
            "Environment": {"TRAINGATE_RUN": name},
            "Tags": [{"Key": k, "Value": v} for k, v in self._tags(holder).items()],
        }
        if spec.checkpoint_s3:
            req["CheckpointConfig"] = {"S3Uri": spec.checkpoint_s3, "LocalPath": "/opt/ml/checkpoints"}
        return req

    def run(self, job: TrainJob, log: LogSink) -> TrainOutcome:
        from traingate.infra.remote import check_script_paths, pack_code

        self.backend._check_config()
        scripts = check_script_paths(job)
        started = self.runtime.clock()
        stamp = datetime.fromtimestamp(time.time(), UTC).strftime("%Y%m%d-%H%M%S")
        name = job_name(self.cfg.project, stamp)
        bucket, prefix = _s3(self.cfg.infra.sagemaker.code_s3, "code_s3")
        folder = "/".join(p for p in (prefix, name) if p)
        s3 = self._s3()
        with tempfile.TemporaryDirectory(prefix="traingate-ship-") as tmp:
            code = pack_code(job, scripts, Path(tmp), log)
            script = Path(tmp) / "run.sh"
            script.write_text(entry_script(job, name))
            log(
                f"shipping {code.source}: {code.files} files, sha256 {code.sha256[:12]} -> s3://{bucket}/{folder}/"
            )
            try:
                s3.upload_file(str(code.path), bucket, f"{folder}/code.tar.gz")
                s3.upload_file(str(script), bucket, f"{folder}/run.sh")
            except Exception as err:
                raise TrainError(
                    f"could not upload the code to s3://{bucket}/{folder}: {err}",
                    hint="check infra.sagemaker.code_s3 and s3:PutObject for the runner's role",
                ) from err
        holder = self._holder()
        self.jobs.create(self.request(job, name, f"s3://{bucket}/{folder}/", holder))
        log(
            f"training job {name} created ({self.cfg.infra.sagemaker.instance_type}); "
            f"re-attach with: traingate train --attach {name}"
        )
        return self._follow(name, job, log, started, holder)

    def attach(self, run_ref: str, job: TrainJob, log: LogSink) -> TrainOutcome:
        log(f"re-attaching to training job {run_ref}")
        return self._follow(run_ref, job, log, self.runtime.clock(), self._holder())

    def _follow(self, name: str, job: TrainJob, log: LogSink, started: float, holder: str) -> TrainOutcome:
        from traingate.contracts import TrainOutcome

        watched = self._watch(name, job, log, started, holder)
        exit_code = self._exit_code(name, watched, log)
        outputs_dir = self._collect(name, watched.info, log) if exit_code == 0 else self.outputs_root / name
        outputs_dir.mkdir(parents=True, exist_ok=True)
        if watched.info.billable_seconds is not None:
            log(f"training job {name}: {watched.info.billable_seconds} billable seconds")
        return TrainOutcome(
            exit_code=exit_code,
            log_tail="\n".join(watched.tail),
            outputs_dir=outputs_dir,
            duration_seconds=self.runtime.clock() - started,
            run_ref=name,
            killed=watched.killed,
        )

    def _budget(self, job: TrainJob) -> float:
        """How long the job may take: its runtime, or with managed spot the wait for capacity too."""
        spec = self.cfg.infra.sagemaker
        if not spec.spot:
            return job.timeout_seconds
        return max(job.timeout_seconds, (spec.max_wait_minutes * 60) or job.timeout_seconds * 2)

    def _watch(self, name: str, job: TrainJob, log: LogSink, started: float, holder: str) -> _Watched:
        """Poll the job (streaming its log, renewing its lease) until it ends or runs past the
        deadline, when we stop it."""
        deadline = started + self._budget(job) + self.grace_seconds
        delay = backoff_delays(2.0, max(self.cfg.infra.poll_cap_seconds, 1.0) * 6)
        renew_every = self.cfg.infra.ttl_minutes * 60 / 3
        last_renew = self.runtime.clock()
        token = ""
        tail: list[str] = []
        lease = self.backend.lease(Machine(id=name, state="running"))
        while True:
            info = self.jobs.describe(name)
            lines, token = self.jobs.log_lines(name, token)
            for line in lines:
                log(line)
            tail = (tail + lines)[-50:]
            if info.status in TERMINAL:
                return _Watched(info, tail)
            if self.runtime.clock() - last_renew >= renew_every:
                self._renew(lease, holder, log)
                last_renew = self.runtime.clock()
            if self.runtime.clock() > deadline:
                self.jobs.stop(name)
                log(f"== traingate: training job {name} exceeded train.timeout_minutes; stopped")
                return _Watched(self.jobs.describe(name), tail, killed=True)
            self.runtime.sleep(delay())

    def _renew(self, lease: Lease, holder: str, log: LogSink) -> None:
        """The lease `reap` reads lives in the job's tags: keep it while we follow the job."""
        try:
            lease.acquire(holder, self.cfg.infra.ttl_minutes * 60, self.runtime.clock())
        except InfraError as err:
            log(f"lease renewal failed (retried next poll): {err.message}")

    def _exit_code(self, name: str, watched: _Watched, log: LogSink) -> int:
        """The exit code the runner judges: the command's (from FailureReason), 124 for a job
        stopped at its time limit; a job stopped by someone else is an error."""
        info = watched.info
        if info.status == "Failed":
            found = EXIT_MARK.search(info.failure_reason)
            log(f"== traingate: training job {name} failed: {info.failure_reason}")
            watched.tail = [*watched.tail, f"FailureReason: {info.failure_reason}"][-50:]
            return int(found.group(1)) if found else 1
        if info.status == "Stopped" or watched.killed:
            if info.secondary in ("MaxRuntimeExceeded", "MaxWaitTimeExceeded") or watched.killed:
                watched.killed = True
                return 124
            raise TrainError(
                f"training job {name} was stopped ({info.secondary or 'Stopped'}) before it finished",
                hint="someone or `traingate infra stop` stopped it; re-run the training",
            )
        return 0

    def _collect(self, name: str, info: JobInfo, log: LogSink) -> Path:
        """Unpack model.tar.gz (the job's /opt/ml/model): the metrics file, log and artifacts."""
        import tarfile

        dest = self.outputs_root / name
        dest.mkdir(parents=True, exist_ok=True)
        url = info.model_s3
        if not url.startswith("s3://"):
            log(f"== traingate: training job {name} reported no model archive")
            return dest
        bucket, _, key = url[5:].partition("/")
        with tempfile.TemporaryDirectory(prefix="traingate-collect-") as tmp:
            local = Path(tmp) / "model.tar.gz"
            try:
                self._s3().download_file(bucket, key, str(local))
            except Exception as err:
                raise TrainError(
                    f"could not download the job's output archive {url}: {err}",
                    hint="check s3:GetObject on infra.sagemaker.code_s3 for the runner's role",
                ) from err
            with tarfile.open(local, "r:gz") as tar:
                tar.extractall(dest, filter="data")
        return dest
