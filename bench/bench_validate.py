"""Validation speed: traingate's validator vs a one-process full-decode reference, same run.

    .venv/bin/python bench/bench_validate.py            # 1,500 pairs of 512x512 (the issue's figure)
    .venv/bin/python bench/bench_validate.py --quick    # 200 pairs, < 60 s

The reference is what a straightforward validator does: open every image and mask in one
process, decode it fully, and `np.unique` the mask. traingate reads JPEG headers and end
markers, decodes masks only, counts with `bincount`, uses both cores, and caches by content hash.
Figures printed: cold time and its ratio to the reference; a re-run after adding 15 pairs as a
fraction of the cold run; a fresh checkout (same bytes, new mtimes) as a fraction of cold.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

OUT = ROOT / "bench" / "out"


def photo_like(rng, size: int):
    """Noise + gradients + shapes: JPEG sizes and decode costs close to real photos."""
    import numpy as np
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = np.stack(
        [
            120 + 80 * np.sin(6 * x + rng.uniform(0, 6)),
            100 + 90 * y,
            140 + 60 * np.cos(5 * (x + y) + rng.uniform(0, 6)),
        ],
        axis=-1,
    )
    base += rng.normal(0, 18, base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    mask = Image.new("L", (size, size), 0)
    mdraw = ImageDraw.Draw(mask)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = (int(v) for v in rng.integers(0, size - 64, 2))
        w, h = (int(v) for v in rng.integers(24, 140, 2))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
    cx, cy = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
    r = int(rng.integers(size // 10, size // 4))
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(20, 20, 20), width=6)
    mdraw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    return img, mask


def generate(folder: Path, n: int, size: int, seed: int, prefix: str = "p") -> Path:
    import numpy as np

    marker = folder / ".complete"
    if marker.exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        img, mask = photo_like(rng, size)
        # One in five images is a PNG, as in real uploads from different tools.
        if i % 5 == 4:
            img.save(folder / "images" / f"{prefix}{i:05d}.png", optimize=False)
        else:
            img.save(folder / "images" / f"{prefix}{i:05d}.jpg", quality=90)
        mask.save(folder / "masks" / f"{prefix}{i:05d}.png")
    marker.write_text("ok\n")
    return folder


def reference_validate(root: Path) -> tuple[int, int]:
    """One process, full decode of everything, np.unique on masks: the baseline."""
    import numpy as np
    from PIL import Image

    bad = checked = 0
    seen: dict[str, str] = {}
    for img_path in sorted((root / "images").iterdir()):
        if img_path.name.startswith("."):
            continue
        mask_path = root / "masks" / (img_path.stem + ".png")
        data = img_path.read_bytes()
        seen.setdefault(hashlib.md5(data, usedforsecurity=False).hexdigest(), img_path.name)
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                size = im.size
            with Image.open(mask_path) as m:
                arr = np.asarray(m)
            values = np.unique(arr)
            if arr.shape[::-1] != size or not set(values.tolist()) <= {0, 255} or not (arr > 0).any():
                bad += 1
        except OSError:
            bad += 1
        checked += 1
    return checked, bad


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 pairs (< 60 s)")
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    n = args.pairs or (200 if args.quick else 1500)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")

    from traingate.config import parse_config
    from traingate.data.validate import validate_dataset

    t_gen, base = timed(lambda: generate(OUT / f"validate-{n}-{args.size}", n, args.size, seed=1))
    extra = generate(OUT / f"validate-extra15-{args.size}", 15, args.size, seed=2, prefix="x")
    print(f"dataset: {n} pairs of {args.size}x{args.size} (generated/cached in {t_gen:.1f} s) under {base}")
    cfg = parse_config({"data": {"size": [args.size, args.size]}})

    with tempfile.TemporaryDirectory(prefix="tg-bench-") as tmp:
        work = Path(tmp) / "ds"
        shutil.copytree(base, work, ignore=shutil.ignore_patterns(".complete"))
        cache = Path(tmp) / "cache"
        # Warm the OS page cache for both contenders alike: we measure CPU work, not the disk.
        for p in work.rglob("*.*"):
            p.read_bytes()

        t_ref, (checked, bad) = timed(lambda: reference_validate(work))
        t_cold, v = timed(lambda: validate_dataset(work, cfg.data, cache_dir=cache, progress=False))
        assert v.passed, v.errors[:3]
        assert checked == v.counts["pairs"] and bad == 0
        t_warm, _ = timed(lambda: validate_dataset(work, cfg.data, cache_dir=cache, progress=False))

        for sub in ("images", "masks"):
            for p in (extra / sub).iterdir():
                shutil.copy2(p, work / sub / p.name)
        t_add, v3 = timed(lambda: validate_dataset(work, cfg.data, cache_dir=cache, progress=False))
        assert v3.counts["pairs"] == n + 15 and v3.timings["inspected_files"] == 30

        for p in work.rglob("*.*"):
            os.utime(p)  # a fresh checkout: same bytes, new mtimes
        t_fresh, v4 = timed(lambda: validate_dataset(work, cfg.data, cache_dir=cache, progress=False))
        assert v4.report() == v3.report()
        t_serial, _ = timed(
            lambda: validate_dataset(work, cfg.data, cache_dir=None, workers=1, progress=False)
        )

    def row(label: str, seconds: float, note: str) -> None:
        print(f"{label:<48} {seconds:8.3f} s   {note}")

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"cores: {os.cpu_count()}, load average at the end: {load:.2f} (others' work competes for the cores)"
    )
    row("reference (1 process, full decode, np.unique)", t_ref, "baseline")
    row("traingate cold (all cores, no cache)", t_cold, f"speed-up x{t_ref / t_cold:.2f}")
    row(f"traingate 1 core, no cache ({n + 15} pairs)", t_serial, f"speed-up x{t_ref / t_serial:.2f}")
    row("re-run, nothing changed", t_warm, f"{100 * t_warm / t_cold:5.1f}% of cold")
    row("re-run after adding 15 pairs", t_add, f"{100 * t_add / t_cold:5.1f}% of cold")
    row("fresh checkout (new mtimes: hash, reuse facts)", t_fresh, f"{100 * t_fresh / t_cold:5.1f}% of cold")


if __name__ == "__main__":
    main()
