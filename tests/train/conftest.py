from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.mlflow_server import *  # noqa: F403 - the server, proxy and template fixtures
from tests.tracking.helpers import Project, make_project


@pytest.fixture
def project(tmp_path: Path, mlflow_sqlite_template: Path) -> Project:
    return make_project(tmp_path, mlflow_sqlite_template)
