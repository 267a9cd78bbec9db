"""Generated image/mask datasets for the data tests (small sizes: speed is the bench's job)."""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from pathlib import Path

import pytest


def image_bytes(size: tuple[int, int] = (64, 64), fmt: str = "JPEG", seed: int = 0) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    gradient = np.linspace(0, 255, w, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 30, (h, w, 3)).astype(np.float32)
    arr = np.clip(gradient + noise + seed % 97, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def mask_bytes(
    size: tuple[int, int] = (64, 64), fg: float = 0.25, values: tuple[int, int] = (0, 255), fmt: str = "PNG"
) -> bytes:
    import numpy as np
    from PIL import Image

    w, h = size
    arr = np.full((h, w), values[0], dtype=np.uint8)
    n = round(w * h * fg)
    arr.reshape(-1)[:n] = values[1]
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, format=fmt)
    return buf.getvalue()


MakePair = Callable[..., tuple[Path, Path]]


@pytest.fixture
def make_pair() -> MakePair:
    def make(
        root: Path,
        stem: str,
        *,
        size: tuple[int, int] = (64, 64),
        mask_size: tuple[int, int] | None = None,
        ext: str = "jpg",
        fg: float | None = None,
        seed: int | None = None,
    ) -> tuple[Path, Path]:
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        img = root / "images" / f"{stem}.{ext}"
        fmt = "JPEG" if ext in ("jpg", "jpeg") else "PNG"
        img.write_bytes(
            image_bytes(size, fmt, seed if seed is not None else random.Random(stem).randrange(10**6))
        )
        msk = root / "masks" / f"{stem}.png"
        # Distinct masks per stem by default (identical masks are deduplicated by the store).
        fraction = fg if fg is not None else random.Random(stem).uniform(0.1, 0.5)
        msk.write_bytes(mask_bytes(mask_size or size, fraction))
        return img, msk

    return make


@pytest.fixture
def dataset(tmp_path: Path, make_pair: MakePair) -> Path:
    root = tmp_path / "ds"
    for i in range(6):
        make_pair(root, f"img{i:03d}", ext="png" if i % 3 == 0 else "jpg", fg=0.1 + 0.05 * i)
    return root
