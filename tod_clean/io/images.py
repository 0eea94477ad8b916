"""Image values in tables: what a cell of an image column may hold, finding the image column, and
decoding each image to RGB with one clear error for each way it can fail.

A cell holds a path to an image file (a relative path resolves against the folder of the data file; for
a ``save_to_disk`` folder, the folder that holds it; for standard input, the working folder), the image
file's bytes, or a Hugging Face ``datasets`` ``Image`` feature as Arrow stores it (a dict of ``bytes`` and
``path``: the bytes when present, else the path).

Every image is decoded in full when the column is checked, so a missing, truncated or damaged file, or a
file that is not an image, is refused before any work with its row, file and problem. Images with more
pixels than Pillow's ``Image.MAX_IMAGE_PIXELS`` (89,478,485 by default, about 9459 x 9459) are refused
unopened: a decompression bomb is a small file that decodes to gigabytes. Pillow only warns between that
limit and twice it; tod-clean refuses from the limit on. Grey (L), palette (P), CMYK and other modes are converted
to RGB by Pillow; images with an alpha channel (RGBA, LA, a palette with a transparent colour) are
composited on white, as a viewer shows them on a white page, rather than having their alpha dropped
(which would show the colour stored under transparent pixels, often black). An animated image is read at
its first frame.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io.table import ColumnView, Table

# The image files tod-clean reads, by extension (an image folder's files, paths found as an image column).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
IMAGE_FOLDER_FORMAT = "imagefolder"


def is_image_value(value: Any) -> bool:
    """Whether a cell looks like an image: image bytes, an ``Image`` feature dict, or a path with an image
    file's extension."""
    if isinstance(value, dict):
        return set(value) <= {"bytes", "path"} and (value.get("bytes") is not None or bool(value.get("path")))
    if isinstance(value, (bytes, bytearray)):
        return True
    return isinstance(value, str) and Path(value.strip()).suffix.lower() in IMAGE_SUFFIXES


def find_image_column(table: Table) -> str | None:
    """The table's image column, found by its first row's values: ``image`` when that is one, else the
    first column that holds an image (None when no column does)."""
    first = table.rows[0]
    candidates = sorted(table.columns, key=lambda name: name != "image")
    return next((name for name in candidates if is_image_value(first.get(name))), None)


def image_base(table: Table) -> Path:
    """The folder relative image paths of ``table`` resolve against (see the module docstring)."""
    if table.ref is None:
        return Path.cwd()
    if table.format == IMAGE_FOLDER_FORMAT:
        return Path(table.ref)
    return Path(table.ref).parent


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError("reading images needs the pillow package (pip install pillow)") from None
    return Image


def to_rgb(image: Any) -> Any:
    """``image`` as an RGB Pillow image: alpha composited on white, other modes converted (see the module
    docstring)."""
    Image = _pillow()
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(data: bytes | None, path: Path | None, shown: str) -> Any:
    """Decode image ``data`` (or the file at ``path``) to an RGB Pillow image, refusing anything that is
    not a whole, safely sized image with ``InputError`` (``shown`` names the image; the caller prefixes the
    row)."""
    Image = _pillow()
    if data is None:
        assert path is not None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"image file {shown} not found") from None
        except IsADirectoryError:
            raise InputError(f"{shown} is a folder, not an image file") from None
        except OSError as error:
            raise InputError(f"image file {shown} cannot be read ({error.strerror})") from None
    limit = Image.MAX_IMAGE_PIXELS
    try:
        # Opening reads the header only; the size is checked here against the limit, so the message can
        # give it (Pillow's own check would refuse past twice the limit without saying the size).
        Image.MAX_IMAGE_PIXELS = None
        image = Image.open(io.BytesIO(data))
    except Image.UnidentifiedImageError:
        raise InputError(f"{shown} is not an image file (Pillow cannot identify its format)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{shown} is a damaged image ({error})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if limit is not None and image.width * image.height > limit:
        raise InputError(_too_large(shown, image.size))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image.load()
        except (Image.DecompressionBombWarning, Image.DecompressionBombError):  # a later frame's size
            raise InputError(_too_large(shown, None)) from None
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise InputError(f"{shown} is a damaged or truncated image ({error})") from None
    return to_rgb(image)


def _too_large(shown: str, size: tuple[int, int] | None) -> str:
    limit = _pillow().MAX_IMAGE_PIXELS
    pixels = f"{size[0]} x {size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return (
        f"{shown} has {pixels}, over Pillow's limit of {limit:,} (PIL.Image.MAX_IMAGE_PIXELS), a guard "
        "against decompression bombs; shrink the image"
    )


class ImageColumn(ColumnView):
    """The images of column ``name`` of a table (their cells read when used), decoded by ``image``."""

    def __init__(self, table: Table, name: str, start: int = 0, stop: int | None = None) -> None:
        super().__init__(table, name, start, stop)
        self.base = image_base(table)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice) and index.indices(len(self))[2] != 1:
            raise ValueError("image columns are sliced with step 1")
        return super().__getitem__(index)

    def label(self, value: Any) -> str:
        """How a cell is named in outputs and messages: its path (as written), or ``<bytes>``."""
        if isinstance(value, dict):
            return (
                str(value.get("path") or "<bytes>") if value.get("bytes") is not None else str(value["path"])
            )
        if isinstance(value, str):
            return value
        return "<bytes>"

    def image(self, position: int, value: Any) -> Any:
        """The RGB Pillow image of ``value``, the cell of row ``position`` of this column."""
        row = self.start + position
        where = f"{self.table.where(row)}, column {self.name!r}: "
        data, path = _cell(value)
        if data is None and path is None:
            shown = "missing" if value is None else f"{type(value).__name__} {value!r}"
            raise InputError(f"{where}expected an image (a file path or image bytes), found {shown}")
        resolved = None
        named = value.get("path") if isinstance(value, dict) else None
        shown = f"{named} (the image bytes of the cell)" if named else "the image bytes of the cell"
        if data is None:
            assert path is not None
            given = Path(os.path.expanduser(path))
            resolved = given if given.is_absolute() else self.base / given
            shown = path if given.is_absolute() else f"{path} (-> {resolved})"
        try:
            return decode_image(data, resolved, shown)
        except InputError as error:
            raise InputError(where + str(error)) from None

    def images(self) -> Iterator[Any]:
        """Every image of the column, in row order, decoded to RGB."""
        for position, value in enumerate(self):
            yield self.image(position, value)


def _cell(value: Any) -> tuple[bytes | None, str | None]:
    """The bytes or the path an image cell holds (both None when it holds neither)."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if isinstance(data, (bytes, bytearray)):
            return bytes(data), None
        return None, path if isinstance(path, str) and path.strip() else None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value), None
    if isinstance(value, str) and value.strip():
        return None, value.strip()
    return None, None


def check_images(table: Table, column: str) -> ImageColumn:
    """The images of an image column, each decoded once here so that a bad one is refused before any work
    (see the module docstring)."""
    table.require_columns([column])
    images = ImageColumn(table, column)
    for _ in images.images():
        pass
    return images


def image_names(images: Sequence[Any] | ImageColumn) -> list[str]:
    """The name of each image of a column (its path as written, or ``<bytes>``), for outputs."""
    if isinstance(images, ImageColumn):
        return [images.label(value) for value in images]
    return [str(value) for value in images]
