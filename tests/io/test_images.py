"""Image cells and image folders: decoding to RGB, finding the image column, relative paths, and every bad
image refused with one line naming the file, the row and the problem, before anything is written."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.cli.conftest import invoke, user_error
from tests.image_data import COLOURS, csv_of_paths, image_folder, parquet_of_images, png_bytes, square
from tod_clean.config import DataColumns
from tod_clean.errors import InputError
from tod_clean.instances import instances_from_table, resolve_columns
from tod_clean.io.images import check_images, decode_image, find_image_column, to_rgb
from tod_clean.io.inputs import read_table


def test_alpha_is_composited_on_white_and_other_modes_become_rgb() -> None:
    rgba = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    assert list(to_rgb(rgba).getdata()) == [(255, 255, 255), (10, 20, 30)]
    grey = Image.new("L", (1, 1), 77)
    assert to_rgb(grey).getpixel((0, 0)) == (77, 77, 77)
    palette = Image.new("P", (1, 1), 0)
    palette.putpalette([9, 8, 7] + [0] * 765)
    assert to_rgb(palette).getpixel((0, 0)) == (9, 8, 7)
    transparent = palette.copy()
    transparent.info["transparency"] = 0
    assert to_rgb(transparent).getpixel((0, 0)) == (255, 255, 255)
    la = Image.new("LA", (1, 1), (0, 0))
    assert to_rgb(la).mode == "RGB" and to_rgb(la).getpixel((0, 0)) == (255, 255, 255)


def test_decode_refuses_what_is_not_a_whole_safe_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = png_bytes(square((1, 2, 3), np.random.default_rng(0)))
    assert decode_image(good, None, "x").size == (32, 32)
    with pytest.raises(InputError, match=r"^image file gone.png not found$"):
        decode_image(None, tmp_path / "gone.png", "gone.png")
    with pytest.raises(InputError, match=r"^notes.png is not an image file \(Pillow cannot identify"):
        decode_image(b"just some text", None, "notes.png")
    with pytest.raises(InputError, match=r"^cut.png is a damaged or truncated image"):
        decode_image(good[: len(good) // 2], None, "cut.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(InputError, match=r"^big.png has 32 x 32 = 1,024 pixels, over Pillow's limit of 500 "):
        decode_image(good, None, "big.png")


def test_image_folder_reads_labels_from_folder_names_in_a_fixed_order(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "photos", per_class=2)
    (folder / "README.md").write_text("left out", encoding="utf-8")
    (folder / "red" / ".DS_Store").write_bytes(b"left out")
    table = read_table(str(folder))
    assert table.format == "imagefolder" and table.columns == ["image", "label"]
    assert [row["image"] for row in table.rows][:3] == ["blue/000.png", "blue/001.png", "green/000.png"]
    assert sorted({row["label"] for row in table.rows}) == sorted(COLOURS)
    again = read_table(str(folder))
    assert again.sha256 == table.sha256
    square((0, 0, 0), np.random.default_rng(1)).save(folder / "red" / "000.png")
    assert read_table(str(folder)).sha256 != table.sha256  # the fingerprint covers the images' bytes


def _empty_class(root: Path) -> None:
    (root / "grey").mkdir()


def _one_image_class(root: Path) -> None:
    (root / "grey").mkdir()
    square((9, 9, 9), np.random.default_rng(0)).save(root / "grey" / "a.png")


def _text_file_in_class(root: Path) -> None:
    (root / "red" / "notes.txt").write_text("x", encoding="utf-8")


def _nested_folder(root: Path) -> None:
    (root / "red" / "more").mkdir()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_empty_class, r"photos/grey: an empty class folder \(no images\)"),
        (
            _one_image_class,
            r"photos/grey: the class 'grey' has one image \(a.png\); a class needs at least two",
        ),
        (_text_file_in_class, r"photos/red/notes.txt: not an image file \(tod-clean reads .png, .jpg"),
        (_nested_folder, r"photos/red/more: a folder inside the class folder 'red'"),
    ],
)
def test_bad_image_folders_are_refused_by_train_and_nothing_is_written(
    tmp_path: Path, make: object, message: str
) -> None:
    folder = image_folder(tmp_path / "photos", per_class=2)
    make(folder)  # type: ignore[operator]
    result = invoke("train", folder, "--run", tmp_path / "run")
    user_error(result, absent=(tmp_path / "run",))
    assert re.search(message, " ".join(result.output.split())), result.output


def _bad_csv(tmp_path: Path, problem: str) -> Path:
    folder = image_folder(tmp_path / "photos", per_class=2)
    csv = csv_of_paths(folder, tmp_path / "data.csv")
    target = folder / "green" / "001.png"
    if problem == "missing":
        target.unlink()
    elif problem == "truncated":
        target.write_bytes(target.read_bytes()[:60])
    elif problem == "not an image":
        target.write_text("hello", encoding="utf-8")
    return csv


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        (
            "missing",
            r"data.csv: row 3 \(line 5\), column 'path': image file photos/green/001.png \(-> .*\) not found",
        ),
        (
            "truncated",
            r"data.csv: row 3 \(line 5\), column 'path': photos/green/001.png .*is a damaged or truncated image",
        ),
        (
            "not an image",
            r"data.csv: row 3 \(line 5\), column 'path': photos/green/001.png .*is not an image file",
        ),
        (
            "bomb",
            r"data.csv: row 0 \(line 2\), column 'path': photos/blue/000.png .*has 32 x 32 = 1,024 pixels, over Pillow's limit of 1,000",
        ),
    ],
)
def test_bad_images_in_a_table_name_file_row_and_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, problem: str, message: str
) -> None:
    csv = _bad_csv(tmp_path, problem)
    if problem == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    result = invoke("train", csv, "--run", tmp_path / "run")
    user_error(result, absent=(tmp_path / "run",))
    assert re.search(message, " ".join(result.output.split())), result.output


def test_image_column_is_found_and_relative_paths_resolve_against_the_data_file(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "data" / "photos", per_class=2)
    csv = csv_of_paths(folder, tmp_path / "data" / "train.csv")
    table = read_table(str(csv))
    assert find_image_column(table) == "path"
    columns = resolve_columns(table, DataColumns())
    assert columns.image_col == "path"
    instances = instances_from_table(table, columns, ["blue", "green", "red"])
    assert instances.texts is None and len(instances) == 6
    assert next(instances.images.images()).size == (32, 32)  # type: ignore[union-attr]
    # a table with the text column is text, as before
    assert resolve_columns(table, DataColumns(text_col="label")).image_col is None


def test_parquet_image_feature_and_save_to_disk_folders_hold_image_bytes(tmp_path: Path) -> None:
    import datasets

    folder = image_folder(tmp_path / "photos", per_class=2)
    parquet = parquet_of_images(folder, tmp_path / "train.parquet")
    table = read_table(str(parquet))
    assert find_image_column(table) == "image"
    images = check_images(table, "image")
    assert [image.mode for image in images.images()] == ["RGB"] * 6
    dataset = datasets.load_dataset("parquet", data_files=str(parquet), split="train")
    dataset.save_to_disk(str(tmp_path / "saved"))
    saved = read_table(str(tmp_path / "saved"))
    assert find_image_column(saved) == "image"
    assert len(list(check_images(saved, "image").images())) == 6


def test_a_damaged_image_in_parquet_names_its_row(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = png_bytes(square((1, 2, 3), np.random.default_rng(0)))
    rows = [{"image": {"bytes": good, "path": "a.png"}, "label": "x"}] * 2
    rows.append({"image": {"bytes": good[: len(good) // 2], "path": "c.png"}, "label": "y"})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    table = read_table(str(tmp_path / "bad.parquet"))
    with pytest.raises(
        InputError,
        match=r"bad.parquet: row 2, column 'image': c.png \(the image bytes of the cell\) is a damaged or truncated",
    ):
        check_images(table, "image")


def test_mixed_modes_train(tmp_path: Path) -> None:
    """Grey, palette and RGBA images in one folder are read as RGB, so a run trains on them."""
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        (folder / label).mkdir(parents=True)
        square(colour, rng).convert("L").save(folder / label / "grey.png")
        square(colour, rng).convert("P").save(folder / label / "palette.gif")
        square(colour, rng).convert("RGBA").save(folder / label / "alpha.png")
        square(colour, rng).save(folder / label / "plain.jpg")
    table = read_table(str(folder))
    images = check_images(table, "image")
    assert {image.mode for image in images.images()} == {"RGB"}


# ---- found by an adversarial pass (session 5) ------------------------------------------------------------


def test_sixteen_bit_grey_is_scaled_to_eight_bits_and_float_images_are_refused() -> None:
    ramp = (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)  # 0 .. 63,000 of 65,535
    decoded = np.asarray(decode_image(png_bytes(Image.fromarray(ramp)), None, "deep.png"))
    assert decoded.shape == (8, 8, 3) and (decoded[..., 0] == decoded[..., 2]).all()
    np.testing.assert_array_equal(decoded[..., 0], (ramp.astype(np.int64) * 255 + 32767) // 65535)
    assert decoded.max() == 245 and len(np.unique(decoded)) == 64  # not flattened to white
    wide = Image.fromarray(np.full((2, 2), 70000, dtype=np.int32))
    with pytest.raises(
        InputError, match=r"^wide.tif is a mode-I image with values from 70000 to 70000, outside"
    ):
        decode_image(png_bytes(wide, "TIFF"), None, "wide.tif")
    floating = Image.fromarray(np.full((2, 2), 0.5, dtype=np.float32))
    with pytest.raises(InputError, match=r"^float.tif is a floating-point \(mode F\) image"):
        decode_image(png_bytes(floating, "TIFF"), None, "float.tif")


def test_a_transparent_colour_in_grey_and_rgb_images_is_put_on_white() -> None:
    grey = Image.new("L", (2, 1), 0)
    grey.putpixel((1, 0), 90)
    rgb = Image.new("RGB", (2, 1), (0, 0, 0))
    rgb.putpixel((1, 0), (10, 20, 30))
    for image, kept, key in ((grey, (90, 90, 90), 0), (rgb, (10, 20, 30), (0, 0, 0))):
        image.info["transparency"] = key
        assert list(to_rgb(image).getdata()) == [(255, 255, 255), kept]
        saved = decode_image(png_bytes(image), None, "key.png")  # the tRNS chunk survives PNG
        assert list(saved.getdata()) == [(255, 255, 255), kept]


def test_class_folders_named_with_a_leading_space_or_a_tilde_are_read_as_they_are(tmp_path: Path) -> None:
    folder = image_folder(tmp_path / "photos", per_class=2)
    (folder / "blue").rename(folder / " blue")
    (folder / "green").rename(folder / "~")
    table = read_table(str(folder))
    assert sorted({row["label"] for row in table.rows}) == [" blue", "red", "~"]
    images = check_images(table, "image")
    assert len(list(images.images())) == 6


def test_a_first_empty_cell_does_not_hide_the_image_column(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=2)
    table_path = csv_of_paths(photos, tmp_path / "paths.csv")
    lines = table_path.read_text(encoding="utf-8").splitlines()
    header, first = lines[0], lines[1].split(",")
    blanked = ",".join(
        "" if name == "path" else value for name, value in zip(header.split(","), first, strict=True)
    )
    table_path.write_text("\n".join([header, blanked, *lines[2:]]) + "\n", encoding="utf-8")
    table = read_table(str(table_path))
    assert find_image_column(table) == "path"
    result = invoke("train", table_path, "--run", tmp_path / "run")
    message = user_error(result, "row 0", absent=(tmp_path / "run",))
    assert "column 'text' not found" not in message


def test_a_folder_of_no_images_says_so(tmp_path: Path) -> None:
    (tmp_path / "pics" / "cats").mkdir(parents=True)
    (tmp_path / "pics" / "cats" / "a.txt").write_text("x", encoding="utf-8")
    (tmp_path / "pics" / "dogs").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "pics" / "dogs" / "a.tif")
    user_error(
        invoke("train", tmp_path / "pics", "--run", tmp_path / "run"),
        "a folder, but neither an image folder",
        ".png, .jpg",
        absent=(tmp_path / "run",),
    )


@pytest.mark.parametrize(
    ("option", "name"), [("--image-col", "pic"), ("--text-col", "sentence")], ids=["image-col", "text-col"]
)
def test_a_named_column_that_is_not_there_is_refused_not_replaced(
    tmp_path: Path, option: str, name: str
) -> None:
    table_path = csv_of_paths(image_folder(tmp_path / "photos", per_class=2), tmp_path / "paths.csv")
    user_error(
        invoke("train", table_path, option, name, "--run", tmp_path / "run"),
        f"column {name!r} not found",
        absent=(tmp_path / "run",),
    )


def test_a_32_bit_image_of_8_bit_values_and_a_16_bit_transparent_colour() -> None:
    small = Image.fromarray(np.array([[0, 200]], dtype=np.int32))
    assert small.mode == "I"
    assert list(decode_image(png_bytes(small, "TIFF"), None, "small.tif").getdata()) == [
        (0, 0, 0),
        (200,) * 3,
    ]
    deep = Image.fromarray(np.array([[60000, 30000]], dtype=np.uint16))
    deep.info["transparency"] = 60000
    saved = png_bytes(deep)
    assert Image.open(io.BytesIO(saved)).info.get("transparency") == 60000  # a tRNS chunk in the PNG
    assert list(decode_image(saved, None, "key16.png").getdata()) == [(255, 255, 255), (117, 117, 117)]


def test_an_empty_image_struct_first_does_not_hide_the_image_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    cell = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    good = png_bytes(square((1, 2, 3), np.random.default_rng(0)))
    images = pa.array([{"bytes": None, "path": None}, {"bytes": good, "path": None}], type=cell)
    pq.write_table(pa.table({"image": images, "label": ["a", "b"]}), tmp_path / "t.parquet")
    assert find_image_column(read_table(str(tmp_path / "t.parquet"))) == "image"
