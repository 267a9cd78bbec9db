"""Skip a training whose dataset is exactly the one `@champion` was trained on (issue #15).

A data push whose images are all in the dataset already (a re-push, a batch merged twice) merges
to the same dataset version. Training on it again costs an instance boot and a full training to
learn nothing new, and the gate would then compare two models of the same data, where only noise
decides. So, before anything is pulled or started, the pipeline's train step compares the version
of the dataset about to be trained with the `traingate.data_version` tag of the `@champion`
version's run and stops early with `improved=false`, `skipped=true`.

It is composed by the caller (cli.py) before `train_step`, never inside it: a manual retrain on
the current dataset (changed code, `merge: false`) must still train, so only the pipeline, when it
merged data in this run, asks for the check (`--skip-same-data`), and `train.skip_same_data:
false` turns it off for teams that retrain on purpose.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from traingate.result import StepResult
from traingate.state import update_state

if TYPE_CHECKING:
    from traingate.config import Config
    from traingate.contracts import Tracking

# The tag train_step writes on every run it creates (runner.py).
TAG_DATA_VERSION = "traingate.data_version"


def champion_data_version(cfg: Config, tracking: Tracking) -> tuple[str, str] | None:
    """(version, data version) of `@champion`'s run, or None when there is no champion, or it
    carries no known data version (a champion registered by hand: train, never skip)."""
    from traingate.contracts import TrackingNotFound

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


def skip_if_champion_data(cfg: Config, tracking: Tracking | None = None) -> StepResult | None:
    """The skipped step's result when the dataset to train is `@champion`'s, else None (train).

    Reads the dataset version from the DVC pointer (no pull): the check costs one registry
    round trip. A dataset whose version cannot be read is trained (the safe side)."""
    from traingate.data import store
    from traingate.errors import TraingateError

    if not cfg.train.skip_same_data:
        return None
    try:
        data_version = store.dataset_version(cfg)
    except TraingateError:
        return None
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
    return StepResult(
        outputs={
            "data_version": data_version,
            "improved": False,
            "skipped": True,
            "baseline": version,
        },
        summary=summary,
        message=line,
        data={"skipped": True, "champion_version": version, "data_version": data_version},
    )
