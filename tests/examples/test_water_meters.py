"""The bundled example: the generator is deterministic and valid, train.py honours the
metrics-file contract and fails loudly, clean data beats degraded data, and the wheel ships an
exact copy (so `traingate demo` from an installed wheel runs the same example)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from traingate.config import load_config, parse_config
from traingate.data.validate import validate_dataset
from traingate.demo import EXAMPLE_FILES

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "water-meters"


def _gen(out: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLE / "generate.py"), str(out), *args], check=True, capture_output=True
    )


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _train(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_generator_is_deterministic_and_passes_validation(tmp_path: Path) -> None:
    _gen(tmp_path / "a", "--pairs", "6", "--seed", "5")
    _gen(tmp_path / "b", "--pairs", "6", "--seed", "5")
    _gen(tmp_path / "c", "--pairs", "6", "--seed", "6")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")
    cfg = load_config(EXAMPLE / "traingate.yml")
    v = validate_dataset(tmp_path / "a", cfg.data, cache_dir=tmp_path / "cache", workers=1, require_data=True)
    assert v.passed, v.report()
    assert v.report()["counts"]["valid_pairs"] == 6
    mask = np.asarray(Image.open(tmp_path / "a" / "masks" / "meter-0000.png"))
    assert set(np.unique(mask)) == {0, 255}
    assert 0.05 < (mask > 0).mean() < 0.6


def test_degraded_data_is_valid_but_mislabelled(tmp_path: Path) -> None:
    """Worse data must pass validation (well-formed files) and still be wrong: the gate, not the
    validator, is what stops it."""
    _gen(tmp_path / "clean", "--pairs", "4", "--seed", "9")
    _gen(tmp_path / "worse", "--pairs", "4", "--seed", "9", "--degrade")
    cfg = load_config(EXAMPLE / "traingate.yml")
    v = validate_dataset(
        tmp_path / "worse", cfg.data, cache_dir=tmp_path / "cache", workers=1, require_data=True
    )
    assert v.passed, v.report()
    clean = np.asarray(Image.open(tmp_path / "clean" / "masks" / "meter-0000.png")) > 0
    worse = np.asarray(Image.open(tmp_path / "worse" / "masks" / "meter-0000.png")) > 0
    overlap = (clean & worse).sum() / (clean | worse).sum()
    assert overlap < 0.6


def test_generator_rejects_bad_arguments(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "generate.py"), str(tmp_path), "--pairs", "0"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "--pairs must be at least 1, got 0" in proc.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One clean and one clean+degraded training run on the same holdout set."""
    results = {}
    for name, degrade in (("clean", False), ("worse", True)):
        work = tmp_path_factory.mktemp(name)
        _gen(work / "data" / "training", "--pairs", "24", "--seed", "1")
        if degrade:
            _gen(work / "data" / "training", "--pairs", "24", "--seed", "3", "--prefix", "worse", "--degrade")
        proc = _train(work, "--epochs", "4")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        results[name] = {
            "work": work,
            "metrics": json.loads((work / "outputs" / "metrics.json").read_text()),
            "log": [json.loads(x) for x in (work / "outputs" / "metrics.jsonl").read_text().splitlines()],
            "stdout": proc.stdout,
        }
    return results


