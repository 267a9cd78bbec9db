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

Promotion on merge (`traingate promote --reconcile`, composed in `pipeline/promote.py`, which
reads the merged PRs and their dataset pointer from GitHub) promotes what was merged, read from
the merged PR's body marker (`report.render_promotion_marker`), never "the current @challenger".
The marker is PR body text anyone with write access can edit, so it is only a claim: the model
must be gate.model, the run id the version's run, the run's data version the pointer at the PR's
head, and the version one the gate registered as improved (`claimed_version`,
`promote_merged`), or the PR is refused. This module takes those as plain values (`MergedPull`).
Order: a merged PR becomes champion only if it was merged after the current champion became
champion (`traingate.champion_since`), so a late sweep never demotes a newer champion with an
older merge. Each handled version is tagged `traingate.merged_pr` (and the PR labelled by the
composer), which makes every sweep idempotent.

Of two concurrent gates, the later-numbered one always sees the earlier one in step 2 (the
earlier version existed before the later one was created), so at most one moves the alias. A
gate that dies between 1 and 4 leaves a `pending` version; after `STALE_CLAIM_MINUTES` it no
longer blocks anyone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from traingate.contracts import (
    TAG_MODEL_ID,
    TAG_MODEL_SOURCE,
    RunRecord,
    Tracking,
    TrackingNotFound,
    VersionRecord,
)
from traingate.errors import GateError, TrackingError, TraingateError
from traingate.result import StepResult

if TYPE_CHECKING:
    from traingate.config import Config

STALE_CLAIM_MINUTES = 30
TAG_BASELINE = "traingate.baseline"
TAG_PROMOTION = "traingate.promotion"
TAG_CLAIM = "traingate.claim"
# Set once a merged PR's version was handled (promoted or superseded): the sweep skips it.
TAG_MERGED_PR = "traingate.merged_pr"
TAG_PROMOTED_FROM_PR = "traingate.promoted_from_pr"
# When the version became champion (UTC, `YYYY-MM-DDTHH:MM:SSZ`): the merge time for a merged
# PR, the wall clock for a gate or a hand promotion. What "newer champion" means.
TAG_CHAMPION_SINCE = "traingate.champion_since"
# What a refused merged PR can do instead (the end of every refusal's hint).
BY_HAND = "promote by hand with `traingate promote --version N` once you know which version the PR trained"


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


@dataclass(frozen=True)
class PromoteResult:
    """What `promote` (and `promote --reconcile`) left: `result.value`; outputs derive from it."""

    model_version: str
    alias: str
    # PR numbers promoted by a reconcile sweep, in the order promoted.
    promoted: tuple[str, ...] = ()
    # Merged PRs still waiting (reconcile only; None for promote --version / --rollback).
    pending: int | None = None

    def outputs(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "alias": self.alias,
            "promoted": " ".join(self.promoted),
            "pending": "" if self.pending is None else str(self.pending),
        }


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


def _register(
    tracking: Tracking, cfg: Config, candidate: RunRecord, baseline_version: str | None, gate_tag: str
) -> tuple[VersionRecord, str]:
    """Create the candidate's version, tagged `pending` with a fresh claim: (version, claim)."""
    model = cfg.gate.model
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
    return mine, claim


def _move_aliases(
    tracking: Tracking,
    cfg: Config,
    mine: VersionRecord,
    baseline_version: str | None,
    wall: Callable[[], float],
) -> Promotion:
    """The claim is won: @challenger (on-merge), or @previous-champion and @champion."""
    model = cfg.gate.model
    if cfg.gate.promote == "on-merge":
        tracking.set_alias(model, cfg.gate.challenger_alias, mine.version)
        tracking.set_version_tag(model, mine.version, TAG_PROMOTION, "challenger")
        return Promotion(mine.version, cfg.gate.challenger_alias, baseline_version)
    if baseline_version:
        tracking.set_alias(model, cfg.gate.previous_alias, baseline_version)
    tracking.set_alias(model, cfg.gate.alias, mine.version)
    tracking.set_version_tag(model, mine.version, TAG_PROMOTION, "promoted")
    tracking.set_version_tag(model, mine.version, TAG_CHAMPION_SINCE, _utc(wall()))
    return Promotion(mine.version, cfg.gate.alias, baseline_version)


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
    mine, claim = _register(tracking, cfg, candidate, baseline_version, gate_tag)
    if after_register is not None:
        after_register(mine)
    try:
        on_merge = cfg.gate.promote == "on-merge"
        _check_still_first(tracking, cfg, mine, claim, baseline_version, on_merge, wall)
        return _move_aliases(tracking, cfg, mine, baseline_version, wall)
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


