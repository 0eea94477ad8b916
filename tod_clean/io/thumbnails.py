"""Small pictures of images for pages: an image cell decoded the safe way (``tod_clean.io.images``: the
decompression-bomb limit, damaged and truncated files refused), shrunk to fit a small square and embedded
as a ``data:image/png;base64,...`` URI, so a page shows it without linking to the user's files.

A thumbnail keeps the image's proportions and is never enlarged: a 32 x 32 image stays 32 x 32 (the page
scales it for display), a 200 x 100 one becomes 64 x 32. PNG, so the picture is the image's own pixels,
not JPEG's approximation of them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io.images import ImageColumn

THUMBNAIL_SIDE = 64  # pixels: the longest side of a thumbnail
PNG_DATA_URI = "data:image/png;base64,"


def thumbnail(image: Any, side: int = THUMBNAIL_SIDE) -> Any:
    """A copy of the Pillow ``image`` that fits in ``side`` x ``side`` pixels, its proportions kept; never
    enlarged."""
    from PIL import Image

    if side < 1:
        raise ValueError(f"a thumbnail's side must be a positive number of pixels, got {side}")
    small = image.copy()
    small.thumbnail((side, side), Image.Resampling.LANCZOS)
    return small


def png_data_uri(image: Any) -> str:
    """The Pillow ``image`` as a ``data:image/png;base64,...`` URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return PNG_DATA_URI + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_uri(images: ImageColumn, row: int, side: int = THUMBNAIL_SIDE) -> str:
    """The thumbnail of row ``row`` of ``images`` as a PNG data URI; ``InputError`` (naming the row, the
    file and the problem) when the image cannot be read safely."""
    return png_data_uri(thumbnail(images.image(row, images[row]), side))


def thumbnail_uris(
    images: ImageColumn, rows: Iterable[int], side: int = THUMBNAIL_SIDE
) -> tuple[dict[int, str], list[str]]:
    """The thumbnails of ``rows`` (ints) of ``images``: data URIs by row, and one message per image that
    could not be read (a file moved or damaged since it was checked), so a page can show the rest."""
    uris: dict[int, str] = {}
    problems: list[str] = []
    for row in dict.fromkeys(int(r) for r in rows):
        try:
            uris[row] = thumbnail_uri(images, row, side)
        except InputError as error:
            problems.append(str(error))
    return uris, problems
