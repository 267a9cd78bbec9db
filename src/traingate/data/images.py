"""Per-file inspection: what a file is, without decoding more than the rules need.

Images are read for their header (format, size) and their end marker: a JPEG cut short has no
EOI marker (`Image.verify()` does not notice, it only parses the header), a PNG cut short fails
its chunk CRC walk to IEND. Decoding every JPEG in full would cost ~10x more and tell the rules
nothing more. Masks are decoded, because their values are the point, and counted with
`bincount` (one pass, no sort) instead of `unique`.

The facts returned here are independent of traingate.yml, so they can be cached by content hash
and the rules re-applied when the configuration changes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

# Bumped whenever the facts' meaning changes, so old cache entries are not reused.
FACTS_VERSION = 2

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
MASK_EXTENSIONS = frozenset({".png"})
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND"
# Some encoders pad after EOI; a marker this close to the end still means "complete".
_EOI_SEARCH = 1024


def md5_bytes(data: bytes) -> str:
    # DVC's content hash: computing it here lets `merge` reuse it instead of reading again.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def inspect_image(data: bytes) -> dict[str, Any]:
    """Format and size of an image file, or the reason it cannot be used."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            width, height = im.size
            mode = im.mode
            if fmt == "PNG":
                # Walks every chunk to IEND checking CRCs: catches truncation without inflating.
                im.verify()
    except UnidentifiedImageError:
        return {"error": "corrupt_file", "detail": "not a readable image (unknown or damaged header)"}
    except (OSError, SyntaxError, ValueError) as err:
        return {"error": "corrupt_file", "detail": f"damaged or truncated file: {err}"}
    facts: dict[str, Any] = {"format": fmt, "width": width, "height": height, "mode": mode}
    if fmt == "JPEG" and _JPEG_EOI not in data[-_EOI_SEARCH:]:
        return {**facts, "error": "corrupt_file", "detail": "truncated JPEG: no end-of-image marker"}
    if fmt == "PNG" and _PNG_IEND not in data[-_EOI_SEARCH:]:
        return {**facts, "error": "corrupt_file", "detail": "truncated PNG: no IEND chunk"}
    if fmt not in ("JPEG", "PNG"):
        return {**facts, "error": "unsupported_format", "detail": f"{fmt or 'unknown'} content"}
    return facts


def inspect_mask(data: bytes) -> dict[str, Any]:
    """Decode a mask and count its values. Lossless PNG only: JPEG artefacts invent values."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            if fmt != "PNG":
                return {
                    "format": fmt,
                    "error": "unsupported_format",
                    "detail": f"mask content is {fmt or 'unknown'}, masks must be lossless PNG",
                }
            width, height = im.size
            mode = im.mode
            if mode in ("1", "P", "LA", "PA"):
                # Palette and 1-bit masks: the values a training loader sees are the gray levels.
                im = im.convert("L")
            im.load()
            arr = np.asarray(im)
    except UnidentifiedImageError:
        return {"error": "corrupt_file", "detail": "not a readable image (unknown or damaged header)"}
    except (OSError, SyntaxError, ValueError) as err:
        return {"error": "corrupt_file", "detail": f"damaged or truncated file: {err}"}
    facts: dict[str, Any] = {"format": fmt, "width": width, "height": height, "mode": mode}
    if _PNG_IEND not in data[-_EOI_SEARCH:]:
        # zlib may still inflate every row of a file cut inside its last chunk.
        return {**facts, "error": "corrupt_file", "detail": "truncated PNG: no IEND chunk"}
    if arr.ndim == 3:
        channels = arr[..., :3] if arr.shape[2] >= 3 else arr[..., :1]
        if channels.shape[2] == 3 and not (
            np.array_equal(channels[..., 0], channels[..., 1])
            and np.array_equal(channels[..., 0], channels[..., 2])
        ):
            facts["colour"] = True
        arr = channels[..., 0]
    flat = arr.ravel()
    if flat.dtype.kind not in "ui" or (flat.size and flat.min() < 0):
        return {
            **facts,
            "error": "unsupported_format",
            "detail": f"mask pixel type {arr.dtype} is not integer",
        }
    counts = np.bincount(flat.astype(np.int64, copy=False) if flat.dtype.kind == "i" else flat)
    nonzero = np.flatnonzero(counts)
    facts["values"] = {int(v): int(counts[v]) for v in nonzero}
    facts["pixels"] = int(flat.size)
    facts["foreground"] = int(flat.size - counts[0]) if counts.size else 0
    return facts


def inspect_file(path: str, kind: str) -> tuple[str, int, dict[str, Any]]:
    """(md5, size, facts) for one file; the unit of work a validation worker runs."""
    data = Path(path).read_bytes()
    digest = md5_bytes(data)
    facts = inspect_image(data) if kind == "image" else inspect_mask(data)
    return digest, len(data), facts
