"""Promotion on merge promotes what was merged: the version recorded in the merged PR's body,
never "whatever @challenger is now". Real MLflow registry (sqlite), GitHub as `FakeGitHub`.

Issue #12 case 4: three gated runs (on-merge) leave @challenger at version 3; a person merges
PR #1; the old `traingate promote` made version 3 champion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.github.conftest import FakeGitHub
from tests.tracking.helpers import Project, make_run, open_adapter
from traingate import report as reports
from traingate.config import Config
from traingate.errors import GateError
from traingate.gha import ActionsContext
from traingate.github.automerge import automerge_step
from traingate.pipeline.pr import create_step
from traingate.pipeline.promote import LABEL_PROMOTED, LABEL_SUPERSEDED, reconcile_step
from traingate.tracking.gate import gate_step
from traingate.tracking.promote import TAG_MERGED_PR, promote_step

MODEL = "tg-model"
POINTER = "data/training.dvc"  # <data.root>.dvc of the default data.root, from the repository root


def _md5(i: int) -> str:
    return f"{i:032x}.dir"


def _pointer(md5: str) -> str:
    """The pointer `traingate data merge` commits on a data branch."""
    return f"outs:\n- md5: {md5}\n  size: 1024\n  nfiles: 4\n  hash: md5\n  path: training\n"


def _gated_prs(project: Project, fake: FakeGitHub, factory: Any, dices: list[float], **gate: Any) -> Config:
    """One gated run per dice value, each with its PR opened by `pr create` (as the pipeline does):
    run i trained on data version `_md5(i)`, the pointer its PR's head commits."""
    cfg = project.config(gate={"promote": "on-merge", **gate})
    tr = open_adapter(cfg)
    for i, dice in enumerate(dices, 1):
        branch = f"data/push-{i}"
        fake.branches[branch] = f"{i:x}" * 40
        fake.put_file(fake.branches[branch], POINTER, _pointer(_md5(i)))
        run_id = make_run(tr, cfg, {"dice": dice, "iou": dice - 0.1})
        tr.set_tags(run_id, {"traingate.data_version": _md5(i)})
        gate_step(cfg, run_id=run_id, tracking=tr)
        create_step(
            cfg, "t", "o/r", branch, None, None, None, None, forge_factory=factory, actions=ActionsContext()
        )
    return cfg


def _reconcile(cfg: Config, factory: Any, **kwargs: Any) -> Any:
    return reconcile_step(
        cfg, "t", "o/r", tracking=open_adapter(cfg), forge_factory=factory, actions=ActionsContext(), **kwargs
    )


