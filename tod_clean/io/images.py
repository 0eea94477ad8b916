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
to RGB by Pillow; 16-bit grey images are scaled to 8 bits (0-65535 onto 0-255: Pillow alone would clip at
255), and floating-point ones refused (their range is not defined); images with an alpha channel (RGBA,
LA, a palette or a grey or RGB image with a transparent colour) are composited on white, as a viewer shows them on a white page, rather than having their alpha dropped
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


# rows looked at for a column's first non-empty cell when finding the image column
FIND_ROWS = 100


def find_image_column(table: Table) -> str | None:
    """The table's image column, found by the first non-empty cell of each column (among the first
    ``FIND_ROWS`` rows): ``image`` when that is an image, else the first column whose cell is (None when no
    column's is). An empty cell in the image column is refused later, with its row."""
    rows = [table.rows[index] for index in range(min(len(table), FIND_ROWS))]
    candidates = sorted(table.columns, key=lambda name: name != "image")

    def first_value(name: str) -> Any:
        return next((row.get(name) for row in rows if not _is_empty(row.get(name))), None)

    return next((name for name in candidates if is_image_value(first_value(name))), None)


def _is_empty(value: Any) -> bool:
    """None, NaN, a blank string, or an Image feature with neither bytes nor a path."""
    if isinstance(value, dict):
        return value.get("bytes") is None and not value.get("path")
    return value is None or value != value or (isinstance(value, str) and not value.strip())


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


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _grey_to_eight_bits(image: Any) -> Any:
    """A 16-bit grey image (or a 32-bit integer one) as 8-bit grey: 16-bit values scaled (0-65535 onto
    0-255; Pillow's own conversion would clip at 255), a 32-bit image of values 0-255 read as they are,
    of values 0-65535 as 16-bit; a transparent colour kept as an alpha channel (mode LA)."""
    import numpy as np

    Image = _pillow()
    values = np.asarray(image).astype(np.int64)
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise ValueError(
            f"a mode-{image.mode} image with values from {low} to {high}, outside the 16-bit range 0-65535 "
            "tod-clean scales to 8 bits; save it as an 8- or 16-bit image"
        )
    eight_bit = image.mode == "I" and high <= 255
    scaled = values if eight_bit else (values * 255 + 32767) // 65535
    grey = Image.fromarray(scaled.astype(np.uint8), mode="L")
    key = image.info.get("transparency")
    if isinstance(key, int):  # the transparent colour, in the image's own values
        alpha = Image.fromarray(np.where(values == key, 0, 255).astype(np.uint8), mode="L")
        grey = Image.merge("LA", (grey, alpha))
    return grey


def to_rgb(image: Any) -> Any:
    """``image`` as an RGB Pillow image: alpha (or a transparent colour) composited on white, 16-bit grey
    scaled to 8 bits, other modes converted (see the module docstring). A ``ValueError`` says why an image
    cannot be (a float image, or integer values outside 16 bits)."""
    Image = _pillow()
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in SIXTEEN_BIT_MODES or image.mode == "I":
        image = _grey_to_eight_bits(image)
    if image.mode == "F":
        raise ValueError(
            "a floating-point (mode F) image, whose range of values is not defined; save it as an 8- or "
            "16-bit image"
        )
    if image.mode in ("RGBA", "LA", "PA") or (
        image.mode in ("P", "L", "RGB") and "transparency" in image.info
    ):
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
    try:
        return to_rgb(image)
    except ValueError as error:
        raise InputError(f"{shown} is {error}") from None


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
        # an image folder's cells are the paths tod-clean listed: taken as they are (a class folder may
        # be named " x" or "~"), where a table's cells are stripped and may start with ~
        self.listed = table.format == IMAGE_FOLDER_FORMAT

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
        data, path = (None, value) if self.listed and isinstance(value, str) and value else _cell(value)
        if data is None and path is None:
            shown = "missing" if value is None else f"{type(value).__name__} {value!r}"
            raise InputError(f"{where}expected an image (a file path or image bytes), found {shown}")
        resolved = None
        named = value.get("path") if isinstance(value, dict) else None
        shown = f"{named} (the image bytes of the cell)" if named else "the image bytes of the cell"
        if data is None:
            assert path is not None
            given = Path(path if self.listed else os.path.expanduser(path))
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


def first_relative_path(table: Table, column: str) -> str | None:
    """The first cell of ``column`` naming its image by a relative path (None when none does)."""
    for value in ColumnView(table, column):
        data, path = _cell(value)
        if data is None and path is not None and not Path(os.path.expanduser(path)).is_absolute():
            return path
    return None


def check_paths_resolve_in(
    table: Table, column: str | None, folder: str | os.PathLike[str], what: str
) -> None:
    """Refuse to copy rows of ``table`` into ``folder`` (``what`` names the output) when they name images
    by paths relative to another folder: copied byte for byte, those paths would not resolve there. An
    image folder's rows are written as a manifest (its paths rewritten), and standard input's resolve
    against the working folder, so neither is refused."""
    if column is None or table.format == IMAGE_FOLDER_FORMAT or table.ref is None:
        return
    base = image_base(table)
    if Path(os.path.realpath(folder)) == Path(os.path.realpath(base)):
        return
    relative = first_relative_path(table, column)
    if relative is not None:
        raise InputError(
            f"{what}: the rows of {table.source} are copied as they are, and name their images by paths "
            f"relative to {base} (column {column!r}: {relative}), which would not resolve from {folder}; "
            f"write them in {base}, or give the table absolute image paths (or image bytes)"
        )


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
