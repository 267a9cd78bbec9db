"""Hostile files in a data push (issue #11 case 6): each gets a clear error code, none a traceback
or a hang.

Tests run as root here, where `chmod 000` makes nothing unreadable. Unreadable files and folders
are therefore produced at the OS boundary: `os.open` / `os.scandir` are patched to raise the
PermissionError the kernel would raise for another user. The same cases also run for real with
`chmod` when the suite runs as a normal user.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from tests.data.conftest import MakePair, image_bytes, mask_bytes
from traingate.config import parse_config
from traingate.data.validate import ERROR_CODES, validate_dataset, validate_step
from traingate.errors import DataError

NEW_CODES = ("too_large", "unsafe_path", "unreadable_file", "wrong_extension")
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def cfg_for(tmp_path: Path, **data: object):
    return parse_config({"data": data} if data else {}, base_dir=tmp_path)


def codes(v) -> dict[str, str]:
    return {e.path: e.code for e in v.errors}


def png_header(width: int, height: int) -> bytes:
    """A valid-looking PNG that claims `width`x`height` (a decompression bomb's header): a
    decoder that trusted it would allocate width*height bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 1024))
        + chunk(b"IEND", b"")
    )


def test_new_codes_are_registered_and_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for code in NEW_CODES:
        assert code in ERROR_CODES
        assert f"| `{code}` |" in doc, code


def test_decompression_bomb_header_is_too_large_not_a_traceback(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "bomb")
    (root / "images" / "bomb.jpg").unlink()
    (root / "images" / "bomb.png").write_bytes(png_header(40000, 40000))
    (root / "masks" / "bomb.png").write_bytes(png_header(40000, 40000))
    v = validate_dataset(root, cfg_for(tmp_path).data, cache_dir=tmp_path / "cache")
    assert codes(v) == {"images/bomb.png": "too_large", "masks/bomb.png": "too_large"}
    msg = next(e.message for e in v.errors if e.path == "masks/bomb.png")
    assert "40000x40000" in msg and "data.max_pixels" in msg


def test_pixel_limit_is_configurable_and_not_cached_as_a_verdict(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "a", size=(64, 64))
    cache = tmp_path / "cache"
    small = validate_dataset(root, cfg_for(tmp_path, max_pixels=1000).data, cache_dir=cache)
    assert codes(small) == {"images/a.jpg": "too_large", "masks/a.png": "too_large"}
    # Raising the limit is answered correctly, not from a cached "too large".
    again = validate_dataset(root, cfg_for(tmp_path).data, cache_dir=cache)
    assert again.passed, again.errors
    # Lowering it again is caught by the rules even with every fact cached.
    third = validate_dataset(root, cfg_for(tmp_path, max_pixels=1000).data, cache_dir=cache)
    assert third.timings["inspected_files"] == 0
    assert codes(third) == {"images/a.jpg": "too_large", "masks/a.png": "too_large"}


