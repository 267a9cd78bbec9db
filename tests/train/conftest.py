from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.mlflow_server import *  # noqa: F403 - the server, proxy and template fixtures
from tests.tracking.helpers import Project, make_project
from traingate.config import TrackingConfig
from traingate.tracking.mlflow_client import mlflow_env


@pytest.fixture(autouse=True)
def _restore_mlflow_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The adapter sets MLflow's retry variables in os.environ; undo that after each test so
    other areas in this worker see the environment they started with."""
    for name in mlflow_env(TrackingConfig()):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    yield


@pytest.fixture
def project(tmp_path: Path, mlflow_sqlite_template: Path) -> Project:
    return make_project(tmp_path, mlflow_sqlite_template)
