"""What `train` records on the run besides metrics and artifacts (issue #12).

- `traingate.eval_set`: the fingerprint of `gate.eval_set`, so the gate compares only runs
  measured on the same evaluation set;
- parameters: `train.params` and the `params.json` the training wrote, so a champion says how
  it was made;
- the MLflow model in `train.model_dir` (a folder with an `MLmodel` file), logged as an MLflow
  logged model so the version the gate registers loads with
  `mlflow.pyfunc.load_model("models:/<model>@champion")`; without one, a loud warning that the
  version will not be loadable.

Kept apart from `runner.py` so the run's lifecycle (create, train, check, end) stays readable
there; everything here runs after the command succeeded and before the run is FINISHED, and a
failure here fails the run like any other.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.contracts import TAG_ARTIFACTS, TAG_MODEL_ID, TAG_MODEL_SOURCE
from traingate.errors import TrackingError, TrainError
from traingate.metrics import load_json

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.contracts import Tracking, TrainOutcome

# Files older than the run by more than this were left by an earlier run (as in runner.py).
_STALE_SLACK_SECONDS = 2.0
# MLflow's limit for a parameter value.
_MAX_PARAM_CHARS = 6000


def record_eval_set(cfg: Config, tracking: Tracking, run_id: str) -> str | None:
    """Tag the run with the eval set's fingerprint (when gate.eval_set is set)."""
    if not cfg.gate.eval_set:
        return None
    from traingate.tracking.evalset import TAG_EVAL_SET, eval_set_fingerprint

    value = eval_set_fingerprint(cfg)
    tracking.set_tags(run_id, {TAG_EVAL_SET: value})
    return value


def _stale(path: Path, fresh_after: float | None) -> bool:
    return fresh_after is not None and path.stat().st_mtime < fresh_after - _STALE_SLACK_SECONDS


def _param_text(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else json.dumps(value)
        if isinstance(value, dict | list)
        else str(value)
    )


def _read_params_file(path: Path) -> dict[str, Any]:
    raw = load_json(
        path, hint='write one JSON object such as {"lr": 0.01, "epochs": 20}, or set train.params_file'
    )
    if not isinstance(raw, dict):
        raise TrainError(
            f"{path} must hold a JSON object of parameters, got {type(raw).__name__}",
            hint='write one JSON object such as {"lr": 0.01, "epochs": 20}',
            file=str(path),
        )
    return raw


def record_params(
    cfg: Config,
    tracking: Tracking,
    run_id: str,
    outputs_dir: Path,
    fresh_after: float | None,
    warnings: list[str],
) -> int:
    """Log train.params and the training's params file; return how many parameters the run has
    from them. MLflow parameters cannot change once logged: a key the script already logged
    itself with another value is kept as it is, with a warning."""
    params = {str(k): _param_text(v) for k, v in cfg.train.params.items()}
    path = outputs_dir / cfg.train.params_file
    if path.is_file():
        if _stale(path, fresh_after):
            warnings.append(f"{path} was not written by this training run; its parameters were not logged")
        else:
            for key, value in _read_params_file(path).items():
                text = _param_text(value)
                if key in params and params[key] != text:
                    warnings.append(
                        f"parameter {key!r}: {cfg.train.params_file} says {text!r}, train.params "
                        f"{params[key]!r}; logged the training's value"
                    )
                params[str(key)] = text
    for key, text in params.items():
        if len(text) > _MAX_PARAM_CHARS:
            warnings.append(
                f"parameter {key!r} is {len(text)} characters; logged its first {_MAX_PARAM_CHARS}"
            )
            params[key] = text[:_MAX_PARAM_CHARS]
    if not params:
        return 0
    existing = tracking.get_run(run_id).params
    todo = {}
    for key, text in params.items():
        if key not in existing:
            todo[key] = text
        elif existing[key] != text:
            warnings.append(
                f"parameter {key!r} was already logged by the script as {existing[key]!r}; "
                f"not replaced by {text!r} (MLflow parameters cannot change)"
            )
    if todo:
        tracking.log_params(run_id, todo)
    return len(params)


def record_model(
    cfg: Config,
    tracking: Tracking,
    run_id: str,
    experiment_id: str,
    outputs_dir: Path,
    fresh_after: float | None,
    warnings: list[str],
) -> str | None:
    """Log train.model_dir as an MLflow model; the `models:/<id>` URI, or None (with a warning)."""
    folder = outputs_dir / cfg.train.model_dir
    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        warnings.append(
            f"no MLflow model in train.model_dir ({cfg.train.model_dir}: no MLmodel file), so a version "
            "registered from this run is not loadable with mlflow.pyfunc.load_model; save the model with "
            f"mlflow.<flavor>.save_model(..., path='{cfg.train.model_dir}') in the training script"
        )
        return None
    if _stale(mlmodel, fresh_after):
        raise TrainError(
            f"the MLflow model {folder} was not written by this training run (last modified "
            f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(mlmodel.stat().st_mtime))}, before "
            "the run started)",
            hint="make the script save the model on every run (remove the old folder first: "
            "save_model refuses an existing one)",
            file=str(mlmodel),
        )
    try:
        model_id, location = tracking.log_model(run_id, experiment_id, folder, "model")
    except TrackingError as err:
        if cfg.train.artifacts_policy == "required":
            raise TrainError(
                f"logging the MLflow model {folder} to the run failed: {err.message}",
                hint="fix the artifact store permissions, or set train.artifacts_policy: best-effort "
                "to keep the model locally and go on",
            ) from err
        warnings.append(
            f"logging the MLflow model failed, it is kept only at {folder} "
            f"(train.artifacts_policy: best-effort): {err.message}"
        )
        tracking.set_tags(run_id, {TAG_ARTIFACTS: "missing"})
        return None
    tracking.set_tags(run_id, {TAG_MODEL_ID: model_id, TAG_MODEL_SOURCE: location})
    return f"models:/{model_id}"


def record_run_extras(
    cfg: Config,
    tracking: Tracking,
    run_id: str,
    experiment_id: str,
    outcome: TrainOutcome,
    fresh_after: float | None,
    warnings: list[str],
) -> dict[str, Any]:
    """Everything above; returns the keys added to the train report. Raises TraingateError (the
    run is then marked FAILED by the caller)."""
    try:
        eval_set = record_eval_set(cfg, tracking, run_id)
        params = record_params(cfg, tracking, run_id, outcome.outputs_dir, fresh_after, warnings)
        model_uri = record_model(
            cfg, tracking, run_id, experiment_id, outcome.outputs_dir, fresh_after, warnings
        )
    except TrackingError as err:
        raise TrainError(
            f"training succeeded, but recording it on run {run_id} failed: {err.message}",
            hint="re-run when the tracking server answers; the run is marked FAILED",
        ) from err
    return {"eval_set": eval_set, "params": params, "model_uri": model_uri}


__all__ = ["record_eval_set", "record_model", "record_params", "record_run_extras"]
