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
FACTS_VERSION = 3

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


def _count_values(im: Any) -> tuple[dict[int, int], int, bool]:
    """(value -> pixel count, pixels, colour?) of a decoded mask, counting in one linear pass.

    8-bit masks: `Image.histogram()` is a bincount done in C on the decoded buffer (no copy to
    an int64 array as `np.bincount` needs); 16/32-bit masks: `np.bincount`. Never `np.unique`,
    which sorts every pixel.
    """
    colour = False
    if im.mode in ("RGB", "RGBA"):
        from PIL import ImageChops

        r, g, b = im.split()[:3]
        colour = ImageChops.difference(r, g).getbbox() is not None or (
            ImageChops.difference(r, b).getbbox() is not None
        )
        im = r
    if im.mode == "L":
        hist = im.histogram()
        counts = {v: c for v, c in enumerate(hist) if c}
        return counts, im.width * im.height, colour
    import numpy as np

    flat = np.asarray(im).ravel()
    if flat.dtype.kind == "i":
        if flat.size and flat.min() < 0:
            raise ValueError("negative mask values")
        flat = flat.astype(np.int64, copy=False)
    elif flat.dtype.kind != "u":
        raise ValueError(f"mask pixel type {flat.dtype} is not integer")
    bins = np.bincount(flat)
    return {int(v): int(bins[v]) for v in np.flatnonzero(bins)}, int(flat.size), colour


def inspect_mask(data: bytes) -> dict[str, Any]:
    """Decode a mask and count its values. Lossless PNG only: JPEG artefacts invent values."""
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
            im.load()
            # Palette and 1-bit masks: the values a training loader sees are the gray levels.
            decoded: Image.Image = im.convert("L") if mode in ("1", "P", "LA", "PA") else im
            facts: dict[str, Any] = {"format": fmt, "width": width, "height": height, "mode": mode}
            if _PNG_IEND not in data[-_EOI_SEARCH:]:
                # zlib may still inflate every row of a file cut inside its last chunk.
                return {**facts, "error": "corrupt_file", "detail": "truncated PNG: no IEND chunk"}
            try:
                values, pixels, colour = _count_values(decoded)
            except ValueError as err:
                return {**facts, "error": "unsupported_format", "detail": str(err)}
    except UnidentifiedImageError:
        return {"error": "corrupt_file", "detail": "not a readable image (unknown or damaged header)"}
    except (OSError, SyntaxError, ValueError) as err:
        return {"error": "corrupt_file", "detail": f"damaged or truncated file: {err}"}
    if colour:
        facts["colour"] = True
    facts["values"] = values
    facts["pixels"] = pixels
    facts["foreground"] = pixels - values.get(0, 0)
    return facts


def inspect_file(path: str, kind: str) -> tuple[str, int, dict[str, Any]]:
    """(md5, size, facts) for one file; the unit of work a validation worker runs."""
    data = Path(path).read_bytes()
    return md5_bytes(data), len(data), inspect_data(data, kind)


def inspect_data(data: bytes, kind: str) -> dict[str, Any]:
    """The facts of a file's content (`kind`: image | mask)."""
    return inspect_image(data) if kind == "image" else inspect_mask(data)
