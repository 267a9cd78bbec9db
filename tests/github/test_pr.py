"""`pr create` against PyGithub and a stateful `responses` fake of GitHub."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import responses

from tests.github.conftest import GATE_REPORT, FakeGitHub
from traingate.errors import CredentialsError, GitHubError, UsageError
from traingate.gha import ActionsContext
from traingate.github.pr import PrResult
from traingate.pipeline.pr import create_step
from traingate.report import GITHUB_BODY_LIMIT
from traingate.state import read_state

HEAD = "data/20240501-101500"
ENV = {
    "GITHUB_REPOSITORY": "o/r",
    "GITHUB_REF_NAME": HEAD,
    "GITHUB_RUN_ID": "987654",
    "GITHUB_SERVER_URL": "https://github.com",
}


def _create(cfg: Any, factory: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {
        "token": "ghs_secret",
        "repo": None,
        "head": None,
        "base": None,
        "data_report": None,
        "gate_report": None,
        "metrics_log": None,
    }
    args.update(kw)
    actions = ActionsContext.from_env(args.pop("env", ENV))
    return create_step(cfg, forge_factory=factory, actions=actions, **args)


def test_creates_pr_posts_status_and_labels(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    result = _create(cfg, forge_factory)

    assert result.outputs["operation"] == "created"
    assert result.outputs["pr_number"] == 1
    assert result.outputs["pr_url"] == "https://github.com/o/r/pull/1"
    assert result.outputs["head_sha"] == fake_github.branches[HEAD]
    pr = fake_github.pulls[1]
    assert (pr["head"], pr["base"]) == (HEAD, "main")
    assert pr["title"] == "traingate: model improved with 12 new images (48 total)"
    # The gate verdict as a commit status on the PR head, so branch protection can require it.
    [status] = fake_github.statuses
    assert status["sha"] == fake_github.branches[HEAD]
    assert status["state"] == "success"
    assert status["context"] == "traingate/gate"
    assert status["target_url"] == "https://github.com/o/r/actions/runs/987654"
    assert "dice 0.9134 (+0.0263)" in status["description"]
    assert fake_github.labels[1] == ["traingate"]
    assert read_state(cfg.workspace_dir).pr_number == 1
    # compare (the PR's diff holds data only), list, create, status, labels
    assert [m for m, _ in fake_github.log] == ["GET", "GET", "POST", "POST", "POST"]
    # The typed value the outputs are derived from (what a composer reads).
    assert result.value == PrResult(
        operation="created",
        body_path=Path(result.outputs["body_path"]),
        title=pr["title"],
        number=1,
        url="https://github.com/o/r/pull/1",
        head_sha=fake_github.branches[HEAD],
        status="success",
    )
    assert result.outputs == result.value.outputs()


def test_body_has_counts_checks_metric_table_links_and_mermaid(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    _create(cfg, forge_factory)
    body = fake_github.pulls[1]["body"]

    assert "| existing images | 36 |" in body
    assert "| new images | 12 |" in body
    assert "| total images | 48 |" in body
    assert "resolution" in body and "binary masks" in body  # checks that ran
    assert "| dice | max | 0.9134 | 0.8871 | +0.0263 | ✅ better |" in body
    assert "| iou | max | 0.8412 | 0.812 | +0.0292 | ✅ better |" in body
    assert "[MLflow run](http://mlflow.example:5000/#/experiments/1/runs/" in body
    assert "[Actions run](https://github.com/o/r/actions/runs/987654)" in body
    blocks = re.findall(r"```mermaid\n(.*?)```", body, re.S)
    assert len(blocks) == 3  # dice, iou (gated first), loss
    assert blocks[0].startswith("xychart-beta\n")
    assert 'title "dice"' in blocks[0]
    assert "line [0.51, 0.52," in blocks[0]
    assert 'title "loss"' in blocks[2]
    # The same body is kept on disk for the run's artifacts.
    assert body in (cfg.base_dir / ".traingate/pr.md").read_text()


def test_existing_open_pr_is_updated_not_duplicated(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.open_pull(HEAD, "main")
    fake_github.labels[1] = ["needs-review"]
    result = _create(cfg, forge_factory)

    assert result.outputs["operation"] == "updated"
    assert result.outputs["pr_number"] == 1
    assert fake_github.count("POST", r"/pulls$") == 0
    assert fake_github.pulls[1]["title"].startswith("traingate: model improved")
    assert "| dice | max | 0.9134" in fake_github.pulls[1]["body"]
    # Labels are added, never replaced: a person's label stays.
    assert fake_github.labels[1] == ["needs-review", "traingate"]
    # The diff check, one look-up, one PATCH, the status, the labels: nothing more per run.
    assert [m for m, _ in fake_github.log] == ["GET", "GET", "PATCH", "POST", "POST"]
    # A second run is also an update, still one PR.
    again = _create(cfg, forge_factory)
    assert again.outputs["operation"] == "updated" and len(fake_github.pulls) == 1


def test_body_is_capped_at_githubs_limit(fake_github: FakeGitHub, forge_factory: Any, workspace: Any) -> None:
    cfg, reports = workspace
    cfg.data.max_errors_in_summary = 5000
    big = json.loads((reports / "data-report.json").read_text())
    big["warnings"] = [
        {
            "code": "near_empty_mask",
            "path": f"masks/{'x' * 60}{i}.png",
            "message": "almost no foreground " * 3,
        }
        for i in range(3000)
    ]
    (reports / "data-report.json").write_text(json.dumps(big))

    result = _create(cfg, forge_factory)
    body = fake_github.pulls[1]["body"]
    assert result.outputs["operation"] == "created"  # the fake answers 422 above 65,536
    assert len(body) <= GITHUB_BODY_LIMIT
    # The metric table a reviewer merges on survives; the long tables went first.
    assert "| dice | max | 0.9134" in body
    assert "| | | … and 2990 more |" in body
    assert 'title "dice"' in body  # the curves fit once the table shrank


def test_403_actions_may_not_create_prs_names_the_setting(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any, sleeps: list[float]
) -> None:
    cfg, _ = workspace
    fake_github.actions_may_create_prs = False
    with pytest.raises(GitHubError) as exc:
        _create(cfg, forge_factory)
    assert exc.value.exit_code == 1
    assert "not permitted to create or approve pull requests" in exc.value.message
    assert "Allow GitHub Actions to create and approve pull requests" in (exc.value.hint or "")
    assert fake_github.count("POST", r"/pulls$") == 1 and sleeps == []  # a 4xx is not retried
    assert fake_github.statuses == []


def test_5xx_is_retried_with_bounded_backoff(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any, sleeps: list[float]
) -> None:
    cfg, _ = workspace
    fake_github.fail("GET", r"/pulls$", 502)
    fake_github.fail("POST", r"/statuses/", 503)
    result = _create(cfg, forge_factory)
    assert result.outputs["operation"] == "created"
    assert len(fake_github.statuses) == 1
    assert sleeps == [2.0, 2.0]  # first back-off of each call (rand=1.0: the top of the jitter)


def test_5xx_that_never_ends_fails_after_the_budget(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any, sleeps: list[float]
) -> None:
    cfg, _ = workspace
    for _ in range(10):
        fake_github.fail("GET", r"/pulls$", 500)
    with pytest.raises(GitHubError) as exc:
        _create(cfg, forge_factory)
    assert "gave up after 4 attempt(s)" in exc.value.message
    assert fake_github.count("GET", r"/pulls$") == 4
    assert sleeps == [2.0, 4.0, 8.0]


def test_lost_create_response_is_found_and_updated(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    """A 502 after GitHub created the PR: the retry gets 422 "already exists" and updates it."""
    cfg, _ = workspace
    fake_github.fail("POST", r"/pulls$", 502, after=True)
    result = _create(cfg, forge_factory)
    assert len(fake_github.pulls) == 1
    assert result.outputs["operation"] == "updated"
    assert result.outputs["pr_number"] == 1
    assert fake_github.statuses[0]["sha"] == fake_github.branches[HEAD]


def test_status_failure_after_create_says_the_pr_exists(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.fail("POST", r"/statuses/", 403, {"message": "Resource not accessible by integration"})
    with pytest.raises(GitHubError) as exc:
        _create(cfg, forge_factory)
    assert "pull request #1 was created" in exc.value.message
    assert "statuses: write" in (exc.value.hint or "")
    assert exc.value.outputs["pr_number"] == 1


def test_not_improved_refuses_without_calling_github(workspace: Any) -> None:
    cfg, reports = workspace
    gate = dict(GATE_REPORT, improved=False, reason="dice did not improve")
    (reports / "gate-report.json").write_text(json.dumps(gate))
    # Any request would raise ConnectionError: nothing may reach GitHub.
    with responses.RequestsMock(), pytest.raises(GitHubError) as exc:
        _create(cfg, None)
    assert "improved=false" in exc.value.message and "dice did not improve" in exc.value.message
    assert exc.value.exit_code == 1


def test_repository_without_token_is_exit_2_naming_the_variable(workspace: Any) -> None:
    cfg, _ = workspace
    with pytest.raises(CredentialsError) as exc:
        _create(cfg, None, token=None)
    assert exc.value.exit_code == 2
    assert "GITHUB_TOKEN" in exc.value.message
    assert "pull-requests: write" in (exc.value.hint or "")


def test_render_only_without_token_and_repo_calls_no_api(workspace: Any) -> None:
    cfg, _ = workspace
    with responses.RequestsMock():
        result = _create(cfg, None, token=None, env={})
    assert result.outputs["operation"] == "rendered"
    text = Path(result.outputs["body_path"]).read_text()
    assert text.startswith("# traingate: model improved with 12 new images (48 total)")
    assert "```mermaid\nxychart-beta" in text


def test_render_only_flag_wins_over_token(workspace: Any) -> None:
    cfg, _ = workspace
    with responses.RequestsMock():
        result = _create(cfg, None, render_only=True)
    assert result.outputs["operation"] == "rendered"


def test_missing_gate_report_says_which_stage_writes_it(workspace: Any) -> None:
    cfg, reports = workspace
    (reports / "gate-report.json").unlink()
    with pytest.raises(GitHubError) as exc:
        _create(cfg, None)
    assert "gate report not found" in exc.value.message
    assert "--gate-report" in (exc.value.hint or "")


def test_option_like_head_is_a_usage_error(workspace: Any) -> None:
    # head == base is no longer an error: see the base-branch tests at the end of this file.
    cfg, _ = workspace
    with pytest.raises(UsageError):
        _create(cfg, None, head="--upload-pack=evil")


def test_pull_request_event_uses_github_head_ref(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    env = dict(ENV, GITHUB_REF_NAME="7/merge", GITHUB_HEAD_REF=HEAD)
    result = _create(cfg, forge_factory, env=env)
    assert fake_github.pulls[result.outputs["pr_number"]]["head"] == HEAD


def test_github_enterprise_via_github_api_url(workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, _ = workspace
    from traingate.github.forge import PyGithubForge

    made: list[str] = []

    def make_forge(token: str, repo: str, *, base_url: str) -> PyGithubForge:
        made.append(base_url)
        return PyGithubForge(
            token, repo, base_url=base_url, seconds_between_requests=0, seconds_between_writes=0
        )

    # The default forge (no factory handed in) takes its API URL from the Actions context.
    monkeypatch.setattr("traingate.github.forge.make_forge", make_forge)
    env = dict(ENV, GITHUB_API_URL="https://ghe.example.com/api/v3")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeGitHub(rsps, api="https://ghe.example.com:443/api/v3")
        result = _create(cfg, None, env=env)
    assert made == ["https://ghe.example.com/api/v3"]
    assert result.outputs["operation"] == "created"
    assert fake.statuses and fake.log[1][1] == "/api/v3/repos/o/r/pulls"
    assert fake.log[0][1].startswith("/api/v3/repos/o/r/compare/main...")


def test_body_cut_with_a_note_when_even_the_gate_table_is_too_long(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, reports = workspace
    gate = dict(GATE_REPORT)
    gate["metrics"] = [
        {
            "name": f"class_{i}_dice",
            "direction": "max",
            "candidate": 0.9,
            "baseline": 0.8,
            "delta": 0.1,
            "passed": True,
        }
        for i in range(2000)
    ]
    (reports / "gate-report.json").write_text(json.dumps(gate))
    _create(cfg, forge_factory)
    body = fake_github.pulls[1]["body"]
    assert len(body) <= GITHUB_BODY_LIMIT
    assert "Truncated to GitHub's 65,536-character limit" in body
    assert "| class_0_dice | max | 0.9 | 0.8 | +0.1 | ✅ better |" in body


def test_label_failure_is_a_warning_not_a_lost_pr(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    fake_github.fail("POST", r"/labels$", 403, {"message": "Resource not accessible by integration"})
    result = _create(cfg, forge_factory)
    assert result.outputs["operation"] == "created" and fake_github.statuses
    assert any("could not label pull request #1" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("changed", "named"),
    [
        ([("modified", "data/training.dvc"), ("modified", "train.py")], "train.py (modified)"),
        ([("modified", "traingate.yml")], "traingate.yml (modified)"),
        ([("added", ".github/workflows/x.yml")], ".github/workflows/x.yml (added)"),
        ([("renamed", "data/new/x.py", "train.py")], "train.py (deleted)"),  # a delete + an add
    ],
)
def test_refuses_a_pr_whose_diff_changes_more_than_data(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any, changed: list, named: str
) -> None:
    """Issue #11 case 3: the PR an auto-merge would land carries data pointers only."""
    from traingate.errors import UntrustedChangeError

    cfg, reports = workspace
    fake_github.changed[HEAD] = changed
    (reports / "data-report.json").unlink()  # a warning gathered before the refusal
    with pytest.raises(UntrustedChangeError) as info:
        _create(cfg, forge_factory)
    err = info.value
    assert err.exit_code == 1 and err.code == "untrusted_change"
    assert any("no data report" in w for w in err.warnings)  # it survives the error
    assert named in err.message and "main" in err.message
    assert fake_github.pulls == {} and fake_github.statuses == []
    assert [p for _, p in fake_github.log] == [fake_github.log[0][1]]  # only the compare


