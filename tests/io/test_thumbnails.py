"""Thumbnails: an image cell decoded the safe way, shrunk to fit a small square (never enlarged, its
proportions kept) and embedded as a PNG data URI; an image that cannot be read safely is a message, not
a missing page."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.image_data import image_folder, png_bytes, square
from tod_clean.errors import InputError
from tod_clean.io.images import ImageColumn
from tod_clean.io.inputs import read_table
from tod_clean.io.thumbnails import (
    PNG_DATA_URI,
    THUMBNAIL_SIDE,
    png_data_uri,
    thumbnail,
    thumbnail_uri,
    thumbnail_uris,
)


def decoded(uri: str) -> Image.Image:
    """The image a ``data:image/png;base64,...`` URI holds, checked to be a whole PNG."""
    assert uri.startswith(PNG_DATA_URI)
    data = base64.b64decode(uri[len(PNG_DATA_URI) :], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("size", "expected"),
    [((200, 100), (64, 32)), ((100, 300), (21, 64)), ((64, 64), (64, 64)), ((32, 32), (32, 32))],
)
def test_thumbnail_fits_the_square_keeps_proportions_and_never_enlarges(
    size: tuple[int, int], expected: tuple[int, int]
) -> None:
    image = Image.new("RGB", size, (10, 20, 30))
    small = thumbnail(image)
    assert small.size == expected and image.size == size  # a copy: the original is left alone
    assert max(thumbnail(image, 16).size) == 16 or max(size) < 16


def test_a_small_image_comes_back_pixel_for_pixel() -> None:
    image = square((200, 40, 40), np.random.default_rng(0))
    back = decoded(png_data_uri(thumbnail(image)))
    assert back.size == (32, 32) and back.mode == "RGB"
    assert np.array_equal(np.asarray(back), np.asarray(image))  # PNG: the image's own pixels


def test_thumbnail_side_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive number of pixels, got 0"):
        thumbnail(Image.new("RGB", (4, 4)), 0)


def test_thumbnails_of_an_image_column_and_the_images_that_cannot_be_read(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "photos", per_class=2, size=100)
    table = read_table(str(folder))
    images = ImageColumn(table, "image")
    assert decoded(thumbnail_uri(images, 0)).size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE)
    (folder / "green" / "001.png").unlink()  # row 3: removed since the table was read
    (folder / "red" / "000.png").write_bytes(png_bytes(square((1, 2, 3), np.random.default_rng(1)))[:60])
    uris, problems = thumbnail_uris(images, [0, 3, 3, 4, 5])
    assert sorted(uris) == [0, 5]  # each row once
    assert len(problems) == 2
    assert "row 3," in problems[0] and "green/001.png" in problems[0] and "not found" in problems[0]
    assert "red/000.png" in problems[1] and "damaged or truncated" in problems[1]
    with pytest.raises(InputError, match="not found"):
        thumbnail_uri(images, 3)


def test_a_decompression_bomb_gets_no_thumbnail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = image_folder(tmp_path / "photos", per_class=2)
    images = ImageColumn(read_table(str(folder)), "image")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # the 32 x 32 images are "too large" now
    uris, problems = thumbnail_uris(images, [0])
    assert uris == {} and "over Pillow's limit of 500" in problems[0] and "decompression bombs" in problems[0]
