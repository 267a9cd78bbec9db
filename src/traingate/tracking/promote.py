"""Moving the `@champion` alias: after a gate, after a merge, and back (rollback).

MLflow has no compare-and-set on aliases, so "two gates promoting at once must not both win"
is built from what *is* atomic, the creation of a model version (numbers are allocated by the
store, tags are written with it):

1. each gate registers its candidate with tags `traingate.baseline=<version it beat>`,
   `traingate.promotion=pending` and a random `traingate.claim`;
2. it then looks for other versions that beat the *same* baseline, are still pending or already
   promoted, and have a lower number: if there is one, that gate came first and this one loses;
3. it re-reads the alias and refuses if it no longer points at the baseline it compared with;
4. only then does it move `@previous-champion` and `@champion`, and tag itself `promoted`.

Of two concurrent gates, the later-numbered one always sees the earlier one in step 2 (the
earlier version existed before the later one was created), so at most one moves the alias. A
gate that dies between 1 and 4 leaves a `pending` version; after `STALE_CLAIM_MINUTES` it no
longer blocks anyone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from traingate.errors import GateError, TrackingError, TraingateError
from traingate.result import StepResult
from traingate.tracking.base import (
    TAG_MODEL_ID,
    TAG_MODEL_SOURCE,
    RunRecord,
    Tracking,
    TrackingNotFound,
    VersionRecord,
)

if TYPE_CHECKING:
    from traingate.config import Config

STALE_CLAIM_MINUTES = 30
TAG_BASELINE = "traingate.baseline"
TAG_PROMOTION = "traingate.promotion"
TAG_CLAIM = "traingate.claim"


@dataclass
class Promotion:
    version: str
    # The alias that now points at `version` (champion, or challenger with promote: on-merge).
    alias: str
    previous: str | None


def _tag_quietly(tracking: Tracking, model: str, version: str, value: str) -> None:
    try:
        tracking.set_version_tag(model, version, TAG_PROMOTION, value)
    except TraingateError:
        pass


def register_and_promote(
    tracking: Tracking,
    cfg: Config,
    candidate: RunRecord,
    baseline_version: str | None,
    gate_tag: str,
    *,
    wall: Callable[[], float] = time.time,
    after_register: Callable[[VersionRecord], None] | None = None,
) -> Promotion:
    """Register the candidate's `model/` artifacts and move the alias, or raise GateError."""
    model = cfg.gate.model
    on_merge = cfg.gate.promote == "on-merge"
    target_alias = cfg.gate.challenger_alias if on_merge else cfg.gate.alias
    # The MLflow model `train` logged from train.model_dir (loadable), else the raw model/ files.
    source, model_id = candidate.tags.get(TAG_MODEL_SOURCE, ""), candidate.tags.get(TAG_MODEL_ID) or None
    if not source:
        source = _raw_files_source(tracking, candidate)
    claim = uuid.uuid4().hex
    tags = {
        "traingate.run_id": candidate.run_id,
        "traingate.git_commit": candidate.tags.get("traingate.git_commit", ""),
        "traingate.data_version": candidate.tags.get("traingate.data_version", ""),
        "traingate.gate": gate_tag,
        TAG_BASELINE: baseline_version or "none",
        TAG_PROMOTION: "pending",
        TAG_CLAIM: claim,
        "traingate.loadable": "true" if model_id else "false",
    }
    try:
        tracking.ensure_registered_model(model)
        mine = tracking.create_version(
            model, source, candidate.run_id, {k: v for k, v in tags.items() if v}, model_id=model_id
        )
    except TrackingError as err:
        raise GateError(
            f"could not register run {candidate.run_id} as a version of {model!r}: {err.message}",
            hint="nothing was promoted; re-run the gate when the server answers",
        ) from err
    if after_register is not None:
        after_register(mine)
    try:
        _check_still_first(tracking, cfg, mine, claim, baseline_version, on_merge, wall)
        if on_merge:
            tracking.set_alias(model, target_alias, mine.version)
            tracking.set_version_tag(model, mine.version, TAG_PROMOTION, "challenger")
            return Promotion(mine.version, target_alias, baseline_version)
        if baseline_version:
            tracking.set_alias(model, cfg.gate.previous_alias, baseline_version)
        tracking.set_alias(model, target_alias, mine.version)
        tracking.set_version_tag(model, mine.version, TAG_PROMOTION, "promoted")
        return Promotion(mine.version, target_alias, baseline_version)
    except GateError:
        _tag_quietly(tracking, model, mine.version, "lost")
        raise
    except TrackingError as err:
        _tag_quietly(tracking, model, mine.version, "failed")
        raise GateError(
            f"promoting version {mine.version} of {model!r} failed: {err.message}",
            hint="check the aliases in the MLflow UI; `traingate promote --rollback` restores "
            f"@{cfg.gate.previous_alias}",
        ) from err


def _raw_files_source(tracking: Tracking, candidate: RunRecord) -> str:
    try:
        files = tracking.list_artifacts(candidate.run_id, "model")
    except TrackingError as err:
        raise GateError(
            f"cannot list the model/ artifacts of run {candidate.run_id}: {err.message}",
            hint="nothing was promoted; re-run the gate when the server answers",
        ) from err
    if not files:
        raise GateError(
            f"run {candidate.run_id} improved but has no model/ artifacts to register",
            hint="save an MLflow model into train.model_dir, or list the model files in "
            "train.artifacts, so `traingate train` uploads them",
        )
    return candidate.artifact_uri.rstrip("/") + "/model"


