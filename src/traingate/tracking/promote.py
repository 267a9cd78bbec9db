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

Promotion on merge (`traingate promote --reconcile`) promotes what was merged, read from the
merged PR's body marker (`report.render_promotion_marker`), never "the current @challenger".
The marker is PR body text anyone with write access can edit, so it is only a claim: the model
must be gate.model, the run id the version's run, the run's data version the pointer at the PR's
head, and the version one the gate registered as improved (`_check_gate_accepted`,
`_check_merged_data`), or the PR is refused.
Order: a merged PR becomes champion only if it was merged after the current champion became
champion (`traingate.champion_since`), so a late sweep never demotes a newer champion with an
older merge. Each handled version is tagged `traingate.merged_pr` (and the PR labelled), which
makes every sweep idempotent.

Of two concurrent gates, the later-numbered one always sees the earlier one in step 2 (the
earlier version existed before the later one was created), so at most one moves the alias. A
gate that dies between 1 and 4 leaves a `pending` version; after `STALE_CLAIM_MINUTES` it no
longer blocks anyone.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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
    from traingate.github.forge import Forge, ForgeFactory, PullInfo

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
# On the PR too, so a sweep skips handled PRs without asking MLflow (and people can see it).
LABEL_PROMOTED = "traingate-promoted"
LABEL_SUPERSEDED = "traingate-superseded"
# Merged PRs a sweep looks at (most recently updated first): one page of GitHub's list.
RECONCILE_LOOKBACK = 100


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


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
        tracking.set_version_tag(model, mine.version, TAG_CHAMPION_SINCE, _utc(wall()))
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
    wall: Callable[[], float] = time.time,
) -> StepResult:
    """`traingate promote`: champion <- challenger (post-merge), <- VERSION, or <- previous."""
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    model, alias, prev_alias = cfg.gate.model, cfg.gate.alias, cfg.gate.previous_alias
    try:
        if rollback:
            return _rollback(tracking, cfg, wall)
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
            tracking.set_version_tag(model, target, TAG_CHAMPION_SINCE, _utc(wall()))
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
    return StepResult(
        outputs={"model_version": target, "alias": alias, "promoted": "", "pending": ""},
        summary=summary,
        message=message,
    )


def _rollback(tracking: Tracking, cfg: Config, wall: Callable[[], float]) -> StepResult:
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
    return StepResult(
        outputs={"model_version": previous, "alias": alias, "promoted": "", "pending": ""},
        summary=f"### ↩️ Rollback\n\n{message}\n",
        message=message,
    )


# ------------------------------------------------------------------------- promotion on merge
@dataclass
class _Sweep:
    promoted: list[str] = field(default_factory=list)  # PR numbers, in the order promoted
    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _champion_since(version: VersionRecord) -> str:
    """When `version` became champion; a version promoted before the tag existed falls back to
    its creation (it cannot have become champion earlier)."""
    return version.tags.get(TAG_CHAMPION_SINCE) or _utc(version.creation_timestamp_ms / 1000)


# What the gate leaves on a version it registered for an improved candidate (TAG_PROMOTION).
_ACCEPTED_STATES = ("challenger", "promoted")


def _check_gate_accepted(record: VersionRecord, pr: str, by_hand: str) -> None:
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
            hint=f"only a version `traingate gate` registered as improved is promoted on merge; {by_hand}",
        )


def _version_label(record: VersionRecord) -> str:
    return f"{record.version} of {record.model!r}"