def _target(tracking: Tracking, cfg: Config, version: str | None) -> tuple[dict[str, str], str]:
    """(aliases, the version to make champion): `version`, else @challenger if it was gated
    against the current champion."""
    model, alias, challenger = cfg.gate.model, cfg.gate.alias, cfg.gate.challenger_alias
    aliases = tracking.get_aliases(model)
    if aliases is None:
        raise GateError(
            f"the registered model {model!r} does not exist",
            hint="run `traingate gate` first (it registers improved candidates), or fix gate.model",
        )
    target = version or aliases.get(challenger)
    if not target:
        raise GateError(
            f"{model!r} has no @{challenger} version to promote",
            hint="with gate.promote: on-merge, `traingate gate` sets it when a candidate improved; "
            "or pass --version",
        )
    record = tracking.get_version(model, target)  # TrackingNotFound for an unknown version
    if version is not None:
        return aliases, target
    current = aliases.get(alias)
    compared = record.tags.get(TAG_BASELINE, "")
    if compared and compared != (current or "none") and current != target:
        raise GateError(
            f"@{challenger} (version {target}) was gated against "
            f"{compared}, but @{alias} is now {current or 'none'}; not promoted",
            hint="re-run the gate so the challenger is compared with the current champion, "
            "or pass --version to promote it anyway",
        )
    return aliases, target


def _make_champion(
    tracking: Tracking, cfg: Config, aliases: dict[str, str], target: str, wall: Callable[[], float]
) -> str:
    """Move @champion to `target` (the old one becomes @previous-champion); the message."""
    model, alias = cfg.gate.model, cfg.gate.alias
    current = aliases.get(alias)
    if current == target:
        message = f"version {target} of {model!r} is already @{alias}; nothing to do"
    else:
        if current:
            tracking.set_alias(model, cfg.gate.previous_alias, current)
        tracking.set_alias(model, alias, target)
        tracking.set_version_tag(model, target, TAG_PROMOTION, "promoted")
        tracking.set_version_tag(model, target, TAG_CHAMPION_SINCE, _utc(wall()))
        message = f"@{alias} of {model!r} -> version {target} (was {current or 'none'})"
    if aliases.get(cfg.gate.challenger_alias) == target:
        tracking.delete_alias(model, cfg.gate.challenger_alias)
    return message


def promote_step(
    cfg: Config,
    version: str | None = None,
    rollback: bool = False,
    *,
    tracking: Tracking | None = None,
    wall: Callable[[], float] = time.time,
) -> StepResult[PromoteResult]:
    """`traingate promote`: champion <- challenger (post-merge), <- VERSION, or <- previous."""
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    try:
        if rollback:
            return _rollback(tracking, cfg, wall)
        aliases, target = _target(tracking, cfg, version)
        message = _make_champion(tracking, cfg, aliases, target, wall)
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
    value = PromoteResult(target, cfg.gate.alias)
    return StepResult(
        outputs=value.outputs(), summary=f"### 🏆 Promotion\n\n{message}\n", message=message, value=value
    )


def _rollback(tracking: Tracking, cfg: Config, wall: Callable[[], float]) -> StepResult[PromoteResult]:
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
    # A rollback is a decision too: a PR merged before it must not undo it.
    tracking.set_version_tag(model, previous, TAG_CHAMPION_SINCE, _utc(wall()))
    # One step back only: a second rollback must not swap the two versions back and forth.
    tracking.delete_alias(model, prev_alias)
    if current:
        tracking.set_version_tag(model, current, TAG_PROMOTION, "rolled-back")
    message = f"rolled back @{alias} of {model!r} to version {previous} (was {current or 'none'})"
    value = PromoteResult(previous, alias)
    return StepResult(
        outputs=value.outputs(), summary=f"### ↩️ Rollback\n\n{message}\n", message=message, value=value
    )


