"""Every command on hostile input (issue #11 case 6): bad config bytes, a hostile data folder,
missing files, bad flags. Whatever goes wrong, the user sees a message and exit code 1 or 2,
never a Python traceback (and never the CLI's last-resort "internal error", which would mean a
failure path that raises something other than a TraingateError).

In-process through `traingate.cli.main()` (the console script's entry point), so ~100 cases run
in seconds; two cases also run as a real subprocess.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.data.conftest import image_bytes, mask_bytes
from tests.data.test_hostile_files import png_header
from traingate.cli import cli, main

SKIP = {("demo",)}  # runs the whole example twice; covered by tests/test_pipeline.py


def _leaves(group: click.Group = cli, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, cmd in sorted(group.commands.items()):
        if isinstance(cmd, click.Group):
            found += _leaves(cmd, (*path, name))
        elif (*path, name) not in SKIP:
            found.append((*path, name))
    return found


COMMANDS = _leaves()
NEEDS_CONFIG = [c for c in COMMANDS if c != ("init",)]


def test_the_list_covers_the_help() -> None:
    listed = {" ".join(c) for c in COMMANDS}
    assert {"data validate", "data merge", "train", "gate", "promote", "run", "init", "doctor"} <= listed
    assert {"pr create", "pr automerge", "pr comment"} <= listed
    assert {"infra start", "infra stop", "infra status", "infra reap"} <= listed


def invoke(args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(sys, "argv", ["traingate", *args])
    code: object = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code
    except BaseException as exc:  # what a user would see as a traceback
        pytest.fail(f"traingate {' '.join(args)} raised {type(exc).__name__}: {exc}")
    out, err = capsys.readouterr()
    text = out + err
    assert "Traceback" not in text, (args, text)
    assert "internal error" not in text, (args, text)
    assert code in (1, 2), (args, code, text)
    return code, text


BAD_CONFIGS = {
    "latin-1 bytes": b"project: caf\xe9\n",
    "utf-16": "project: x\n".encode("utf-16"),
    "binary junk": bytes(range(256)) * 4,
    "nul in utf-8": b"project: a\x00b\n",
    "top-level list": b"- a\n- b\n",
    "tab indentation": b"data:\n\troot: x\n",
    "deep nesting": b"[" * 20000 + b"]" * 20000,
    "wrong types": b"data: {size: big, min_foreground: lots, max_pixels: -1}\ntrain: 7\n",
    "unknown keys": b"gate: {requre: all}\nnonsense: true\n",
    "empty mapping key": b"? [a, b]\n: c\n",
    "alias bomb": b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nproject: *c\n",
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_bytes_exit_2_for_every_command(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "traingate.yml"
    cfg.write_bytes(BAD_CONFIGS[name])
    for command in NEEDS_CONFIG:
        code, text = invoke([*command, "--config", str(cfg)], monkeypatch, capsys)
        assert code == 2, (command, text)
        assert str(cfg) in text or "traingate.yml" in text, (command, text)


@pytest.mark.parametrize("kind", ["folder", "fifo", "missing"])
def test_config_that_is_not_a_file_exits_2(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    if kind == "folder":
        (tmp_path / "traingate.yml").mkdir()  # the default name: no --config check by click
        args: list[str] = []
    elif kind == "fifo":
        os.mkfifo(tmp_path / "traingate.yml")
        args = []
    else:
        args = ["--config", str(tmp_path / "nowhere.yml")]
    for command in NEEDS_CONFIG:
        code, _ = invoke([*args, *command], monkeypatch, capsys)
        assert code == 2, command


def test_bad_flags_exit_2_for_every_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    for command in COMMANDS:
        for bad in (["--no-such-flag"], ["--config"], ["--json=maybe"], ["-vq"]):
            code, text = invoke([*command, *bad], monkeypatch, capsys)
            assert code == 2, (command, bad, text)
    code, _ = invoke(["data", "validate", "a", "b", "c"], monkeypatch, capsys)
    assert code == 2
    code, _ = invoke(["pr", "automerge", "--pr", "seven"], monkeypatch, capsys)
    assert code == 2
    code, _ = invoke(["no-such-command"], monkeypatch, capsys)
    assert code == 2


def _hostile_data(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "ok.jpg").write_bytes(image_bytes())
    (root / "masks" / "ok.png").write_bytes(mask_bytes())
    (root / "images" / "bomb.png").write_bytes(png_header(40000, 40000))
    (root / "masks" / "bomb.png").write_bytes(png_header(40000, 40000))
    os.mkfifo(root / "images" / "pipe.jpg")
    (root / "masks" / "pipe.png").write_bytes(mask_bytes(fg=0.3))
    (root / "images" / "out.jpg").symlink_to("/etc/hostname")
    (root / "masks" / "out.png").write_bytes(mask_bytes(fg=0.2))
    (root / "images" / "dangling.jpg").symlink_to(root / "nowhere.jpg")
    (root / "images" / "folder.jpg").mkdir()
    (root / "images" / "renamed.jpg").write_bytes(image_bytes(fmt="PNG", seed=4))
    (root / "masks" / "renamed.png").write_bytes(mask_bytes(fg=0.4))
    (root / "masks" / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    return root


def test_hostile_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    data = _hostile_data(tmp_path / "data" / "new")
    (tmp_path / "traingate.yml").write_text(
        "data: {root: data/training, incoming: data/new}\nstore: {kind: local}\n"
        "train: {command: 'python -c pass'}\n"
    )
    for args in (
        ["data", "validate", str(data)],
        ["data", "merge", str(data), "--no-push"],
        ["run", str(data)],
    ):
        code, text = invoke([*args, "--json"], monkeypatch, capsys)
        assert code == 1, (args, text)
        for expected in ("too_large", "unsupported_format", "unsafe_path", "wrong_extension", "corrupt_file"):
            assert expected in text, (args, expected)


def test_missing_files_and_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = str(tmp_path / "missing")
    (tmp_path / "traingate.yml").write_text(
        "store: {kind: local}\ntrain: {workdir: no-such-dir}\ntracking: {uri: 'file:///no/such/dir'}\n"
    )
    (tmp_path / "a-file").write_text("x")
    cases = [
        ["data", "validate", missing],
        ["data", "validate", str(tmp_path / "a-file")],
        ["data", "merge", missing, "--no-push"],
        ["run", missing],
        ["pr", "create", "--render-only", "--data-report", missing, "--gate-report", missing],
        ["pr", "comment", "--report", missing],
        ["pr", "automerge", "--pr", "1"],
        ["train", "--no-pull"],
        ["init", str(tmp_path / "a-file")],
        ["init", str(tmp_path / "a-file" / "below")],
    ]
    for args in cases:
        invoke([*args, "--json"], monkeypatch, capsys)


@pytest.mark.parametrize(
    ("config", "args"),
    [
        (b"project: caf\xe9\n", ["data", "validate"]),
        (None, ["data", "validate", "{data}"]),
    ],
)
def test_real_process(tmp_path: Path, config: bytes | None, args: list[str]) -> None:
    cfg = tmp_path / "traingate.yml"
    if config is not None:
        cfg.write_bytes(config)
    data = _hostile_data(tmp_path / "data")
    argv = [a.replace("{data}", str(data)) for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "traingate", *argv, "--no-cache"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert "Traceback" not in proc.stderr + proc.stdout
    assert proc.returncode == (2 if config is not None else 1), proc.stderr


def test_run_with_a_missing_source_is_refused_before_any_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in `traingate run SOURCE` used to skip validation ("no new data") and train on the
    stored dataset, exit 0."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "traingate.yml").write_text("store: {kind: local}\ntrain: {command: 'exit 3'}\n")
    code, text = invoke(["run", str(tmp_path / "typo"), "--json"], monkeypatch, capsys)
    assert code == 2 and "typo" in text and "does not exist" in text
    assert not (tmp_path / ".traingate" / "infra").exists()  # infra start never ran
