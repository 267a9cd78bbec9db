"""`traingate init`: templates and a starter traingate.yml, never overwriting without --force."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.workflows.conftest import ROOT, TEMPLATES
from traingate import gha
from traingate.cli import cli
from traingate.config import load_config
from traingate.errors import UsageError
from traingate.outputs import OUTPUTS
from traingate.templates import DEFAULT_WORKFLOWS, init_step, workflows_source

AWS = {
    "project": "water-meters",
    "bucket": "s3://wm-data/datasets",
    "instance_id": "i-0123456789abcdef0",
    "role_arn": "arn:aws:iam::123456789012:role/traingate-github",
    "region": "eu-west-1",
}


def test_writes_templates_and_a_config_that_loads(tmp_path: Path) -> None:
    result = init_step(tmp_path, **AWS)
    assert result.outputs["written"] == [
        *(f".github/workflows/{n}" for n in DEFAULT_WORKFLOWS),
        "traingate.yml",
    ]
    for name in DEFAULT_WORKFLOWS:
        assert (tmp_path / ".github" / "workflows" / name).read_text() == (TEMPLATES / name).read_text()
    cfg = load_config(tmp_path / "traingate.yml")
    assert cfg.project == "water-meters"
    assert cfg.store.remote == "s3://wm-data/datasets"
    assert cfg.infra.backend == "ec2" and cfg.infra.instance.id == "i-0123456789abcdef0"
    assert cfg.infra.region == "eu-west-1"
    assert "gh variable set AWS_ROLE_ARN --body arn:aws:iam::123456789012:role/traingate-github" in (
        result.message
    )


def test_without_aws_values_the_config_uses_local_backends(tmp_path: Path) -> None:
    repo = tmp_path / "My Repo!"
    repo.mkdir()
    result = init_step(repo)
    cfg = load_config(repo / "traingate.yml")
    assert cfg.project == "My-Repo"
    assert cfg.infra.backend == "local" and cfg.store.remote == ""
    assert "local backends" in result.message


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "traingate.yml").write_text("project: mine\n")
    with pytest.raises(UsageError, match="refusing to overwrite") as exc:
        init_step(tmp_path, **AWS)
    assert "--force" in (exc.value.hint or "")
    assert (tmp_path / "traingate.yml").read_text() == "project: mine\n"
    assert not (tmp_path / ".github").exists()  # checked before the first write
    init_step(tmp_path, force=True, **AWS)
    assert load_config(tmp_path / "traingate.yml").project == "water-meters"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", "../etc"),
        ("bucket", "my-bucket"),
        ("bucket", "s3://UPPER/x"),
        ("instance_id", "i-xyz"),
        ("role_arn", "arn:aws:iam::12:role/x"),
        ("region", "europe"),
        ("project", 'x"\ninjected: true'),
    ],
)
def test_bad_values_are_usage_errors(tmp_path: Path, field: str, value: str) -> None:
    with pytest.raises(UsageError) as exc:
        init_step(tmp_path, **{**AWS, field: value})
    assert value.strip() in exc.value.message or repr(value.strip()) in exc.value.message
    assert exc.value.hint and exc.value.exit_code == 2
    assert not any(tmp_path.iterdir())


def test_values_cannot_inject_yaml(tmp_path: Path) -> None:
    # The validators refuse such values; rendering quotes them anyway.
    from traingate.templates import render_config

    text = render_config('a"\nb: 1', None, None, None)
    import yaml

    assert yaml.safe_load(text)["project"] == 'a"\nb: 1'


def test_interactive_prompts_for_missing_values(tmp_path: Path) -> None:
    asked: list[str] = []
    answers = {"S3 remote for the dataset": "s3://wm-data/x", "Shared EC2 instance id": "i-0123456789abcdef0"}

    def prompt(question: str, default: str) -> str:
        asked.append(question)
        return answers.get(question, default)

    init_step(tmp_path, project="p", interactive=True, prompt=prompt)
    assert asked == [
        "S3 remote for the dataset",
        "Shared EC2 instance id",
        "IAM role for OIDC",
        "AWS region",
        "MLflow tracking server URL (GitHub Actions needs one that outlives the job)",
    ]
    cfg = load_config(tmp_path / "traingate.yml")
    assert cfg.infra.backend == "ec2" and cfg.infra.region == "us-east-1"
    assert cfg.tracking.uri == "sqlite:///.traingate/mlflow.db"  # no answer: the local default


def test_interactive_asks_for_the_tracking_server(tmp_path: Path) -> None:
    def prompt(question: str, default: str) -> str:
        return "https://mlflow.example.com" if question.startswith("MLflow tracking server") else default

    init_step(tmp_path, project="p", interactive=True, prompt=prompt)
    assert load_config(tmp_path / "traingate.yml").tracking.uri == "https://mlflow.example.com"


def test_tracking_uri_flag_is_written(tmp_path: Path) -> None:
    """Issue #12: Actions needs a registry that outlives the job; init takes it as a flag."""
    result = init_step(tmp_path, tracking_uri="https://mlflow.example.com:5000", **AWS)
    assert load_config(tmp_path / "traingate.yml").tracking.uri == "https://mlflow.example.com:5000"
    assert "MLflow server" not in result.message


def test_without_a_tracking_uri_the_config_says_actions_needs_a_server(tmp_path: Path) -> None:
    result = init_step(tmp_path, **AWS)
    text = (tmp_path / "traingate.yml").read_text()
    assert load_config(tmp_path / "traingate.yml").tracking.uri == "sqlite:///.traingate/mlflow.db"
    assert "GitHub Actions needs an MLflow server that outlives the job" in text
    assert "--tracking-uri" in result.message


def test_bad_tracking_uri_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--tracking-uri"):
        init_step(tmp_path, tracking_uri="mlflow server please")


def test_cli_tracking_uri_flag(tmp_path: Path) -> None:
    target = tmp_path / "repo"
    args = ["init", str(target), "--project", "p", "--tracking-uri", "http://10.0.0.5:5000"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert load_config(target / "traingate.yml").tracking.uri == "http://10.0.0.5:5000"


def test_promote_on_merge_template_is_opt_in(tmp_path: Path) -> None:
    result = init_step(tmp_path, promote_on_merge=True)
    assert ".github/workflows/promote-on-merge.yml" in result.outputs["written"]


def test_cli_writes_declared_outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "gh-output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    target = tmp_path / "repo"
    args = ["--json", "init", str(target), "--project", "p", "--region", "eu-west-1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    outputs = gha.read_outputs(out)
    assert tuple(outputs) == OUTPUTS["init"]
    assert json.loads(outputs["written"])[-1] == "traingate.yml"
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.output


def test_editable_install_reads_the_repository_templates() -> None:
    assert workflows_source() == TEMPLATES


def test_wheel_ships_the_same_templates(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path / "dist")],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("traingate-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "site")
    shipped = tmp_path / "site" / "traingate" / "templates" / "workflows"
    names = sorted(p.name for p in TEMPLATES.glob("*.yml"))
    assert sorted(p.name for p in shipped.glob("*.yml")) == names
    _same, mismatch, errors = filecmp.cmpfiles(TEMPLATES, shipped, names, shallow=False)
    assert not mismatch and not errors
    assert (tmp_path / "site" / "traingate" / "templates" / "traingate.yml").exists()
    # ...and init run from the unpacked wheel finds them there.
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from traingate.templates import workflows_source; print(workflows_source())"
    )
    found = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "site")], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(found) == shipped
