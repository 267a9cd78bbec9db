"""Gate commit status and the validation-failure commit comment."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.github.conftest import GATE_REPORT, FakeGitHub
from traingate.errors import UsageError
from traingate.gha import ActionsContext
from traingate.github.status import comment_step, gate_status_description, post_gate_status
from traingate.report import VALIDATION_COMMENT_MARKER

SHA = "f" * 40
FAILED_REPORT = {
    "status": "fail",
    "counts": {"images": 3, "masks": 2, "pairs": 2, "valid_pairs": 1},
    "errors": [
        {"code": "missing_mask", "path": "images/a|b.jpg", "message": "no masks/a|b.png"},
        {"code": "non_binary_mask", "path": "masks/c.png", "message": "values 0, 17, 255; allowed 0, 255"},
    ],
    "warnings": [],
}


def test_not_improved_posts_failure_and_description_fits(fake_github: FakeGitHub, forge_factory: Any) -> None:
    forge = forge_factory("t", "o/r")
    gate = dict(GATE_REPORT, improved=False)
    gate["metrics"] = [
        dict(m, name=f"metric_with_a_long_name_{i}", delta=-0.1)
        for i, m in enumerate(GATE_REPORT["metrics"] * 5)
    ]
    assert post_gate_status(forge, SHA, gate, context="ci/gate") == "failure"
    [status] = fake_github.statuses  # the fake answers 422 above 140 characters
    assert status["context"] == "ci/gate" and status["state"] == "failure"
    assert len(status["description"]) <= 140 and status["description"].startswith("not improved vs v3")
    assert "target_url" not in status


def test_first_model_description() -> None:
    text = gate_status_description(dict(GATE_REPORT, baseline="none"))
    assert text.startswith("improved no champion yet: dice 0.9134")


def _comment(cfg: Any, factory: Any, path: Any, **kw: Any) -> Any:
    actions = ActionsContext(repository="o/r", sha=SHA, run_id="5")
    return comment_step(
        cfg, kw.pop("token", "t"), None, kw.pop("sha", None), path, forge_factory=factory, actions=actions
    )


def test_comment_created_then_updated_on_rerun(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any
) -> None:
    cfg, reports = workspace
    path = reports / "failed.json"
    path.write_text(json.dumps(FAILED_REPORT))

    first = _comment(cfg, forge_factory, path)
    assert first.outputs["operation"] == "created"
    [(cid, comment)] = fake_github.comments.items()
    assert comment["sha"] == SHA
    body = comment["body"]
    assert VALIDATION_COMMENT_MARKER in body
    assert "| `missing_mask` | `images/a\\|b.jpg` | no masks/a\\|b.png |" in body
    assert "`non_binary_mask`" in body and "https://github.com/o/r/actions/runs/5" in body
    assert first.outputs["comment_url"].endswith(f"#commitcomment-{cid}")
    assert first.value.sha == SHA and first.value.outputs() == first.outputs

    FAILED_REPORT_2 = dict(FAILED_REPORT, errors=FAILED_REPORT["errors"][:1])
    path.write_text(json.dumps(FAILED_REPORT_2))
    second = _comment(cfg, forge_factory, path)
    assert second.outputs["operation"] == "updated"
    assert len(fake_github.comments) == 1
    assert "non_binary_mask" not in fake_github.comments[cid]["body"]


def test_a_person_comment_is_left_alone(fake_github: FakeGitHub, forge_factory: Any, workspace: Any) -> None:
    cfg, reports = workspace
    fake_github.comments[7] = {"sha": SHA, "body": "looks wrong to me"}
    path = reports / "failed.json"
    path.write_text(json.dumps(FAILED_REPORT))
    assert _comment(cfg, forge_factory, path).outputs["operation"] == "created"
    assert fake_github.comments[7]["body"] == "looks wrong to me"
    assert len(fake_github.comments) == 2


def test_errors_capped_with_and_n_more(fake_github: FakeGitHub, forge_factory: Any, workspace: Any) -> None:
    cfg, reports = workspace
    cfg.data.max_errors_in_summary = 5
    report = dict(
        FAILED_REPORT,
        errors=[
            {"code": "corrupt_file", "path": f"images/{i}.jpg", "message": "truncated"} for i in range(40)
        ],
    )
    path = reports / "failed.json"
    path.write_text(json.dumps(report))
    _comment(cfg, forge_factory, path)
    body = next(iter(fake_github.comments.values()))["body"]
    assert body.count("`corrupt_file`") == 5 and "… and 35 more" in body


def test_comment_needs_sha_repo_and_report(workspace: Any) -> None:
    cfg, reports = workspace
    with pytest.raises(UsageError, match="GITHUB_SHA"):
        comment_step(cfg, "t", "o/r", None, None, actions=ActionsContext())
    with pytest.raises(UsageError, match="GITHUB_REPOSITORY"):
        comment_step(cfg, "t", None, SHA, None, actions=ActionsContext())
    from traingate.errors import GitHubError

    with pytest.raises(GitHubError, match="data report not found"):
        comment_step(cfg, "t", "o/r", SHA, reports / "nope.json", actions=ActionsContext())


def test_a_comment_not_posted_is_a_warning_never_an_error(
    fake_github: FakeGitHub, forge_factory: Any, workspace: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`data merge --comment` (pipeline/merge.py): the merge's validation error decides the exit
    code; a comment that could not be posted comes back as a warning, a posted one as none."""
    from traingate.pipeline.merge import post_validation_comment

    cfg, reports = workspace
    path = reports / "failed.json"
    path.write_text(json.dumps(FAILED_REPORT))
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    where = ActionsContext(repository="o/r", sha=SHA)

    def post(actions: ActionsContext, token: str | None = None) -> list[str]:
        return post_validation_comment(cfg, path, token=token, actions=actions, forge_factory=forge_factory)

    assert post(ActionsContext(), "t")[0].startswith("could not post")  # not in Actions
    (missing_token,) = post(where)
    assert missing_token.startswith("could not post") and "GITHUB_TOKEN" in missing_token
    fake_github.fail("POST", r"/comments$", 403, {"message": "Resource not accessible by integration"})
    (denied,) = post(where, "t")
    assert denied.startswith("could not post") and "permissions" in denied
    assert post(where, "t") == [] and len(fake_github.comments) == 1


def test_a_comment_without_pygithub_is_a_warning(workspace: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue #15: without the `github` extra the import error replaced the validation errors."""
    import sys

    from traingate.pipeline.merge import post_validation_comment

    cfg, reports = workspace
    path = reports / "failed.json"
    path.write_text(json.dumps(FAILED_REPORT))
    monkeypatch.setitem(sys.modules, "github", None)  # `import github` raises ImportError
    (line,) = post_validation_comment(cfg, path, token="t", actions=ActionsContext(repository="o/r", sha=SHA))
    assert line.startswith("could not post") and "traingate[github]" in line
