"""Reading, validating and writing data files: round trips per format, byte-exact subsets, clear errors."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import make_rows
from tod_clean.errors import InputError
from tod_clean.io.formats import format_of
from tod_clean.io.frames import write_frame
from tod_clean.io.inputs import read_table
from tod_clean.io.writers import subset_bytes, write_subset

FORMATS = ["jsonl", "json", "csv", "tsv", "parquet"]


# ---- round trips ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_read_round_trip(data_file: Callable[..., Path], fmt: str) -> None:
    rows = make_rows(10)
    path = data_file(f"train.{fmt}", rows)
    table = read_table(str(path))
    assert table.format == fmt
    assert table.columns == ["id", "text", "label"]
    assert len(table) == 10
    assert table.rows == rows
    assert table.source == str(path)
    import hashlib

    assert table.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert table.to_frame().shape == (10, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_subset_round_trip(data_file: Callable[..., Path], tmp_path: Path, fmt: str) -> None:
    rows = make_rows(9)
    table = read_table(str(data_file(f"train.{fmt}", rows)))
    keep = [0, 3, 4, 8]
    out = tmp_path / f"kept.{fmt}"
    write_subset(table, keep, str(out))
    assert read_table(str(out)).rows == [rows[i] for i in keep]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv"])
def test_write_subset_all_rows_reproduces_file_bytes(
    data_file: Callable[..., Path], tmp_path: Path, fmt: str
) -> None:
    path = data_file(f"train.{fmt}", make_rows(7))
    table = read_table(str(path))
    out = tmp_path / f"same.{fmt}"
    write_subset(table, list(range(7)), str(out))
    assert out.read_bytes() == path.read_bytes()


TRICKY_CSV = (
    "id,text,label\r\n"
    '1,"Hello, world",positive\r\n'
    '2,"He said ""no"", twice",negative\r\n'
    '3,"line one\r\nline two\nline three",positive\r\n'
    "4,plain text,negative\r\n"
    '5,"caf\u00e9 \u2603, \U0001f600",positive\r\n'
    '6,"trailing ""quote""",negative\r\n'
)


def test_csv_subset_is_byte_for_byte(tmp_path: Path) -> None:
    suffix = "csv"
    data = TRICKY_CSV
    path = tmp_path / f"tricky.{suffix}"
    path.write_bytes(data.encode("utf-8"))
    table = read_table(str(path))
    assert len(table) == 6
    assert table.rows[2]["text"] == "line one\r\nline two\nline three"
    assert table.lines == [2, 3, 4, 7, 8, 9]
    records = data.encode("utf-8").split(b"\r\n")
    out = tmp_path / f"kept.{suffix}"
    write_subset(table, [0, 2, 5], str(out))
    expected = b"".join(
        [
            records[0] + b"\r\n",
            records[1] + b"\r\n",
            b"\r\n".join(records[3:5]) + b"\r\n",  # the record that spans physical lines
            records[7] + b"\r\n",
        ]
    )
    assert out.read_bytes() == expected
    assert [r["id"] for r in read_table(str(out)).rows] == ["1", "3", "6"]


def test_csv_written_by_csv_module_round_trips(tmp_path: Path) -> None:
    import csv

    texts = ["comma, inside", 'quote " inside', "new\nline", "tab\tinside", "  spaces  ", "semi;colon"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["text", "label"])
    for i, text in enumerate(texts):
        writer.writerow([text, i % 2])
    path = tmp_path / "written.csv"
    path.write_bytes(buffer.getvalue().encode("utf-8"))
    table = read_table(str(path))
    assert [r["text"] for r in table.rows] == texts
    out = tmp_path / "again.csv"
    write_subset(table, list(range(len(texts))), str(out))
    assert out.read_bytes() == path.read_bytes()


def test_csv_with_unicode_line_separators_inside_fields(tmp_path: Path) -> None:
    """pandas and the csv module leave U+2028, U+0085 and form feeds unquoted: they are not line breaks."""
    texts = ["before\u2028after", "next\x85line", "form\x0cfeed", "para\u2029graph", "group\x1dsep"]
    frame = pd.DataFrame({"text": texts, "label": ["positive", "negative"] * 2 + ["positive"]})
    path = tmp_path / "pandas.csv"
    frame.to_csv(path, index=False)
    table = read_table(str(path))
    assert [r["text"] for r in table.rows] == texts
    out = tmp_path / "kept.csv"
    write_subset(table, [1, 3], str(out))
    assert pd.read_csv(out)["text"].tolist() == [texts[1], texts[3]]


