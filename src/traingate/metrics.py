"""The metrics-file contract between a training script and traingate.

`metrics.json` (required): one JSON object of final metrics, `{"dice": 0.91, "iou": 0.84}`.
`metrics.jsonl` (optional): one JSON object per epoch with an integer `step`,
`{"step": 0, "loss": 0.7, "dice": 0.41}`.

Both are checked strictly and fail naming the path (and line): a gate must never compare a
metric that silently became 0, a string, or NaN.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from traingate.contracts import MetricPoint
from traingate.errors import TrainError

# MLflow rejects other keys with a 400 after training is over; say so before logging.
_KEY_RE = re.compile(r"^[\w./\- :]{1,250}$")
# Keys of a metrics.jsonl line that describe the line rather than being metrics.
_META_KEYS = frozenset({"step", "timestamp", "epoch_time"})


@dataclass
class MetricsLog:
    entries: list[tuple[int, dict[str, float]]] = field(default_factory=list)

    @property
    def max_step(self) -> int:
        return max((step for step, _ in self.entries), default=0)

    @property
    def count(self) -> int:
        return sum(len(values) for _, values in self.entries)


def load_json(path: Path, *, hint: str) -> Any:
    """A JSON file the training command wrote; bad JSON or bytes are a TrainError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TrainError(f"{path} is not valid JSON: {err}", hint=hint, file=str(path)) from None


def _number(value: object) -> float | None:
    # bool is an int in Python; `true` in a metrics file is a bug, not 1.0.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _check_key(key: str, path: Path, where: str, line: int | None) -> None:
    if not _KEY_RE.match(key):
        raise TrainError(
            f"{path}{where}: metric name {key!r} is not allowed by MLflow",
            hint="use letters, digits, and _ - . / : or spaces (at most 250 characters)",
            file=str(path),
            line=line,
        )


def _check_values(
    raw: object, path: Path, where: str, *, skip: frozenset[str], line: int | None = None
) -> dict[str, float]:
    if not isinstance(raw, dict):
        raise TrainError(
            f"{path}{where}: expected a JSON object of metric names to numbers, got {type(raw).__name__}",
            hint='write e.g. {"dice": 0.91, "iou": 0.84}',
            file=str(path),
        )
    values: dict[str, float] = {}
    for key, value in raw.items():
        if key in skip:
            continue
        _check_key(str(key), path, where, line)
        number = _number(value)
        if number is None:
            raise TrainError(
                f"{path}{where}: metric {key!r} is {value!r}, not a number",
                hint="write metrics as JSON numbers",
                file=str(path),
                line=line,
            )
        if not math.isfinite(number):
            raise TrainError(
                f"{path}{where}: metric {key!r} is {value!r}; the training diverged or wrote a placeholder",
                hint="fix the training (or the script's metrics export) so every metric is a finite number",
                file=str(path),
                line=line,
            )
        values[str(key)] = number
    return values


def read_final_metrics(path: Path) -> dict[str, float]:
    """The final metrics; raise TrainError naming the path for anything but a non-empty object
    of finite numbers."""
    if not path.is_file():
        raise TrainError(
            f"the training command did not write its metrics file {path}",
            hint="make the script write a JSON object of final metrics there, or set train.metrics_file",
            file=str(path),
        )
    raw = load_json(path, hint='write one JSON object such as {"dice": 0.91}')
    values = _check_values(raw, path, "", skip=frozenset())
    if not values:
        raise TrainError(
            f"{path} holds no metrics (an empty object)",
            hint="write at least the metrics the gate compares (gate.metrics)",
            file=str(path),
        )
    return values


def read_metrics_log(path: Path) -> MetricsLog:
    """The per-epoch log; a missing file is an empty log (it is optional), a malformed line is an
    error naming the line."""
    result = MetricsLog()
    if not path.is_file():
        return result
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            text = line.strip()
            if not text:
                continue
            where = f":{number}"
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as err:
                raise TrainError(
                    f"{path}{where} is not valid JSON: {err}",
                    hint='write one object per line, e.g. {"step": 3, "loss": 0.2}',
                    file=str(path),
                    line=number,
                ) from None
            if not isinstance(raw, dict):
                raise TrainError(
                    f"{path}{where}: expected a JSON object, got {type(raw).__name__}",
                    hint='write one object per line, e.g. {"step": 3, "loss": 0.2}',
                    file=str(path),
                    line=number,
                )
            step = raw.get("step")
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise TrainError(
                    f"{path}{where}: `step` must be a non-negative integer, got {step!r}",
                    hint="add the epoch number as `step` to every line",
                    file=str(path),
                    line=number,
                )
            result.entries.append((step, _check_values(raw, path, where, skip=_META_KEYS, line=number)))
    return result


def to_points(
    final: dict[str, float], history: MetricsLog, *, now_ms: int, min_final_step: int = 0
) -> list[MetricPoint]:
    """Points for MLflow: the per-epoch history, then the final values.

    MLflow reports, per key, the value at the highest step (then the latest timestamp). The
    final values are logged at the history's last step with a later timestamp, so what the
    gate reads is exactly metrics.json, and the curve is not stretched by a fake epoch.
    `min_final_step`: the highest step the script itself logged for these keys, if it did.
    """
    points: list[MetricPoint] = []
    base = now_ms - len(history.entries) - 1
    for index, (step, values) in enumerate(history.entries):
        points.extend(MetricPoint(k, v, step, base + index) for k, v in values.items())
    last_step = max(history.max_step, min_final_step)
    points.extend(MetricPoint(k, v, last_step, now_ms) for k, v in final.items())
    return points