def test_train_writes_the_metrics_contract(trained: dict[str, dict]) -> None:
    run = trained["clean"]
    metrics = run["metrics"]
    assert set(metrics) >= {"dice", "iou"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert [row["step"] for row in run["log"]] == [1, 2, 3, 4]
    assert run["log"][-1]["dice"] == metrics["dice"]
    model = np.load(run["work"] / "outputs" / "model.npz")
    assert {"w1", "b1", "w2", "b2", "mean", "std"} <= set(model.files)
    assert "created the holdout set holdout" in run["stdout"]
    assert (run["work"] / "outputs" / "model" / "MLmodel").is_file()  # an MLflow pyfunc model
    params = json.loads((run["work"] / "outputs" / "params.json").read_text())
    assert params == {
        "epochs": 4,
        "hidden": 16,
        "lr": 0.01,
        "seed": 0,
        "pixels_per_image": 3000,
        "train_pairs": 24,
        "eval_pairs": 24,
    }


def test_clean_data_clearly_beats_degraded_data(trained: dict[str, dict]) -> None:
    clean, worse = trained["clean"]["metrics"], trained["worse"]["metrics"]
    assert clean["dice"] > 0.9
    assert clean["dice"] - worse["dice"] > 0.005, (clean, worse)
    assert clean["iou"] > worse["iou"]


def test_train_is_deterministic(trained: dict[str, dict], tmp_path: Path) -> None:
    work = trained["clean"]["work"]
    proc = _train(work, "--epochs", "4", "--out", str(tmp_path / "again"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "again" / "metrics.json").read_text()) == trained["clean"]["metrics"]


def test_train_without_data_exits_nonzero_and_says_why(tmp_path: Path) -> None:
    proc = _train(tmp_path)
    assert proc.returncode == 1
    assert "data/training must hold images/ and masks/" in proc.stderr
    assert not (tmp_path / "outputs" / "metrics.json").exists()


def test_train_with_a_missing_mask_exits_nonzero(tmp_path: Path) -> None:
    _gen(tmp_path / "data" / "training", "--pairs", "5")
    (tmp_path / "data" / "training" / "masks" / "meter-0002.png").unlink()
    proc = _train(tmp_path)
    assert proc.returncode == 1
    assert "meter-0002.jpg has no mask" in proc.stderr


def _example_project(work: Path) -> object:
    """The example in `work` with 24 clean pairs, trained by this interpreter (which has mlflow)."""
    import shutil

    import yaml

    for name in ("train.py", "generate.py"):
        shutil.copy2(EXAMPLE / name, work / name)
    _gen(work / "data" / "training", "--pairs", "24", "--seed", "1")
    raw = yaml.safe_load((EXAMPLE / "traingate.yml").read_text())
    raw["train"].update({"command": f"{sys.executable} train.py --epochs 3", "pull_data": False})
    raw["tracking"].update({"retry_budget_seconds": 5, "health_timeout_seconds": 5})
    return parse_config(raw, base_dir=work)


@pytest.mark.slow
def test_champion_loads_with_pyfunc_and_predicts_masks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue #12.3: `mlflow.pyfunc.load_model("models:/water-meter-segmentation@champion")`
    failed (the version pointed at a raw folder). Now it loads and segments an (N, H, W, 3) batch."""
    from traingate.pipeline.train import train_step
    from traingate.tracking.gate import gate_step

    cfg = _example_project(tmp_path)
    trained = train_step(cfg, log=lambda _line: None)
    assert not any("not loadable" in w for w in trained.warnings), trained.warnings
    gated = gate_step(cfg, run_id=trained.outputs["run_id"])
    assert gated.outputs["model_version"] == "1" and not gated.warnings

    import mlflow
    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking_uri)
    client = mlflow.MlflowClient(cfg.tracking_uri)
    params = client.get_run(trained.outputs["run_id"]).data.params
    assert params["epochs"] == "3" and params["hidden"] == "16" and params["train_pairs"] == "24"

    model = mlflow.pyfunc.load_model("models:/water-meter-segmentation@champion")
    names = sorted(p.stem for p in (tmp_path / "holdout" / "images").iterdir())[:3]
    batch = np.stack(
        [
            np.asarray(
                Image.open(tmp_path / "holdout" / "images" / f"{n}.jpg").convert("RGB"), dtype=np.float32
            )
            / 255.0
            for n in names
        ]
    )
    assert batch.shape == (3, 128, 128, 3)
    masks = np.asarray(model.predict(batch))
    assert masks.shape == (3, 128, 128) and masks.dtype == bool
    truth = np.stack(
        [np.asarray(Image.open(tmp_path / "holdout" / "masks" / f"{n}.png")) > 127 for n in names]
    )
    dice = 2 * (masks & truth).sum() / (masks.sum() + truth.sum())
    assert dice > 0.8


def test_without_mlflow_the_example_trains_and_says_so(tmp_path: Path) -> None:
    blocker = tmp_path / "no-mlflow"
    (blocker / "mlflow").mkdir(parents=True)
    (blocker / "mlflow" / "__init__.py").write_text("raise ImportError('mlflow is not installed')\n")
    _gen(tmp_path / "data" / "training", "--pairs", "10", "--seed", "1")
    import os

    proc = subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--epochs", "1", "--holdout", "none"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(blocker)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "mlflow is not importable" in proc.stdout
    assert (tmp_path / "outputs" / "model.npz").is_file()
    assert not (tmp_path / "outputs" / "model").exists()
    assert json.loads((tmp_path / "outputs" / "params.json").read_text())["epochs"] == 1


def test_example_config_is_valid() -> None:
    cfg = load_config(EXAMPLE / "traingate.yml")
    assert cfg.project == "water-meters"
    assert [m.name for m in cfg.gate.metrics] == ["dice", "iou"]
    assert cfg.train.artifacts == ["outputs/model.npz"]
    assert cfg.gate.eval_set == "holdout"  # the fixed holdout train.py measures on
    assert parse_config({"data": {"size": [128, 128]}}).data.size == (128, 128)


def test_wheel_ships_an_exact_copy_of_the_example(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("traingate-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        shipped = {
            name.removeprefix("traingate/examples/water-meters/"): zf.read(name)
            for name in zf.namelist()
            if name.startswith("traingate/examples/water-meters/")
        }
    assert set(shipped) == set(EXAMPLE_FILES)
    for name in EXAMPLE_FILES:
        assert shipped[name] == (EXAMPLE / name).read_bytes(), name

    # Installed from the wheel (no checkout next to it), the demo finds the shipped copy.
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)
    proc = subprocess.run(
        [sys.executable, "-c", "import traingate.demo as p; print(p.example_dir())"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()) == site / "traingate" / "examples" / "water-meters"
