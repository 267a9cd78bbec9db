"""The gate report is one type (`contracts.GateReport`) for the writer and every reader: the file on
disk is exactly `to_json()`, `from_json()` reads it back (missing keys take defaults, wrong types
are a GateError naming the key), and the step's outputs derive from the same value."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.github.conftest import GATE_REPORT
from tests.tracking.helpers import NO_WAIT, Project, make_run, open_adapter
from traingate import report as reports
from traingate.contracts import GateReport, MetricVerdict
from traingate.errors import GateError
from traingate.tracking.gate import GateResult, gate_step


def test_the_written_report_round_trips_and_the_outputs_derive_from_the_value(project: Project) -> None:
    cfg = project.config()
    tr = open_adapter(cfg, runtime=NO_WAIT)
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    result = gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.9, "iou": 0.8}), tracking=tr)

    value = result.value
    assert isinstance(value, GateResult)
    assert value.improved is True and value.baseline == "1" and value.model_version == "2"
    assert result.outputs == value.outputs()
    on_disk = json.loads(Path(result.outputs["report"]).read_text())
    assert on_disk == value.report.to_json() == result.data["report"]
    assert GateReport.from_json(on_disk) == value.report
    # The keys DEVELOPERS.md documents, plus the three the readers use since.
    assert set(on_disk) == {
        "improved",
        "baseline",
        "baseline_run_id",
        "candidate_run_id",
        "model",
        "alias",
        "model_version",
        "promoted",
        "promoted_alias",
        "promote_mode",
        "require",
        "reason",
        "run_url",
        "metrics",
        "warnings",
        "eval_set",
        "rescored",
    }
    assert set(on_disk["metrics"][0]) == {
        "name",
        "direction",
        "candidate",
        "baseline",
        "delta",
        "passed",
        "reason",
    }
    # The summary renders the typed report the same way the PR body renders the file.
    assert reports.render_gate_markdown(on_disk) in result.summary


def test_not_improved_is_a_typed_false(project: Project) -> None:
    cfg = project.config()
    tr = open_adapter(cfg, runtime=NO_WAIT)
    gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.8, "iou": 0.7}), tracking=tr)
    result = gate_step(cfg, run_id=make_run(tr, cfg, {"dice": 0.7, "iou": 0.6}), tracking=tr)
    assert result.value is not None and result.value.improved is False
    assert result.value.model_version == "" and result.outputs["improved"] is False


def test_a_report_with_missing_keys_takes_the_defaults() -> None:
    gate = GateReport.from_json({"improved": True, "metrics": [{"name": "dice", "candidate": 1}]})
    assert gate.baseline == "none" and gate.first_model and gate.alias == "champion"
    assert gate.model_version is None and gate.promoted is False and gate.rescored is None
    assert gate.metrics == (MetricVerdict("dice", "max", 1.0, None, None, False, ""),)
    assert GateReport.from_json(GATE_REPORT).to_json()["metrics"] == GATE_REPORT["metrics"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("improved", "true"),  # what `str(x) == "true"` used to accept
        ("improved", 1),
        ("baseline", 3),
        ("metrics", {"dice": 0.9}),
        ("metrics", ["dice"]),
        ("warnings", "one"),
        ("rescored", "yes"),
    ],
)
def test_a_value_of_the_wrong_type_names_the_key(key: str, value: Any) -> None:
    with pytest.raises(GateError, match="gate report") as err:
        GateReport.from_json({**GATE_REPORT, key: value})
    assert "traingate gate" in (err.value.hint or "")


def test_a_metric_value_of_the_wrong_type_is_refused() -> None:
    metrics = [dict(GATE_REPORT["metrics"][0], candidate="0.9")]
    with pytest.raises(GateError, match=r"metrics\[0\].*'candidate'"):
        GateReport.from_json({**GATE_REPORT, "metrics": metrics})
    flag = [dict(GATE_REPORT["metrics"][0], candidate=True)]
    with pytest.raises(GateError, match="'candidate' must be a number"):
        GateReport.from_json({**GATE_REPORT, "metrics": flag})


def test_renderers_take_the_typed_report_or_its_json() -> None:
    typed = GateReport.from_json(GATE_REPORT)
    assert reports.render_gate_markdown(typed) == reports.render_gate_markdown(GATE_REPORT)
    mode = {**GATE_REPORT, "promote_mode": "on-merge"}
    marker = reports.render_promotion_marker(GateReport.from_json(mode))
    assert marker == reports.render_promotion_marker(mode)
    assert reports.parse_promotion_marker(marker) == {
        "model": "water-meters",
        "version": "4",
        "run_id": "c" * 32,
        "promote": "on-merge",
    }
