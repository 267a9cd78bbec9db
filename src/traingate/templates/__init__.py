"""`traingate init`: copy the caller workflows and a starter `traingate.yml` into a repository.

The workflow templates are the files in `workflows-templates/` at the repository root; a wheel
ships them as package data under `traingate/templates/workflows` (hatch `force-include`), and a
test checks the shipped copy equals the source. Nothing is overwritten without `force`, and the
existence check covers every file before the first one is written, so a refusal writes nothing.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from traingate.errors import UsageError
from traingate.result import StepResult

# The templates every repository gets; promote-on-merge.yml only with `gate.promote: on-merge`
# (it would otherwise try to promote a @challenger that does not exist).
DEFAULT_WORKFLOWS = ("training-data-pipeline.yml", "manual-train.yml", "reap-instances.yml")
OPTIONAL_WORKFLOWS = ("promote-on-merge.yml",)
WORKFLOW_DIR = Path(".github") / "workflows"
CONFIG_NAME = "traingate.yml"

Prompt = Callable[[str, str], str]


@dataclass(frozen=True)
class _Field:
    name: str
    question: str
    pattern: str
    example: str


_FIELDS = {
    "project": _Field("project", "Project name", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$", "water-meters"),
    "bucket": _Field(
        "bucket",
        "S3 remote for the dataset",
        r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[^\s]*)?$",
        "s3://my-bucket/datasets",
    ),
    "instance_id": _Field(
        "instance_id", "Shared EC2 instance id", r"^i-[0-9a-f]{8,17}$", "i-0123456789abcdef0"
    ),
    "role_arn": _Field(
        "role_arn",
        "IAM role for OIDC",
        r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$",
        "arn:aws:iam::123456789012:role/traingate-github",
    ),
    "region": _Field("region", "AWS region", r"^[a-z]{2}(-[a-z]+)+-\d+$", "eu-west-1"),
    "tracking_uri": _Field(
        "tracking_uri",
        "MLflow tracking server URL (GitHub Actions needs one that outlives the job)",
        r"^([A-Za-z][A-Za-z0-9+.-]*:[^\s\"']+|databricks(-uc)?)$",
        "https://mlflow.example.com",
    ),
}
LOCAL_TRACKING_URI = "sqlite:///.traingate/mlflow.db"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check(field: _Field, value: str) -> str:
    value = value.strip()
    if not re.fullmatch(field.pattern, value):
        raise UsageError(
            f"{_flag(field.name)}: {value!r} is not valid ({field.question}, e.g. {field.example})",
            hint=f"pass it like {_flag(field.name)} {field.example}",
        )
    return value


def _stdin_prompt(question: str, default: str) -> str:
    # stderr: stdout is reserved for --json. input() would print the question on stdout.
    suffix = f" [{default}]" if default else " (empty to skip)"
    sys.stderr.write(f"{question}{suffix}: ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    if not answer:  # EOF: the person closed the prompt
        raise UsageError("init aborted: no answer on the terminal", hint="pass the values as flags")
    return answer.strip() or default


def workflows_source() -> Path:
    """The template folder: the packaged copy in a wheel, the repository's folder otherwise."""
    packaged = resources.files("traingate.templates") / "workflows"
    if packaged.is_dir():
        return Path(str(packaged))
    repo_copy = Path(__file__).resolve().parents[3] / "workflows-templates"
    if repo_copy.is_dir():
        return repo_copy
    raise UsageError(  # pragma: no cover - a broken installation
        "the workflow templates are not installed with traingate",
        hint="reinstall traingate from a wheel or a checkout of the repository",
    )


def _yaml_scalar(value: str) -> str:
    # JSON strings are valid YAML scalars: a value can never break out into another key.
    return json.dumps(value)


def render_config(
    project: str,
    bucket: str | None,
    instance_id: str | None,
    region: str | None,
    tracking_uri: str | None = None,
) -> str:
    """The starter traingate.yml. Without a bucket and an instance it uses the local backends
    (it runs on one machine at once); with them, DVC on S3 and the EC2 instance. Without a
    tracking server it keeps the local SQLite store, which `traingate run` accepts and Actions
    refuses (a runner's disk dies with the job), and says so next to the value."""
    text = (resources.files("traingate.templates") / CONFIG_NAME).read_text(encoding="utf-8")
    aws = bool(bucket and instance_id)
    values = {
        "__PROJECT__": _yaml_scalar(project),
        "__REMOTE__": _yaml_scalar(bucket or ""),
        "__REGION__": _yaml_scalar(region or "us-east-1"),
        "__BACKEND__": "ec2" if aws else "local",
        "__INSTANCE_ID__": _yaml_scalar(instance_id or ""),
        "__TRACKING_URI__": _yaml_scalar(tracking_uri)
        if tracking_uri
        else _yaml_scalar(LOCAL_TRACKING_URI) + "   # local: for `traingate run` on one machine only",
    }
    for key, value in values.items():
        text = text.replace(key, value)
    return text


