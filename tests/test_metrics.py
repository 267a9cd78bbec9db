"""The metrics-file contract: strict, and every error names the path (and line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from traingate.errors import TrainError
from traingate.metrics import read_final_metrics, read_metrics_log, to_points


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_final_metrics(tmp_path: Path) -> None:
    p = write(tmp_path / "m.json", '{"dice": 0.91, "iou": 1, "val/loss": 0.2}')
    assert read_final_metrics(p) == {"dice": 0.91, "iou": 1.0, "val/loss": 0.2}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not valid JSON"),
        ("[0.9]", "expected a JSON object of metric names to numbers, got list"),
        ("{}", "holds no metrics"),
        ('{"dice": "0.9"}', "metric 'dice' is '0.9', not a number"),
        ('{"dice": true}', "metric 'dice' is True, not a number"),
        ('{"dice": null}', "not a number"),
        ('{"dice": NaN}', "diverged"),
        ('{"dice": Infinity}', "diverged"),
        ('{"di<ce>": 0.1}', "is not allowed by MLflow"),
    ],
)
def test_bad_final_metrics_name_the_path(tmp_path: Path, text: str, message: str) -> None:
    p = write(tmp_path / "m.json", text)
    with pytest.raises(TrainError) as info:
        read_final_metrics(p)
    assert message in info.value.message
    assert str(p) in info.value.message
    assert info.value.file == str(p)


def test_missing_final_metrics(tmp_path: Path) -> None:
    with pytest.raises(TrainError, match=r"did not write its metrics file .*nope\.json"):
        read_final_metrics(tmp_path / "nope.json")


def test_metrics_log(tmp_path: Path) -> None:
    lines = [{"step": s, "loss": 1.0 / (s + 1), "dice": 0.1 * s, "timestamp": 5} for s in range(3)]
    p = write(tmp_path / "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    log = read_metrics_log(p)
    assert len(log.entries) == 3 and log.max_step == 2 and log.count == 6
    assert log.entries[1] == (1, {"loss": 0.5, "dice": 0.1})


def test_missing_metrics_log_is_empty(tmp_path: Path) -> None:
    assert read_metrics_log(tmp_path / "none.jsonl").entries == []


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{oops", "is not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"loss": 0.1}', "`step` must be a non-negative integer, got None"),
        ('{"step": -1, "loss": 0.1}', "got -1"),
        ('{"step": 1.5, "loss": 0.1}', "got 1.5"),
        ('{"step": 2, "loss": "x"}', "metric 'loss' is 'x'"),
    ],
)
def test_bad_metrics_log_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    p = write(tmp_path / "m.jsonl", '{"step": 0, "loss": 1}\n' + line + "\n")
    with pytest.raises(TrainError) as info:
        read_metrics_log(p)
    assert f"{p}:2" in info.value.message
    assert message in info.value.message
    assert info.value.line == 2


def test_final_values_win_over_history(tmp_path: Path) -> None:
    """MLflow reports the value at the highest step: the final metrics go at the last step with
    a later timestamp, so the run's metric is exactly metrics.json."""
    log = read_metrics_log(
        write(tmp_path / "m.jsonl", '{"step": 0, "dice": 0.1}\n{"step": 7, "dice": 0.95}\n')
    )
    pts = to_points({"dice": 0.9}, log, now_ms=10_000)
    final = [p for p in pts if p.value == 0.9]
    assert final[0].step == 7
    assert all(p.timestamp_ms < final[0].timestamp_ms for p in pts if p is not final[0])
    assert len(pts) == 3