def test_csv_with_bom_and_no_trailing_newline(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbftext,label\na,positive\nb,negative")
    table = read_table(str(path))
    assert table.columns == ["text", "label"]
    assert [r["text"] for r in table.rows] == ["a", "b"]
    out = tmp_path / "out.csv"
    write_subset(table, [0, 1], str(out))
    assert out.read_bytes() == path.read_bytes() + b"\n"


def test_jsonl_subset_keeps_each_line_unchanged(tmp_path: Path) -> None:
    lines = [
        '{"text": "a",   "label": "x", "extra": {"nested": [1, 2]}}\n',
        '{"label":"y","text":"b"}\r\n',
        "\n",  # blank lines are skipped
        '{"text": "caf\\u00e9", "label": "x"}\n',
        '{"text": "\u00e9t\u00e9", "label": "y"}',
    ]
    path = tmp_path / "odd.jsonl"
    path.write_bytes("".join(lines).encode("utf-8"))
    table = read_table(str(path))
    assert len(table) == 4
    assert table.lines == [1, 2, 4, 5]
    assert table.rows[2]["text"] == "caf\u00e9"
    assert subset_bytes(table, [0, 1, 2]) == "".join(lines[:2] + lines[3:4]).encode("utf-8")
    assert subset_bytes(table, [3]) == (lines[4] + "\n").encode("utf-8")


def test_parquet_values_and_types_preserved(tmp_path: Path) -> None:
    arrow = pa.table(
        {
            "id": pa.array([10, 20, 30, 40], pa.int64()),
            "text": ["a", "b", "c", "d"],
            "label": ["positive", "negative", "positive", "negative"],
            "score": pa.array([0.5, None, 1.25, -2.0], pa.float64()),
            "tags": pa.array([["x"], [], ["y", "z"], None], pa.list_(pa.string())),
        }
    )
    path = tmp_path / "train.parquet"
    pq.write_table(arrow, path)
    table = read_table(str(path))
    out = tmp_path / "kept.parquet"
    write_subset(table, [1, 3], str(out))
    kept = pq.read_table(out)
    assert kept.schema == arrow.schema
    assert kept.to_pylist() == [arrow.to_pylist()[1], arrow.to_pylist()[3]]


def test_json_array_round_trip(tmp_path: Path) -> None:
    rows = [{"text": "a", "label": 1, "meta": {"k": [1, 2]}}, {"text": "b", "label": 0, "meta": None}]
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    table = read_table(str(path))
    assert table.rows == rows
    out = tmp_path / "kept.json"
    write_subset(table, [1], str(out))
    assert json.loads(out.read_text(encoding="utf-8")) == [rows[1]]


def test_stdin_is_json_lines(tmp_path: Path) -> None:
    data = b'{"text": "a", "label": "x"}\n{"text": "b", "label": "y"}\n'
    table = read_table("-", stdin=io.BytesIO(data))
    assert table.source == "<stdin>" and table.format == "jsonl"
    assert [r["text"] for r in table.rows] == ["a", "b"]
    assert table.data == data
    sink = io.BytesIO()
    write_subset(table, [1], "-", stdout=sink)
    assert sink.getvalue() == data.splitlines(keepends=True)[1]


def test_write_subset_refuses_another_format(data_file: Callable[..., Path], tmp_path: Path) -> None:
    table = read_table(str(data_file("train.csv")))
    with pytest.raises(InputError, match=r"kept\.jsonl: write the kept rows in the input's format \(csv\)"):
        write_subset(table, [0], str(tmp_path / "kept.jsonl"))
    assert not (tmp_path / "kept.jsonl").exists()


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_write_frame_formats(tmp_path: Path, fmt: str) -> None:
    frame = pd.DataFrame({"row": [0, 1], "label": ["a", "b"], "influence": [0.25, float("nan")]})
    path = tmp_path / f"scores.{fmt}"
    write_frame(frame, str(path))
    if fmt == "parquet":
        back = pd.read_parquet(path)
    elif fmt in ("csv", "tsv"):
        back = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",")
    else:
        back = pd.read_json(path, lines=fmt == "jsonl")
    assert list(back.columns) == ["row", "label", "influence"]
    assert back["label"].tolist() == ["a", "b"]
    assert back["influence"].iloc[0] == 0.25 and pd.isna(back["influence"].iloc[1])


# ---- errors -------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    with pytest.raises(InputError, match=f"^{path}: no such file$"):
        read_table(str(path))


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        read_table(str(folder))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "tsv", "json", "parquet"])
def test_empty_file(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"empty.{fmt}"
    path.write_bytes(b"")
    with pytest.raises(InputError, match=rf"empty\.{fmt}: "):
        read_table(str(path))


@pytest.mark.parametrize("content", [b"text,label\n", b"\n\n", b"text,label\n\n , \n"])
def test_file_without_rows(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "header_only.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match="holds no rows"):
        read_table(str(path))


def test_bad_json_line_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(InputError, match=r"bad\.jsonl: line 3: not valid JSON"):
        read_table(str(path))


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    path = tmp_path / "list.jsonl"
    path.write_text('{"text": "a", "label": "x"}\n[1, 2]\n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2: expected a JSON object, found list"):
        read_table(str(path))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\u00e9,x\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin1\.csv: not UTF-8"):
        read_table(str(path))


def test_csv_row_with_wrong_field_count(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text("text,label\na,x\nb,y,extra\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"ragged\.csv: line 3: 3 fields, but the header has 2"):
        read_table(str(path))


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match=r"broken\.parquet: not a readable Parquet file"):
        read_table(str(path))


@pytest.mark.parametrize("name", ["train.txt", "train", "train.xlsx"])
def test_unsupported_extension(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("text,label\na,b\n")
    with pytest.raises(InputError, match="unsupported file type"):
        read_table(str(path))
    with pytest.raises(InputError, match="unsupported file type"):
        format_of(name)
