"""Image files checked once when a dataset is built, so a bad file stops the build with its name instead of
failing mid-training (or never, when it falls in the ``drop_last`` remainder).

:func:`check_image` reads the header (Pillow's lazy ``Image.open``) for the size and mode, and recognises a
truncated file by its ending: PNG's ``IEND`` chunk, JPEG's ``EOI`` marker, GIF's trailer, and the length that
WebP and BMP headers announce. Only a file without the expected ending is decoded in full, and only the decoder's
verdict fails it, so a valid file is never refused and a build costs a header and a few tail bytes per file.
A file damaged in its middle (same length, wrong bytes) is still found only when it is decoded.
"""
from __future__ import annotations

import os
from pathlib import Path

from PIL import Image

__all__ = ["ImageInfo", "check_image", "read_image"]

ImageInfo = tuple[tuple[int, int], str]
"""``((width, height), mode)`` of an image file, as Pillow reports them."""

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def _reason(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _complete(image: Image.Image, path: Path) -> bool:
    """Whether the file ends where its format says it ends (read from the header and the last bytes)."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(12)
        handle.seek(max(0, size - 64))
        tail = handle.read()
    if image.format == "PNG":
        return tail.endswith(_PNG_END)
    if image.format in ("JPEG", "MPO"):
        return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
    if image.format == "GIF":
        return tail.endswith(b"\x3b")
    if image.format == "WEBP":
        return int.from_bytes(head[4:8], "little") + 8 <= size
    if image.format == "BMP":
        return int.from_bytes(head[2:6], "little") <= size
    return False  # another format: decode it to be sure


def check_image(path: str | Path, what: str = "image") -> ImageInfo:
    """The size and mode of the image file at ``path``, after checking that it opens and is not truncated.

    Raises:
        ValueError: the file is missing, not an image, or truncated; the one line names it (``what`` says
            which file of the dataset it is: "image", "mask") and the fix.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            info = (image.size, image.mode)
            if not _complete(image, path):
                image.load()  # the decoder decides: it raises on a truncated file
    except (OSError, ValueError, SyntaxError) as exc:  # UnidentifiedImageError and truncation are OSErrors
        raise ValueError(f"cannot read {what} {path} ({_reason(exc)}); replace or delete the file") from None
    return info


def read_image(path: Path, mode: str | None, what: str = "image") -> Image.Image:
    """The decoded image at ``path`` (converted to ``mode`` unless None); a file that fails is one line naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert(mode) if mode else image
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read {what} {path} ({_reason(exc)}); replace or delete the file") from None
