"""Issue #12.3: the champion must be a model someone can load, and say how it was made.

When training writes an MLflow model directory (`train.model_dir`, an `MLmodel` file inside),
`train` logs it as an MLflow logged model and the gate registers that, so
`mlflow.pyfunc.load_model("models:/<model>@champion")` works. Without one, train and gate say
loudly that the version cannot be loaded. Parameters (`train.params` and the `params.json` the
training wrote) are logged on the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.tracking.helpers import Project, open_adapter
from traingate.pipeline.train import train_step
from traingate.tracking.gate import gate_step

PYFUNC_SCRIPT = r"""
import json, os, pathlib, shutil
import mlflow.pyfunc
import numpy as np

class Threshold(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return np.asarray(model_input).mean(axis=-1) > float(os.environ.get("CUT", "0.5"))

out = pathlib.Path("outputs")
out.mkdir(exist_ok=True)
shutil.rmtree(out / "model", ignore_errors=True)
if os.environ.get("MODE") != "nomodel":
    mlflow.pyfunc.save_model(str(out / "model"), python_model=Threshold(), pip_requirements=["numpy"])
(out / "params.json").write_text(json.dumps({"cut": 0.5, "epochs": 3, "augment": True}))
(out / "metrics.json").write_text(json.dumps({"dice": float(os.environ.get("DICE", "0.8")), "iou": 0.7}))
"""


def _quiet(_line: str) -> None:
    pass


def _cfg(project: Project, **train: Any) -> Any:
    (project.root / "train.py").write_text(PYFUNC_SCRIPT)
    return project.config(train={"artifacts": [], **train})


def test_champion_is_a_loadable_pyfunc_model(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(project, params={"lr": 0.01, "arch": "threshold"})
    trained = train_step(cfg, log=_quiet)
    run_id = trained.outputs["run_id"]
    tr = open_adapter(cfg)
    run = tr._client.get_run(run_id)
    assert run.data.params == {
        "lr": "0.01",
        "arch": "threshold",
        "cut": "0.5",
        "epochs": "3",
        "augment": "True",
    }
    report = json.loads(Path(trained.outputs["report"]).read_text())
    assert report["model_uri"].startswith("models:/m-")
    assert report["params"] == 5
    assert not any("not loadable" in w for w in trained.warnings)

    gated = gate_step(cfg, run_id=run_id, tracking=tr)
    assert gated.outputs["model_version"] == "1"
    version = tr._client.get_model_version("tg-model", "1")
    logged = tr._client.get_logged_model(report["model_uri"].removeprefix("models:/"))
    assert version.source == logged.artifact_location  # the logged model, not a folder of files
    assert logged.source_run_id == run_id

    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", cfg.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/tg-model@champion")
    batch = np.zeros((2, 8, 6, 3), dtype=np.float32)
    batch[1, :4] = 1.0
    masks = np.asarray(model.predict(batch))
    assert masks.shape == (2, 8, 6)
    assert not masks[0].any() and masks[1, :4].all() and not masks[1, 4:].any()


def test_against_a_real_mlflow_server(
    project: Project, mlflow_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _cfg(project)
    cfg.tracking.uri = mlflow_server.url
    cfg.gate.model = "tg-model-served"
    cfg.tracking.experiment = "tg-model-served"
    trained = train_step(cfg, log=_quiet)
    tr = open_adapter(cfg)
    gate_step(cfg, run_id=trained.outputs["run_id"], tracking=tr)
    version = tr.get_aliases("tg-model-served")["champion"]

    import mlflow.pyfunc

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    model = mlflow.pyfunc.load_model(f"models:/tg-model-served/{version}")
    assert np.asarray(model.predict(np.ones((1, 4, 4, 3)))).all()


def test_without_mlmodel_the_version_is_said_to_be_unloadable(project: Project) -> None:
    cfg = _cfg(project, artifacts=["outputs/params.json"], env={"MODE": "nomodel"})
    trained = train_step(cfg, log=_quiet)
    assert any("not loadable" in w and "outputs/model" in w for w in trained.warnings)
    assert "not loadable" in trained.summary
    report = json.loads(Path(trained.outputs["report"]).read_text())
    assert report["model_uri"] is None
    assert any("not loadable" in w for w in report["warnings"])
    tr = open_adapter(cfg)
    gated = gate_step(cfg, run_id=trained.outputs["run_id"], tracking=tr)
    assert gated.outputs["model_version"] == "1"  # still registered, as before
    assert any("cannot be loaded" in w for w in gated.warnings)
    assert "cannot be loaded" in gated.summary
    gate_report = json.loads(Path(gated.outputs["report"]).read_text())
    assert any("cannot be loaded" in w for w in gate_report["warnings"])
    assert tr.get_version("tg-model", "1").tags["traingate.loadable"] == "false"


def test_a_stale_model_dir_is_not_logged(project: Project) -> None:
    """A model folder left by yesterday's run must not be registered as today's."""
    cfg = _cfg(project)
    train_step(cfg, log=_quiet)
    (project.root / "train.py").write_text(
        PYFUNC_SCRIPT.replace('shutil.rmtree(out / "model", ignore_errors=True)', "").replace(
            'if os.environ.get("MODE") != "nomodel":', "if False:"
        )
    )
    from traingate.errors import TrainError

    with pytest.raises(TrainError, match="was not written by this training run"):
        train_step(cfg, log=_quiet, wall=lambda: 4e9)


def test_params_config_is_passed_to_the_command(project: Project) -> None:
    (project.root / "train.py").write_text(
        "import json, os, pathlib\n"
        "p = pathlib.Path('outputs'); p.mkdir(exist_ok=True)\n"
        "(p / 'seen.json').write_text(os.environ['TRAINGATE_PARAMS'])\n"
        "(p / 'metrics.json').write_text(json.dumps({'dice': 0.5, 'iou': 0.5}))\n"
    )
    cfg = project.config(train={"artifacts": [], "params": {"lr": 0.1, "layers": 3}})
    train_step(cfg, log=_quiet)
    assert json.loads((project.root / "outputs" / "seen.json").read_text()) == {"lr": 0.1, "layers": 3}


def test_bad_params_file_fails_the_run(project: Project) -> None:
    (project.root / "train.py").write_text(
        "import json, pathlib\n"
        "p = pathlib.Path('outputs'); p.mkdir(exist_ok=True)\n"
        "(p / 'params.json').write_text('[1, 2]')\n"
        "(p / 'metrics.json').write_text(json.dumps({'dice': 0.5, 'iou': 0.5}))\n"
    )
    cfg = project.config(train={"artifacts": []})
    from traingate.errors import TrainError

    with pytest.raises(TrainError, match=r"params\.json"):
        train_step(cfg, log=_quiet)
