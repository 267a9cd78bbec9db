"""Install size and time of each extra into a fresh venv with uv (docs/install.md).

Compares each extra with the core install measured in the same run (a ratio). Needs `uv` on PATH
or in the venv. --quick measures only core and one extra. Cold = `--no-cache` (downloads).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _uv() -> str:
    local = Path(sys.executable).parent / "uv"
    return str(local) if local.exists() else (shutil.which("uv") or "uv")


def _measure(extra: str, cold: bool) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory(prefix=f"tg-extra-{extra}-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([_uv(), "venv", "-q", "-p", sys.executable, str(venv)], check=True)
        spec = str(ROOT) if extra == "core" else f"{ROOT}[{extra}]"
        cmd = [_uv(), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), spec]
        if cold:
            cmd.insert(3, "--no-cache")
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink())
        listing = subprocess.run(
            [_uv(), "pip", "list", "--python", str(venv / "bin" / "python")], capture_output=True, text=True
        ).stdout
        return seconds, size // 2**20, max(0, len(listing.splitlines()) - 2)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--warm", action="store_true", help="use uv's cache instead of --no-cache")
    args = parser.parse_args()
    extras = ["core", "github"] if args.quick else ["core", "data", "aws", "tracking", "github", "all"]
    rows = [(extra, *_measure(extra, cold=not args.warm)) for extra in extras]
    base = rows[0][1]
    print(f"{'extra':10} {'seconds':>8} {'x core':>7} {'MB':>6} {'packages':>9}")
    for extra, seconds, mb, n in rows:
        print(f"{extra:10} {seconds:8.1f} {seconds / base:7.1f} {mb:6d} {n:9d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