def _plan(target: Path, with_promote: bool) -> list[tuple[Path, Path | None]]:
    """(destination, template) pairs; template None means the rendered traingate.yml."""
    source = workflows_source()
    names = list(DEFAULT_WORKFLOWS) + (list(OPTIONAL_WORKFLOWS) if with_promote else [])
    plan: list[tuple[Path, Path | None]] = [(target / WORKFLOW_DIR / n, source / n) for n in names]
    plan.append((target / CONFIG_NAME, None))
    return plan


@dataclass(frozen=True)
class InitResult:
    """What `init` wrote (paths relative to the target) and the repository variables to set."""

    target: Path
    written: tuple[str, ...]
    variables: dict[str, str | None]

    def outputs(self) -> dict[str, Any]:
        return {"written": list(self.written)}


def init_step(
    target: Path,
    project: str | None = None,
    bucket: str | None = None,
    instance_id: str | None = None,
    role_arn: str | None = None,
    region: str | None = None,
    force: bool = False,
    interactive: bool = False,
    *,
    tracking_uri: str | None = None,
    promote_on_merge: bool = False,
    prompt: Prompt | None = None,
) -> StepResult[InitResult]:
    """Write the templates and a starter traingate.yml into `target`; refuse to overwrite."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} is not a folder", hint="pass the repository's root folder")
    given = {
        "project": project,
        "bucket": bucket,
        "instance_id": instance_id,
        "role_arn": role_arn,
        "region": region,
        "tracking_uri": tracking_uri,
    }
    if interactive:
        _ask_missing(given, target, prompt or _stdin_prompt)
    values = {k: _check(_FIELDS[k], v) if v else None for k, v in given.items()}
    name = values["project"] or _check(_FIELDS["project"], _safe_project(target))

    plan = _plan(target, promote_on_merge)
    _refuse_overwrite(target, plan, force)
    config_text = render_config(
        name, values["bucket"], values["instance_id"], values["region"], values["tracking_uri"]
    )
    written = _write_plan(target, plan, config_text)
    variables = {
        "AWS_ROLE_ARN": values["role_arn"],
        "AWS_REGION": values["region"],
        "TRAINGATE_INSTANCE_ID": values["instance_id"],
    }
    result = InitResult(target, tuple(written), variables)
    summary = "### traingate init\n\n" + "\n".join(f"- `{w}`" for w in written) + "\n"
    return StepResult(
        outputs=result.outputs(),
        summary=summary,
        message="\n".join(_next_steps(result, values)),
        data={"variables": variables},
        value=result,
    )


def _ask_missing(given: dict[str, str | None], target: Path, ask: Prompt) -> None:
    """Interactive `init`: ask for every value not given as a flag (empty skips it)."""
    defaults = {"project": target.resolve().name, "region": "us-east-1"}
    for name, field in _FIELDS.items():
        if not given[name]:
            given[name] = ask(field.question, defaults.get(name, "")) or None


def _refuse_overwrite(target: Path, plan: list[tuple[Path, Path | None]], force: bool) -> None:
    """Every destination is checked before the first file is written: a refusal writes nothing."""
    existing = [dest for dest, _ in plan if dest.exists()]
    if existing and not force:
        listed = ", ".join(str(p.relative_to(target)) for p in existing)
        raise UsageError(
            f"refusing to overwrite existing files in {target}: {listed}",
            hint="move them away, or re-run with --force to replace them",
        )


def _write_plan(target: Path, plan: list[tuple[Path, Path | None]], config_text: str) -> list[str]:
    written: list[str] = []
    for dest, template in plan:
        text = config_text if template is None else template.read_text(encoding="utf-8")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(text, encoding="utf-8")
        except OSError as err:  # a file where a folder must be, a read-only checkout...
            done = f" (already written: {', '.join(written)})" if written else ""
            raise UsageError(
                f"cannot write {dest}: {err.strerror or err}{done}",
                hint="pass a folder you can write to (the repository's root)",
            ) from None
        written.append(dest.relative_to(target).as_posix())
    return written


def _next_steps(result: InitResult, values: dict[str, str | None]) -> list[str]:
    """What was written, and what the person still has to do."""
    lines = [f"wrote {len(result.written)} files into {result.target}:"]
    lines += [f"  {w}" for w in result.written]
    lines.append("next: set these repository variables (Settings -> Secrets and variables -> Actions):")
    for var, value in result.variables.items():
        shown = value or f"<{var.lower().replace('_', '-')}>"
        lines.append(f"  gh variable set {var} --body {shown}")
    if not (values["bucket"] and values["instance_id"]):
        lines.append(
            "traingate.yml uses the local backends: set store.remote and infra.instance.id "
            "(or re-run with --bucket and --instance-id --force) to train on AWS"
        )
    if not values["tracking_uri"]:
        lines.append(
            f"tracking.uri is {LOCAL_TRACKING_URI}, a file on this machine: GitHub Actions needs an "
            "MLflow server that outlives the job (re-run with --tracking-uri URL --force, or edit "
            "traingate.yml); `traingate gate` refuses a local store there"
        )
    return lines


def _safe_project(target: Path) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", target.resolve().name).strip("-._")
    return name or "traingate-project"


__all__ = [
    "DEFAULT_WORKFLOWS",
    "OPTIONAL_WORKFLOWS",
    "InitResult",
    "init_step",
    "render_config",
    "workflows_source",
]