def _check_merged_data(
    tracking: Tracking,
    cfg: Config,
    forge: Forge,
    record: VersionRecord,
    pull: PullInfo,
    pr: str,
    by_hand: str,
) -> None:
    """The version's run must have trained on the data the PR merged: the `traingate.data_version`
    tag of its run equals the md5 of the dataset pointer `<data.root>.dvc` at the PR's head sha
    (read through the forge, so the sweep needs no checkout of the data branch)."""
    from traingate.data.manifest import pointer_path
    from traingate.data.store import find_repo_root
    from traingate.data.trust import verify_pointer_text

    if cfg.store.kind != "dvc":
        raise GateError(
            f"{pr}: cannot tell which data it merged: store.kind is {cfg.store.kind!r}, and only a "
            "DVC pointer (<data.root>.dvc) records a data version in git; not promoted",
            hint=f"use store.kind: dvc with gate.promote: on-merge, or {by_hand}",
        )
    repo_root = find_repo_root(cfg.base_dir)
    try:
        rel = pointer_path(cfg.data_root).resolve().relative_to(repo_root).as_posix()
    except ValueError:
        raise GateError(
            f"{pr}: the dataset pointer {pointer_path(cfg.data_root)} is outside the repository "
            f"{repo_root}; cannot read it at the PR's head; not promoted",
            hint=f"set data.root to a folder inside the repository, or {by_hand}",
        ) from None
    try:
        text = forge.read_file(rel, pull.head_sha)
    except TraingateError as err:
        raise GateError(
            f"{pr}: could not read {rel} at its head {pull.head_sha[:12]}: {err.message}; not promoted",
            hint="re-run `traingate promote --reconcile` when GitHub answers (the token needs "
            "`contents: read`)",
        ) from None
    if text is None:
        raise GateError(
            f"{pr} merged head {pull.head_sha[:12]}, which has no {rel}: it merged no dataset "
            f"version, so no model version is tied to it; not promoted",
            hint=f"only data PRs opened by `traingate pr create` are promoted on merge; {by_hand}",
        )
    try:
        merged = verify_pointer_text(text, cfg.data_root.name, f"{rel} at {pull.head_sha[:12]}")
    except TraingateError as err:
        raise GateError(f"{pr}: {err.message}; not promoted", hint=f"{err.hint}; {by_hand}") from None
    run = tracking.get_run(record.run_id)
    trained = run.tags.get("traingate.data_version", "")
    if trained != merged:
        raise GateError(
            f"{pr} names version {_version_label(record)} from run {record.run_id}, trained on data "
            f"{trained or 'unknown'}, but the PR merged {rel} = {merged} (head "
            f"{pull.head_sha[:12]}); not promoted",
            hint=f"the PR body was edited to name another version; {by_hand}",
        )


