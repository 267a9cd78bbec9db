"""`traingate gate`: compare one candidate run with the `@champion` version's run. Fails closed.

Field report 3: a gate read "the latest run of the experiment" (another job's, under
concurrency) and used a baseline of 0.0 when the registry could not be read, so an outage
promoted a model. Here:

- the candidate is exactly the run given (or the one `train` recorded), never "the latest";
- the baseline is the registered model's `@<gate.alias>` version's run; "no registered model" or
  "no alias" is first training, said as such; anything else that goes wrong reading either side
  (server down, unknown run, a gated metric missing or not finite) raises GateError: exit 1, no
  `improved` output, no promotion;
- a tie is not an improvement; `min_delta` / `min_relative_delta` demand a margin; `threshold`
  is a floor that applies whatever `require` says (and on first training).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from traingate.contracts import (
    TAG_ARTIFACTS,
    TAG_MODEL_SOURCE,
    RunRecord,
    Tracking,
    TrackingNotFound,
)
from traingate.errors import GateError, TrackingError, TraingateError
from traingate.report import render_gate_markdown
from traingate.result import StepResult
from traingate.state import atomic_write_json, read_state, reports_dir

if TYPE_CHECKING:
    from traingate.config import Config, GateMetric

# Differences below this (relative to the baseline's magnitude) are float noise, not progress:
# 0.1 + 0.2 must tie with 0.3.
_TOLERANCE = 1e-9


@dataclass
class MetricVerdict:
    name: str
    direction: str
    candidate: float
    baseline: float | None
    delta: float | None
    passed: bool
    reason: str


@dataclass
class Decision:
    improved: bool
    reason: str
    metrics: list[MetricVerdict]


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _meets_threshold(rule: GateMetric, value: float) -> bool:
    if rule.threshold is None:
        return True
    return value >= rule.threshold if rule.direction == "max" else value <= rule.threshold


def _finite(values: dict[str, float], name: str, side: str, run_id: str) -> float:
    if name not in values:
        have = ", ".join(sorted(values)) or "none"
        raise GateError(
            f"the {side} run {run_id} has no metric {name!r} (it has: {have})",
            hint="make the training write every gated metric to its metrics file, or fix gate.metrics",
        )
    value = float(values[name])
    if not math.isfinite(value):
        raise GateError(
            f"the {side} run {run_id} has {name}={value}, which cannot be compared",
            hint="fix the training so the metric is a finite number",
        )
    return value


def evaluate(
    rules: list[GateMetric],
    require: str,
    candidate: RunRecord,
    baseline: RunRecord | None,
) -> Decision:
    """The verdict per metric and overall. Raises GateError when a value is missing."""
    verdicts: list[MetricVerdict] = []
    floors_ok = True
    for rule in rules:
        c = _finite(candidate.metrics, rule.name, "candidate", candidate.run_id)
        floor = _meets_threshold(rule, c)
        floors_ok = floors_ok and floor
        sign = ">=" if rule.direction == "max" else "<="
        floor_note = "" if rule.threshold is None else f"{sign} threshold {_fmt(rule.threshold)}"
        if baseline is None:
            if rule.threshold is None:
                reason = "no champion yet; no threshold"
            elif floor:
                reason = f"no champion yet; {_fmt(c)} {floor_note}"
            else:
                reason = f"no champion yet; {_fmt(c)} misses the threshold ({floor_note})"
            verdicts.append(MetricVerdict(rule.name, str(rule.direction), c, None, None, floor, reason))
            continue
        b = _finite(baseline.metrics, rule.name, "baseline", baseline.run_id)
        delta = c - b
        gain = delta if rule.direction == "max" else -delta
        tol = _TOLERANCE * max(1.0, abs(b))
        need = max(rule.min_delta, rule.min_relative_delta * abs(b))
        better = gain > tol
        enough = gain >= need - tol
        if not floor:
            reason = f"{_fmt(c)} misses the threshold ({floor_note})"
        elif abs(gain) <= tol:
            reason = "tie with the champion" + (f" (needs {_fmt(need)} better)" if need > 0 else "")
        elif not better:
            reason = f"worse than the champion by {_fmt(abs(delta))}"
        elif not enough:
            reason = f"better by {_fmt(gain)}, less than the required {_fmt(need)}"
        else:
            reason = f"better by {_fmt(gain)}" + (f" (required {_fmt(need)})" if need > 0 else "")
        passed = floor and better and enough
        verdicts.append(MetricVerdict(rule.name, str(rule.direction), c, b, delta, passed, reason))

    if baseline is None:
        improved = floors_ok
        reason = (
            "no champion yet: first model, it meets every threshold"
            if improved
            else "no champion yet, but a threshold is not met"
        )
        return Decision(improved, reason, verdicts)
    beaten = [v.passed for v in verdicts]
    improved = floors_ok and (all(beaten) if require == "all" else any(beaten))
    if not floors_ok:
        reason = "a metric misses its threshold"
    elif improved:
        scope = "every gated metric" if require == "all" else "at least one metric"
        reason = f"better than the champion on {scope}"
    else:
        reason = (
            "not better than the champion on every gated metric"
            if require == "all"
            else "not better than the champion on any gated metric"
        )
    return Decision(improved, reason, verdicts)


def _read_candidate(tracking: Tracking, run_id: str) -> RunRecord:
    try:
        run = tracking.get_run(run_id)
    except TrackingNotFound as err:
        raise GateError(
            f"unknown candidate run {run_id!r} at {tracking.uri}",
            hint="pass the run id that `traingate train` printed (output `run_id`)",
        ) from err
    except TrackingError as err:
        raise GateError(
            f"could not read the candidate run {run_id}: {err.message}",
            hint="nothing was compared or promoted; re-run the gate when the tracking server answers",
        ) from err
    if run.status != "FINISHED":
        raise GateError(
            f"the candidate run {run_id} is {run.status}, not FINISHED",
            hint="gate a run whose training succeeded",
        )
    return run


def _read_baseline(tracking: Tracking, cfg: Config) -> tuple[str | None, RunRecord | None]:
    model, alias = cfg.gate.model, cfg.gate.alias
    try:
        aliases = tracking.get_aliases(model)
        version = (aliases or {}).get(alias)
        if not version:
            return None, None
        record = tracking.get_version(model, version)
        if not record.run_id:
            raise GateError(
                f"@{alias} of {model!r} (version {version}) has no source run to compare with",
                hint="register champions through `traingate gate` (or set the run id on the version)",
            )
        return version, tracking.get_run(record.run_id)
    except GateError:
        raise
    except TraingateError as err:
        raise GateError(
            f"could not read the baseline @{alias} of {model!r}: {err.message}",
            hint="the gate fails closed rather than compare with 0; re-run it when the registry answers",
        ) from err


def _gate_tag(decision: Decision, baseline: str | None) -> str:
    parts = [f"improved={str(decision.improved).lower()}", f"baseline={baseline or 'none'}"]
    parts += [f"{v.name}:{'pass' if v.passed else 'fail'}" for v in decision.metrics]
    return " ".join(parts)[:5000]


def gate_step(
    cfg: Config,
    run_id: str | None = None,
    promote: bool = True,
    *,
    tracking: Tracking | None = None,
    wall: Callable[[], float] = time.time,
    after_register: Callable[[Any], None] | None = None,
) -> StepResult:
    workspace = cfg.workspace_dir
    candidate_id = run_id or read_state(workspace).run_id
    if not candidate_id:
        raise GateError(
            "no candidate run to gate: no --run-id given and no successful `traingate train` recorded "
            f"in {workspace / 'state.json'}",
            hint="pass --run-id (the `run_id` output of the train step)",
        )
    candidate_id = str(candidate_id)
    from traingate.tracking.durable import require_lasting_registry

    require_lasting_registry(cfg, command="gate")
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)

    candidate = _read_candidate(tracking, candidate_id)
    baseline_version, baseline_run = _read_baseline(tracking, cfg)
    if baseline_run is not None and baseline_run.run_id == candidate.run_id:
        raise GateError(
            f"run {candidate_id} is already @{cfg.gate.alias} (version {baseline_version}); "
            "nothing to compare",
            hint="gate a new training run",
        )
    from traingate.tracking.evalset import TAG_EVAL_SET, comparable_baseline

    # Scores on different evaluation sets are not compared (issue #12): same fingerprint, or the
    # champion re-scored on the candidate's set with gate.rescore, or GateError.
    baseline_run, rescored = comparable_baseline(cfg, candidate, baseline_version, baseline_run)
    decision = evaluate(cfg.gate.metrics, str(cfg.gate.require), candidate, baseline_run)

    warnings: list[str] = []
    model_version = ""
    promoted_alias = ""
    mode = str(cfg.gate.promote)
    wants_promotion = decision.improved and promote and mode != "off"
    if wants_promotion and candidate.tags.get(TAG_ARTIFACTS) == "missing":
        warnings.append(
            f"run {candidate.run_id} improved, but its model files never reached the artifact store "
            "(train.artifacts_policy: best-effort), so no version was registered and "
            f"@{cfg.gate.alias} did not move; fix the artifact store permissions, re-run training, "
            "or register the locally kept model by hand"
        )
    elif wants_promotion:
        from traingate.tracking.promote import register_and_promote

        promotion = register_and_promote(
            tracking,
            cfg,
            candidate,
            baseline_version,
            _gate_tag(decision, baseline_version),
            wall=wall,
            after_register=after_register,
        )
        model_version = promotion.version
        promoted_alias = promotion.alias
        if not candidate.tags.get(TAG_MODEL_SOURCE):
            warnings.append(
                f"version {model_version} of {cfg.gate.model!r} is the raw files of train.artifacts, not "
                f"an MLflow model: mlflow.pyfunc.load_model('models:/{cfg.gate.model}@{promoted_alias}') "
                "cannot be loaded; save an MLflow model (an MLmodel file) into train.model_dir "
                f"({cfg.train.model_dir}) in the training script (docs/gate.md)"
            )

    try:
        tracking.set_tags(
            candidate.run_id,
            {
                "traingate.gate.improved": str(decision.improved).lower(),
                "traingate.gate.baseline": baseline_version or "none",
                "traingate.gate.model_version": model_version or "",
            },
        )
    except TraingateError as err:
        warnings.append(f"the gate decided but could not tag run {candidate.run_id}: {err.message}")

    run_url = tracking.run_url(candidate.experiment_id, candidate.run_id)
    metrics_out = [asdict(v) for v in decision.metrics]
    report = {
        "improved": decision.improved,
        "baseline": baseline_version or "none",
        "baseline_run_id": baseline_run.run_id if baseline_run else None,
        "candidate_run_id": candidate.run_id,
        "model": cfg.gate.model,
        "alias": cfg.gate.alias,
        "model_version": model_version or None,
        "promoted": bool(promoted_alias),
        "promoted_alias": promoted_alias or None,
        "promote_mode": mode if promote else "off",
        "require": str(cfg.gate.require),
        "reason": decision.reason,
        "run_url": run_url,
        "metrics": metrics_out,
        "warnings": warnings,
        "eval_set": candidate.tags.get(TAG_EVAL_SET) or None,
        "rescored": rescored.report() if rescored else None,
    }
    report_path = reports_dir(workspace) / "gate-report.json"
    atomic_write_json(report_path, report)

    summary = render_gate_markdown(report)
    if promoted_alias == cfg.gate.alias:
        summary += f"\nPromoted: version {model_version} is now `@{cfg.gate.alias}`"
        if baseline_version:
            summary += f" (previous: `@{cfg.gate.previous_alias}` = {baseline_version})"
        summary += "\n"
    elif promoted_alias:
        summary += (
            f"\nRegistered version {model_version} as `@{promoted_alias}`; `traingate promote` after "
            f"the merge makes it `@{cfg.gate.alias}`.\n"
        )
    if rescored:
        summary += (
            f"\nThe champion (version {rescored.version}) was measured on another eval set; it was "
            f"re-scored on `{rescored.eval_set[:12]}` with `{rescored.command}` before the comparison.\n"
        )
    for text in warnings:
        summary += f"\n> ⚠️ {text}\n"
    verdict = "improved" if decision.improved else "not improved"
    message = f"gate: {verdict} ({decision.reason})" + (
        f"; version {model_version} is @{promoted_alias}" if promoted_alias else ""
    )
    return StepResult(
        outputs={
            "improved": decision.improved,
            "baseline": baseline_version or "none",
            "model_version": model_version,
            "run_id": candidate.run_id,
            "metrics": metrics_out,
            "report": str(report_path),
        },
        summary=summary,
        message=message,
        warnings=warnings,
        data={"report": report},
    )


__all__ = ["Decision", "MetricVerdict", "evaluate", "gate_step"]
