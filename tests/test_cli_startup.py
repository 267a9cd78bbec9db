"""`traingate --help` stays light: none of the heavy libraries are imported to print help."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ["mlflow", "boto3", "botocore", "github", "dvc", "PIL", "numpy", "pydantic", "yaml", "sqlalchemy"]


def _modules_after(args: list[str]) -> set[str]:
    code = (
        "import sys, json\n"
        "from traingate.cli import cli\n"
        "try:\n"
        f"    cli.main({args!r}, prog_name='traingate', standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_help_imports_no_heavy_library() -> None:
    loaded = _modules_after(["--help"])
    assert not {m for m in loaded if m.split(".")[0] in HEAVY}


def test_subcommand_help_imports_no_heavy_library() -> None:
    for args in (["data", "merge", "--help"], ["train", "--help"], ["pr", "create", "--help"]):
        loaded = _modules_after(args)
        assert not {m for m in loaded if m.split(".")[0] in HEAVY}, args


def test_validating_a_few_new_files_starts_no_process_pool(tmp_path) -> None:
    """Issue #15 (start cost): a re-run that inspects a handful of new files works serially and
    must not pay for importing multiprocessing (or numpy, which only the pool preloads)."""
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / "ds" / sub).mkdir(parents=True)
    Image.new("RGB", (8, 8), (90, 90, 90)).save(tmp_path / "ds" / "images" / "a.jpg")
    mask = Image.new("L", (8, 8), 0)
    mask.putpixel((1, 1), 255)
    mask.save(tmp_path / "ds" / "masks" / "a.png")
    (tmp_path / "traingate.yml").write_text("data:\n  size: [8, 8]\n")
    code = (
        "import sys, json, os\n"
        "from traingate.cli import cli\n"
        "try:\n"
        "    args = ['data', 'validate', 'ds', '--no-cache']\n"
        "    cli.main(args, prog_name='traingate', standalone_mode=False)\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True
    )
    loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "PIL" in loaded  # it did inspect the files
    assert not {m for m in loaded if m.split(".")[0] in ("multiprocessing", "numpy")}
