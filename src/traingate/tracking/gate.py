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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from traingate.contracts import (
    TAG_ARTIFACTS,
    TAG_MODEL_SOURCE,
    GateReport,
    MetricVerdict,
    Rescored,
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
    from traingate.gha import ActionsContext

# Differences below this (relative to the baseline's magnitude) are float noise, not progress:
# 0.1 + 0.2 must tie with 0.3.
_TOLERANCE = 1e-9


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


def _floor_note(rule: GateMetric) -> str:
    sign = ">=" if rule.direction == "max" else "<="
    return "" if rule.threshold is None else f"{sign} threshold {_fmt(rule.threshold)}"


def _first_model_verdict(rule: GateMetric, c: float) -> MetricVerdict:
    """No champion yet: only the threshold (if any) decides."""
    floor = _meets_threshold(rule, c)
    if rule.threshold is None:
        reason = "no champion yet; no threshold"
    elif floor:
        reason = f"no champion yet; {_fmt(c)} {_floor_note(rule)}"
    else:
        reason = f"no champion yet; {_fmt(c)} misses the threshold ({_floor_note(rule)})"
    return MetricVerdict(rule.name, str(rule.direction), c, None, None, floor, reason)


def _compared_verdict(rule: GateMetric, c: float, b: float) -> MetricVerdict:
    """Candidate `c` against champion `b`: above the floor, better, and by the required margin."""
    floor = _meets_threshold(rule, c)
    delta = c - b
    gain = delta if rule.direction == "max" else -delta
    tol = _TOLERANCE * max(1.0, abs(b))
    need = max(rule.min_delta, rule.min_relative_delta * abs(b))
    better = gain > tol
    enough = gain >= need - tol
    if not floor:
        reason = f"{_fmt(c)} misses the threshold ({_floor_note(rule)})"
    elif abs(gain) <= tol:
        reason = "tie with the champion" + (f" (needs {_fmt(need)} better)" if need > 0 else "")
    elif not better:
        reason = f"worse than the champion by {_fmt(abs(delta))}"
    elif not enough:
        reason = f"better by {_fmt(gain)}, less than the required {_fmt(need)}"
    else:
        reason = f"better by {_fmt(gain)}" + (f" (required {_fmt(need)})" if need > 0 else "")
    passed = floor and better and enough
    return MetricVerdict(rule.name, str(rule.direction), c, b, delta, passed, reason)


def _overall(verdicts: list[MetricVerdict], require: str, floors_ok: bool, first: bool) -> Decision:
    if first:
        reason = (
            "no champion yet: first model, it meets every threshold"
            if floors_ok
            else "no champion yet, but a threshold is not met"
        )
        return Decision(floors_ok, reason, verdicts)
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
        floors_ok = floors_ok and _meets_threshold(rule, c)
        if baseline is None:
            verdicts.append(_first_model_verdict(rule, c))
        else:
            b = _finite(baseline.metrics, rule.name, "baseline", baseline.run_id)
            verdicts.append(_compared_verdict(rule, c, b))
    return _overall(verdicts, require, floors_ok, first=baseline is None)


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


@dataclass(frozen=True)
class GateResult:
    """What `gate` decided: `result.value` for composers; the step's outputs derive from it."""

    report: GateReport
    report_path: Path

    @property
    def improved(self) -> bool:
        return self.report.improved

    @property
    def baseline(self) -> str:
        return self.report.baseline

    @property
    def model_version(self) -> str:
        return self.report.model_version or ""

    @property
    def run_id(self) -> str:
        return self.report.candidate_run_id

    @property
    def metrics(self) -> tuple[MetricVerdict, ...]:
        return self.report.metrics

    def outputs(self) -> dict[str, Any]:
        return {
            "improved": self.improved,
            "baseline": self.baseline,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "metrics": [m.to_json() for m in self.metrics],
            "report": str(self.report_path),
        }


@dataclass
class _Comparison:
    """What the comparison found, handed from one phase of `gate_step` to the next."""

    candidate: RunRecord
    baseline_version: str | None
    baseline_run: RunRecord | None
    rescored: Rescored | None
    decision: Decision


@dataclass
class _Promoted:
    model_version: str = ""
    # The alias that now points at model_version ("" when nothing was registered).
    alias: str = ""
    warnings: list[str] = field(default_factory=list)


def _candidate_id(cfg: Config, run_id: str | None) -> str:
    candidate_id = run_id or read_state(cfg.workspace_dir).run_id
    if not candidate_id:
        raise GateError(
            "no candidate run to gate: no --run-id given and no successful `traingate train` recorded "
            f"in {cfg.workspace_dir / 'state.json'}",
            hint="pass --run-id (the `run_id` output of the train step)",
        )
    return str(candidate_id)


def _compare(tracking: Tracking, cfg: Config, candidate_id: str) -> _Comparison:
    candidate = _read_candidate(tracking, candidate_id)
    baseline_version, baseline_run = _read_baseline(tracking, cfg)
    if baseline_run is not None and baseline_run.run_id == candidate.run_id:
        raise GateError(
            f"run {candidate_id} is already @{cfg.gate.alias} (version {baseline_version}); "
            "nothing to compare",
            hint="gate a new training run",
        )
    from traingate.tracking.evalset import comparable_baseline

    # Scores on different evaluation sets are not compared (issue #12): same fingerprint, or the
    # champion re-scored on the candidate's set with gate.rescore, or GateError.
    baseline_run, rescored = comparable_baseline(cfg, candidate, baseline_version, baseline_run)
    decision = evaluate(cfg.gate.metrics, str(cfg.gate.require), candidate, baseline_run)
    return _Comparison(candidate, baseline_version, baseline_run, rescored, decision)


def _promote(
    tracking: Tracking,
    cfg: Config,
    compared: _Comparison,
    promote: bool,
    wall: Callable[[], float],
    after_register: Callable[[Any], None] | None,
) -> _Promoted:
    """Register an improved candidate and move the alias (gate.promote), or say why not."""
    candidate = compared.candidate
    if not (compared.decision.improved and promote and str(cfg.gate.promote) != "off"):
        return _Promoted()
    if candidate.tags.get(TAG_ARTIFACTS) == "missing":
        return _Promoted(
            warnings=[
                f"run {candidate.run_id} improved, but its model files never reached the artifact "
                "store (train.artifacts_policy: best-effort), so no version was registered and "
                f"@{cfg.gate.alias} did not move; fix the artifact store permissions, re-run "
                "training, or register the locally kept model by hand"
            ]
        )
    from traingate.tracking.promote import register_and_promote

    gate_tag = _gate_tag(compared.decision, compared.baseline_version)
    promotion = register_and_promote(
        tracking,
        cfg,
        candidate,
        compared.baseline_version,
        gate_tag,
        wall=wall,
        after_register=after_register,
    )
    done = _Promoted(promotion.version, promotion.alias)
    if not candidate.tags.get(TAG_MODEL_SOURCE):
        done.warnings.append(
            f"version {done.model_version} of {cfg.gate.model!r} is the raw files of train.artifacts, "
            f"not an MLflow model: mlflow.pyfunc.load_model('models:/{cfg.gate.model}@{done.alias}') "
            "cannot be loaded; save an MLflow model (an MLmodel file) into train.model_dir "
            f"({cfg.train.model_dir}) in the training script (docs/gate.md)"
        )
    return done


def _tag_run(tracking: Tracking, compared: _Comparison, promoted: _Promoted) -> list[str]:
    """Record the verdict on the candidate run; a failure here is a warning, the verdict stands."""
    run_id = compared.candidate.run_id
    try:
        tracking.set_tags(
            run_id,
            {
                "traingate.gate.improved": str(compared.decision.improved).lower(),
                "traingate.gate.baseline": compared.baseline_version or "none",
                "traingate.gate.model_version": promoted.model_version or "",
            },
        )
    except TraingateError as err:
        return [f"the gate decided but could not tag run {run_id}: {err.message}"]
    return []


def _report(
    cfg: Config,
    tracking: Tracking,
    compared: _Comparison,
    promoted: _Promoted,
    promote: bool,
    warnings: list[str],
) -> GateReport:
    from traingate.tracking.evalset import TAG_EVAL_SET

    candidate, decision = compared.candidate, compared.decision
    return GateReport(
        improved=decision.improved,
        baseline=compared.baseline_version or "none",
        baseline_run_id=compared.baseline_run.run_id if compared.baseline_run else None,
        candidate_run_id=candidate.run_id,
        model=cfg.gate.model,
        alias=cfg.gate.alias,
        model_version=promoted.model_version or None,
        promoted=bool(promoted.alias),
        promoted_alias=promoted.alias or None,
        promote_mode=str(cfg.gate.promote) if promote else "off",
        require=str(cfg.gate.require),
        reason=decision.reason,
        run_url=tracking.run_url(candidate.experiment_id, candidate.run_id),
        metrics=tuple(decision.metrics),
        warnings=tuple(warnings),
        eval_set=candidate.tags.get(TAG_EVAL_SET) or None,
        rescored=compared.rescored,
    )


def _summary(cfg: Config, report: GateReport) -> str:
    summary = render_gate_markdown(report)
    version, alias = report.model_version, report.promoted_alias
    if alias == cfg.gate.alias:
        summary += f"\nPromoted: version {version} is now `@{cfg.gate.alias}`"
        if not report.first_model:
            summary += f" (previous: `@{cfg.gate.previous_alias}` = {report.baseline})"
        summary += "\n"
    elif alias:
        summary += (
            f"\nRegistered version {version} as `@{alias}`; `traingate promote` after "
            f"the merge makes it `@{cfg.gate.alias}`.\n"
        )
    rescored = report.rescored
    if rescored:
        summary += (
            f"\nThe champion (version {rescored.version}) was measured on another eval set; it was "
            f"re-scored on `{rescored.eval_set[:12]}` with `{rescored.command}` before the comparison.\n"
        )
    for text in report.warnings:
        summary += f"\n> ⚠️ {text}\n"
    return summary


def _message(report: GateReport) -> str:
    verdict = "improved" if report.improved else "not improved"
    message = f"gate: {verdict} ({report.reason})"
    if report.promoted_alias:
        message += f"; version {report.model_version} is @{report.promoted_alias}"
    return message


def gate_step(
    cfg: Config,
    run_id: str | None = None,
    promote: bool = True,
    *,
    actions: ActionsContext | None = None,
    tracking: Tracking | None = None,
    wall: Callable[[], float] = time.time,
    after_register: Callable[[Any], None] | None = None,
) -> StepResult[GateResult]:
    """`traingate gate`: compare, promote when improved (gate.promote), write gate-report.json.

    `actions` says whether this runs in GitHub Actions (a runner-local registry is refused
    there); None reads it from the environment, for callers that do not pass it yet."""
    candidate_id = _candidate_id(cfg, run_id)
    from traingate.tracking.durable import require_lasting_registry

    require_lasting_registry(cfg, command="gate", actions=actions)
    if tracking is None:
        from traingate.tracking.mlflow_client import open_tracking

        tracking = open_tracking(cfg)
    compared = _compare(tracking, cfg, candidate_id)
    promoted = _promote(tracking, cfg, compared, promote, wall, after_register)
    warnings = promoted.warnings + _tag_run(tracking, compared, promoted)
    report = _report(cfg, tracking, compared, promoted, promote, warnings)
    report_path = reports_dir(cfg.workspace_dir) / "gate-report.json"
    payload = report.to_json()
    atomic_write_json(report_path, payload)
    value = GateResult(report, report_path)
    return StepResult(
        outputs=value.outputs(),
        summary=_summary(cfg, report),
        message=_message(report),
        warnings=list(report.warnings),
        data={"report": payload},
        value=value,
    )


__all__ = ["Decision", "GateResult", "MetricVerdict", "evaluate", "gate_step"]
