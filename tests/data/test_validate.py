"""Validation rules, report, cache and CLI against generated files."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest

from tests.data.conftest import MakePair, image_bytes, mask_bytes
from traingate.config import parse_config
from traingate.data.validate import ERROR_CODES, Progress, validate_dataset, validate_step
from traingate.errors import DataError


def cfg_for(tmp_path: Path, **data: object):
    return parse_config({"data": data} if data else {}, base_dir=tmp_path)


def codes(v) -> dict[str, str]:
    return {e.path: e.code for e in v.errors}


def test_clean_dataset_passes_with_statistics(dataset: Path, tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, size=[64, 64])
    v = validate_dataset(dataset, cfg.data, cache_dir=tmp_path / "cache")
    assert v.passed, v.errors
    assert v.counts == {"images": 6, "masks": 6, "pairs": 6, "valid_pairs": 6}
    assert v.statistics["resolution"] == "64x64"
    assert v.statistics["foreground_median"] == pytest.approx(0.225, abs=0.01)
    assert v.statistics["foreground_std"] > 0
    assert len({f.md5 for f in v.files.values()}) == 12


def test_every_error_code_in_one_pass(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "nomask")
    (root / "masks" / "nomask.png").unlink()
    make_pair(root, "noimage")
    (root / "images" / "noimage.jpg").unlink()
    # A JPEG cut short: the header parses, the end-of-image marker is gone.
    img, _ = make_pair(root, "truncated_jpg")
    img.write_bytes(img.read_bytes()[: len(img.read_bytes()) // 2])
    _, msk = make_pair(root, "truncated_mask")
    msk.write_bytes(msk.read_bytes()[:-20])
    img, _ = make_pair(root, "garbage")
    img.write_bytes(b"not an image at all")
    make_pair(root, "bmp")
    (root / "images" / "bmp.jpg").rename(root / "images" / "bmp.bmp")
    make_pair(root, "lossy")
    (root / "masks" / "lossy.png").unlink()
    (root / "masks" / "lossy.jpg").write_bytes(mask_bytes(fmt="JPEG"))
    make_pair(root, "bigger", size=(80, 64))
    make_pair(root, "mismatch", mask_size=(64, 32), size=(64, 64))
    make_pair(root, "gray")
    (root / "masks" / "gray.png").write_bytes(mask_bytes(values=(0, 128)))
    make_pair(root, "empty", fg=0.0)
    make_pair(root, "tiny", fg=0.0003)
    make_pair(root, "dup", seed=7)
    make_pair(root, "dup_copy", seed=7)
    make_pair(root, "twice")
    (root / "images" / "twice.png").write_bytes(image_bytes(fmt="PNG", seed=99))

    cfg = cfg_for(tmp_path, size=[64, 64])
    v = validate_dataset(root, cfg.data, cache_dir=tmp_path / "cache")
    c = codes(v)
    assert c["images/nomask.jpg"] == "missing_mask"
    assert c["masks/noimage.png"] == "missing_image"
    assert c["images/truncated_jpg.jpg"] == "corrupt_file"
    assert "end-of-image" in next(e.message for e in v.errors if e.path == "images/truncated_jpg.jpg")
    assert c["masks/truncated_mask.png"] == "corrupt_file"
    assert c["images/garbage.jpg"] == "corrupt_file"
    assert c["images/bmp.bmp"] == "unsupported_format"
    assert c["masks/lossy.jpg"] == "unsupported_format"
    assert c["images/bigger.jpg"] == "resolution_mismatch"
    assert c["masks/mismatch.png"] == "resolution_mismatch"
    assert c["masks/gray.png"] == "non_binary_mask"
    assert "128" in next(e.message for e in v.errors if e.path == "masks/gray.png")
    assert c["masks/empty.png"] == "empty_mask"
    assert c["images/dup_copy.jpg"] == "duplicate_content"
    assert "images/dup.jpg" in next(e.message for e in v.errors if e.path == "images/dup_copy.jpg")
    assert {c["images/twice.jpg"], c["images/twice.png"]} == {"name_conflict"}
    assert [w.code for w in v.warnings if w.path == "masks/tiny.png"] == ["near_empty_mask"]
    assert "ok" not in " ".join(c)  # the good pair is not blamed
    assert v.counts["valid_pairs"] >= 2  # ok, tiny (a warning is not an error)
    for e in v.errors:
        assert e.code in ERROR_CODES and e.path and e.path in e.message


def test_missing_dirs_and_no_data(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    (tmp_path / "a").mkdir()
    assert {e.code for e in validate_dataset(tmp_path / "a", cfg.data).errors} == {
        "missing_images_dir",
        "missing_masks_dir",
    }
    (tmp_path / "b" / "images").mkdir(parents=True)
    (tmp_path / "b" / "masks").mkdir()
    (tmp_path / "b" / "images" / ".gitkeep").write_text("")
    assert [e.code for e in validate_dataset(tmp_path / "b", cfg.data).errors] == ["no_data"]


def test_cache_reuses_facts_and_follows_config(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = cfg_for(tmp_path)
    first = validate_dataset(dataset, cfg.data, cache_dir=cache)
    assert first.timings["inspected_files"] == 12
    second = validate_dataset(dataset, cfg.data, cache_dir=cache)
    assert second.timings["inspected_files"] == 0
    assert second.report() == first.report()
    # The rules are re-applied: a stricter config finds errors without re-reading a file.
    strict = cfg_for(tmp_path, size=[32, 32])
    third = validate_dataset(dataset, strict.data, cache_dir=cache)
    assert third.timings["inspected_files"] == 0
    assert {e.code for e in third.errors} == {"resolution_mismatch"}
    # A changed file is re-inspected, by content.
    (dataset / "masks" / "img001.png").write_bytes(mask_bytes(values=(0, 7)))
    fourth = validate_dataset(dataset, cfg.data, cache_dir=cache)
    assert fourth.timings["inspected_files"] == 1
    assert codes(fourth) == {"masks/img001.png": "non_binary_mask"}


def test_cache_by_content_survives_new_mtimes(dataset: Path, tmp_path: Path) -> None:
    import os

    cache = tmp_path / "cache"
    cfg = cfg_for(tmp_path)
    validate_dataset(dataset, cfg.data, cache_dir=cache)
    for p in dataset.rglob("*.*"):
        os.utime(p, ns=(1, 1))  # a fresh git checkout: same bytes, new stat
    again = validate_dataset(dataset, cfg.data, cache_dir=cache, workers=1)
    assert again.timings["inspected_files"] == 12  # hashed again...
    assert again.passed  # ...but facts came from the content cache (checked below)
    conn = sqlite3.connect(cache / "validate.sqlite")
    assert conn.execute("SELECT count(*) FROM facts").fetchone()[0] == 12


def test_corrupt_cache_is_a_warning_not_a_failure(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "validate.sqlite").write_bytes(b"this is not sqlite" * 100)
    v = validate_dataset(dataset, cfg_for(tmp_path).data, cache_dir=cache)
    assert v.passed and "unusable" in v.cache_note


def test_parallel_and_serial_agree(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    for i in range(30):
        make_pair(root, f"p{i:02d}", size=(32, 32), fg=0.0 if i == 5 else 0.3)
    cfg = cfg_for(tmp_path)
    serial = validate_dataset(root, cfg.data, workers=1)
    parallel = validate_dataset(root, cfg.data, workers=2)
    assert serial.report() == parallel.report()
    assert codes(parallel) == {"masks/p05.png": "empty_mask"}


def test_progress_lines_without_a_terminal() -> None:
    out = io.StringIO()
    bar = Progress(20, "validating", stream=out, tty=False)
    for _ in range(20):
        bar.advance()
    lines = out.getvalue().splitlines()
    assert len(lines) == 10 and lines[-1] == "validating: 100% (20/20)"
    tty = io.StringIO()
    bar = Progress(3, "validating", stream=tty, tty=True)
    for _ in range(3):
        bar.advance()
    assert "\r" in tty.getvalue() and tty.getvalue().endswith("3/3\n")


def test_validate_step_outputs_report_and_failure(dataset: Path, tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path)
    result = validate_step(cfg, dataset)
    assert result.outputs["validation_passed"] is True
    assert result.outputs["valid_pairs"] == 6
    report = json.loads(Path(result.outputs["report"]).read_text())
    assert report["status"] == "pass"

    (dataset / "masks" / "img002.png").unlink()
    with pytest.raises(DataError) as info:
        validate_step(cfg, dataset, report_path=tmp_path / "r.json")
    err = info.value
    assert err.exit_code == 1 and "missing_mask" in (err.summary or "")
    assert err.outputs["validation_passed"] is False
    assert err.file and err.file.endswith("images/img002.jpg")
    assert json.loads((tmp_path / "r.json").read_text())["errors"][0]["code"] == "missing_mask"


def test_summary_caps_the_error_list(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    for i in range(8):
        make_pair(root, f"e{i}", fg=0.0)
    cfg = cfg_for(tmp_path, max_errors_in_summary=3)
    with pytest.raises(DataError) as info:
        validate_step(cfg, root)
    summary = info.value.summary or ""
    assert summary.count("| `empty_mask` |") == 3 and "5 more in the JSON report" in summary
    report = json.loads(Path(info.value.outputs["report"]).read_text())
    assert len(report["errors"]) == 8


def test_cli_validate_exit_codes(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    from click.testing import CliRunner

    from traingate.cli import cli

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "gh_out"
    monkeypatch.setenv("GITHUB_OUTPUT", str(out))
    res = CliRunner().invoke(cli, ["--json", "data", "validate", str(dataset)])
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["outputs"]["validation_passed"] is True
    (dataset / "images" / "img004.jpg").write_bytes(b"junk")
    res = CliRunner().invoke(cli, ["data", "validate", str(dataset)])
    assert res.exit_code == 1
    assert "corrupt_file" in res.output or "damaged" in res.output
    from traingate import gha

    assert gha.read_outputs(out)["validation_passed"] == "false"


@pytest.mark.parametrize(
    ("mode", "expect"),
    [("P", None), ("RGB-gray", None), ("RGB-colour", "non_binary_mask"), ("I;16", None), ("1", None)],
)
def test_mask_modes(tmp_path: Path, make_pair: MakePair, mode: str, expect: str | None) -> None:
    import numpy as np
    from PIL import Image

    root = tmp_path / "ds"
    _, msk = make_pair(root, "m")
    arr = np.zeros((64, 64), dtype=np.uint8)
    arr[:20] = 255
    if mode == "P":
        im = Image.fromarray((arr // 255).astype(np.uint8), "L").convert("P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    elif mode == "RGB-gray":
        im = Image.fromarray(np.stack([arr] * 3, axis=-1), "RGB")
    elif mode == "RGB-colour":
        rgb = np.stack([arr] * 3, axis=-1)
        rgb[:20, :, 1] = 0
        im = Image.fromarray(rgb, "RGB")
    elif mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16))
        assert im.mode.startswith("I")
    else:
        im = Image.fromarray(arr).convert("1")
    im.save(msk)
    v = validate_dataset(root, cfg_for(tmp_path).data)
    assert [e.code for e in v.errors] == ([expect] if expect else []), v.errors
    if not expect:
        assert v.statistics["foreground_median"] == pytest.approx(20 / 64, abs=1e-6)


def _validate_in_process(args: tuple[str, str]) -> dict:
    root, cache = args
    cfg = parse_config({})
    return validate_dataset(Path(root), cfg.data, cache_dir=Path(cache), workers=1).report()


def test_concurrent_runs_share_the_cache_safely(tmp_path: Path, make_pair: MakePair) -> None:
    import multiprocessing

    roots = []
    for k in range(3):
        root = tmp_path / f"ds{k}"
        for i in range(12):
            make_pair(root, f"s{i:02d}", size=(32, 32))
        roots.append(root)
    cache = tmp_path / "shared-cache"
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        reports = pool.map(_validate_in_process, [(str(r), str(cache)) for r in roots])
    assert all(r["status"] == "pass" and r["counts"]["valid_pairs"] == 12 for r in reports)
    conn = sqlite3.connect(cache / "validate.sqlite")
    assert conn.execute("SELECT count(*) FROM stat").fetchone()[0] == 72
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_nested_folder_names_pair_correctly(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "imgs" / "train" / "site1").mkdir(parents=True)
    (root / "lbl" / "train" / "site1").mkdir(parents=True)
    (root / "imgs" / "train" / "site1" / "a.jpg").write_bytes(image_bytes())
    (root / "lbl" / "train" / "site1" / "a.png").write_bytes(mask_bytes())
    (root / "imgs" / "train" / "b.jpg").write_bytes(image_bytes(seed=3))
    cfg = cfg_for(tmp_path, images="imgs/train", masks="lbl/train")
    v = validate_dataset(root, cfg.data)
    assert v.pairs == {"site1/a": ("imgs/train/site1/a.jpg", "lbl/train/site1/a.png")}
    assert codes(v) == {"imgs/train/b.jpg": "missing_mask"}


def test_summary_escapes_file_names_from_the_push() -> None:
    from traingate.data.validate import render_summary

    issue = {"code": "corrupt_file", "path": "images/a|`b`.jpg", "message": "images/<img src=x>|@me.jpg: bad"}
    report = {"status": "fail", "counts": {}, "errors": [issue], "warnings": []}
    row = render_summary(report, title="t", cap=5).splitlines()[-3]
    assert row == "| `corrupt_file` | `images/a\\|'b'.jpg` | images/&lt;img src=x&gt;\\|@\u200bme.jpg: bad |"
