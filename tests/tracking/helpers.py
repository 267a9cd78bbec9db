"""Helpers shared by tests/tracking and tests/train: a project folder with a copied MLflow
SQLite store, a config for it, and runs made through the real adapter."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from traingate.config import Config, parse_config
from traingate.contracts import MetricPoint
from traingate.runtime import Runtime
from traingate.tracking.mlflow_client import MlflowTracking, artifact_location

# Retries without waiting: the tracking tests check behaviour, not backoff time.
NO_WAIT = Runtime(sleep=lambda _s: None)

TRAIN_SCRIPT = r"""
import json, os, pathlib, sys, time
out = pathlib.Path("outputs")
out.mkdir(exist_ok=True)
mode = os.environ.get("MODE", "ok")
epochs = int(os.environ.get("EPOCHS", "3"))
print("epochs", epochs, flush=True)
with open(out / "metrics.jsonl", "w") as fh:
    for step in range(epochs):
        fh.write(json.dumps({"step": step, "loss": 1.0 / (step + 1), "dice": 0.1 * step}) + "\n")
        print(f"epoch {step}", flush=True)
if mode == "fail":
    print("RuntimeError: CUDA out of memory", flush=True)
    sys.exit(3)
if mode == "sleep":
    time.sleep(60)
if mode == "nometrics":
    sys.exit(0)
if mode == "badmetrics":
    (out / "metrics.json").write_text('{"dice": "high"}')
    sys.exit(0)
if mode == "mlflow":
    import mlflow
    with mlflow.start_run():  # attaches to MLFLOW_RUN_ID
        mlflow.log_param("lr", 0.01)
        mlflow.log_metric("dice", 0.01, step=50)  # its own curve, at higher steps than the jsonl
        mlflow.set_tag("script", "logged-itself")
if mode != "nomodel":
    (out / "model.bin").write_bytes(b"weights-" + os.environ.get("DICE", "0").encode())
(out / "metrics.json").write_text(json.dumps({"dice": float(os.environ.get("DICE", "0.8")),
                                              "iou": float(os.environ.get("IOU", "0.7"))}))
print("done", flush=True)
"""


@dataclass
class Project:
    root: Path
    template: Path

    def config(self, project: str = "tg-test", **sections: dict[str, Any]) -> Config:
        raw: dict[str, Any] = {
            "project": project,
            "train": {
                "command": f"{sys.executable} train.py",
                "pull_data": False,
                "artifacts": ["outputs/model.bin"],
                "timeout_minutes": 1,
            },
            "tracking": {"retry_budget_seconds": 3, "health_timeout_seconds": 2, "max_retries": 0},
            "gate": {"model": "tg-model"},
        }
        for key, value in sections.items():
            raw[key] = {**raw.get(key, {}), **value}
        return parse_config(raw, base_dir=self.root)


def make_project(tmp_path: Path, template: Path) -> Project:
    workspace = tmp_path / ".traingate"
    workspace.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, workspace / "mlflow.db")
    (tmp_path / "train.py").write_text(TRAIN_SCRIPT)
    return Project(tmp_path, template)


def open_adapter(cfg: Config, **kwargs: Any) -> MlflowTracking:
    return MlflowTracking(cfg.tracking_uri, cfg.tracking, **kwargs)


def make_run(
    tracking: MlflowTracking,
    cfg: Config,
    metrics: dict[str, float],
    *,
    with_model: bool = True,
    status: str = "FINISHED",
    tmp: Path | None = None,
) -> str:
    """A finished candidate run as `traingate train` leaves it (metrics, model/ artifact, tags)."""
    exp = tracking.ensure_experiment(cfg.tracking.experiment, artifact_location(cfg))
    run = tracking.create_run(
        exp, "candidate", {"traingate.git_commit": "abc123", "traingate.data_version": "d41d8"}
    )
    now = int(time.time() * 1000)
    tracking.log_metrics(run.run_id, [MetricPoint(k, v, 0, now) for k, v in metrics.items()])
    if with_model:
        folder = (tmp or cfg.base_dir) / "model-files" / run.run_id
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "model.bin").write_bytes(b"w")
        tracking.log_artifact(run.run_id, folder / "model.bin", "model")
    tracking.end_run(run.run_id, status)
    return run.run_id
