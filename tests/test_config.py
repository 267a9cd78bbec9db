from __future__ import annotations

from pathlib import Path

import pytest

from traingate.config import load_config, parse_config
from traingate.errors import ConfigError


def test_defaults_need_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config()
    assert cfg.store.kind == "dvc"
    assert cfg.infra.backend == "local"
    assert cfg.tracking_uri == f"sqlite:///{(tmp_path / '.traingate' / 'mlflow.db').resolve()}"
    assert cfg.gate.model == cfg.project
    assert [m.name for m in cfg.gate.metrics] == ["dice", "iou"]


def test_design_example_parses(tmp_path: Path) -> None:
    text = """
project: water-meters
data: {root: data/training, images: images, masks: masks, size: [512, 512], mask_values: [0, 255],
       min_foreground: 0.001}
store: {kind: dvc, remote: s3://bucket/prefix}
infra:
  backend: ec2
  region: us-east-1
  instance: {id: i-0123, tags: {Name: wms-mlops}}
  ready: [running, status-ok, ssm, "http://{public_ip}:5000/health"]
  ttl_minutes: 120
  lease_table: ""
train: {command: python train.py, workdir: ., where: runner, timeout_minutes: 60,
        metrics_file: outputs/metrics.json, artifacts: [outputs/model.npz], artifacts_policy: required}
tracking: {uri: "sqlite:///.traingate/mlflow.db", experiment: water-meters}
gate:
  model: water-meter-segmentation
  alias: champion
  metrics:
    - {name: dice, direction: max, min_delta: 0.0}
    - {name: iou,  direction: max}
  require: all
  promote: on-gate
pr: {base: main, auto_merge: squash, status_context: traingate/gate}
"""
    path = tmp_path / "traingate.yml"
    path.write_text(text)
    cfg = load_config(path)
    assert cfg.data.size == (512, 512)
    assert cfg.infra.instance.tags == {"Name": "wms-mlops"}
    assert cfg.gate.model == "water-meter-segmentation"
    assert cfg.base_dir == tmp_path.resolve()
    assert cfg.store_remote == "s3://bucket/prefix"


def test_unknown_key_names_the_path() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"gate": {"metrics": [{"name": "dice", "drection": "max"}]}})
    assert "gate.metrics[0].drection: unknown key" in exc.value.message
    assert exc.value.exit_code == 2


def test_bad_enum_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"infra": {"backend": "gcp"}})
    msg = exc.value.message
    assert "infra.backend" in msg and "'gcp'" in msg and "'local'" in msg and "'ec2'" in msg


def test_bad_readiness_check_and_wrong_type() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"infra": {"ready": ["runing"]}, "train": {"timeout_minutes": "soon"}})
    msg = exc.value.message
    assert "infra.ready" in msg and "runing" in msg
    assert "train.timeout_minutes" in msg


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    path = tmp_path / "traingate.yml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = tmp_path / "traingate.yml"
    path.write_text("project: x\ndata: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.file == str(path)
    assert exc.value.line is not None


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yml")


def test_env_var_selects_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "custom.yml"
    path.write_text("project: from-env\n")
    monkeypatch.setenv("TRAINGATE_CONFIG", str(path))
    assert load_config().project == "from-env"


def test_duplicate_gate_metrics_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        parse_config({"gate": {"metrics": [{"name": "dice"}, {"name": "dice"}]}})


def test_relative_paths_resolve_against_config_folder(tmp_path: Path) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    (sub / "traingate.yml").write_text("data: {root: d}\nstore: {remote: ../remote}\n")
    cfg = load_config(sub / "traingate.yml")
    assert cfg.data_root == sub.resolve() / "d"
    assert cfg.store_remote == str((tmp_path / "remote").resolve())


def test_non_utf8_config_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "traingate.yml"
    path.write_bytes(b"project: caf\xe9\ndata: {root: \xff\xfe}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert exc.value.exit_code == 2
    assert str(path) in exc.value.message and "UTF-8" in exc.value.message
    assert exc.value.file == str(path) and exc.value.line == 1


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_config_that_is_not_a_regular_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    import os

    monkeypatch.chdir(tmp_path)
    # The default name, so click's own `--config` check (dir_okay=False) is not what catches it.
    path = tmp_path / "traingate.yml"
    if kind == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)  # reading it would wait for a writer forever
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert "not a regular file" in exc.value.message and exc.value.exit_code == 2


def test_on_conflict_values_are_plain_strings() -> None:
    """A member named `replace` shadowed str.replace on every OnConflict value."""
    cfg = parse_config({"data": {"on_conflict": "replace"}})
    assert cfg.data.on_conflict == "replace"
    assert cfg.data.on_conflict.replace("re", "", 1) == "place"
    assert parse_config({}).data.on_conflict.replace("f", "F") == "Fail"
