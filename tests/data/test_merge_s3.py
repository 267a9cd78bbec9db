"""The merge against S3 on moto's server (DVC's s3 remote with `endpointurl`). Few and slow."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.data.conftest import MakePair
from tests.data.test_merge import git, make_project
from tests.fixtures.aws import free_port
from traingate.config import load_config
from traingate.data.manifest import read_pointer, tree_hash
from traingate.data.merge import merge_step
from traingate.data.store import DvcStore, _folder_entries, pull_dataset
from traingate.errors import StoreError
from traingate.gha import ActionsContext

# A run outside GitHub Actions: the tests state the context instead of the environment.
LOCAL = ActionsContext()

pytestmark = pytest.mark.slow


def s3_keys(bucket: str) -> list[str]:
    import boto3

    s3 = boto3.client("s3")
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def test_merge_and_pull_on_s3(aws_env: str, tmp_path: Path, make_pair: MakePair) -> None:
    import boto3

    boto3.client("s3").create_bucket(Bucket="datasets")
    p = make_project(tmp_path, "s3p", {"store": {"remote": "s3://datasets/wm", "endpoint_url": aws_env}})
    p.add_incoming(make_pair, ["a0", "a1", "a2"])
    first = merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)
    keys = s3_keys("datasets")
    assert len(keys) == 7 and all(k.startswith("wm/files/md5/") for k in keys)  # 6 files + listing

    # Second merge from a fresh clone: only the listing comes down, only new objects go up.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "-b", "data/upload", str(p.bare), str(clone)], check=True)
    for stem in ("b0", "b1"):
        make_pair(clone / "data" / "new", stem)
    git(clone, "add", "data/new")
    git(clone, "commit", "-q", "-m", "more")
    cfg = load_config(clone / "traingate.yml")
    store = DvcStore(cfg)
    second = merge_step(cfg, store=store, sleep=lambda _s: None, actions=LOCAL)
    assert (store.transfer.downloaded, store.transfer.uploaded) == (1, 5)
    assert second.outputs["total_images"] == 5 and second.outputs["existing_images"] == 3
    assert len(s3_keys("datasets")) == 12

    # And the train stage's pull gets exactly that dataset.
    reader = tmp_path / "reader"
    subprocess.run(["git", "clone", "-q", "-b", "data/upload", str(p.bare), str(reader)], check=True)
    rcfg = load_config(reader / "traingate.yml")
    assert pull_dataset(rcfg) == second.outputs["data_version"] != first.outputs["data_version"]
    assert tree_hash(_folder_entries(reader / "data" / "training")) == second.outputs["data_version"]


def test_s3_push_failure_commits_nothing(aws_env: str, tmp_path: Path, make_pair: MakePair) -> None:
    # The bucket does not exist: every upload is refused by the server.
    p = make_project(tmp_path, "nob", {"store": {"remote": "s3://no-such-bucket/x", "endpoint_url": aws_env}})
    p.add_incoming(make_pair, ["a0"])
    head = git(p.root, "rev-parse", "HEAD")
    with pytest.raises(StoreError) as info:
        merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)
    assert "no-such-bucket" in info.value.message and info.value.exit_code == 1
    assert git(p.root, "rev-parse", "HEAD") == head
    assert not read_pointer(p.root / "data" / "training").tracked


def test_s3_broken_endpoint_commits_nothing(
    aws_env: str, tmp_path: Path, make_pair: MakePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # botocore's own retries would only slow the test
    dead = f"http://127.0.0.1:{free_port()}"
    p = make_project(tmp_path, "dead", {"store": {"remote": "s3://datasets/x", "endpoint_url": dead}})
    p.add_incoming(make_pair, ["a0"])
    head = git(p.root, "rev-parse", "HEAD")
    with pytest.raises(StoreError) as info:
        merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)
    assert dead in info.value.message or "connect" in info.value.message.lower()
    assert git(p.root, "rev-parse", "HEAD") == head
    assert not (p.root / "data" / "training.dvc").exists()


def test_s3_access_denied_commits_nothing(
    aws_env: str, tmp_path: Path, make_pair: MakePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only IAM identity: the manifest can be read, every upload is AccessDenied."""
    import json

    import boto3
    import requests

    boto3.client("s3").create_bucket(Bucket="guarded")
    p = make_project(tmp_path, "deny", {"store": {"remote": "s3://guarded/ds", "endpoint_url": aws_env}})
    p.add_incoming(make_pair, ["a0", "a1"])
    merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)  # the stored dataset, written with full rights

    iam = boto3.client("iam")
    iam.create_user(UserName="reader")
    iam.put_user_policy(
        UserName="reader",
        PolicyName="read-only",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": ["s3:Get*", "s3:List*"], "Resource": "*"}],
            }
        ),
    )
    key = iam.create_access_key(UserName="reader")["AccessKey"]
    p.add_incoming(make_pair, ["b0"])
    head = git(p.root, "rev-parse", "HEAD")
    pointer_before = (p.root / "data" / "training.dvc").read_text()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    monkeypatch.delenv("AWS_SESSION_TOKEN")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    requests.post(f"{aws_env}/moto-api/reset-auth", data=b"0", timeout=10)  # enforce IAM from now on
    try:
        with pytest.raises(StoreError) as info:
            merge_step(p.cfg, sleep=lambda _s: None, actions=LOCAL)
    finally:
        requests.post(f"{aws_env}/moto-api/reset-auth", data=b"inf", timeout=10)
    text = (info.value.message + " " + (info.value.hint or "")).lower()
    assert "access" in text or "denied" in text or "forbidden" in text, info.value.message
    assert git(p.root, "rev-parse", "HEAD") == head
    assert (p.root / "data" / "training.dvc").read_text() == pointer_before
    assert (p.root / "data" / "new" / "images" / "b0.jpg").exists()


def test_in_actions_an_s3_remote_merges_and_the_bot_commits(
    aws_env: str, tmp_path: Path, make_pair: MakePair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #11: in Actions the remote must outlive the runner (S3 does) and the pointer
    commit is github-actions[bot]'s; outside Actions it is the user's (tests/data/test_merge_safety.py)."""
    import boto3

    from traingate.git import BOT_NAME

    boto3.client("s3").create_bucket(Bucket="ci-data")
    p = make_project(tmp_path, "ci", {"store": {"remote": "s3://ci-data/wm", "endpoint_url": aws_env}})
    p.add_incoming(make_pair, ["a0"])
    result = merge_step(p.cfg, sleep=lambda _s: None, actions=ActionsContext(in_actions=True))
    assert result.outputs["new_images"] == 1 and len(s3_keys("ci-data")) == 3
    assert git(p.root, "log", "-1", "--format=%an|%cn") == f"{BOT_NAME}|{BOT_NAME}"
