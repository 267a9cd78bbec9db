"""The `traingate.yml` schema, its defaults and its error messages.

Defaults make the embedded default work with no file at all (local store, local infra, MLflow on
sqlite). Unknown keys and wrong values are exit-2 errors that name the key path and the allowed
values, because a typo that silently falls back to a default is how a gate ends up comparing
nothing.

Relative paths in the file are resolved against the file's folder (`Config.base_dir`), so
`traingate --config sub/traingate.yml` behaves the same from any working directory.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from traingate.errors import ConfigError

DEFAULT_CONFIG_NAME = "traingate.yml"
CONFIG_ENV = "TRAINGATE_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class StoreKind(StrEnum):
    dvc = "dvc"
    local = "local"


class InfraBackend(StrEnum):
    local = "local"
    ec2 = "ec2"
    launch = "launch"
    sagemaker = "sagemaker"


class LaunchMarket(StrEnum):
    on_demand = "on-demand"
    spot = "spot"
    spot_preferred = "spot-preferred"


class TrainWhere(StrEnum):
    runner = "runner"
    instance = "instance"


class ArtifactsPolicy(StrEnum):
    required = "required"
    best_effort = "best-effort"


class Direction(StrEnum):
    max = "max"
    min = "min"


class Require(StrEnum):
    all = "all"
    any = "any"


class PromoteMode(StrEnum):
    on_gate = "on-gate"
    on_merge = "on-merge"
    off = "off"


class MergeMethod(StrEnum):
    squash = "squash"
    merge = "merge"
    rebase = "rebase"
    off = "off"


class OnConflict(StrEnum):
    fail = "fail"
    # Not `replace`: a member of that name would shadow str.replace on every value.
    replace_ = "replace"


class DataConfig(_Strict):
    root: str = "data/training"
    images: str = "images"
    masks: str = "masks"
    size: tuple[int, int] | None = None
    mask_values: list[int] = Field(default_factory=lambda: [0, 255])
    # Fraction of mask pixels. Set: a mask below it is a `near_empty_mask` error. Unset (null): a
    # built-in 0.001 that only warns, so a dataset that never chose a threshold is not rejected.
    min_foreground: float | None = Field(None, ge=0.0, le=1.0)
    # Pixels (from the header) above it: `too_large`, before anything is decoded (a 40000x40000
    # PNG header would otherwise make the decoder allocate 1.6 GB).
    max_pixels: int = Field(100_000_000, ge=1)
    # File size in MB above it: `too_large`, before the file is read.
    max_file_mb: float = Field(200.0, gt=0)
    # Where new data arrives (a folder in the data/** branch); merged into `root`.
    incoming: str = "data/new"
    on_conflict: OnConflict = OnConflict.fail
    # Globs (relative to this file's folder) a data branch may change besides data.incoming and
    # the dataset pointers; anything else is `untrusted_change`. traingate.yml itself never is.
    allowed_paths: list[str] = Field(default_factory=list)
    # Validation cache (content-hash keyed). Empty: the user's cache dir.
    cache_dir: str = ""
    workers: int = Field(0, ge=0, description="0 = one per core")
    max_errors_in_summary: int = Field(50, ge=1)
    # Globs, relative to the incoming folder, of files `data merge` leaves alone there (`*` within one
    # folder level, `**` across levels; a folder's glob covers its files). Any other file that is not
    # an image/mask pair (or a `.gitkeep`) is an `unexpected_file` error: the merge removes only the
    # pairs it stored. Files under data.images/data.masks are always validated and merged.
    ignore: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    @field_validator("size")
    @classmethod
    def _positive(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and (v[0] <= 0 or v[1] <= 0):
            raise ValueError("both width and height must be positive")
        return v


class StoreConfig(_Strict):
    kind: StoreKind = StoreKind.dvc
    # s3://bucket/prefix, or a folder. Empty: `.traingate/remote` next to the config (embedded default).
    # In GitHub Actions only a remote that outlives the runner (S3): a folder there is exit 2.
    remote: str = ""
    remote_name: str = "storage"
    # S3-compatible endpoint (MinIO, moto in tests). Empty: AWS.
    endpoint_url: str = ""
    region: str = ""
    # Push the git commit of the .dvc pointers to the branch's remote (in Actions: yes).
    git_push: bool = True
    git_remote: str = "origin"


class InstanceSelector(_Strict):
    id: str = ""
    tags: dict[str, str] = Field(default_factory=dict)


ReadyCheck = Annotated[str, Field(min_length=1)]


class LaunchConfig(_Strict):
    # A launch template id (lt-...) or name; the keys below override what it sets.
    template: str = ""
    # AMI of the training environment (required without a template).
    image_id: str = ""
    # e.g. g5.xlarge (required without a template).
    instance_type: str = ""
    subnet_id: str = ""
    security_group_ids: list[str] = Field(default_factory=list)
    # Instance profile name or ARN (SSM, S3 access).
    instance_profile: str = ""
    # on-demand | spot (capacity/price errors fail the step) | spot-preferred (falls back loudly).
    market: LaunchMarket = LaunchMarket.on_demand
    # Spot ceiling in USD/hour, e.g. "0.50". Empty: the on-demand price (AWS's default).
    max_price: str = ""

    @field_validator("max_price")
    @classmethod
    def _price(cls, v: str) -> str:
        if v.strip():
            try:
                if float(v) <= 0:
                    raise ValueError
            except ValueError:
                raise ValueError(f"max_price must be a positive number of USD per hour, got {v!r}") from None
        return v.strip()


class SagemakerConfig(_Strict):
    # Execution role of the training job (arn:aws:iam::<account>:role/<name>).
    role_arn: str = ""
    # Training image (ECR URI); it needs bash, tar and (with train.pull_data) dvc.
    image: str = ""
    # The SageMaker training instance type (ml.*).
    instance_type: str = "ml.m5.xlarge"
    instance_count: int = Field(1, ge=1)
    # Managed spot training (MaxWaitTimeInSeconds = max_wait_minutes x 60).
    spot: bool = False
    # Spot only: capacity wait plus training (>= train.timeout_minutes); 0: twice the timeout.
    max_wait_minutes: float = Field(0, ge=0)
    # Synced with /opt/ml/checkpoints (TRAINGATE_CHECKPOINT_DIR), an s3:// URL. Empty: none.
    checkpoint_s3: str = ""
    # Where the code at the commit is packed for the job, an s3:// URL (required).
    code_s3: str = ""


class InfraConfig(_Strict):
    backend: InfraBackend = InfraBackend.local
    region: str = "us-east-1"
    instance: InstanceSelector = Field(default_factory=InstanceSelector)
    # running | status-ok | ssm | http(s):// URL with {public_ip}/{private_ip} placeholders
    ready: list[ReadyCheck] = Field(default_factory=lambda: ["running", "status-ok", "ssm"])
    ready_timeout_minutes: float = Field(15, gt=0)
    poll_cap_seconds: float = Field(5, gt=0)
    ttl_minutes: int = Field(120, ge=1)
    lease_table: str = ""
    # Template for the `mlflow_url` output, e.g. http://{public_ip}:5000. Empty: no output.
    mlflow_url: str = ""
    stop_wait: bool = True
    stop_timeout_minutes: float = Field(10, gt=0)
    start_retry_budget_minutes: float = Field(10, ge=0)
    # Bucket/prefix used to ship code and bring artifacts back for `train.where: instance`.
    s3_prefix: str = ""
    hourly_cost_usd: float = Field(0.0, ge=0)
    # For `backend: local`: the lease file lives here (relative to the config folder).
    local_dir: str = ".traingate/infra"
    # For `backend: launch`: a fresh instance per run (docs/infra.md).
    launch: LaunchConfig = Field(default_factory=LaunchConfig)
    # For `backend: sagemaker`: a SageMaker training job per run (docs/infra.md).
    sagemaker: SagemakerConfig = Field(default_factory=SagemakerConfig)

    @field_validator("ready")
    @classmethod
    def _known_checks(cls, v: list[str]) -> list[str]:
        allowed = {"running", "status-ok", "ssm"}
        for item in v:
            if item not in allowed and not item.startswith(("http://", "https://")):
                raise ValueError(
                    f"unknown readiness check {item!r}; "
                    "allowed: running, status-ok, ssm, or an http(s):// URL"
                )
        return v


class TrainConfig(_Strict):
    command: str = "python train.py"
    workdir: str = "."
    where: TrainWhere = TrainWhere.runner
    timeout_minutes: float = Field(60, gt=0)
    metrics_file: str = "outputs/metrics.json"
    metrics_log: str = "outputs/metrics.jsonl"
    artifacts: list[str] = Field(default_factory=list)
    artifacts_policy: ArtifactsPolicy = ArtifactsPolicy.required
    # Extra environment for the training command (values are not secrets: they are logged).
    env: dict[str, str] = Field(default_factory=dict)
    # Dependency installation run before the command (streamed). Empty: none.
    setup: str = ""
    # Pull DVC-tracked data before training (runner) / on the instance.
    pull_data: bool = True
    params: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="parameters logged on the run (and given to the command as JSON in $TRAINGATE_PARAMS)",
    )
    params_file: str = Field(
        "outputs/params.json",
        description="JSON object of parameters the training wrote; logged on the run when present",
    )
    model_dir: str = Field(
        "outputs/model",
        description="MLflow model folder the training saved (holds an MLmodel file); logged and "
        "registered as an MLflow model, so models:/<gate.model>@<gate.alias> loads",
    )
    # train.where: instance on ec2/launch: s3:// URL synced with TRAINGATE_CHECKPOINT_DIR while the
    # command runs and restored before it starts (a re-run after a spot reclaim resumes). Empty: off.
    checkpoint_s3: str = ""
    skip_same_data: bool = Field(
        True,
        description="when the pipeline merged data (`train --skip-same-data`), skip training if the "
        "dataset version is the one @champion was trained on (outputs improved=false, skipped=true); "
        "false: always train",
    )

    @field_validator("checkpoint_s3")
    @classmethod
    def _checkpoint_url(cls, v: str) -> str:
        if v.strip() and not (v.startswith("s3://") and len(v.strip()) > 5):
            raise ValueError(f"checkpoint_s3 must be an s3://bucket/prefix URL, got {v!r}")
        return v.strip()


class TrackingConfig(_Strict):
    uri: str = Field(
        "sqlite:///.traingate/mlflow.db",
        description="MLflow tracking and registry URI; in GitHub Actions it must outlive the job "
        "(http(s)://, databricks): gate, train --gate and run refuse a local sqlite/file store there",
    )
    experiment: str = ""
    # Bounded retries: a dead server must fail in well under a minute, never MLflow's 100+ s.
    max_retries: int = Field(3, ge=0, le=10)
    backoff_factor: float = Field(0.5, ge=0)
    request_timeout_seconds: float = Field(10, gt=0)
    retry_budget_seconds: float = Field(30, gt=0)
    health_timeout_seconds: float = Field(60, ge=0)
    log_batch_size: int = Field(1000, ge=1, le=1000)


class GateMetric(_Strict):
    name: str = Field(min_length=1)
    direction: Direction = Direction.max
    min_delta: float = 0.0
    min_relative_delta: float = 0.0
    threshold: float | None = None


class GateConfig(_Strict):
    model: str = ""
    alias: str = "champion"
    metrics: list[GateMetric] = Field(
        default_factory=lambda: [GateMetric(name="dice"), GateMetric(name="iou")]
    )
    require: Require = Require.all
    promote: PromoteMode = PromoteMode.on_gate
    challenger_alias: str = "challenger"
    previous_alias: str = "previous-champion"
    eval_set: str = Field(
        "",
        description="file or folder (relative to train.workdir) the metrics are measured on; its "
        "content fingerprint tags every run, and only runs with the same fingerprint are compared",
    )
    rescore: str = Field(
        "",
        description="command that scores the champion's model on the current eval_set when the "
        "champion was measured on another one (contract: docs/gate.md); empty: such a gate fails",
    )

    @field_validator("metrics")
    @classmethod
    def _nonempty(cls, v: list[GateMetric]) -> list[GateMetric]:
        if not v:
            raise ValueError("at least one gated metric is required")
        names = [m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError(f"metric names must be unique, got {names}")
        return v


class PrConfig(_Strict):
    base: str = "main"
    auto_merge: MergeMethod = MergeMethod.squash
    merge_when_clean: bool = True
    delete_branch: bool = False
    status_context: str = "traingate/gate"
    title: str = "traingate: model improved with {new_images} new images ({total_images} total)"
    labels: list[str] = Field(default_factory=lambda: ["traingate"])
    # Where the rendered PR body goes when no token/repository is given (relative to config dir).
    render_to: str = ".traingate/pr.md"


class Config(_Strict):
    project: str = "traingate-project"
    # Folder for state, reports and the embedded default's databases (relative to config dir).
    workspace: str = ".traingate"
    data: DataConfig = Field(default_factory=DataConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    infra: InfraConfig = Field(default_factory=InfraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    pr: PrConfig = Field(default_factory=PrConfig)

    # Not part of the file: where it was loaded from.
    base_dir: Path = Field(default_factory=Path.cwd, exclude=True)
    source: Path | None = Field(default=None, exclude=True)

    @model_validator(mode="after")
    def _fill_names(self) -> Config:
        if not self.tracking.experiment:
            self.tracking.experiment = self.project
        if not self.gate.model:
            self.gate.model = self.project
        if self.infra.backend == InfraBackend.sagemaker and self.train.where != TrainWhere.instance:
            # The job is the machine, so switching to it is one key: an unset train.where follows.
            if "where" in self.train.model_fields_set:
                raise ValueError(
                    "infra.backend: sagemaker trains in a SageMaker training job, but train.where is "
                    "runner: remove train.where or set it to instance"
                )
            self.train.where = TrainWhere.instance
        return self

    def path(self, value: str | Path) -> Path:
        """Resolve a config-relative path."""
        p = Path(value)
        return p if p.is_absolute() else (self.base_dir / p)

    @property
    def workspace_dir(self) -> Path:
        return self.path(self.workspace)

    @property
    def data_root(self) -> Path:
        return self.path(self.data.root)

    @property
    def tracking_uri(self) -> str:
        """sqlite:///relative paths are made absolute against the config folder, so the train
        subprocess (another cwd) and the gate read the same database."""
        uri = self.tracking.uri
        prefix = "sqlite:///"
        if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
            return prefix + str(self.path(uri[len(prefix) :]).resolve())
        return uri

    @property
    def store_remote(self) -> str:
        if self.store.remote:
            if "://" in self.store.remote:
                return self.store.remote
            return str(self.path(self.store.remote).resolve())
        return str((self.workspace_dir / "remote").resolve())


def _format_loc(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + str(item))
    return "".join(parts) or "(top level)"


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    first_loc = None
    for e in err.errors():
        loc = _format_loc(tuple(e["loc"]))
        first_loc = first_loc or loc
        kind = e["type"]
        if kind == "extra_forbidden":
            lines.append(f"{loc}: unknown key")
        elif kind == "enum":
            expected = (e.get("ctx") or {}).get("expected", "")
            lines.append(f"{loc}: {e.get('input')!r} is not allowed; allowed values: {expected}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{loc}: {msg} (got {e.get('input')!r})")
    detail = "; ".join(lines)
    return ConfigError(
        f"invalid configuration in {source}: {detail}",
        hint="fix the key in the file (see docs/configuration.md for every key and its allowed values)",
        file=source if source != "(defaults)" else None,
    )


def parse_config(
    raw: dict[str, Any] | None, *, base_dir: Path | None = None, source: Path | None = None
) -> Config:
    """Validate a mapping as read from YAML; raise ConfigError naming every bad key path."""
    label = str(source) if source else "(defaults)"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"invalid configuration in {label}: the top level must be a mapping, got {type(raw).__name__}",
            hint="start the file with keys such as `project:` and `data:`",
            file=str(source) if source else None,
        )
    for forbidden in ("base_dir", "source"):
        if forbidden in raw:
            raise ConfigError(f"invalid configuration in {label}: {forbidden}: unknown key")
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise _explain(err, label) from None
    cfg.base_dir = (base_dir or Path.cwd()).resolve()
    cfg.source = source
    return cfg


def _read_config_text(chosen: Path) -> str:
    """The file's text, or a ConfigError naming it: only a regular file is opened (a FIFO named
    traingate.yml would block forever), and bytes that are not UTF-8 say where they are."""
    import stat

    try:
        mode = chosen.stat().st_mode
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"configuration {chosen} is not a regular file",
                hint="point --config / TRAINGATE_CONFIG at a traingate.yml file",
                file=str(chosen),
            )
        data = chosen.read_bytes()
    except OSError as err:
        raise ConfigError(
            f"cannot read configuration {chosen}: {err.strerror or err}",
            hint="check the file's permissions, or pass another file with --config",
            file=str(chosen),
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"configuration {chosen} is not UTF-8 text: byte 0x{data[err.start]:02x} at line {line}",
            hint="save traingate.yml as UTF-8 (YAML files are UTF-8)",
            file=str(chosen),
            line=line,
        ) from None


def load_config(path: str | Path | None = None, *, required: bool | None = None) -> Config:
    """Load `path`, `$TRAINGATE_CONFIG`, or `./traingate.yml`.

    A missing default file means "use the embedded defaults"; a path that was asked for
    explicitly and does not exist is a configuration error.
    """
    import yaml  # local: keeps `traingate --help` light

    explicit = path is not None or bool(os.environ.get(CONFIG_ENV))
    chosen = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_NAME)
    if required is None:
        required = explicit
    if not chosen.exists():
        if required:
            raise ConfigError(
                f"configuration file not found: {chosen}",
                hint=f"create it with `traingate init`, or pass --config / set {CONFIG_ENV}",
            )
        return parse_config({}, base_dir=Path.cwd())
    text = _read_config_text(chosen)
    try:
        raw = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(
            f"{chosen} is nested too deeply to be a traingate configuration",
            hint="traingate.yml is a few levels of keys; see docs/configuration.md",
            file=str(chosen),
        ) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            f"{chosen} is not valid YAML: {err}",
            hint="fix the syntax at the line shown",
            file=str(chosen),
            line=line,
        ) from None
    return parse_config(raw, base_dir=chosen.resolve().parent, source=chosen)


__all__ = [
    "ArtifactsPolicy",
    "Config",
    "DataConfig",
    "Direction",
    "GateConfig",
    "GateMetric",
    "InfraBackend",
    "InfraConfig",
    "LaunchConfig",
    "LaunchMarket",
    "MergeMethod",
    "OnConflict",
    "PrConfig",
    "PromoteMode",
    "Require",
    "StoreConfig",
    "StoreKind",
    "TrackingConfig",
    "TrainConfig",
    "TrainWhere",
    "load_config",
    "parse_config",
]
