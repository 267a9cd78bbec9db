"""Scores are only comparable on the same evaluation set (`gate.eval_set`).

A champion that scored dice 0.95 on last year's easy holdout and a candidate that scores 0.93 on
today's harder one say nothing about which model is better. So `train` tags every run with a
fingerprint of the evaluation set's content (`traingate.eval_set`), and the gate compares a
candidate only with a champion that carries the same fingerprint. A champion measured on
another set (or on an unknown one) is "not comparable": the gate fails (exit 1) and promotes
nothing, unless `gate.rescore` names a command that scores the champion's model on the current
set first; then the candidate is compared with those scores.

The fingerprint is sha256 over the sorted relative paths and the contents of every file, so
renaming, adding, removing or editing a file changes it and nothing else does (not mtimes, not
the order a filesystem lists files in).
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from traingate.contracts import Rescored, RunRecord
from traingate.errors import ConfigError, GateError, TrainError, TraingateError

if TYPE_CHECKING:
    from traingate.config import Config

TAG_EVAL_SET = "traingate.eval_set"
_CHUNK = 1 << 20


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(path: Path) -> str:
    """sha256 over (relative path, content digest) of every file, sorted by path. A single file
    is its content only, so the same file under another name keeps its fingerprint."""
    if path.is_file():
        entries = [("", path)]
    elif path.is_dir():
        entries = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    else:
        raise FileNotFoundError(path)
    h = hashlib.sha256()
    for rel, file in entries:
        h.update(f"{rel}\0{_file_digest(file)}\n".encode())
    return h.hexdigest()


def eval_set_path(cfg: Config) -> Path:
    return cfg.path(cfg.train.workdir) / cfg.gate.eval_set


def eval_set_fingerprint(cfg: Config) -> str:
    """The fingerprint of `gate.eval_set` as it is on disk now; TrainError when it is missing
    or empty (an empty set would make every run "comparable" with every other)."""
    path = eval_set_path(cfg)
    if not path.exists():
        raise TrainError(
            f"gate.eval_set {cfg.gate.eval_set!r} does not exist ({path})",
            hint="commit the evaluation set to the repository (or make the training create it), "
            "or fix gate.eval_set (relative to train.workdir)",
        )
    if path.is_dir() and not any(p.is_file() for p in path.rglob("*")):
        raise TrainError(
            f"gate.eval_set {path} is an empty folder",
            hint="put the evaluation images there, or fix gate.eval_set",
        )
    return fingerprint(path)


def _short(value: str) -> str:
    return value[:12] if value else "none"


def comparable_baseline(
    cfg: Config, candidate: RunRecord, baseline_version: str | None, baseline: RunRecord | None
) -> tuple[RunRecord | None, Rescored | None]:
    """The baseline to compare with: the champion's run when both were measured on the same set,
    the champion re-scored on the candidate's set with `gate.rescore`, or GateError."""
    mine = candidate.tags.get(TAG_EVAL_SET, "")
    if cfg.gate.eval_set and not mine:
        raise GateError(
            f"the candidate run {candidate.run_id} has no {TAG_EVAL_SET} tag, but gate.eval_set is "
            f"{cfg.gate.eval_set!r}: it is unknown what its scores were measured on",
            hint="gate a run trained by `traingate train` with this traingate.yml",
        )
    if baseline is None:
        return None, None
    theirs = baseline.tags.get(TAG_EVAL_SET, "")
    if mine == theirs:
        return baseline, None
    what = (
        f"the champion @{cfg.gate.alias} (version {baseline_version}, run {baseline.run_id}) was "
        f"measured on eval set {theirs or 'none (no fingerprint)'}, the candidate run "
        f"{candidate.run_id} on {mine or 'none (no fingerprint)'}"
    )
    if not mine:
        raise GateError(
            f"not comparable: {what}",
            hint="set gate.eval_set to the evaluation data and re-train, so the candidate's set is known",
        )
    if not cfg.gate.rescore:
        raise GateError(
            f"not comparable: {what}; nothing was promoted",
            hint="set gate.rescore to a command that scores the champion's model on the current "
            "eval set (docs/gate.md), or promote by hand after comparing on the same set "
            "(`traingate promote --version`)",
        )
    rescored = rescore(cfg, candidate, baseline_version or "", baseline)
    # Only the re-scored values: a gated metric the command did not write must fail the gate,
    # never fall back to the score on the other set.
    tags = {**baseline.tags, TAG_EVAL_SET: mine}
    return replace(baseline, metrics=dict(rescored.metrics), tags=tags), rescored