def _promote_merged(
    tracking: Tracking,
    cfg: Config,
    forge: Forge,
    marker: Mapping[str, str],
    pull: PullInfo,
    sweep: _Sweep,
) -> str:
    """Promote the version a merged PR recorded, or record it as superseded; the label to add."""
    version, run_id = marker["version"], marker.get("run_id", "")
    model = cfg.gate.model
    alias, prev_alias, challenger = cfg.gate.alias, cfg.gate.previous_alias, cfg.gate.challenger_alias
    pr = f"PR #{pull.number}"
    # The marker is PR body text: anyone who can edit the body (or open a PR of their own) wrote
    # it. It only *names* a version; the registry and the merged commit must confirm it.
    by_hand = (
        "promote by hand with `traingate promote --version N` once you know which version the PR trained"
    )
    if marker["model"] != model:
        raise GateError(
            f"{pr} names model {marker['model']!r}, but this repository's gate.model is {model!r}; "
            "not promoted",
            hint=f"the PR body was edited or gate.model changed; {by_hand}",
        )
    if not run_id:
        raise GateError(
            f"{pr} names version {version} of {model!r} with no run id; not promoted",
            hint=f"`traingate pr create` always records the run; the PR body was edited: {by_hand}",
        )
    try:
        record = tracking.get_version(model, version)
    except TrackingNotFound:
        raise GateError(
            f"{pr} names version {version} of {model!r}, which the registry does not have; not promoted",
            hint=f"check gate.model and the tracking URI; {by_hand}",
        ) from None
    if record.run_id != run_id:
        raise GateError(
            f"{pr} names version {version} of {model!r} from run {run_id}, but that version "
            f"belongs to run {record.run_id}; not promoted",
            hint=f"the PR body was edited or the registry was reset; check the MLflow UI and {by_hand}",
        )
    _check_gate_accepted(record, pr, by_hand)
    _check_merged_data(tracking, cfg, forge, record, pull, pr, by_hand)
    if record.tags.get(TAG_MERGED_PR):
        state = record.tags.get(TAG_PROMOTION, "promoted")
        sweep.lines.append(f"{pr}: version {version} was already handled ({state})")
        return LABEL_SUPERSEDED if state == "superseded" else LABEL_PROMOTED
    aliases = tracking.get_aliases(model) or {}
    current = aliases.get(alias)
    merged_at = pull.merged_at
    if current and current != version:
        since = _champion_since(tracking.get_version(model, current))
        if since > merged_at:
            tracking.set_version_tag(model, version, TAG_PROMOTION, "superseded")
            tracking.set_version_tag(model, version, TAG_MERGED_PR, str(pull.number))
            if aliases.get(challenger) == version:
                tracking.delete_alias(model, challenger)
            sweep.lines.append(
                f"{pr}: version {version} was merged before @{alias} (version {current}) became "
                f"champion ({merged_at} < {since}): recorded as superseded, not promoted"
            )
            return LABEL_SUPERSEDED
    baseline = record.tags.get(TAG_BASELINE, "")
    if current != version:
        if baseline and baseline != (current or "none"):
            sweep.warnings.append(
                f"version {version} of {model!r} was gated against {baseline}, but @{alias} was "
                f"{current or 'none'}; promoted because {pr} was merged"
            )
        if current:
            tracking.set_alias(model, prev_alias, current)
        tracking.set_alias(model, alias, version)
    tracking.set_version_tag(model, version, TAG_PROMOTION, "promoted")
    tracking.set_version_tag(model, version, TAG_CHAMPION_SINCE, merged_at)
    tracking.set_version_tag(model, version, TAG_PROMOTED_FROM_PR, str(pull.number))
    tracking.set_version_tag(model, version, TAG_MERGED_PR, str(pull.number))
    if aliases.get(challenger) == version:
        tracking.delete_alias(model, challenger)
    sweep.promoted.append(str(pull.number))
    sweep.lines.append(f"{pr}: @{alias} of {model!r} -> version {version} (was {current or 'none'})")
    return LABEL_PROMOTED


def _waiting(forge: Forge, cfg: Config, pr_number: int | None) -> list[tuple[PullInfo, dict[str, str]]]:
    """Merged traingate PRs whose on-merge version is not handled yet, oldest merge first."""
    from traingate.report import parse_promotion_marker

    if pr_number is not None:
        pull = forge.get_pull(pr_number)
        if not pull.merged:
            raise GateError(
                f"pull request #{pr_number} is not merged ({pull.state}): nothing to promote",
                hint="promotion follows the merge; run this after the PR is merged",
            )
        if parse_promotion_marker(pull.body) is None:
            raise GateError(
                f"pull request #{pr_number} has no traingate marker in its body "
                "(<!-- traingate: {...} -->): it does not say which model version to promote",
                hint="only PRs opened by `traingate pr create` can be promoted on merge; "
                "use `traingate promote --version N` for others",
            )
        pulls = [pull]
    else:
        pulls = forge.list_merged_pulls(cfg.pr.base, limit=RECONCILE_LOOKBACK)
    waiting = []
    for pull in pulls:
        marker = parse_promotion_marker(pull.body)
        if marker is None or marker["promote"] != "on-merge":
            continue  # not ours, or the gate promoted it already (on-gate)
        if LABEL_PROMOTED in pull.labels or LABEL_SUPERSEDED in pull.labels:
            continue
        waiting.append((pull, marker))
    waiting.sort(key=lambda item: (item[0].merged_at, item[0].number))
    return waiting


