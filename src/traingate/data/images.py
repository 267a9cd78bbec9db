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

import contextlib
import errno
import hashlib
import io
import os
import stat
from collections.abc import Iterator
from typing import Any

# Bumped whenever the facts' meaning changes, so old cache entries are not reused.
FACTS_VERSION = 3

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
MASK_EXTENSIONS = frozenset({".png"})
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND"
# Some encoders pad after EOI; a marker this close to the end still means "complete".
_EOI_SEARCH = 1024


# PIL's own bomb check stops at 2x its MAX_IMAGE_PIXELS with an exception no caller expects;
# traingate checks the header against `data.max_pixels` instead (see `_open`).
DEFAULT_MAX_PIXELS = 100_000_000


class FileProblem(Exception):
    """A file that cannot be read safely: `code` is a validation error code, `detail` the why."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def describe_mode(mode: int) -> str:
    """What a non-regular file is, in the words `ls -l` users know."""
    for test, name in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_regular_file(path: str, max_bytes: int) -> bytes:
    """The bytes of `path`, which must be a regular file of at most `max_bytes`.

    The caller has already lstat-ed the path; this guards the gap between that check and the
    open (a file swapped for a FIFO or a link in between): O_NONBLOCK makes opening a FIFO
    return at once instead of waiting for a writer forever, O_NOFOLLOW refuses a link, and
    fstat on the open descriptor decides. Never reads more than `max_bytes` + 1 bytes.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise FileProblem("unsafe_path", "became a symbolic link while being validated") from None
        raise FileProblem("unreadable_file", f"cannot be read: {err.strerror or err}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem("unsupported_format", f"is {describe_mode(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise FileProblem("too_large", f"file is {st.st_size} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError as err:
                raise FileProblem("unreadable_file", f"cannot be read: {err.strerror or err}") from None
            if not chunk:
                break
            total += len(chunk)
            if total > max_bytes:
                raise FileProblem("too_large", f"file grew past {max_bytes} bytes while being read")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _open(data: bytes) -> Iterator[Any]:
    """`Image.open` without PIL's global bomb check: the caller compares the header's pixel
    count with `data.max_pixels` before decoding anything, so a larger configured limit works
    and a bomb is a `too_large` finding instead of a DecompressionBombError."""
    from PIL import Image

    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(io.BytesIO(data))
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    with im:
        yield im


def _too_large(fmt: str, width: int, height: int, mode: str, max_pixels: int) -> dict[str, Any] | None:
    if width * height <= max_pixels:
        return None
    # `partial`: header-only facts that depend on the limit; never cached (validate.py).
    return {
        "format": fmt,
        "width": width,
        "height": height,
        "mode": mode,
        "partial": True,
        "error": "too_large",
        "detail": f"{width}x{height} is {width * height} pixels, above data.max_pixels {max_pixels} "
        "(checked from the header; nothing was decoded)",
    }


def md5_bytes(data: bytes) -> str:
    # DVC's content hash: computing it here lets `merge` reuse it instead of reading again.
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Format and size of an image file, or the reason it cannot be used."""
    from PIL import UnidentifiedImageError

    try:
        with _open(data) as im:
            fmt = im.format or ""
            width, height = im.size
            mode = im.mode
            big = _too_large(fmt, width, height, mode, max_pixels)
            if big:
                return big
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


def inspect_mask(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """Decode a mask and count its values. Lossless PNG only: JPEG artefacts invent values."""
    from PIL import Image, UnidentifiedImageError

    try:
        with _open(data) as im:
            fmt = im.format or ""
            if fmt != "PNG":
                return {
                    "format": fmt,
                    "error": "unsupported_format",
                    "detail": f"mask content is {fmt or 'unknown'}, masks must be lossless PNG",
                }
            width, height = im.size
            mode = im.mode
            big = _too_large(fmt, width, height, mode, max_pixels)
            if big:
                return big
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


def inspect_file(
    path: str, kind: str, *, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None
) -> tuple[str, int, dict[str, Any]]:
    """(md5, size, facts) for one file; the unit of work a validation worker runs. A file that
    cannot be read safely gives md5 "" and facts holding the error code."""
    try:
        data = read_regular_file(path, max_bytes if max_bytes is not None else 1 << 62)
    except FileProblem as problem:
        return "", 0, {"error": problem.code, "detail": problem.detail, "partial": True}
    return md5_bytes(data), len(data), inspect_data(data, kind, max_pixels=max_pixels)


def inspect_data(data: bytes, kind: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> dict[str, Any]:
    """The facts of a file's content (`kind`: image | mask). Never raises for bad content: a
    decoder failing in a way PIL does not document (fuzzed files raise struct.error,
    IndexError...) is a `corrupt_file` finding, not a traceback."""
    try:
        if kind == "image":
            return inspect_image(data, max_pixels)
        return inspect_mask(data, max_pixels)
    except MemoryError:
        return {"error": "too_large", "detail": "decoding it ran out of memory", "partial": True}
    except Exception as err:  # hostile content must not crash the validation
        return {"error": "corrupt_file", "detail": f"cannot be decoded ({type(err).__name__}: {err})"}
