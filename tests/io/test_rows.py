"""Rows read from disk a chunk at a time: the same rows, bytes and errors as a file read into memory.

Files above ``rows.IN_MEMORY_LIMIT`` stay on disk and are re-read at each pass. Here every file is
streamed, in blocks of a few bytes and chunks of a few rows, so block and chunk edges fall inside records,
inside ``\\r\\n`` pairs and inside multi-byte characters, and each result is compared with the same file
read into memory in one block.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import tod_clean.io.columns as columns_module
import tod_clean.io.formats.dataset_dir as dataset_dir_module
import tod_clean.io.formats.parquet as parquet_module
import tod_clean.io.rows as rows_module
from tod_clean.errors import InputError
from tod_clean.io.columns import check_ids, check_labels, check_texts
from tod_clean.io.formats.parquet import ParquetRows
from tod_clean.io.inputs import read_table
from tod_clean.io.rows import FileBytes, LineRows, MemoryBytes
from tod_clean.io.table import Table
from tod_clean.io.writers import subset_bytes, write_subset


@contextmanager
def streaming(block: int = 5, chunk: int = 3) -> Iterator[None]:
    """Files of any size read from disk, ``block`` bytes and ``chunk`` rows at a time."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rows_module, "IN_MEMORY_LIMIT", -1)
        patch.setattr(rows_module, "BLOCK", block)
        patch.setattr(rows_module, "CHUNK", chunk)
        for module in (parquet_module, dataset_dir_module, columns_module):
            patch.setattr(module, "CHUNK", chunk)
        yield


def error_of(action: Callable[[], Any]) -> str | None:
    try:
        action()
    except InputError as error:
        return str(error)
    return None


def summary(table: Table, subsets: list[list[int]]) -> dict[str, Any]:
    """Everything a table tells: rows, bytes, lines, and the bytes of some subsets."""
    return {
        "format": table.format,
        "columns": table.columns,
        "rows": list(table.rows),
        "one_by_one": [table.rows[i] for i in range(len(table))],
        "raw": None if table.raw is None else list(table.raw),
        "lines": None if table.lines is None else list(table.lines),
        "header": table.header,
        "sha256": table.sha256,
        "subsets": [subset_bytes(table, keep) for keep in subsets],
        "frames": [
            (table.frame_at(keep).to_csv(index=False), list(table.frame_at(keep).dtypes))
            for keep in subsets
            if keep == sorted(keep)
        ],
    }


def assert_streams_the_same(path: Path, *, block: int = 5, chunk: int = 3) -> Table:
    table = read_table(str(path))
    assert isinstance(table.rows, (list, LineRows, ParquetRows))
    n = len(table)
    subsets = [list(range(n)), [], [0, n - 1], list(range(0, n, 2)), [n - 1, 0], list(range(n))[::-1]]
    expected = summary(table, subsets)
    with streaming(block, chunk):
        streamed = read_table(str(path))
        assert streamed.data == b""  # not held in memory
        assert summary(streamed, subsets) == expected
    return streamed


TRICKY_CSV = (
    "id,text,label\r\n"
    '1,"Hello, world",positive\r\n'
    '2,"He said ""no"", twice",negative\r\n'
    '3,"line one\r\nline two\nline three\rend",positive\r\n'
    "\r\n"
    "4,plain text,negative\r"
    '5,"caf\u00e9 \u2603, \U0001f600",positive\n'
    '6,"trailing ""quote""",negative'
)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
def test_csv_streams_byte_for_byte(tmp_path: Path, block: int) -> None:
    path = tmp_path / "tricky.csv"
    # a BOM and blank lines before the header
    path.write_bytes(b"\xef\xbb\xbf\n\n" + TRICKY_CSV.encode("utf-8"))
    streamed = assert_streams_the_same(path, block=block)
    assert streamed.lines == [4, 5, 6, 11, 12, 13]
    assert streamed.header == b"\xef\xbb\xbfid,text,label\r\n"
    assert streamed.rows[2]["text"] == "line one\r\nline two\nline three\rend"


