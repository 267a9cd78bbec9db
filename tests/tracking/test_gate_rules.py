"""Every gate rule on plain records: no server needed to decide."""

from __future__ import annotations

import math

import pytest

from traingate.config import GateMetric
from traingate.contracts import RunRecord
from traingate.errors import GateError
from traingate.report import render_gate_markdown
from traingate.tracking.gate import evaluate


def run(metrics: dict[str, float], run_id: str = "cand") -> RunRecord:
    return RunRecord(run_id=run_id, experiment_id="1", status="FINISHED", artifact_uri="", metrics=metrics)


DICE = GateMetric(name="dice")
IOU = GateMetric(name="iou")


def test_first_training_without_thresholds_is_improved() -> None:
    d = evaluate([DICE], "all", run({"dice": 0.01}), None)
    assert d.improved
    assert "no champion yet" in d.reason
    assert d.metrics[0].baseline is None and d.metrics[0].delta is None


def test_first_training_must_meet_every_threshold() -> None:
    rules = [GateMetric(name="dice", threshold=0.5), GateMetric(name="loss", direction="min", threshold=0.3)]
    assert evaluate(rules, "all", run({"dice": 0.6, "loss": 0.2}), None).improved
    d = evaluate(rules, "any", run({"dice": 0.6, "loss": 0.4}), None)
    assert not d.improved  # a threshold is a floor even with require: any
    assert "misses the threshold" in d.metrics[1].reason


def test_better_on_all_metrics_is_improved() -> None:
    d = evaluate([DICE, IOU], "all", run({"dice": 0.9, "iou": 0.8}), run({"dice": 0.85, "iou": 0.79}, "base"))
    assert d.improved
    assert d.metrics[0].delta == pytest.approx(0.05)


def test_tie_is_not_an_improvement() -> None:
    d = evaluate([DICE], "all", run({"dice": 0.85}), run({"dice": 0.85}, "base"))
    assert not d.improved
    assert "tie" in d.metrics[0].reason


def test_float_noise_is_a_tie() -> None:
    d = evaluate([DICE], "all", run({"dice": 0.1 + 0.2}), run({"dice": 0.3}, "base"))
    assert not d.improved


def test_require_all_needs_every_metric() -> None:
    d = evaluate([DICE, IOU], "all", run({"dice": 0.9, "iou": 0.7}), run({"dice": 0.85, "iou": 0.8}, "b"))
    assert not d.improved
    assert [m.passed for m in d.metrics] == [True, False]
    assert "worse" in d.metrics[1].reason


def test_require_any_needs_one_metric() -> None:
    d = evaluate([DICE, IOU], "any", run({"dice": 0.9, "iou": 0.7}), run({"dice": 0.85, "iou": 0.8}, "b"))
    assert d.improved


def test_require_any_with_nothing_better_is_not_improved() -> None:
    d = evaluate([DICE, IOU], "any", run({"dice": 0.8, "iou": 0.7}), run({"dice": 0.85, "iou": 0.8}, "b"))
    assert not d.improved


def test_min_delta_boundary() -> None:
    rule = GateMetric(name="dice", min_delta=0.01)
    base = run({"dice": 0.85}, "b")
    assert evaluate([rule], "all", run({"dice": 0.86}), base).improved  # exactly the margin
    d = evaluate([rule], "all", run({"dice": 0.855}), base)
    assert not d.improved
    assert "less than the required 0.01" in d.metrics[0].reason


def test_min_relative_delta() -> None:
    rule = GateMetric(name="dice", min_relative_delta=0.02)  # 2 % of 0.5 = 0.01
    base = run({"dice": 0.5}, "b")
    assert not evaluate([rule], "all", run({"dice": 0.505}), base).improved
    assert evaluate([rule], "all", run({"dice": 0.511}), base).improved


def test_min_direction() -> None:
    rule = GateMetric(name="loss", direction="min", min_delta=0.05)
    base = run({"loss": 0.40}, "b")
    d = evaluate([rule], "all", run({"loss": 0.30}), base)
    assert d.improved
    assert d.metrics[0].delta == pytest.approx(-0.10)
    assert not evaluate([rule], "all", run({"loss": 0.37}), base).improved  # better, not enough
    assert not evaluate([rule], "all", run({"loss": 0.50}), base).improved  # worse


def test_threshold_applies_with_a_champion() -> None:
    rule = GateMetric(name="dice", threshold=0.9)
    d = evaluate([rule], "all", run({"dice": 0.88}), run({"dice": 0.8}, "b"))
    assert not d.improved
    assert "threshold" in d.reason


def test_missing_candidate_metric_fails_closed() -> None:
    with pytest.raises(GateError) as info:
        evaluate([DICE, IOU], "any", run({"dice": 0.99}), run({"dice": 0.1, "iou": 0.1}, "b"))
    assert "candidate run cand has no metric 'iou'" in info.value.message
    assert "dice" in info.value.message  # says what it has


def test_missing_baseline_metric_fails_closed() -> None:
    with pytest.raises(GateError, match="baseline run b has no metric 'iou'"):
        evaluate([DICE, IOU], "all", run({"dice": 0.9, "iou": 0.9}), run({"dice": 0.1}, "b"))


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_values_fail_closed(bad: float) -> None:
    with pytest.raises(GateError, match="cannot be compared"):
        evaluate([DICE], "all", run({"dice": bad}), run({"dice": 0.5}, "b"))


def test_table_has_one_row_per_metric_with_verdicts() -> None:
    from dataclasses import asdict

    d = evaluate([DICE, IOU], "all", run({"dice": 0.9, "iou": 0.7}), run({"dice": 0.85, "iou": 0.8}, "b"))
    # The gate step renders its summary from the gate report, like the PR body does.
    report = {
        "improved": d.improved,
        "baseline": "3",
        "model": "m",
        "alias": "champion",
        "reason": d.reason,
        "metrics": [asdict(v) for v in d.metrics],
    }
    table = render_gate_markdown(report)
    assert "not improved" in table
    assert "| dice | max | 0.9 | 0.85 | +0.05 | ✅" in table
    assert "| iou | max | 0.7 | 0.8 | -0.1 | ⛔" in table
    assert "version 3" in table
