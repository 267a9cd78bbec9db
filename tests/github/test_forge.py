"""The PyGithub forge's error translation and retry policy."""

from __future__ import annotations

from typing import Any

import pytest

from tests.github.conftest import FakeGitHub
from traingate.errors import CredentialsError, GitHubError, UsageError
from traingate.gha import ActionsContext
from traingate.github.forge import classify_automerge_refusal, resolve_repo


def test_dropped_connection_is_retried(
    fake_github: FakeGitHub, forge_factory: Any, sleeps: list[float]
) -> None:
    fake_github.fail("GET", r"/pulls/1$", 0)
    fake_github.open_pull()
    forge = forge_factory("t", "o/r")
    assert forge.get_pull(1).number == 1
    assert len(sleeps) == 1 and fake_github.count("GET", r"/pulls/1$") == 2


def test_bad_credentials_is_exit_2(fake_github: FakeGitHub, forge_factory: Any, sleeps: list[float]) -> None:
    fake_github.fail("GET", r"/pulls/1$", 401, {"message": "Bad credentials", "status": "401"})
    with pytest.raises(CredentialsError) as exc:
        forge_factory("ghs_topsecret", "o/r").get_pull(1)
    assert exc.value.exit_code == 2 and "401" in exc.value.message
    assert "ghs_topsecret" not in str(exc.value) and sleeps == []


def test_rate_limit_is_not_retried_and_says_when(
    fake_github: FakeGitHub, forge_factory: Any, sleeps: list[float]
) -> None:
    fake_github.fail("GET", r"/pulls/1$", 403, {"message": "API rate limit exceeded for installation ID 1."})
    with pytest.raises(GitHubError, match="rate limit") as exc:
        forge_factory("t", "o/r").get_pull(1)
    assert "re-run" in (exc.value.hint or "") and sleeps == []


def test_no_commits_between_branches(fake_github: FakeGitHub, forge_factory: Any) -> None:
    body = {
        "message": "Validation Failed",
        "errors": [
            {"resource": "PullRequest", "code": "custom", "message": "No commits between main and data/x"}
        ],
    }
    fake_github.fail("POST", r"/pulls$", 422, body)
    with pytest.raises(GitHubError) as exc:
        forge_factory("t", "o/r").create_pull(head="data/x", base="main", title="t", body="b")
    assert "No commits between main and data/x" in exc.value.message
    assert "push the data commit" in (exc.value.hint or "")


def test_delete_missing_branch_is_a_404(fake_github: FakeGitHub, forge_factory: Any) -> None:
    with pytest.raises(GitHubError, match="404"):
        forge_factory("t", "o/r").delete_branch("gone")


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ("Pull request Pull request is in clean status", "clean"),
        ("Pull request Protected branch rules not configured for this branch", "clean"),
        ("Pull request Auto merge is not allowed for this repository", "disabled"),
        ("Pull request Pull request is in unstable status", "other"),
    ],
)
def test_classify_automerge_refusal(message: str, reason: str) -> None:
    assert classify_automerge_refusal(message) == reason


def test_repo_resolution_and_run_link() -> None:
    assert resolve_repo(None, ActionsContext(repository="o/r")) == "o/r"
    assert resolve_repo("a/b", ActionsContext(repository="o/r")) == "a/b"
    assert resolve_repo(None, ActionsContext()) is None
    assert resolve_repo(None) is None  # no context: nothing is guessed from the environment
    with pytest.raises(UsageError, match="owner/name"):
        resolve_repo("o/r; rm -rf /", ActionsContext())
    where = {"server_url": "https://ghe.example.com", "repository": "o/r", "run_id": "9"}
    assert ActionsContext(**where).run_url() == "https://ghe.example.com/o/r/actions/runs/9"
    again = ActionsContext(**where, run_attempt="2")
    assert again.run_url().endswith("/runs/9/attempts/2")
    assert ActionsContext().run_url() == ""


def test_head_branch_not_on_github(fake_github: FakeGitHub, forge_factory: Any) -> None:
    with pytest.raises(GitHubError) as exc:
        forge_factory("t", "o/r").create_pull(head="data/never-pushed", base="main", title="t", body="b")
    assert "PullRequest head is invalid" in exc.value.message
    assert "does not exist on GitHub" in (exc.value.hint or "")


def test_read_file_at_a_commit(fake_github: FakeGitHub, forge_factory: Any, sleeps: list[float]) -> None:
    """The contents API at a sha (what promotion on merge reads at a merged PR's head): the text,
    None for a path the commit does not have, and a 5xx retried like every other call."""
    sha = "f" * 40
    fake_github.put_file(sha, "data/training.dvc", "outs:\n- md5: x\n  path: training\n")
    fake_github.fail("GET", r"/contents/", 502)
    forge = forge_factory("t", "o/r")
    assert forge.read_file("data/training.dvc", sha) == "outs:\n- md5: x\n  path: training\n"
    assert len(sleeps) == 1
    assert forge.read_file("data/training.dvc", "a" * 40) is None
    assert forge.read_file("data/other.dvc", sha) is None


def test_typed_results_write_exactly_the_declared_outputs(tmp_path: Any) -> None:
    """The PR stages' outputs are derived from their dataclasses: one place to match the registry."""
    from traingate.github.automerge import AutomergeResult
    from traingate.github.pr import PrResult
    from traingate.github.status import CommentResult
    from traingate.outputs import OUTPUTS

    pr = PrResult(operation="rendered", body_path=tmp_path / "pr.md")
    assert tuple(pr.outputs()) == OUTPUTS["pr create"] and pr.outputs()["pr_number"] == ""
    merged = AutomergeResult(merge_state="off", method="off")
    assert tuple(merged.outputs()) == OUTPUTS["pr automerge"]
    assert tuple(CommentResult(url="u", operation="created", sha="s").outputs()) == OUTPUTS["pr comment"]
