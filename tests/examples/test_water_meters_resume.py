"""The water-meter example resumes from TRAINGATE_CHECKPOINT_DIR: a run stopped after epoch 2 and
re-run ends with exactly the model of an uninterrupted run (docs/infra.md, spot interruption)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.examples.test_water_meters import EXAMPLE, _gen


def _run(work: Path, out: str, epochs: int, ckdir: Path | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRAINGATE_CHECKPOINT_DIR"}
    if ckdir is not None:
        env["TRAINGATE_CHECKPOINT_DIR"] = str(ckdir)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--epochs", str(epochs), "--out", out],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_a_resumed_run_ends_with_the_uninterrupted_model(tmp_path: Path) -> None:
    _gen(tmp_path / "data" / "training", "--pairs", "12", "--seed", "1")
    ck = tmp_path / "checkpoints"
    _run(tmp_path, "first", 2, ck)  # the reclaim came after epoch 2 (the checkpoint survived)
    resumed = _run(tmp_path, "second", 4, ck)
    assert "resuming after epoch 2" in resumed.stdout
    assert [
        json.loads(x)["step"] for x in (tmp_path / "second" / "metrics.jsonl").read_text().splitlines()
    ] == [3, 4]
    whole = _run(tmp_path, "whole", 4, None)
    assert "resuming" not in whole.stdout
    assert json.loads((tmp_path / "second" / "metrics.json").read_text()) == json.loads(
        (tmp_path / "whole" / "metrics.json").read_text()
    )