def test_jsonl_streams_byte_for_byte(tmp_path: Path) -> None:
    lines = [
        '{"text": "a",   "label": "x", "extra": {"nested": [1, 2]}}\n',
        '{"label":"y","text":"b"}\r\n',
        "\n",
        "   \r",
        '{"text": "caf\\u00e9 \u00e9t\u00e9 \U0001f600", "label": "x"}\r',
        '{"text": "last", "label": 3}',
    ]
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(lines).encode("utf-8"))
    for block in (1, 2, 4, 9):
        streamed = assert_streams_the_same(path, block=block)
    assert streamed.lines == [1, 2, 5, 6] and streamed.columns == ["text", "label", "extra"]


def test_tsv_and_json_lines_in_a_json_file(tmp_path: Path) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_bytes(
        b'id\ttext\tlabel\n1\t"quoted" at the start\tpositive\n2\tsay "hi\tnegative\n3\t"""\tpositive\n'
    )
    assert_streams_the_same(tsv, block=4)
    lines = tmp_path / "lines.json"
    lines.write_text('\n  {"text": "a", "label": 1}\n{"text": "b", "label": 2}\n', encoding="utf-8")
    assert_streams_the_same(lines, block=3)


def test_a_json_array_is_read_into_memory_either_way(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b'\xef\xbb\xbf  \n[ {"text": "a", "label": 1},\n {"text": "b", "label": 2} ]\n')
    streamed = assert_streams_the_same(path, block=2)
    assert isinstance(streamed.rows, list) and streamed.json_array


def test_a_field_larger_than_a_block(tmp_path: Path) -> None:
    big = "word " * 6_000
    path = tmp_path / "big.csv"
    path.write_text(f'text,label\n{big},pos\nsmall,neg\n"{big}\n{big}",pos\n', encoding="utf-8")
    assert_streams_the_same(path, block=1000, chunk=2)