def reconcile_step(
    cfg: Config,
    token: str | None,
    repo: str | None,
    pr_number: int | None = None,
    tracking_uri: str | None = None,
    *,
    tracking: Tracking | None = None,
    forge_factory: ForgeFactory | None = None,
    env: Mapping[str, str] | None = None,
) -> StepResult:
    """`traingate promote --reconcile [--pr N]`: promote every merged traingate PR not yet promoted.

    Works with GITHUB_TOKEN alone: a merge made with it starts no workflow, so the auto-merge job
    (after a direct merge) and a scheduled sweep call this instead of waiting for
    `pull_request: closed`. When MLflow lives on the shared instance (`infra.mlflow_url`) and no
    `--tracking-uri` is given, the instance is stopped: report what waits and let the workflow
    that borrows the instance promote it.
    """
    from traingate.github.forge import make_forge, require_repo, require_token

    env_map = dict(os.environ) if env is None else dict(env)
    repo_name = require_repo(repo, env_map)
    token = require_token(token, repo_name)
    forge = (forge_factory or make_forge)(token, repo_name)
    waiting = _waiting(forge, cfg, pr_number)
    alias = cfg.gate.alias
    numbers = ", ".join(f"#{p.number}" for p, _ in waiting)
    if not waiting:
        message = "no merged traingate pull request waits for promotion"
        return StepResult(
            outputs={"model_version": "", "alias": alias, "promoted": "", "pending": "0"},
            summary=f"### 🏆 Promotion on merge\n\n{message}.\n",
            message=message,
        )
    if tracking is None and not tracking_uri and cfg.infra.mlflow_url:
        message = (
            f"{len(waiting)} merged pull request(s) wait for promotion ({numbers}), but MLflow lives "
            "on the shared instance (infra.mlflow_url) and no --tracking-uri was given: nothing "
            "promoted here; the workflow that starts the instance runs `traingate promote "
            "--reconcile --tracking-uri <its mlflow_url>` (promote-on-merge.yml, reap-instances.yml)"
        )
        return StepResult(
            outputs={"model_version": "", "alias": alias, "promoted": "", "pending": str(len(waiting))},
            summary=f"### 🏆 Promotion on merge: deferred\n\n{message}\n",
            message=message,
        )
    if tracking_uri:
        cfg.tracking.uri = tracking_uri
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    sweep = _Sweep()
    refused: list[GateError] = []
    for pull, marker in waiting:
        try:
            label = _promote_merged(tracking, cfg, forge, marker, pull, sweep)
        except TrackingError as err:
            raise GateError(
                f"promoting the version of PR #{pull.number} failed: {err.message}"
                + (
                    f" (already promoted in this sweep: PR {', '.join(sweep.promoted)})"
                    if sweep.promoted
                    else ""
                ),
                hint="re-run `traingate promote --reconcile` when the server answers: handled PRs "
                "are skipped",
            ) from err
        except GateError as err:
            # One PR that cannot be promoted must not hold back the ones merged after it.
            refused.append(err)
            continue
        try:
            forge.add_labels(pull.number, [label])
        except TraingateError as err:
            # The registry tag is what makes the sweep idempotent; the label saves a look-up.
            sweep.warnings.append(f"could not label pull request #{pull.number} {label!r}: {err.message}")
    if refused:
        done = f"; promoted in this sweep: PR {', '.join(sweep.promoted)}" if sweep.promoted else ""
        raise GateError(
            "; ".join(err.message for err in refused) + done,
            hint=(f"{refused[0].hint}; then " if refused[0].hint else "")
            + f"label the PR {LABEL_PROMOTED!r} so the sweep stops retrying it",
            outputs={"promoted": " ".join(sweep.promoted)},
        )
    champion = (tracking.get_aliases(cfg.gate.model) or {}).get(alias, "")
    message = "; ".join(sweep.lines)
    summary = "### 🏆 Promotion on merge\n\n" + "".join(f"- {line}\n" for line in sweep.lines)
    return StepResult(
        outputs={
            "model_version": champion,
            "alias": alias,
            "promoted": " ".join(sweep.promoted),
            "pending": "0",
        },
        summary=summary,
        message=message,
        warnings=sweep.warnings,
    )
