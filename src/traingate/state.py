"""Small JSON state shared between stages run on the same machine (`train` -> `gate` -> `pr`).

In a workflow the stages run in different jobs and pass values as job outputs and artifacts;
on one machine (`traingate run`, a user at a terminal) they find each other's results here.
Writes are atomic (temp file + rename) so an interrupted step never leaves half a file.

`State` names every key, who writes it and who reads it: a key nobody reads is not written
(issue #13), and a misspelt key is a TypeError at the writer instead of a silent `None` at the
reader.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
REPORTS_DIR = "reports"


@dataclass(frozen=True)
class State:
    # train -> gate: the candidate run (None after a failed train, so gate cannot pick an old one).
    run_id: str | None = None
    # train -> train --attach: the run started before the runner lost the job.
    pending_run_id: str | None = None
    # data merge -> run / pr create: the validation report of the merged batch.
    data_report: str | None = None
    # pr create -> pr automerge: the PR to merge.
    pr_number: int | None = None
    # infra start -> infra stop: who holds the machine on this computer.
    infra_holder: str | None = None

    @classmethod
    def from_json(cls, payload: Any) -> State:
        """Known keys only: a state file from another version never breaks a step."""
        if not isinstance(payload, dict):
            return cls()
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in payload.items() if k in names})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def reports_dir(workspace: Path) -> Path:
    return workspace / REPORTS_DIR


def read_state(workspace: Path) -> State:
    path = workspace / STATE_FILE
    if not path.exists():
        return State()
    try:
        return State.from_json(json.loads(path.read_text(encoding="utf-8")))
    except json.JSONDecodeError:
        return State()


def update_state(workspace: Path, **values: Any) -> State:
    """Set some keys of `State` (a name that is not a field raises TypeError)."""
    names = {f.name for f in fields(State)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise TypeError(f"state.json has no key {', '.join(unknown)} (see traingate.state.State)")
    state = State(**{**read_state(workspace).to_json(), **values})
    atomic_write_json(workspace / STATE_FILE, state.to_json())
    return state