def _rescore_eval_set(cfg: Config, candidate: RunRecord) -> str:
    """The candidate's eval-set fingerprint, once the set on disk is checked to be that set."""
    mine = candidate.tags[TAG_EVAL_SET]
    try:
        here = eval_set_fingerprint(cfg) if cfg.gate.eval_set else ""
    except TrainError as err:
        raise GateError(f"cannot re-score the champion: {err.message}", hint=err.hint) from err
    if here != mine:
        raise GateError(
            f"cannot re-score the champion: the eval set on disk ({eval_set_path(cfg)}, "
            f"{_short(here)}) is not the one the candidate run {candidate.run_id} was measured on "
            f"({_short(mine)})",
            hint="run the gate in the checkout that trained the candidate (same gate.eval_set)",
        )
    return mine


def _rescore_env(
    cfg: Config, version: str, champion: RunRecord, mine: str, metrics_path: Path
) -> dict[str, str]:
    """What the scoring command is told: where MLflow is, which model, which set, where to write."""
    from traingate.tracking.mlflow_client import mlflow_env

    return {
        **os.environ,
        **mlflow_env(cfg.tracking),
        **cfg.train.env,
        "MLFLOW_TRACKING_URI": cfg.tracking_uri,
        "MLFLOW_REGISTRY_URI": cfg.tracking_uri,
        "TRAINGATE_CHAMPION_MODEL_URI": f"models:/{cfg.gate.model}/{version}",
        "TRAINGATE_CHAMPION_VERSION": version,
        "TRAINGATE_CHAMPION_RUN_ID": champion.run_id,
        "TRAINGATE_EVAL_SET": str(eval_set_path(cfg).resolve()),
        "TRAINGATE_EVAL_SET_FINGERPRINT": mine,
        "TRAINGATE_RESCORE_METRICS": str(metrics_path),
    }


def _run_rescore(cfg: Config, version: str, env: dict[str, str]) -> None:
    """Run `gate.rescore` in train.workdir; GateError (or ConfigError) unless it exits 0."""
    command = cfg.gate.rescore
    workdir = cfg.path(cfg.train.workdir).resolve()
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise ConfigError(
            f"gate.rescore {command!r} cannot be parsed: {err}", hint="fix the quoting"
        ) from err
    try:
        proc = subprocess.run(
            argv,
            cwd=workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=cfg.train.timeout_minutes * 60,
            check=False,
        )
    except FileNotFoundError as err:
        raise ConfigError(
            f"gate.rescore {command!r}: {argv[0]!r} not found (from {workdir})",
            hint="install the program or fix gate.rescore",
        ) from err
    except subprocess.TimeoutExpired as err:
        raise GateError(
            f"gate.rescore {command!r} did not finish within {cfg.train.timeout_minutes:g} minutes",
            hint="nothing was promoted; make the scoring faster or raise train.timeout_minutes",
        ) from err
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        raise GateError(
            f"gate.rescore {command!r} exited with code {proc.returncode} while scoring version "
            f"{version} of {cfg.gate.model!r}; nothing was promoted; last lines:\n{tail}",
            hint="fix the scoring command (it must load $TRAINGATE_CHAMPION_MODEL_URI and write "
            "$TRAINGATE_RESCORE_METRICS)",
        )


def _rescored_metrics(cfg: Config, version: str, metrics_path: Path) -> dict[str, float]:
    """The metrics file the command wrote, holding every gated metric."""
    from traingate.metrics import read_final_metrics

    command = cfg.gate.rescore
    try:
        metrics = read_final_metrics(metrics_path)
    except TraingateError as err:
        raise GateError(
            f"gate.rescore {command!r} exited 0 but: {err.message}",
            hint="write a JSON object of metrics to $TRAINGATE_RESCORE_METRICS",
        ) from err
    missing = [m.name for m in cfg.gate.metrics if m.name not in metrics]
    if missing:
        raise GateError(
            f"gate.rescore {command!r} wrote no metric {', '.join(map(repr, missing))} for version "
            f"{version} of {cfg.gate.model!r} (it wrote: {', '.join(sorted(metrics))}); nothing was promoted",
            hint="write every gated metric (gate.metrics) to $TRAINGATE_RESCORE_METRICS",
        )
    return metrics


def rescore(cfg: Config, candidate: RunRecord, version: str, champion: RunRecord) -> Rescored:
    """Run `gate.rescore` for the champion's model on the eval set on disk, which must be the
    set the candidate was measured on; read the metrics file it wrote."""
    mine = _rescore_eval_set(cfg, candidate)
    out_dir = (cfg.workspace_dir / "rescore").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "-", cfg.gate.model)
    metrics_path = out_dir / f"{safe_name}-v{version}-metrics.json"
    metrics_path.unlink(missing_ok=True)
    _run_rescore(cfg, version, _rescore_env(cfg, version, champion, mine, metrics_path))
    metrics = _rescored_metrics(cfg, version, metrics_path)
    return Rescored(version, champion.run_id, mine, metrics, cfg.gate.rescore)


__all__ = [
    "TAG_EVAL_SET",
    "Rescored",
    "comparable_baseline",
    "eval_set_fingerprint",
    "eval_set_path",
    "fingerprint",
    "rescore",
]