def test_file_size_limit_before_reading(tmp_path: Path, make_pair: MakePair, monkeypatch) -> None:
    root = tmp_path / "ds"
    img, _ = make_pair(root, "big")
    make_pair(root, "small", size=(8, 8))
    limit_mb = (img.stat().st_size - 1) / 1e6
    opened: list[str] = []
    real_open = os.open

    def spy(path, *args, **kwargs):
        opened.append(os.fspath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    v = validate_dataset(root, cfg_for(tmp_path, max_file_mb=limit_mb).data, workers=1)
    assert codes(v)["images/big.jpg"] == "too_large"
    assert "data.max_file_mb" in next(e.message for e in v.errors if e.path == "images/big.jpg")
    assert not any(p.endswith("big.jpg") for p in opened)


def test_symlinks_out_of_the_root_or_dangling_are_unsafe(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(image_bytes(seed=5))
    make_pair(root, "out")
    (root / "images" / "out.jpg").unlink()
    (root / "images" / "out.jpg").symlink_to(outside)
    make_pair(root, "dangling")
    (root / "images" / "dangling.jpg").unlink()
    (root / "images" / "dangling.jpg").symlink_to(root / "images" / "nowhere.jpg")
    # A link that stays inside the dataset is followed like the file itself.
    make_pair(root, "inside")
    shared = root / "shared"
    shared.mkdir()
    (root / "images" / "inside.jpg").rename(shared / "inside.jpg")
    (root / "images" / "inside.jpg").symlink_to(Path("..") / "shared" / "inside.jpg")
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert codes(v) == {"images/out.jpg": "unsafe_path", "images/dangling.jpg": "unsafe_path"}
    out_msg = next(e.message for e in v.errors if e.path == "images/out.jpg")
    assert str(outside) in out_msg and "outside" in out_msg
    assert "dangling" in next(e.message for e in v.errors if e.path == "images/dangling.jpg")
    assert "inside" in v.pairs


def test_folder_link_out_of_the_root_is_unsafe(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    elsewhere = tmp_path / "elsewhere"
    make_pair(elsewhere, "x")
    (root / "images" / "sub").symlink_to(elsewhere / "images")
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert codes(v) == {"images/sub": "unsafe_path"}


def test_fifo_named_like_an_image_does_not_hang_validate(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "x")
    (root / "images" / "x.jpg").unlink()
    os.mkfifo(root / "images" / "x.jpg")
    # The user's command, in its own process: if it blocked on the FIFO, the timeout ends it.
    report_path = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "traingate",
            "data",
            "validate",
            str(root),
            "--no-cache",
            "--report",
            str(report_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(report_path.read_text())
    assert [(e["path"], e["code"]) for e in report["errors"]] == [("images/x.jpg", "unsupported_format")]
    assert "FIFO" in report["errors"][0]["message"]


def test_folder_named_like_an_image_is_unsupported(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "d")
    (root / "images" / "d.jpg").unlink()
    (root / "images" / "d.jpg").mkdir()
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert codes(v) == {"images/d.jpg": "unsupported_format"}
    assert "folder" in v.errors[0].message


def _deny(monkeypatch: pytest.MonkeyPatch, name: str, attr: str) -> None:
    """Make `os.<attr>` raise EACCES for paths ending in `name`, as the kernel does for a file
    the user may not read (root may read everything, so the suite cannot chmod its way there)."""
    real = getattr(os, attr)

    def guarded(path, *args, **kwargs):
        if os.fspath(path).endswith(name):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(os, attr, guarded)


def test_unreadable_file_is_an_error(tmp_path: Path, make_pair: MakePair, monkeypatch) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "secret")
    _deny(monkeypatch, "secret.jpg", "open")
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1, cache_dir=tmp_path / "cache")
    assert codes(v) == {"images/secret.jpg": "unreadable_file"}
    assert "Permission denied" in v.errors[0].message


def test_unreadable_subfolder_is_an_error_not_silence(
    tmp_path: Path, make_pair: MakePair, monkeypatch
) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    (root / "images" / "locked").mkdir()
    (root / "images" / "locked" / "hidden.jpg").write_bytes(image_bytes(seed=3))
    _deny(monkeypatch, "images/locked", "scandir")
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert not v.passed
    assert codes(v) == {"images/locked": "unreadable_file"}


@pytest.mark.skipif(AS_ROOT, reason="root reads files whatever their mode")
def test_unreadable_for_real_when_not_root(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    img, _ = make_pair(root, "secret")
    (root / "images" / "locked").mkdir()
    img.chmod(0)
    (root / "images" / "locked").chmod(0)
    try:
        v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    finally:
        img.chmod(0o644)
        (root / "images" / "locked").chmod(0o755)
    assert codes(v) == {"images/secret.jpg": "unreadable_file", "images/locked": "unreadable_file"}


def test_content_that_contradicts_the_extension(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "png_as_jpg")
    (root / "images" / "png_as_jpg.jpg").write_bytes(image_bytes(fmt="PNG", seed=11))
    make_pair(root, "jpg_as_png", ext="png")
    (root / "images" / "jpg_as_png.png").write_bytes(image_bytes(fmt="JPEG", seed=12))
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert codes(v) == {
        "images/png_as_jpg.jpg": "wrong_extension",
        "images/jpg_as_png.png": "wrong_extension",
    }
    msg = next(e.message for e in v.errors if e.path == "images/png_as_jpg.jpg")
    assert "PNG" in msg and ".jpg" in msg


def test_every_hostile_file_in_one_pass_through_the_step(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok")
    make_pair(root, "bomb", ext="png")
    (root / "masks" / "bomb.png").write_bytes(png_header(40000, 40000))
    make_pair(root, "fifo")
    (root / "masks" / "fifo.png").unlink()
    os.mkfifo(root / "masks" / "fifo.png")
    make_pair(root, "link")
    (root / "masks" / "link.png").unlink()
    (root / "masks" / "link.png").symlink_to("/etc/hostname")
    with pytest.raises(DataError) as info:
        validate_step(cfg_for(tmp_path), root, use_cache=False)
    assert "3 data error(s)" in info.value.message


def test_near_empty_mask_is_an_error_when_min_foreground_is_set(tmp_path: Path, make_pair: MakePair) -> None:
    root = tmp_path / "ds"
    make_pair(root, "ok", fg=0.3)
    make_pair(root, "tiny", fg=0.005)
    v = validate_dataset(root, cfg_for(tmp_path, min_foreground=0.01).data, workers=1)
    assert codes(v) == {"masks/tiny.png": "near_empty_mask"}
    assert "data.min_foreground 0.01" in v.errors[0].message
    assert v.counts["valid_pairs"] == 1
    # Unset: the built-in threshold (0.001) only warns, as before.
    assert cfg_for(tmp_path).data.min_foreground is None
    make_pair(root, "tiny", fg=0.0003)
    unset = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert unset.passed
    assert [(w.path, w.code) for w in unset.warnings] == [("masks/tiny.png", "near_empty_mask")]


def test_hostile_masks_too(tmp_path: Path) -> None:
    """A JPEG named .png as a mask: re-exporting, not renaming, fixes it (unsupported_format)."""
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.jpg").write_bytes(image_bytes())
    (root / "masks" / "a.png").write_bytes(mask_bytes(fmt="JPEG"))
    v = validate_dataset(root, cfg_for(tmp_path).data, workers=1)
    assert codes(v) == {"masks/a.png": "unsupported_format"}
