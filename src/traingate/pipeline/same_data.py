"""Skip a training whose dataset is exactly the one `@champion` was trained on (issue #15).

A data push whose images are all in the dataset already (a re-push, a batch merged twice) merges
to the same dataset version. Training on it again costs an instance boot and a full training to
learn nothing new, and the gate would then compare two models of the same data, where only noise
decides. So, before anything is pulled or started, the pipeline's train step compares the version
of the dataset about to be trained with the `traingate.data_version` tag of the `@champion`
version's run and stops early with `improved=false`, `skipped=true`.

It is composed by the caller (cli.py, `traingate run`) before `train_step`, never inside it: a
manual retrain on the current dataset (changed code, `merge: false`) must still train, so only
the pipeline, when it merged data in this run, asks for the check (`--skip-same-data`), and
`train.skip_same_data: false` turns it off for teams that retrain on purpose. It reads the
dataset (`data`) and the registry (`tracking`): a composition, not part of the train stage.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traingate.contracts import TrackingNotFound
from traingate.errors import TraingateError
from traingate.result import StepResult
from traingate.state import update_state
from traingate.train.runner import TAG_DATA_VERSION, TrainResult

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.contracts import Tracking


def champion_data_version(cfg: Config, tracking: Tracking) -> tuple[str, str] | None:
    """(version, data version) of `@champion`'s run, or None when there is no champion, or it
    carries no known data version (a champion registered by hand: train, never skip)."""
    model, alias = cfg.gate.model, cfg.gate.alias
    try:
        version = (tracking.get_aliases(model) or {}).get(alias)
        if not version:
            return None
        record = tracking.get_version(model, version)
        if not record.run_id:
            return None
        tagged = tracking.get_run(record.run_id).tags.get(TAG_DATA_VERSION, "")
    except TrackingNotFound:
        return None
    if not tagged or tagged == "unknown":
        return None
    return version, tagged


def _dataset_version(cfg: Config) -> str:
    """The version in the DVC pointer (no pull); "" when it cannot be read (then: train)."""
    from traingate.data import store

    try:
        return store.dataset_version(cfg) or ""
    except TraingateError:
        return ""


def skip_if_champion_data(cfg: Config, tracking: Tracking | None = None) -> StepResult[TrainResult] | None:
    """The skipped step's result when the dataset to train is `@champion`'s, else None (train).

    Reads the dataset version from the DVC pointer (no pull): the check costs one registry
    round trip. A dataset whose version cannot be read is trained (the safe side)."""
    if not cfg.train.skip_same_data:
        return None
    data_version = _dataset_version(cfg)
    if not data_version:
        return None
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    tracking.wait_healthy(cfg.tracking.health_timeout_seconds)
    champion = champion_data_version(cfg, tracking)
    if champion is None or champion[1] != data_version:
        return None
    version, _ = champion
    # `gate` run afterwards must not pick up an earlier candidate as if this push had trained it.
    update_state(cfg.workspace_dir, run_id=None)
    return _skipped(cfg, data_version, version)


def _skipped(cfg: Config, data_version: str, version: str) -> StepResult[TrainResult]:
    line = (
        f"data version {data_version} is what @{cfg.gate.alias} (version {version}) was trained on: "
        "nothing new to learn, training skipped"
    )
    summary = (
        "## traingate train: skipped\n\n"
        f"{line}.\n\n"
        "No instance time was spent on training, no MLflow run was created and no pull request "
        "is opened. To retrain on the same data on purpose (changed code or parameters), run the "
        "manual retrain workflow (`merge: false`), or set `train.skip_same_data: false`.\n"
    )
    value = TrainResult(
        data_version=data_version, skipped=True, gate_outputs={"improved": False, "baseline": version}
    )
    return StepResult(
        outputs=value.outputs(),
        summary=summary,
        message=line,
        data={"skipped": True, "champion_version": version, "data_version": data_version},
        value=value,
    )


__all__ = ["champion_data_version", "skip_if_champion_data"]