# ------------------------------------------------------------------------- promotion on merge
@dataclass
class Sweep:
    """What one `promote --reconcile` sweep did so far (it goes on after a refused PR)."""

    promoted: list[str] = field(default_factory=list)  # PR numbers, in the order promoted
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class MergedPull:
    """A merged pull request as the promotion needs it, read from GitHub by the composer.

    `data_version` is the md5 of the dataset pointer (`pointer`, a repository path) at the PR's
    head commit `head_sha`, already parsed and verified: what the PR merged, as opposed to what
    its body claims."""

    number: int
    merged_at: str
    head_sha: str
    pointer: str
    data_version: str

    @property
    def label(self) -> str:
        return f"PR #{self.number}"


def _champion_since(version: VersionRecord) -> str:
    """When `version` became champion; a version promoted before the tag existed falls back to
    its creation (it cannot have become champion earlier)."""
    return version.tags.get(TAG_CHAMPION_SINCE) or _utc(version.creation_timestamp_ms / 1000)


# What the gate leaves on a version it registered for an improved candidate (TAG_PROMOTION).
_ACCEPTED_STATES = ("challenger", "promoted")


def _check_gate_accepted(record: VersionRecord, pr: str) -> None:
    """Refuse a version the gate did not register as an improved candidate that won its claim:
    one registered by hand (no `traingate.gate` tag), a candidate that did not improve, or one
    that lost to a concurrent gate (`lost`), failed half-way (`failed`) or never finished."""
    gate_tag = record.tags.get("traingate.gate", "")
    state = record.tags.get(TAG_PROMOTION, "")
    if not gate_tag.startswith("improved=true") or state not in _ACCEPTED_STATES:
        why = f"gate tag {gate_tag!r}" if gate_tag else "no traingate.gate tag: not registered by a gate"
        raise GateError(
            f"{pr} names version {_version_label(record)}, which the gate did not accept ({why}; "
            f"{TAG_PROMOTION}={state or 'none'}, not challenger or promoted); not promoted",
            hint=f"only a version `traingate gate` registered as improved is promoted on merge; {BY_HAND}",
        )


def _version_label(record: VersionRecord) -> str:
    return f"{record.version} of {record.model!r}"


def claimed_version(tracking: Tracking, cfg: Config, marker: Mapping[str, str], pr: str) -> VersionRecord:
    """The version a merged PR's marker (`report.parse_promotion_marker`) names, once the
    registry confirms it: gate.model, a version of the marker's run, registered as improved by
    a gate that won its claim. GateError (naming `pr`) otherwise.

    The marker is PR body text: anyone who can edit the body (or open a PR of their own) wrote
    it. It only *names* a version; the registry and the merged commit must confirm it."""
    version, run_id, model = marker["version"], marker.get("run_id", ""), cfg.gate.model
    if marker["model"] != model:
        raise GateError(
            f"{pr} names model {marker['model']!r}, but this repository's gate.model is {model!r}; "
            "not promoted",
            hint=f"the PR body was edited or gate.model changed; {BY_HAND}",
        )
    if not run_id:
        raise GateError(
            f"{pr} names version {version} of {model!r} with no run id; not promoted",
            hint=f"`traingate pr create` always records the run; the PR body was edited: {BY_HAND}",
        )
    try:
        record = tracking.get_version(model, version)
    except TrackingNotFound:
        raise GateError(
            f"{pr} names version {version} of {model!r}, which the registry does not have; not promoted",
            hint=f"check gate.model and the tracking URI; {BY_HAND}",
        ) from None
    if record.run_id != run_id:
        raise GateError(
            f"{pr} names version {version} of {model!r} from run {run_id}, but that version "
            f"belongs to run {record.run_id}; not promoted",
            hint=f"the PR body was edited or the registry was reset; check the MLflow UI and {BY_HAND}",
        )
    _check_gate_accepted(record, pr)
    return record


