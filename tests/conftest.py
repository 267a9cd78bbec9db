"""Root fixtures. Area fixtures live in tests/<area>/conftest.py; shared servers in tests/fixtures/."""

from __future__ import annotations

import pytest

pytest_plugins = ["tests.fixtures.aws"]


@pytest.fixture(autouse=True)
def _clean_actions_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never inherit the real runner's Actions environment or tokens."""
    for name in (
        "GITHUB_ACTIONS",
        "CI",
        "GITHUB_OUTPUT",
        "GITHUB_STEP_SUMMARY",
        "GITHUB_TOKEN",
        "GITHUB_REPOSITORY",
        "GITHUB_REF_NAME",
        "GITHUB_SHA",
        "GITHUB_RUN_ID",
        "GITHUB_RUN_ATTEMPT",
        "GITHUB_SERVER_URL",
        "GITHUB_API_URL",
        "TRAINGATE_CONFIG",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_RUN_ID",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    # DVC and git must not read the developer's global config.
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "traingate-test")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "traingate-test")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "test@example.invalid")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