def test_a_pr_with_only_pointers_incoming_and_allowed_paths_is_opened(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, _ = workspace
    cfg.data.allowed_paths = ["data/notes/**"]
    fake_github.changed[HEAD] = [
        ("modified", "data/training.dvc"),
        ("modified", "data/.gitignore"),
        ("added", ".dvc/config"),
        ("added", "data/notes/2024/batch.md"),
    ]
    assert _create(cfg, forge_factory).outputs["operation"] == "created"


def test_a_diff_longer_than_github_lists_is_refused(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    from traingate.errors import UntrustedChangeError

    cfg, _ = workspace
    fake_github.changed[HEAD] = [("added", f"data/new/images/{i}.jpg") for i in range(301)]
    with pytest.raises(UntrustedChangeError, match="more files than GitHub lists"):
        _create(cfg, forge_factory)
    assert fake_github.pulls == {}


# ------------------------------------------------- manual retraining on the base branch (#12 case 5)
@pytest.mark.parametrize(
    ("promoted_alias", "mode", "expected"),
    [
        ("champion", "on-gate", "version 4 is already @champion"),
        ("challenger", "on-merge", "traingate promote --version 4"),
        (None, "off", "nothing was promoted"),
    ],
)
def test_on_the_base_branch_no_pr_is_attempted_and_the_result_says_what_happened(
    fake_github: FakeGitHub,
    forge_factory: Any,
    workspace: Any,
    promoted_alias: str | None,
    mode: str,
    expected: str,
) -> None:
    # `manual-train.yml` dispatched on main: the run's branch is the base itself.
    cfg, reports = workspace
    gate = {**GATE_REPORT, "promoted_alias": promoted_alias, "promote_mode": mode}
    gate["promoted"] = promoted_alias == "champion"
    (reports / "gate-report.json").write_text(json.dumps(gate))
    result = _create(cfg, forge_factory, env={**ENV, "GITHUB_REF_NAME": "main"})

    assert result.outputs["operation"] == "skipped"
    assert result.outputs["pr_number"] == "" and result.outputs["pr_url"] == ""
    assert Path(result.outputs["body_path"]).is_file()
    assert fake_github.log == []  # no API call at all: no PR, no status, no label
    assert expected in result.message
    assert "main" in result.message
    if mode == "on-merge":
        assert any("traingate promote --version 4" in w for w in result.warnings)