def _check_still_first(
    tracking: Tracking,
    cfg: Config,
    mine: VersionRecord,
    claim: str,
    baseline_version: str | None,
    on_merge: bool,
    wall: Callable[[], float],
) -> None:
    model = cfg.gate.model
    blocking = {"pending"} if on_merge else {"pending", "promoted"}
    stale_before_ms = (wall() - STALE_CLAIM_MINUTES * 60) * 1000
    for other in tracking.search_versions(model, TAG_BASELINE, baseline_version or "none"):
        if other.version == mine.version or other.tags.get(TAG_CLAIM) == claim:
            continue
        if int(other.version) > int(mine.version):
            continue
        state = other.tags.get(TAG_PROMOTION, "")
        if state not in blocking:
            continue
        if state == "pending" and other.creation_timestamp_ms < stale_before_ms:
            continue
        raise GateError(
            f"another gate is promoting version {other.version} of {model!r} (run "
            f"{other.run_id}) against the same baseline {baseline_version or 'none'}; "
            f"version {mine.version} is not promoted",
            hint="re-run the gate: the candidate will be compared with the new champion",
        )
    aliases = tracking.get_aliases(model) or {}
    now = aliases.get(cfg.gate.alias)
    if now != baseline_version:
        raise GateError(
            f"@{cfg.gate.alias} of {model!r} moved from {baseline_version or 'none'} to "
            f"{now or 'none'} since the comparison; version {mine.version} is not promoted",
            hint="re-run the gate: the candidate will be compared with the new champion",
        )


def promote_step(
    cfg: Config,
    version: str | None = None,
    rollback: bool = False,
    *,
    tracking: Tracking | None = None,
) -> StepResult:
    """`traingate promote`: champion <- challenger (post-merge), <- VERSION, or <- previous."""
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    model, alias, prev_alias = cfg.gate.model, cfg.gate.alias, cfg.gate.previous_alias
    try:
        if rollback:
            return _rollback(tracking, cfg)
        aliases = tracking.get_aliases(model)
        if aliases is None:
            raise GateError(
                f"the registered model {model!r} does not exist",
                hint="run `traingate gate` first (it registers improved candidates), or fix gate.model",
            )
        current = aliases.get(alias)
        explicit = version is not None
        target = version or aliases.get(cfg.gate.challenger_alias)
        if not target:
            raise GateError(
                f"{model!r} has no @{cfg.gate.challenger_alias} version to promote",
                hint="with gate.promote: on-merge, `traingate gate` sets it when a candidate improved; "
                "or pass --version",
            )
        target_version = tracking.get_version(model, target)
        if not explicit:
            compared = target_version.tags.get(TAG_BASELINE, "")
            if compared and compared != (current or "none") and current != target:
                raise GateError(
                    f"@{cfg.gate.challenger_alias} (version {target}) was gated against "
                    f"{compared}, but @{alias} is now {current or 'none'}; not promoted",
                    hint="re-run the gate so the challenger is compared with the current champion, "
                    "or pass --version to promote it anyway",
                )
        if current == target:
            message = f"version {target} of {model!r} is already @{alias}; nothing to do"
        else:
            if current:
                tracking.set_alias(model, prev_alias, current)
            tracking.set_alias(model, alias, target)
            tracking.set_version_tag(model, target, TAG_PROMOTION, "promoted")
            message = f"@{alias} of {model!r} -> version {target} (was {current or 'none'})"
        if aliases.get(cfg.gate.challenger_alias) == target:
            tracking.delete_alias(model, cfg.gate.challenger_alias)
    except TrackingNotFound as err:
        raise GateError(
            f"cannot promote: {err.message}", hint="check the version number and gate.model"
        ) from err
    except TrackingError as err:
        raise GateError(
            f"cannot promote: {err.message}",
            hint="check the aliases in the MLflow UI (a partial change is possible); re-run when "
            "the server answers",
        ) from err
    summary = f"### 🏆 Promotion\n\n{message}\n"
    return StepResult(outputs={"model_version": target, "alias": alias}, summary=summary, message=message)


def _rollback(tracking: Tracking, cfg: Config) -> StepResult:
    model, alias, prev_alias = cfg.gate.model, cfg.gate.alias, cfg.gate.previous_alias
    aliases = tracking.get_aliases(model)
    previous = (aliases or {}).get(prev_alias)
    if not previous:
        raise GateError(
            f"{model!r} has no @{prev_alias} version to roll back to",
            hint=f"pass --version to choose the @{alias} version explicitly",
        )
    current = (aliases or {}).get(alias)
    tracking.set_alias(model, alias, previous)
    # One step back only: a second rollback must not swap the two versions back and forth.
    tracking.delete_alias(model, prev_alias)
    if current:
        tracking.set_version_tag(model, current, TAG_PROMOTION, "rolled-back")
    message = f"rolled back @{alias} of {model!r} to version {previous} (was {current or 'none'})"
    return StepResult(
        outputs={"model_version": previous, "alias": alias},
        summary=f"### ↩️ Rollback\n\n{message}\n",
        message=message,
    )
