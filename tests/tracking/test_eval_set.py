"""Issue #12.2: scores on different evaluation sets were compared as if equal.

`gate.eval_set` is fingerprinted by content; `train` tags every run with it; the gate compares
only runs with the same fingerprint, fails (exit 1, nothing promoted) otherwise, unless
`gate.rescore` scores the champion's model on the current set first.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.tracking.helpers import NO_WAIT, Project, make_run, open_adapter
from traingate.errors import GateError, TrainError
from traingate.pipeline.train import train_step
from traingate.tracking.evalset import TAG_EVAL_SET, fingerprint
from traingate.tracking.gate import gate_step


def _write(folder: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder


def test_fingerprint_follows_content_names_and_nothing_else(tmp_path: Path) -> None:
    a = _write(tmp_path / "a", {"images/1.png": b"one", "images/2.png": b"two", "masks/1.png": b"m"})
    b = _write(tmp_path / "b", {"masks/1.png": b"m", "images/2.png": b"two", "images/1.png": b"one"})
    assert fingerprint(a) == fingerprint(b)  # creation order and folder name do not matter
    assert len(fingerprint(a)) == 64
    (b / "images" / "2.png").write_bytes(b"TWO")
    assert fingerprint(a) != fingerprint(b)
    c = _write(tmp_path / "c", {"images/1.png": b"one", "images/3.png": b"two", "masks/1.png": b"m"})
    assert fingerprint(a) != fingerprint(c)  # a renamed file is another set
    d = _write(
        tmp_path / "d", {"images/1.png": b"one", "images/2.png": b"two", "masks/1.png": b"m", "x": b""}
    )
    assert fingerprint(a) != fingerprint(d)
    one = _write(tmp_path / "f", {"holdout.csv": b"1,2\n"}) / "holdout.csv"
    other = _write(tmp_path / "g", {"renamed.csv": b"1,2\n"}) / "renamed.csv"
    assert fingerprint(one) == fingerprint(other)


@pytest.fixture
def tr_cfg(project: Project) -> tuple[Any, Any]:
    cfg = project.config(gate={"model": "tg-model", "eval_set": "holdout"})
    return cfg, open_adapter(cfg, runtime=NO_WAIT)


def _run(tr: Any, cfg: Any, metrics: dict[str, float], eval_set: str | None) -> str:
    run_id = make_run(tr, cfg, metrics)
    if eval_set is not None:
        tr.set_tags(run_id, {TAG_EVAL_SET: eval_set})
    return run_id


def test_train_tags_the_run_with_the_eval_set_fingerprint(project: Project) -> None:
    _write(project.root / "holdout", {"a.png": b"a", "b.png": b"b"})
    cfg = project.config(gate={"eval_set": "holdout"})
    result = train_step(cfg, log=lambda _l: None)
    run = open_adapter(cfg).get_run(result.outputs["run_id"])
    assert run.tags[TAG_EVAL_SET] == fingerprint(project.root / "holdout")
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert report["eval_set"] == fingerprint(project.root / "holdout")


def test_train_without_the_eval_set_fails_the_run(project: Project) -> None:
    cfg = project.config(gate={"eval_set": "holdout"})
    with pytest.raises(TrainError, match=r"gate\.eval_set 'holdout' does not exist"):
        train_step(cfg, log=lambda _l: None)
    tr = open_adapter(cfg)
    exp = tr._client.get_experiment_by_name(cfg.tracking.experiment)
    assert [r.info.status for r in tr._client.search_runs([exp.experiment_id])] == ["FAILED"]


def test_champion_on_another_set_is_not_comparable(tr_cfg: tuple[Any, Any]) -> None:
    cfg, tr = tr_cfg
    gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.95, "iou": 0.9}, "a" * 64), tracking=tr)
    candidate = _run(tr, cfg, {"dice": 0.96, "iou": 0.91}, "b" * 64)
    with pytest.raises(GateError) as info:
        gate_step(cfg, run_id=candidate, tracking=tr)
    err = info.value
    assert err.exit_code == 1
    assert "not comparable" in err.message
    assert "a" * 64 in err.message and "b" * 64 in err.message
    assert "gate.rescore" in (err.hint or "")
    assert tr.get_aliases("tg-model") == {"champion": "1"}
    assert len(tr.search_versions("tg-model", "traingate.baseline", "1")) == 0


def test_champion_without_fingerprint_is_not_comparable(project: Project, tr_cfg: tuple[Any, Any]) -> None:
    cfg, tr = tr_cfg
    before = project.config(gate={"model": "tg-model"})  # promoted before gate.eval_set was set
    gate_step(before, run_id=_run(tr, cfg, {"dice": 0.5, "iou": 0.5}, None), tracking=tr)
    candidate = _run(tr, cfg, {"dice": 0.96, "iou": 0.91}, "b" * 64)
    with pytest.raises(GateError, match=r"no fingerprint"):
        gate_step(cfg, run_id=candidate, tracking=tr)
    assert tr.get_aliases("tg-model") == {"champion": "1"}


def test_same_set_compares_as_before(tr_cfg: tuple[Any, Any]) -> None:
    cfg, tr = tr_cfg
    gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.8, "iou": 0.7}, "a" * 64), tracking=tr)
    worse = gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.7, "iou": 0.6}, "a" * 64), tracking=tr)
    assert worse.outputs["improved"] is False
    better = gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.9, "iou": 0.8}, "a" * 64), tracking=tr)
    assert better.outputs["improved"] is True and better.outputs["model_version"] == "2"


def test_candidate_without_fingerprint_is_refused_when_eval_set_is_configured(
    tr_cfg: tuple[Any, Any],
) -> None:
    cfg, tr = tr_cfg
    with pytest.raises(GateError, match=r"has no traingate\.eval_set tag"):
        gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.8, "iou": 0.7}, None), tracking=tr)
    assert tr.get_aliases("tg-model") is None


RESCORE = r"""
import json, os, pathlib
seen = {k: v for k, v in os.environ.items() if k.startswith("TRAINGATE_")}
pathlib.Path("rescore-env.json").write_text(json.dumps(seen))
scores = json.loads(os.environ.get("RESCORED", '{"dice": 0.9, "iou": 0.85}'))
pathlib.Path(os.environ["TRAINGATE_RESCORE_METRICS"]).write_text(json.dumps(scores))
"""


def _rescore_cfg(project: Project, **env: str) -> Any:
    (project.root / "rescore.py").write_text(RESCORE)
    return project.config(
        gate={
            "model": "tg-model",
            "eval_set": "holdout",
            "rescore": shlex.join([sys.executable, "rescore.py"]),
        },
        train={"env": env},
    )


def test_rescore_scores_the_champion_on_the_current_set_then_compares(project: Project) -> None:
    holdout = _write(project.root / "holdout", {"x.png": b"new set"})
    current = fingerprint(holdout)
    cfg = _rescore_cfg(project)
    tr = open_adapter(cfg, runtime=NO_WAIT)
    champion = _run(tr, cfg, {"dice": 0.6, "iou": 0.5}, "a" * 64)  # old, easy set
    gate_step(cfg, run_id=champion, tracking=tr)
    # On the current set the champion scores 0.9 / 0.85: a candidate at 0.88 is not better,
    # although it beats the champion's 0.6 measured on the other set.
    result = gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.88, "iou": 0.86}, current), tracking=tr)
    assert result.outputs["improved"] is False
    rows = {m["name"]: m for m in result.outputs["metrics"]}
    assert rows["dice"]["baseline"] == 0.9
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert report["rescored"]["version"] == "1" and report["rescored"]["eval_set"] == current
    assert "re-scored" in result.summary
    seen = json.loads((project.root / "rescore-env.json").read_text())
    assert seen["TRAINGATE_CHAMPION_MODEL_URI"] == "models:/tg-model/1"
    assert seen["TRAINGATE_CHAMPION_RUN_ID"] == champion
    assert seen["TRAINGATE_EVAL_SET"] == str(holdout.resolve())
    assert seen["TRAINGATE_EVAL_SET_FINGERPRINT"] == current
    better = gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.95, "iou": 0.9}, current), tracking=tr)
    assert better.outputs["improved"] is True
    assert tr.get_aliases("tg-model")["champion"] == "2"


def test_rescore_missing_a_gated_metric_fails_closed(project: Project) -> None:
    holdout = _write(project.root / "holdout", {"x.png": b"new set"})
    cfg = _rescore_cfg(project, RESCORED='{"dice": 0.1}')
    tr = open_adapter(cfg, runtime=NO_WAIT)
    gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.6, "iou": 0.5}, "a" * 64), tracking=tr)
    with pytest.raises(GateError, match="wrote no metric 'iou'"):
        gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.95, "iou": 0.9}, fingerprint(holdout)), tracking=tr)
    assert tr.get_aliases("tg-model") == {"champion": "1"}


def test_rescore_refuses_when_the_set_on_disk_is_not_the_candidates(project: Project) -> None:
    _write(project.root / "holdout", {"x.png": b"changed since training"})
    cfg = _rescore_cfg(project)
    tr = open_adapter(cfg, runtime=NO_WAIT)
    gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.6, "iou": 0.5}, "a" * 64), tracking=tr)
    with pytest.raises(GateError, match="is not the one the candidate run"):
        gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.95, "iou": 0.9}, "c" * 64), tracking=tr)
    assert not (project.root / "rescore-env.json").exists()


def test_failing_rescore_command_fails_the_gate(project: Project) -> None:
    holdout = _write(project.root / "holdout", {"x.png": b"new set"})
    cfg = project.config(
        gate={
            "model": "tg-model",
            "eval_set": "holdout",
            "rescore": shlex.join([sys.executable, "-c", "import sys; print('no model'); sys.exit(4)"]),
        }
    )
    tr = open_adapter(cfg, runtime=NO_WAIT)
    gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.6, "iou": 0.5}, "a" * 64), tracking=tr)
    with pytest.raises(GateError, match="exited with code 4") as info:
        gate_step(cfg, run_id=_run(tr, cfg, {"dice": 0.95, "iou": 0.9}, fingerprint(holdout)), tracking=tr)
    assert "no model" in info.value.message
    assert tr.get_aliases("tg-model") == {"champion": "1"}
