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