def test_merging_pr_1_promotes_version_1_not_the_latest_challenger(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    tr = open_adapter(cfg)
    assert tr.get_aliases(MODEL) == {"challenger": "3"}
    marker = reports.parse_promotion_marker(fake_github.pulls[1]["body"])
    assert marker is not None and marker["version"] == "1" and marker["model"] == MODEL
    assert marker["run_id"] == tr.get_version(MODEL, "1").run_id

    fake_github.merge(1)  # a person (or GitHub's auto-merge) merged it: no workflow ran
    result = _reconcile(cfg, forge_factory)

    assert tr.get_aliases(MODEL)["champion"] == "1"
    assert tr.get_aliases(MODEL)["challenger"] == "3"  # still waiting for its own PR
    assert result.outputs["promoted"] == "1" and result.outputs["pending"] == "0"
    assert result.outputs["model_version"] == "1"
    version = tr.get_version(MODEL, "1")
    assert version.tags[TAG_MERGED_PR] == "1"
    assert version.tags["traingate.promoted_from_pr"] == "1"
    assert version.tags["traingate.promotion"] == "promoted"
    assert LABEL_PROMOTED in fake_github.labels[1]

    # Idempotent: the next sweep finds nothing to do and moves nothing.
    again = _reconcile(cfg, forge_factory)
    assert again.outputs["promoted"] == "" and tr.get_aliases(MODEL)["champion"] == "1"


def test_the_old_behaviour_promoted_the_current_challenger(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    # What promote-on-merge.yml ran: plain `traingate promote`. Kept for `--version`/by hand,
    # but the templates no longer call it after a merge.
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    fake_github.merge(1)
    promote_step(cfg, tracking=open_adapter(cfg))
    assert open_adapter(cfg).get_aliases(MODEL)["champion"] == "3"


def test_an_older_merge_never_demotes_a_newer_champion(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    tr = open_adapter(cfg)
    fake_github.merge(1, merged_at="2024-05-01T10:00:00Z")  # merged by a person...
    fake_github.merge(3, merged_at="2024-05-01T10:05:00Z")
    # ...the auto-merge job of run 3 promotes its own PR first,
    assert _reconcile(cfg, forge_factory, pr_number=3).outputs["promoted"] == "3"
    # then the scheduled sweep finds PR #1, merged before PR #3: it is recorded, not promoted.
    result = _reconcile(cfg, forge_factory)
    assert tr.get_aliases(MODEL)["champion"] == "3"
    assert result.outputs["promoted"] == "" and result.outputs["pending"] == "0"
    assert tr.get_version(MODEL, "1").tags["traingate.promotion"] == "superseded"
    assert LABEL_SUPERSEDED in fake_github.labels[1]
    assert "merged before" in result.message


def test_a_sweep_promotes_in_merge_order(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    tr = open_adapter(cfg)
    fake_github.merge(3, merged_at="2024-05-01T10:00:00Z")
    fake_github.merge(2, merged_at="2024-05-01T10:05:00Z")
    result = _reconcile(cfg, forge_factory)
    # Both were merged; the last merge is the decision that stands, and the first is kept behind it.
    assert result.outputs["promoted"] == "3 2"
    assert tr.get_aliases(MODEL)["champion"] == "2"
    assert tr.get_aliases(MODEL)["previous-champion"] == "3"
    assert "gated against none" in " ".join(result.warnings)


def test_automerge_that_merged_directly_then_promotes_that_pr(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82])
    fake_github.pulls[1]["mergeable_state"] = "clean"  # nothing to wait for: merged directly
    merged = automerge_step(
        cfg, "t", "o/r", 1, None, None, forge_factory=forge_factory, actions=ActionsContext()
    )
    assert merged.outputs["merge_state"] == "merged"
    _reconcile(cfg, forge_factory, pr_number=1)
    assert open_adapter(cfg).get_aliases(MODEL) == {"champion": "1", "challenger": "2"}


def test_on_gate_prs_are_never_promoted_again(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82], promote="on-gate")
    tr = open_adapter(cfg)
    assert tr.get_aliases(MODEL)["champion"] == "2"
    fake_github.merge(1)  # merging the older PR must not bring version 1 back
    result = _reconcile(cfg, forge_factory)
    assert tr.get_aliases(MODEL)["champion"] == "2"
    assert result.outputs["promoted"] == "" and result.outputs["pending"] == "0"


def test_a_marker_that_does_not_match_the_registry_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    body = fake_github.pulls[1]["body"]
    fake_github.pulls[1]["body"] = body.replace('"version": "1"', '"version": "2"')
    fake_github.merge(1)
    fake_github.merge(3)
    with pytest.raises(GateError, match=r"PR #1 names version 2 .* run") as err:
        _reconcile(cfg, forge_factory)
    # Loud (exit 1, every sweep until someone looks), but PR #3, merged after it, is not held back.
    assert "promoted in this sweep: PR 3" in err.value.message
    assert "traingate-promoted" in (err.value.hint or "")
    assert err.value.outputs == {"promoted": "3"}
    assert open_adapter(cfg).get_aliases(MODEL)["champion"] == "3"
    assert LABEL_PROMOTED not in fake_github.labels.get(1, [])


def _edit_marker(fake: FakeGitHub, number: int, **fields: str) -> None:
    """What anyone who can edit the PR body (or opens a PR with a marker of their own) can do."""
    marker = reports.parse_promotion_marker(fake.pulls[number]["body"])
    assert marker is not None
    old = reports.render_promotion_marker(
        {
            "model": marker["model"],
            "model_version": marker["version"],
            "candidate_run_id": marker["run_id"],
            "promote_mode": marker["promote"],
        }
    )
    assert old in fake.pulls[number]["body"]
    new = {**marker, **fields}
    fake.pulls[number]["body"] = fake.pulls[number]["body"].replace(
        old,
        reports.render_promotion_marker(
            {
                "model": new["model"],
                "model_version": new["version"],
                "candidate_run_id": new["run_id"],
                "promote_mode": new["promote"],
            }
        ),
    )


def _refused_but_pr_3_promoted(cfg: Config, fake: FakeGitHub, factory: Any, match: str) -> GateError:
    """PR #1 is refused loudly (exit 1, with a next step); PR #3, merged after it, is promoted."""
    fake.merge(1)
    fake.merge(3)
    with pytest.raises(GateError, match=match) as err:
        _reconcile(cfg, factory)
    assert "promoted in this sweep: PR 3" in err.value.message
    assert err.value.hint and "traingate promote --version" in err.value.hint
    assert open_adapter(cfg).get_aliases(MODEL)["champion"] == "3"
    assert LABEL_PROMOTED not in fake.labels.get(1, [])
    assert TAG_MERGED_PR not in open_adapter(cfg).get_version(MODEL, "2").tags
    return err.value


def test_a_marker_naming_another_model_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    # Another registered model with a version 1 from the same run: the old sweep moved its alias.
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    other = open_adapter(cfg)
    mine = other.get_version(MODEL, "1")
    other.ensure_registered_model("prod-model")
    assert other.create_version("prod-model", mine.source, mine.run_id, {}).version == "1"
    _edit_marker(fake_github, 1, model="prod-model")
    _refused_but_pr_3_promoted(cfg, fake_github, forge_factory, r"PR #1 names model 'prod-model'.*tg-model")
    assert other.get_aliases("prod-model") == {}


def test_a_marker_without_run_id_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    _edit_marker(fake_github, 1, version="2", run_id="")
    _refused_but_pr_3_promoted(cfg, fake_github, forge_factory, r"PR #1 .*no run id")


def test_a_marker_pointing_at_a_version_trained_on_other_data_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    # Version 2 and its own run id: consistent in the registry, but PR #1 merged data version 1.
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    run_2 = open_adapter(cfg).get_version(MODEL, "2").run_id
    _edit_marker(fake_github, 1, version="2", run_id=run_2)
    err = _refused_but_pr_3_promoted(
        cfg, fake_github, forge_factory, r"PR #1 names version 2 .* trained on data " + _md5(2)
    )
    assert _md5(1) in err.message and POINTER in err.message


def test_a_pr_whose_head_has_no_dataset_pointer_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    del fake_github.files[fake_github.branches["data/push-1"]][POINTER]
    _refused_but_pr_3_promoted(cfg, fake_github, forge_factory, rf"PR #1 .*no {POINTER}")


def test_a_version_the_gate_did_not_accept_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    # A run on PR #1's own data that the gate never registered (say, one it rejected), registered
    # by hand: its run id and data version match, only the gate's word is missing.
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    tr = open_adapter(cfg)
    rejected = make_run(tr, cfg, {"dice": 0.10, "iou": 0.05})
    tr.set_tags(rejected, {"traingate.data_version": _md5(1)})
    source = tr.get_run(rejected).artifact_uri.rstrip("/") + "/model"
    hand = tr.create_version(MODEL, source, rejected, {"traingate.data_version": _md5(1)})
    _edit_marker(fake_github, 1, version=hand.version, run_id=rejected)
    fake_github.merge(1)
    fake_github.merge(3)
    with pytest.raises(GateError, match=rf"PR #1 names version {hand.version} .*gate did not accept"):
        _reconcile(cfg, forge_factory)
    assert tr.get_aliases(MODEL)["champion"] == "3"
    assert "traingate.promotion" not in tr.get_version(MODEL, hand.version).tags


def test_a_version_that_lost_to_another_gate_is_refused(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    tr = open_adapter(cfg)
    tr.set_version_tag(MODEL, "1", "traingate.promotion", "lost")
    _refused_but_pr_3_promoted(
        cfg, fake_github, forge_factory, r"PR #1 names version 1 .*gate did not accept.*promotion=lost"
    )


def test_mlflow_on_the_instance_defers_to_the_workflow_that_borrows_it(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80])
    cfg.infra.mlflow_url = "http://{public_ip}:5000"  # the server lives on the (stopped) instance
    fake_github.merge(1)
    result = reconcile_step(cfg, "t", "o/r", forge_factory=forge_factory, actions=ActionsContext())
    assert result.outputs["pending"] == "1" and result.outputs["promoted"] == ""
    assert "--tracking-uri" in result.message
    assert open_adapter(cfg).get_aliases(MODEL) == {"challenger": "1"}
    # The workflow that started the instance passes its MLflow URL: now it promotes.
    done = reconcile_step(
        cfg, "t", "o/r", forge_factory=forge_factory, actions=ActionsContext(), tracking_uri=cfg.tracking_uri
    )
    assert done.outputs["promoted"] == "1"


def test_reconcile_of_a_pr_that_is_not_merged_says_so(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80])
    with pytest.raises(GateError, match="pull request #1 is not merged"):
        _reconcile(cfg, forge_factory, pr_number=1)


def test_pr_body_marker_round_trips_and_resists_a_closing_comment() -> None:
    gate = {"model": "m-->x", "model_version": "7", "candidate_run_id": "r" * 32, "promote_mode": "on-merge"}
    body = reports.render_pr_body(data_report=None, gate_report=gate)
    assert body.count("-->") == body.count("<!--")
    assert reports.parse_promotion_marker(body) == {
        "model": "m-->x",
        "version": "7",
        "run_id": "r" * 32,
        "promote": "on-merge",
    }
    assert reports.parse_promotion_marker("no marker here") is None
    assert reports.parse_promotion_marker("<!-- traingate: {not json} -->") is None


def test_cli_promote_reconcile(project: Project, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from traingate.cli import cli

    result = CliRunner().invoke(cli, ["promote", "--reconcile", "--version", "3"])
    assert result.exit_code == 2
    assert "--reconcile" in result.output and "--version" in result.output


def test_warnings_of_the_sweep_survive_a_refused_pr(
    project: Project, fake_github: FakeGitHub, forge_factory: Any
) -> None:
    # PR #3 and #2 are promoted (#2 with a "gated against" warning), PR #1 is refused: the
    # refusal fails the sweep, and the warning about #2 travels on the error instead of vanishing.
    cfg = _gated_prs(project, fake_github, forge_factory, [0.80, 0.82, 0.84])
    _edit_marker(fake_github, 1, run_id="")
    fake_github.merge(3, merged_at="2024-05-01T10:00:00Z")
    fake_github.merge(2, merged_at="2024-05-01T10:05:00Z")
    fake_github.merge(1, merged_at="2024-05-01T10:10:00Z")
    with pytest.raises(GateError, match=r"PR #1 .*no run id") as err:
        _reconcile(cfg, forge_factory)
    assert err.value.outputs == {"promoted": "3 2"}
    assert any("gated against" in w for w in err.value.warnings)
