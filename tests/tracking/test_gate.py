"""The gate and promotion against a real MLflow (SQLite store): registry, aliases, races."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.tracking.helpers import NO_WAIT, Project, make_run, open_adapter
from traingate.contracts import VersionRecord
from traingate.errors import GateError
from traingate.state import update_state
from traingate.tracking.gate import gate_step
from traingate.tracking.promote import promote_step


@pytest.fixture
def setup(project: Project) -> tuple[Any, Any]:
    cfg = project.config()
    return cfg, open_adapter(cfg, runtime=NO_WAIT)


def test_first_training_registers_champion(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    run_id = make_run(tr, cfg, {"dice": 0.8, "iou": 0.7})
    result = gate_step(cfg, run_id=run_id, tracking=tr)
    assert result.outputs["improved"] is True
    assert result.outputs["baseline"] == "none"
    assert result.outputs["model_version"] == "1"
    assert tr.get_aliases("tg-model") == {"champion": "1"}
    version = tr.get_version("tg-model", "1")
    assert version.run_id == run_id
    assert version.source.endswith("/model")
    assert version.tags["traingate.run_id"] == run_id
    assert version.tags["traingate.git_commit"] == "abc123"
    assert version.tags["traingate.data_version"] == "d41d8"
    assert version.tags["traingate.promotion"] == "promoted"
    assert "improved=true" in version.tags["traingate.gate"]
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert report["baseline"] == "none" and report["promoted"] is True
    assert report["candidate_run_id"] == run_id
    assert "no champion yet" in result.summary
    run = tr.get_run(run_id)
    assert run.tags["traingate.gate.improved"] == "true"


def test_better_candidate_moves_champion_and_keeps_previous(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    first = make_run(tr, cfg, {"dice": 0.8, "iou": 0.7})
    gate_step(cfg, run_id=first, tracking=tr)
    second = make_run(tr, cfg, {"dice": 0.85, "iou": 0.72})
    result = gate_step(cfg, run_id=second, tracking=tr)
    assert result.outputs["improved"] is True
    assert result.outputs["baseline"] == "1"
    assert result.outputs["model_version"] == "2"
    assert tr.get_aliases("tg-model") == {"champion": "2", "previous-champion": "1"}
    metrics = {m["name"]: m for m in result.outputs["metrics"]}
    assert metrics["dice"]["candidate"] == 0.85 and metrics["dice"]["baseline"] == 0.8
    assert metrics["dice"]["delta"] == pytest.approx(0.05)


def test_worse_candidate_is_not_promoted(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    worse = make_run(tr, cfg, {"dice": 0.7, "iou": 0.75})
    result = gate_step(cfg, run_id=worse, tracking=tr)
    assert result.outputs["improved"] is False
    assert result.outputs["model_version"] == ""
    assert tr.get_aliases("tg-model") == {"champion": "1"}
    assert len(tr.search_versions("tg-model", "traingate.baseline", "1")) == 0


def test_the_candidate_is_the_given_run_never_the_latest(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    worse = make_run(tr, cfg, {"dice": 0.5, "iou": 0.5})
    make_run(tr, cfg, {"dice": 0.99, "iou": 0.99})  # a later, better run of another job
    assert gate_step(cfg, run_id=worse, tracking=tr).outputs["improved"] is False


def test_without_run_id_the_gate_uses_the_run_train_recorded(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    run_id = make_run(tr, cfg, {"dice": 0.8, "iou": 0.7})
    update_state(cfg.workspace_dir, run_id=run_id)
    result = gate_step(cfg, tracking=tr)
    assert result.outputs["run_id"] == run_id and result.outputs["model_version"] == "1"


def test_without_run_id_and_state_the_gate_refuses(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    with pytest.raises(GateError, match="no candidate run"):
        gate_step(cfg, tracking=tr)


def test_unknown_run_fails_closed(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    with pytest.raises(GateError, match="unknown candidate run 'f00'"):
        gate_step(cfg, run_id="f00", tracking=tr)
    assert not (cfg.workspace_dir / "reports" / "gate-report.json").exists()


def test_failed_candidate_run_is_refused(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    run_id = make_run(tr, cfg, {"dice": 0.9, "iou": 0.9}, status="FAILED")
    with pytest.raises(GateError, match="is FAILED, not FINISHED"):
        gate_step(cfg, run_id=run_id, tracking=tr)
    assert tr.get_aliases("tg-model") is None


def test_missing_gated_metric_fails_closed_and_promotes_nothing(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    run_id = make_run(tr, cfg, {"dice": 0.9})
    with pytest.raises(GateError, match="has no metric 'iou'"):
        gate_step(cfg, run_id=run_id, tracking=tr)
    assert tr.get_aliases("tg-model") is None


def test_champion_whose_run_is_gone_fails_closed(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    first = make_run(tr, cfg, {"dice": 0.8, "iou": 0.7})
    gate_step(cfg, run_id=first, tracking=tr)
    tr._client.delete_run(first)
    better = make_run(tr, cfg, {"dice": 0.9, "iou": 0.9})
    with pytest.raises(GateError, match="could not read the baseline @champion"):
        gate_step(cfg, run_id=better, tracking=tr)
    assert tr.get_aliases("tg-model") == {"champion": "1"}


def test_registry_read_error_fails_closed(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    run_id = make_run(tr, cfg, {"dice": 0.9, "iou": 0.9})

    class Broken(type(tr)):  # type: ignore[misc]
        def get_aliases(self, model: str) -> dict[str, str] | None:
            raise __import__("traingate.errors").errors.TrackingError("HTTP 500 from the registry")

    broken = Broken.__new__(Broken)
    broken.__dict__.update(tr.__dict__)
    with pytest.raises(GateError, match="fails closed rather than compare with 0"):
        gate_step(cfg, run_id=run_id, tracking=broken)


def test_improved_run_without_model_artifacts_is_not_registered(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    run_id = make_run(tr, cfg, {"dice": 0.9, "iou": 0.9}, with_model=False)
    with pytest.raises(GateError, match="no model/ artifacts"):
        gate_step(cfg, run_id=run_id, tracking=tr)
    assert tr.get_aliases("tg-model") is None


def test_no_promote_compares_only(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    result = gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), promote=False, tracking=tr)
    assert result.outputs["improved"] is True
    assert result.outputs["model_version"] == ""
    assert tr.get_aliases("tg-model") is None


def test_promote_off_in_config(project: Project) -> None:
    cfg = project.config(gate={"promote": "off"})
    tr = open_adapter(cfg)
    result = gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    assert result.outputs["improved"] is True and result.outputs["model_version"] == ""


def test_rollback_restores_the_previous_champion(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.9, "iou": 0.8}), tracking=tr)
    result = promote_step(cfg, rollback=True, tracking=tr)
    assert result.outputs == {"model_version": "1", "alias": "champion", "promoted": "", "pending": ""}
    assert tr.get_aliases("tg-model") == {"champion": "1"}
    assert tr.get_version("tg-model", "2").tags["traingate.promotion"] == "rolled-back"
    with pytest.raises(GateError, match="no @previous-champion version to roll back to"):
        promote_step(cfg, rollback=True, tracking=tr)


def test_on_merge_sets_challenger_and_promote_moves_champion(project: Project) -> None:
    cfg = project.config(gate={"promote": "on-merge"})
    tr = open_adapter(cfg)
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    assert tr.get_aliases("tg-model") == {"challenger": "1"}  # production untouched
    promote_step(cfg, tracking=tr)
    assert tr.get_aliases("tg-model") == {"champion": "1"}

    result = gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.9, "iou": 0.8}), tracking=tr)
    assert result.outputs["model_version"] == "2"
    assert "`traingate promote` after the merge" in result.summary
    assert tr.get_aliases("tg-model") == {"champion": "1", "challenger": "2"}
    out = promote_step(cfg, tracking=tr)
    assert out.outputs["model_version"] == "2"
    assert tr.get_aliases("tg-model") == {"champion": "2", "previous-champion": "1"}
    with pytest.raises(GateError, match="no @challenger version"):
        promote_step(cfg, tracking=tr)


def test_on_merge_promote_refuses_a_challenger_gated_against_an_old_champion(project: Project) -> None:
    cfg = project.config(gate={"promote": "on-merge"})
    tr = open_adapter(cfg)
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    promote_step(cfg, tracking=tr)  # champion 1
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.85, "iou": 0.75}), tracking=tr)  # challenger 2
    promote_step(cfg, version="1", tracking=tr)  # no-op, champion already 1
    tr.set_alias("tg-model", "champion", "2")
    tr.set_alias("tg-model", "challenger", "2")
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.9, "iou": 0.8}), tracking=tr)  # challenger 3 vs 2
    tr.set_alias("tg-model", "champion", "1")  # someone rolled back meanwhile
    with pytest.raises(GateError, match="was gated against 2, but @champion is now 1"):
        promote_step(cfg, tracking=tr)
    assert promote_step(cfg, version="3", tracking=tr).outputs["model_version"] == "3"


def test_promote_unknown_version(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    with pytest.raises(GateError, match="cannot promote"):
        promote_step(cfg, version="42", tracking=tr)


def test_alias_moved_since_comparison_is_refused(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    other = make_run(tr, cfg, {"dice": 0.95, "iou": 0.9})
    tr.ensure_registered_model("tg-model")
    v_other = tr.create_version("tg-model", "file:///x/model", other, {})

    def someone_else_promotes(_mine: VersionRecord) -> None:
        tr.set_alias("tg-model", "champion", v_other.version)

    with pytest.raises(GateError, match="moved from 1 to 2 since the comparison"):
        gate_step(
            cfg,
            run_id=make_run(tr, cfg, {"dice": 0.9, "iou": 0.8}),
            tracking=tr,
            after_register=someone_else_promotes,
        )
    assert tr.get_aliases("tg-model")["champion"] == v_other.version
    assert tr.get_version("tg-model", "3").tags["traingate.promotion"] == "lost"


def test_two_concurrent_gates_do_not_both_win(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    runs = [make_run(tr, cfg, {"dice": 0.9, "iou": 0.8}), make_run(tr, cfg, {"dice": 0.91, "iou": 0.81})]
    # Both have compared with champion 1 and registered before either moves the alias.
    barrier = threading.Barrier(2, timeout=30)
    results: dict[str, Any] = {}

    def gate(run_id: str) -> None:
        adapter = open_adapter(cfg, runtime=NO_WAIT)
        try:
            results[run_id] = gate_step(
                cfg, run_id=run_id, tracking=adapter, after_register=lambda _v: barrier.wait()
            )
        except GateError as err:
            results[run_id] = err

    threads = [threading.Thread(target=gate, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r in runs if not isinstance(results[r], Exception)]
    losers = [r for r in runs if isinstance(results[r], GateError)]
    assert len(winners) == 1 and len(losers) == 1, results
    assert "another gate is promoting" in results[losers[0]].message
    champion = tr.get_aliases("tg-model")["champion"]
    assert tr.get_version("tg-model", champion).run_id == winners[0]
    assert tr.get_aliases("tg-model")["previous-champion"] == "1"


def test_a_stale_pending_claim_does_not_block_forever(setup: tuple[Any, Any]) -> None:
    cfg, tr = setup
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    dead = make_run(tr, cfg, {"dice": 0.85, "iou": 0.75})
    tr.create_version(
        "tg-model",
        "file:///x/model",
        dead,
        {"traingate.baseline": "1", "traingate.promotion": "pending", "traingate.claim": "dead"},
    )
    live = make_run(tr, cfg, {"dice": 0.9, "iou": 0.8})
    with pytest.raises(GateError, match="another gate is promoting version 2"):
        gate_step(cfg, run_id=live, tracking=tr)
    import time as _time

    later = _time.time() + 31 * 60
    result = gate_step(cfg, run_id=live, tracking=tr, wall=lambda: later)
    assert result.outputs["model_version"] == "4"
    assert tr.get_aliases("tg-model")["champion"] == "4"