def test_parquet_streams_by_row_group(tmp_path: Path) -> None:
    arrow = pa.table(
        {
            "id": pa.array(range(11), pa.int64()),
            "text": [f"t{i}" for i in range(11)],
            "score": pa.array([0.5, None, 1.25, -2.0, None, 3.0, 1.0, None, 2.0, 0.0, 1.5], pa.float64()),
            "count": pa.array([1, None, 3, 4, 5, 6, 7, 8, 9, 10, 11], pa.int64()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(arrow, path, row_group_size=4)
    streamed = assert_streams_the_same(path)
    assert list(streamed.rows) == arrow.to_pylist()
    assert list(streamed.iter_column("text", 3, 9)) == [f"t{i}" for i in range(3, 9)]
    with streaming():
        for keep in ([1, 4, 5, 10], [10, 0, 7], []):
            out = tmp_path / "kept.parquet"
            write_subset(streamed, keep, str(out))
            kept = pq.read_table(out)
            assert kept.schema == arrow.schema
            assert kept.to_pylist() == [arrow.to_pylist()[i] for i in keep]
        # only row 1 lacks a count, so the chosen rows' counts stay float64 as in the whole frame
        assert streamed.frame_at([2, 3])["count"].dtype == np.float64


def test_small_files_are_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "a", "label": 1}\n', encoding="utf-8")
    table = read_table(str(path))
    assert isinstance(table.raw, rows_module.Records) and isinstance(table.raw.source, MemoryBytes)
    assert table.data == path.read_bytes()
    with streaming():
        table = read_table(str(path))
    assert isinstance(table.raw, rows_module.Records) and isinstance(table.raw.source, FileBytes)


# ---- the same errors ---------------------------------------------------------------------------------


BAD_FILES = {
    "json line": ("t.jsonl", b'{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n'),
    "not an object": ("t.jsonl", b'{"text": "a"}\n[1, 2]\n'),
    "not UTF-8 after a bad line": ("t.jsonl", b'{"text": \n{"text": "a"}\n{"text": "caf\xe9"}\n'),
    "not UTF-8 with a BOM": ("t.jsonl", b'\xef\xbb\xbf{"text": "a"}\n{"text": "\xe2\x82"}\n'),
    "ragged": ("t.csv", b"text,label\na,x\nb,y,extra\nc\n"),
    "bad header before a ragged row": ("t.csv", b"text,text\na,x\nb,y,extra\n"),
    "not UTF-8 after a bad header": ("t.csv", b"text,\na,x\nb,caf\xe9\n"),
    "empty header name": ("t.tsv", b"\n\ntext\t \na\tb\n"),
    "only blank lines": ("t.csv", b"\r\n\r\n , \n"),
    "only a header": ("t.csv", b"text,label\n"),
    "empty": ("t.jsonl", b""),
    "broken parquet": ("t.parquet", b"PAR1 this is not parquet"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_streamed_files_fail_with_the_same_message(tmp_path: Path, case: str) -> None:
    name, content = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    expected = error_of(lambda: read_table(str(path)))
    assert expected is not None and expected.startswith(f"{path}: ")
    with streaming(block=2):
        assert error_of(lambda: read_table(str(path))) == expected


def test_utf8_error_is_said_before_an_earlier_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"text": \n{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(InputError, match=r"t\.jsonl: not UTF-8 text \(byte 37: b'\\xe9'\)"):
        read_table(str(path))


def test_validation_names_the_row_and_line_of_a_streamed_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(
        '{"id": "a", "text": "ok", "label": "x"}\n\n{"id": "b", "text": 5, "label": "y"}\n', encoding="utf-8"
    )
    with streaming(block=3, chunk=1):
        table = read_table(str(path))
        with pytest.raises(InputError, match=r"row 1 \(line 3\), column 'text': expected text, found int 5"):
            check_texts(table, "text")
        assert list(check_labels(table, "label")) == ["x", "y"]
        assert list(check_ids(table, "id")) == ["a", "b"]


# ---- a file that changes while it is used -----------------------------------------------------------


def rows_file(path: Path, count: int = 8) -> Path:
    path.write_text("".join(json.dumps({"text": f"row {i}", "label": i % 2}) + "\n" for i in range(count)))
    return path


def test_a_file_changed_after_reading_is_refused_not_mixed(tmp_path: Path) -> None:
    path = rows_file(tmp_path / "t.jsonl")
    out = tmp_path / "kept.jsonl"
    with streaming():
        table = read_table(str(path))
        with open(path, "a", encoding="utf-8") as handle:
            handle.write('{"text": "new", "label": 0}\n')
        with pytest.raises(InputError, match=r"t\.jsonl: changed while tod-clean was reading it"):
            write_subset(table, [0, 2], str(out))
        with pytest.raises(InputError, match="changed while"):
            list(table.rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.jsonl"]  # no output, no temporary file


def test_a_same_size_edit_with_the_old_time_is_caught_by_the_checksum(tmp_path: Path) -> None:
    path = rows_file(tmp_path / "t.jsonl")
    with streaming():
        table = read_table(str(path))
        before = os.stat(path)
        path.write_bytes(path.read_bytes().replace(b"row 5", b"row 9"))
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        assert table.rows[1] == {"text": "row 1", "label": 1}  # one record: read by position
        with pytest.raises(InputError, match="changed while"):
            subset_bytes(table, [0, 1])  # a pass over the file checks every byte
        with pytest.raises(InputError, match="changed while"):
            write_subset(table, [0, 1], "-", stdout=io.BytesIO())
    assert not (tmp_path / "kept.jsonl").exists()


def test_a_removed_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("text,label\na,1\nb,0\n")
    with streaming():
        table = read_table(str(path))
        path.unlink()
        with pytest.raises(InputError, match=r"t\.csv: changed while"):
            subset_bytes(table, [1])


# ---- duplicate ids: compared by hash, confirmed exactly ---------------------------------------------


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (["a", "b", "c", "b", "a"], r"row 3 \(line 5\), column 'id': duplicate id 'b' \(also at row 1\)"),
        (["a", "", "a"], r"row 1 \(line 3\), column 'id': missing id"),
        (["a", "a", ""], r"row 1 \(line 3\), column 'id': duplicate id 'a' \(also at row 0\)"),
        (["1", "x", "1.0"], None),  # CSV ids are text: "1" and "1.0" differ
        (["a", "b", "c", "d"], None),
    ],
)
@pytest.mark.parametrize("collide", [False, True])
def test_duplicate_ids_even_when_every_hash_collides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ids: list[str], message: str | None, collide: bool
) -> None:
    if collide:
        monkeypatch.setattr(columns_module, "hash", lambda value: 7, raising=False)
    path = tmp_path / "t.csv"
    path.write_text("id,text\n" + "".join(f"{i},t{n}\n" for n, i in enumerate(ids)), encoding="utf-8")
    table = read_table(str(path))
    if message is None:
        assert list(check_ids(table, "id")) == ids
    else:
        with pytest.raises(InputError, match=message):
            check_ids(table, "id")


# ---- properties ----------------------------------------------------------------------------------------

field_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)


@given(
    rows=st.lists(st.tuples(field_text, field_text), min_size=1, max_size=10),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=11, max_size=11),
    blank=st.sets(st.integers(0, 10), max_size=3),
    block=st.integers(1, 9),
    chunk=st.integers(1, 4),
)
@pytest.mark.slow
def test_any_csv_streams_as_it_reads(
    rows: list[tuple[str, str]], ends: list[str], blank: set[int], block: int, chunk: int
) -> None:
    records = []
    for i, fields in enumerate([("text", "note"), *rows]):
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=ends[i], quoting=csv.QUOTE_ALL).writerow([f"r{i}", *fields])
        records.append(buffer.getvalue() + ("\n" if i in blank else ""))
    check_same_bytes("".join(records).encode("utf-8"), "csv", block, chunk)


