"""Small JSON state shared between stages run on the same machine (`train` -> `gate` -> `pr`).

In a workflow the stages run in different jobs and pass values as job outputs and artifacts;
on one machine (`traingate run`, a user at a terminal) they find each other's results here.
Writes are atomic (temp file + rename) so an interrupted step never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
REPORTS_DIR = "reports"


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


def read_state(workspace: Path) -> dict[str, Any]:
    path = workspace / STATE_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def update_state(workspace: Path, **values: Any) -> dict[str, Any]:
    state = read_state(workspace)
    state.update(values)
    atomic_write_json(workspace / STATE_FILE, state)
    return state
