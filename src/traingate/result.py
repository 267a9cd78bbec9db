"""What a stage hands back to the CLI: outputs, a summary and a human message.

Stages return a StepResult on success and raise a TraingateError on failure; `cli.py` is the
only place that writes these to $GITHUB_OUTPUT / $GITHUB_STEP_SUMMARY / stdout.

`value` is the stage's typed result (a dataclass such as the gate's verdict): composers
(`pipeline/`, the demo) read `result.value.improved`, never `outputs["improved"]` re-parsed
from a string. `outputs` are what the CLI writes for a workflow, derived from the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class StepResult(Generic[T]):
    outputs: dict[str, Any] = field(default_factory=dict)
    # Markdown appended to $GITHUB_STEP_SUMMARY.
    summary: str = ""
    # Printed to stderr for a person reading the log (stdout is reserved for --json).
    message: str = ""
    # Extra structured data for --json (outputs are always included).
    data: dict[str, Any] = field(default_factory=dict)
    # Annotations raised by a successful step (e.g. best-effort artifact upload failed).
    warnings: list[str] = field(default_factory=list)
    # The typed result for composers (None for steps that have none yet).
    value: T | None = None

    def as_json(self) -> dict[str, Any]:
        payload = dict(self.data)
        payload.setdefault("outputs", self.outputs)
        if self.warnings:
            payload.setdefault("warnings", self.warnings)
        return payload