def _check_trained_on(tracking: Tracking, record: VersionRecord, pull: MergedPull) -> None:
    """The version's run must have trained on the data the PR merged: its
    `traingate.data_version` tag equals the pointer's md5 at the PR's head."""
    trained = tracking.get_run(record.run_id).tags.get("traingate.data_version", "")
    if trained != pull.data_version:
        raise GateError(
            f"{pull.label} names version {_version_label(record)} from run {record.run_id}, trained "
            f"on data {trained or 'unknown'}, but the PR merged {pull.pointer} = {pull.data_version} "
            f"(head {pull.head_sha[:12]}); not promoted",
            hint=f"the PR body was edited to name another version; {BY_HAND}",
        )


def _supersede(
    tracking: Tracking, cfg: Config, version: str, pull: MergedPull, aliases: dict[str, str]
) -> None:
    """Record a version merged before the current champion became champion: never promoted."""
    model, challenger = cfg.gate.model, cfg.gate.challenger_alias
    tracking.set_version_tag(model, version, TAG_PROMOTION, "superseded")
    tracking.set_version_tag(model, version, TAG_MERGED_PR, str(pull.number))
    if aliases.get(challenger) == version:
        tracking.delete_alias(model, challenger)


def _champion_from_merge(
    tracking: Tracking,
    cfg: Config,
    record: VersionRecord,
    pull: MergedPull,
    aliases: dict[str, str],
    sweep: Sweep,
) -> None:
    model, alias, version = cfg.gate.model, cfg.gate.alias, record.version
    current = aliases.get(alias)
    baseline = record.tags.get(TAG_BASELINE, "")
    if current != version:
        if baseline and baseline != (current or "none"):
            sweep.warnings.append(
                f"version {version} of {model!r} was gated against {baseline}, but @{alias} was "
                f"{current or 'none'}; promoted because {pull.label} was merged"
            )
        if current:
            tracking.set_alias(model, cfg.gate.previous_alias, current)
        tracking.set_alias(model, alias, version)
    tracking.set_version_tag(model, version, TAG_PROMOTION, "promoted")
    tracking.set_version_tag(model, version, TAG_CHAMPION_SINCE, pull.merged_at)
    tracking.set_version_tag(model, version, TAG_PROMOTED_FROM_PR, str(pull.number))
    tracking.set_version_tag(model, version, TAG_MERGED_PR, str(pull.number))
    if aliases.get(cfg.gate.challenger_alias) == version:
        tracking.delete_alias(model, cfg.gate.challenger_alias)
    sweep.promoted.append(str(pull.number))
    sweep.lines.append(f"{pull.label}: @{alias} of {model!r} -> version {version} (was {current or 'none'})")


def promote_merged(
    tracking: Tracking, cfg: Config, record: VersionRecord, pull: MergedPull, sweep: Sweep
) -> Literal["promoted", "superseded"]:
    """Promote the version a merged PR recorded (`claimed_version`), or record it as superseded
    when a newer champion exists: "promoted" or "superseded". GateError when the version's run
    did not train on the data the PR merged."""
    _check_trained_on(tracking, record, pull)
    model, alias, version = cfg.gate.model, cfg.gate.alias, record.version
    if record.tags.get(TAG_MERGED_PR):
        state = record.tags.get(TAG_PROMOTION, "promoted")
        sweep.lines.append(f"{pull.label}: version {version} was already handled ({state})")
        return "superseded" if state == "superseded" else "promoted"
    aliases = tracking.get_aliases(model) or {}
    current = aliases.get(alias)
    if current and current != version:
        since = _champion_since(tracking.get_version(model, current))
        if since > pull.merged_at:
            _supersede(tracking, cfg, version, pull, aliases)
            sweep.lines.append(
                f"{pull.label}: version {version} was merged before @{alias} (version {current}) became "
                f"champion ({pull.merged_at} < {since}): recorded as superseded, not promoted"
            )
            return "superseded"
    _champion_from_merge(tracking, cfg, record, pull, aliases, sweep)
    return "promoted"
