"""`is_runner_local`: which configured locations die with a GitHub-hosted runner."""

from __future__ import annotations

import pytest

from traingate.locality import is_runner_local


@pytest.mark.parametrize(
    "location",
    [
        "",
        ".traingate/remote",
        "/srv/dvc",
        "file:///srv/dvc",
        "sqlite:///.traingate/mlflow.db",
        "http://localhost:5000",
        "http://127.0.0.1:5000",
        "http://[::1]:5000",
        "C:\\data\\remote",
    ],
)
def test_local_to_the_runner(location: str) -> None:
    assert is_runner_local(location)


@pytest.mark.parametrize(
    "location",
    ["s3://bucket/prefix", "gs://bucket/x", "https://mlflow.example.com", "http://10.0.0.5:5000"],
)
def test_outlives_the_runner(location: str) -> None:
    assert not is_runner_local(location)