@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["text", "label", "x"]), field_text), min_size=1, max_size=8
    ),
    ends=st.lists(st.sampled_from(["\n", "\r\n", "\r", "\n\n", " \r\n"]), min_size=8, max_size=8),
    ensure_ascii=st.booleans(),
    block=st.integers(1, 9),
    chunk=st.integers(1, 4),
)
@pytest.mark.slow
def test_any_json_lines_stream_as_they_read(
    rows: list[dict[str, str]], ends: list[str], ensure_ascii: bool, block: int, chunk: int
) -> None:
    text = "".join(
        json.dumps(row, ensure_ascii=ensure_ascii) + end for row, end in zip(rows, ends, strict=False)
    )
    check_same_bytes(text.encode("utf-8"), "jsonl", block, chunk)


def check_same_bytes(content: bytes, fmt: str, block: int, chunk: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"t.{fmt}"
        path.write_bytes(content)
        assert_streams_the_same(path, block=block, chunk=chunk)


json_value = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
)


@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["text", "a", "b"]), json_value, min_size=1), min_size=1, max_size=8
    ),
    data=st.data(),
)
@pytest.mark.slow
def test_frame_at_gives_the_whole_frames_dtypes(rows: list[dict[str, Any]], data: st.DataObject) -> None:
    """The dropped rows' report must look as if cut from a frame of every row (1 and a missing value
    make float64; True and 1 make object; ...)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "t.jsonl"
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        with streaming(block=16, chunk=2):
            table = read_table(str(path))
            keep = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1))))
            expected = table.to_frame().iloc[keep].reset_index(drop=True)
            found = table.frame_at(keep)
            pd.testing.assert_frame_equal(found, expected)
            assert found.to_csv(index=False) == expected.to_csv(index=False)  # 1 stays 1, not 1.0


def test_column_views_read_rows_when_used(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i}) + "\n" for i in range(10)))
    with streaming(chunk=4):
        texts = check_texts(read_table(str(path)), "text")
        assert len(texts) == 10 and texts[-1] == "t9" and texts[3] == "t3"
        middle = texts[2:7]
        assert middle == ["t2", "t3", "t4", "t5", "t6"] and middle[1:3] == ["t3", "t4"] and middle[-1] == "t6"
        assert texts[::3] == ["t0", "t3", "t6", "t9"]
        with pytest.raises(IndexError):
            texts[10]
