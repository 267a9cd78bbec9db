"""`pr automerge`: the GraphQL mutation, the clean-status fallback, and every refusal made loud."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from tests.github.conftest import FakeGitHub
from traingate.errors import CredentialsError, GitHubError, UsageError
from traingate.gha import ActionsContext
from traingate.github.automerge import automerge_step
from traingate.state import update_state

HEAD = "data/20240501-101500"
ACTIONS = ActionsContext(repository="o/r")


def _automerge(cfg: Any, factory: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "token": "ghs_secret",
        "repo": None,
        "pr_number": 1,
        "method": None,
        "delete_branch": None,
    }
    args.update(kw)
    return automerge_step(cfg, forge_factory=factory, actions=ACTIONS, **args)


def test_enables_automerge_with_the_gated_head_sha(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD)
    result = _automerge(cfg, forge_factory)

    assert result.outputs == {"pr_number": 1, "merge_state": "auto_merge_enabled", "method": "squash"}
    assert result.value is not None and result.value.outputs() == result.outputs
    assert result.value.url == "https://github.com/o/r/pull/1" and result.value.merged_sha == ""
    [call] = fake_github.graphql
    assert "mutation" in call["query"] and "enablePullRequestAutoMerge" in call["query"]
    assert call["variables"] == {
        "input": {
            "pullRequestId": "PR_kwDO000001",
            "mergeMethod": "SQUASH",
            "expectedHeadOid": fake_github.branches[HEAD],
        }
    }
    assert fake_github.pulls[1]["auto_merge"] == {"merge_method": "squash"}
    assert fake_github.merges == []


def test_rerun_with_automerge_already_enabled_sends_no_mutation(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD)
    _automerge(cfg, forge_factory)
    again = _automerge(cfg, forge_factory)
    assert again.outputs["merge_state"] == "auto_merge_enabled"
    assert "already enabled" in again.message
    assert len(fake_github.graphql) == 1


def test_method_flag_overrides_config(fake_github: FakeGitHub, forge_factory: Any, workspace: Any) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD)
    _automerge(cfg, forge_factory, method="rebase")
    assert fake_github.graphql[0]["variables"]["input"]["mergeMethod"] == "REBASE"


def test_clean_status_merges_directly_with_the_same_method_and_deletes_branch(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD, mergeable_state="clean")
    head_sha = fake_github.branches[HEAD]
    result = _automerge(cfg, forge_factory, delete_branch=True)

    assert result.outputs["merge_state"] == "merged"
    assert fake_github.merges == [{"number": 1, "merge_method": "squash", "sha": head_sha}]
    assert fake_github.deleted == [HEAD]
    assert fake_github.pulls[1]["merged"] is True


def test_clean_status_without_merge_when_clean_is_exit_1(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    cfg.pr.merge_when_clean = False
    fake_github.open_pull(HEAD, mergeable_state="clean")
    with pytest.raises(GitHubError) as exc:
        _automerge(cfg, forge_factory)
    assert exc.value.exit_code == 1
    assert "clean status" in exc.value.message and "merge_when_clean is false" in exc.value.message
    assert fake_github.merges == []


def test_automerge_disabled_on_repository_names_the_setting(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.auto_merge_allowed = False
    fake_github.open_pull(HEAD)
    with pytest.raises(GitHubError) as exc:
        _automerge(cfg, forge_factory)
    assert "Auto merge is not allowed for this repository" in exc.value.message
    assert 'tick "Allow auto-merge"' in (exc.value.hint or "")
    assert fake_github.merges == []


def test_token_without_permission_names_the_permissions(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.graphql_forbidden = True
    fake_github.open_pull(HEAD)
    with pytest.raises(GitHubError) as exc:
        _automerge(cfg, forge_factory)
    assert "Resource not accessible by integration" in exc.value.message
    assert "pull-requests: write" in (exc.value.hint or "")


def test_head_moved_since_the_gate_is_refused(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    """The direct merge is pinned to the head the gate judged; a newer push gets GitHub's 409."""
    cfg, _ = workspace
    fake_github.open_pull(HEAD, mergeable_state="clean")

    from traingate.github.forge import PullInfo

    class Moving:
        """Reads the PR, then a push lands before the merge."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def get_pull(self, number: int) -> PullInfo:
            info = self.inner.get_pull(number)
            fake_github.branches[HEAD] = "9" * 40
            return info

    with pytest.raises(GitHubError) as exc:
        _automerge(cfg, lambda t, r: Moving(forge_factory(t, r)))
    assert "409" in exc.value.message and "Head branch was modified" in exc.value.message
    assert fake_github.merges == []


def test_already_merged_and_closed(fake_github: FakeGitHub, forge_factory: Any, workspace: Any) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD, state="closed", merged=True)
    result = _automerge(cfg, forge_factory)
    assert result.outputs["merge_state"] == "already_merged"
    assert fake_github.graphql == []

    fake_github.open_pull("data/other", state="closed")
    with pytest.raises(GitHubError, match="is closed, not open"):
        _automerge(cfg, forge_factory, pr_number=2)


def test_unknown_pr_is_a_clear_404(fake_github: FakeGitHub, forge_factory: Any, workspace: Any) -> None:
    cfg, _ = workspace
    with pytest.raises(GitHubError) as exc:
        _automerge(cfg, forge_factory, pr_number=42)
    assert "404" in exc.value.message and "PR number" in (exc.value.hint or "")


def test_pr_number_from_the_workspace_state(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD)
    update_state(cfg.workspace_dir, pr_number=1)
    result = _automerge(cfg, forge_factory, pr_number=None)
    assert result.outputs["pr_number"] == 1


def test_off_calls_nothing_and_usage_errors(workspace: Any) -> None:
    cfg, _ = workspace
    with responses.RequestsMock():
        assert _automerge(cfg, None, method="off").outputs["merge_state"] == "off"
        with pytest.raises(UsageError, match="no pull request number"):
            _automerge(cfg, None, pr_number=None)
        with pytest.raises(CredentialsError, match="GITHUB_TOKEN"):
            _automerge(cfg, None, token=None)


def test_delete_branch_with_scheduled_automerge_warns(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD)
    result = _automerge(cfg, forge_factory, delete_branch=True)
    assert any("Automatically delete head branches" in w for w in result.warnings)
    assert fake_github.deleted == []
