"""Make photo-like water-meter images and their binary masks, deterministically from a seed.

Each image is a photo of a round water meter on a cluttered, unevenly lit surface: a dark
metal ring, a light dial face with a dark counter window and a red pointer, lens blur, sensor
noise and JPEG compression. The mask marks the meter (ring and dial); that is what the
example's model learns to segment. The background sometimes has light blotches of the dial's
colour, so colour alone is not enough and the model has to use local context.

`--degrade` makes the "worse data" of the demo's second round: under-exposed, blurry photos
whose masks were drawn carelessly (shifted off the meter and the wrong size). Such a batch
passes validation — the files are well-formed — and still makes the model worse, which is
exactly what the quality gate is there to catch.

Usage:
    python generate.py OUT [--pairs 36] [--seed 0] [--size 128] [--prefix meter] [--degrade]

writes OUT/images/<prefix>-NNNN.jpg and OUT/masks/<prefix>-NNNN.png.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    grid = rng.random((cells + 1, cells + 1))
    coords = np.linspace(0, cells, size)
    i0 = np.clip(np.floor(coords).astype(int), 0, cells - 1)
    t = coords - i0
    rows = grid[i0] * (1 - t)[:, None] + grid[i0 + 1] * t[:, None]
    return rows[:, i0] * (1 - t)[None, :] + rows[:, i0 + 1] * t[None, :]


def _box_blur(img: np.ndarray, radius: int) -> np.ndarray:
    """Separable box blur (edge-padded) with cumulative sums: lens softness, cheaply."""
    if radius <= 0:
        return img
    k = 2 * radius + 1
    pad = np.pad(img, ((radius, radius), (radius, radius), (0, 0)), mode="edge")
    c = np.cumsum(pad, axis=0)
    c = np.concatenate([np.zeros_like(c[:1]), c], axis=0)
    v = (c[k:] - c[:-k]) / k
    c = np.cumsum(v, axis=1)
    c = np.concatenate([np.zeros_like(c[:, :1]), c], axis=1)
    return (c[:, k:] - c[:, :-k]) / k


def make_pair(rng: np.random.Generator, size: int, degrade: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One (image uint8 HxWx3, mask uint8 HxW in {0, 255}) pair."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)

    # Surface: a random base colour with low-frequency texture and a few light blotches.
    base = rng.uniform(0.15, 0.6, size=3)
    texture = _smooth_noise(rng, size, int(rng.integers(3, 7)))[..., None]
    img = base[None, None, :] * (0.6 + 0.8 * texture)
    for _ in range(int(rng.integers(1, 4))):
        by, bx = rng.uniform(0, size, 2)
        br = rng.uniform(0.06, 0.16) * size
        blob = np.exp(-(((yy - by) ** 2 + (xx - bx) ** 2) / (2 * br**2)))[..., None]
        img = img * (1 - 0.7 * blob) + rng.uniform(0.7, 0.95) * 0.7 * blob

    # The meter: ring, dial face, counter window, pointer.
    radius = rng.uniform(0.22, 0.34) * size
    cy, cx = rng.uniform(radius + 2, size - radius - 2, 2)
    dist = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    ring_width = radius * rng.uniform(0.14, 0.22)
    ring = (dist <= radius) & (dist > radius - ring_width)
    face = dist <= radius - ring_width
    ring_colour = rng.uniform(0.08, 0.3) * np.array([1.0, 0.95, 0.85])
    face_colour = rng.uniform(0.82, 0.97) * np.array([1.0, 0.99, 0.94])
    img[ring] = ring_colour
    img[face] = face_colour
    wh, ww = radius * 0.18, radius * 0.62
    wy = cy - radius * 0.25
    window = face & (np.abs(yy - wy) < wh) & (np.abs(xx - cx) < ww)
    img[window] = np.array([0.12, 0.12, 0.14])
    for d in range(5):
        dx = cx - ww + (d + 0.5) * (2 * ww / 5)
        digit = window & (np.abs(xx - dx) < ww / 12) & (np.abs(yy - wy) < wh * 0.6)
        img[digit] = 0.9
    angle = rng.uniform(0, 2 * np.pi)
    py, px = cy + radius * 0.3, cx
    along = (xx - px) * np.cos(angle) + (yy - py) * np.sin(angle)
    across = -(xx - px) * np.sin(angle) + (yy - py) * np.cos(angle)
    pointer = face & (along > 0) & (along < radius * 0.35) & (np.abs(across) < 1.2)
    img[pointer] = np.array([0.8, 0.1, 0.1])
    mask = dist <= radius

    # The camera: uneven light, lens blur, sensor noise.
    light = 0.75 + 0.5 * _smooth_noise(rng, size, 2)[..., None]
    exposure = rng.uniform(0.9, 1.1)
    blur = 1
    noise = 0.02
    if degrade:
        exposure = rng.uniform(0.8, 0.95)
        blur = 2
        noise = 0.03
        # Careless annotation: the outline is off-centre and the wrong size.
        shift = rng.uniform(0.9, 1.3) * radius * np.array([np.cos(angle), np.sin(angle)])
        scale = rng.uniform(0.6, 1.5)
        # The centre stays in the frame, so the mask is wrong but never (near) empty.
        my, mx = np.clip([cy + shift[0], cx + shift[1]], 4, size - 4)
        mask = np.sqrt((yy - my) ** 2 + (xx - mx) ** 2) <= radius * scale
    img = _box_blur(img * light * exposure, blur)
    img = img + rng.normal(0, noise, img.shape)
    image = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return image, (mask.astype(np.uint8) * 255)


def generate(
    out: Path, pairs: int, seed: int = 0, size: int = 128, prefix: str = "meter", degrade: bool = False
) -> list[str]:
    """Write `pairs` image/mask pairs under `out`; returns the stems written."""
    from PIL import Image

    if pairs < 1:
        raise ValueError(f"--pairs must be at least 1, got {pairs}")
    if size < 32:
        raise ValueError(f"--size must be at least 32 pixels, got {size}")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stems = []
    for i in range(pairs):
        image, mask = make_pair(rng, size, degrade)
        stem = f"{prefix}-{i:04d}"
        Image.fromarray(image).save(out / "images" / f"{stem}.jpg", quality=90)
        Image.fromarray(mask).save(out / "masks" / f"{stem}.png")
        stems.append(stem)
    return stems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write images/ and masks/ into")
    parser.add_argument("--pairs", type=int, default=36, help="number of image/mask pairs (default 36)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same files (default 0)")
    parser.add_argument("--size", type=int, default=128, help="width and height in pixels (default 128)")
    parser.add_argument("--prefix", default="meter", help="file name prefix (default meter)")
    parser.add_argument(
        "--degrade", action="store_true", help="worse data: dark, blurry photos with careless masks"
    )
    args = parser.parse_args(argv)
    try:
        stems = generate(args.out, args.pairs, args.seed, args.size, args.prefix, args.degrade)
    except ValueError as err:
        print(f"generate.py: {err}", file=sys.stderr)
        return 2
    kind = "degraded" if args.degrade else "clean"
    print(f"wrote {len(stems)} {kind} pairs to {args.out} ({args.size}x{args.size}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
