"""Every input format read the way its specification says, and filtered output byte for byte.

CSV (RFC 4180 with quoted line breaks), TSV (IANA text/tab-separated-values: no quoting at all), JSON Lines,
JSON arrays, each with a UTF-8 BOM, CRLF line ends, a last line without a line end and very large fields.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tod_clean.errors import InputError
from tod_clean.io.inputs import read_table
from tod_clean.io.table import Table
from tod_clean.io.writers import subset_bytes, write_subset

BOM = b"\xef\xbb\xbf"


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


# ---- TSV: quotes are ordinary characters ---------------------------------------------------------------


def test_tsv_quotes_are_literal(tmp_path: Path) -> None:
    data = b'id\ttext\tlabel\n1\t"quoted" at the start\tpositive\n2\tsay "hi\tnegative\n3\t"""\tpositive\n'
    table = read_table(write(tmp_path / "t.tsv", data))
    assert [r["text"] for r in table.rows] == ['"quoted" at the start', 'say "hi', '"""']
    assert (
        subset_bytes(table, [0, 2])
        == b'id\ttext\tlabel\n1\t"quoted" at the start\tpositive\n3\t"""\tpositive\n'
    )


def test_tsv_field_with_a_comma_and_unbalanced_quote_keeps_line_numbers(tmp_path: Path) -> None:
    # With CSV quoting the quote on line 2 would swallow line 3 into one field.
    data = b'text\tlabel\n"open, never closed\tpositive\nsecond row\tnegative\n'
    table = read_table(write(tmp_path / "t.tsv", data))
    assert len(table) == 2 and table.lines == [2, 3]
    assert table.rows[1] == {"text": "second row", "label": "negative"}


# ---- headers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", "\t"])
def test_repeated_column_name_is_refused(tmp_path: Path, sep: str) -> None:
    suffix = "csv" if sep == "," else "tsv"
    data = sep.join(["text", "label", "text"]) + "\n" + sep.join(["a", "x", "b"]) + "\n"
    with pytest.raises(InputError, match=rf"t\.{suffix}: line 1: column name 'text' appears more than once"):
        read_table(write(tmp_path / f"t.{suffix}", data.encode()))


def test_repeated_parquet_column_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    names = ["text", "label", "label"]
    pq.write_table(pa.table([pa.array(["a"]), pa.array(["x"]), pa.array(["y"])], names=names), path)
    with pytest.raises(InputError, match=r"t\.parquet: column name 'label' appears more than once"):
        read_table(str(path))


@pytest.mark.parametrize("header", ["text,label,", "text,,label", " ,text,label"])
def test_empty_column_name_is_refused(tmp_path: Path, header: str) -> None:
    columns = header.count(",") + 1
    data = f"{header}\n{','.join(['a'] * columns)}\n"
    position = [name.strip() for name in header.split(",")].index("") + 1
    with pytest.raises(
        InputError, match=rf"t\.csv: line 1: column {position} of the header has an empty name"
    ):
        read_table(write(tmp_path / "t.csv", data.encode()))


# ---- BOM, CRLF, last line without a line end, big fields -------------------------------------------------

SAMPLES = {
    "csv": b'id,text,label\r\n1,"a, b",pos\r\n2,plain,neg\r\n3,"multi\r\nline",pos',
    "tsv": b'id\ttext\tlabel\r\n1\ta "b"\tpos\r\n2\tplain\tneg\r\n3\tlast\tpos',
    "jsonl": b'{"id": "1", "text": "a", "label": "pos"}\r\n\r\n{"id":"2","text":"b","label":"neg"}\r\n'
    b'   \n{"id": "3", "text": "c", "label": "pos"}',
    "json": b'[ {"id": "1", "text": "caf\\u00e9", "label": "pos"},\r\n  {"id":"2", "text":"b","label":"neg"} ,'
    b'\r\n  {"id": "3", "text": "c", "label": "pos"}\r\n]',
}


# what rows 0 and 2 of each sample give: the rows' own bytes; blank lines and a JSON array's odd separators
# go, and an unterminated last line gets a line end
KEPT = {
    "csv": b'id,text,label\r\n1,"a, b",pos\r\n3,"multi\r\nline",pos\n',
    "tsv": b'id\ttext\tlabel\r\n1\ta "b"\tpos\r\n3\tlast\tpos\n',
    "jsonl": b'{"id": "1", "text": "a", "label": "pos"}\r\n{"id": "3", "text": "c", "label": "pos"}\n',
    "json": b'[ {"id": "1", "text": "caf\\u00e9", "label": "pos"},\r\n  {"id": "3", "text": "c", "label": "pos"}'
    b"\r\n]",
}


@pytest.mark.parametrize("bom", [b"", BOM], ids=["plain", "bom"])
@pytest.mark.parametrize("fmt", list(SAMPLES))
def test_bom_crlf_and_unterminated_last_line(tmp_path: Path, fmt: str, bom: bytes) -> None:
    table = read_table(write(tmp_path / f"t.{fmt}", bom + SAMPLES[fmt]))
    assert table.columns == ["id", "text", "label"]
    assert [r["id"] for r in table.rows] == ["1", "2", "3"]
    assert subset_bytes(table, [0, 2]) == bom + KEPT[fmt]
    if fmt in ("csv", "tsv"):
        assert subset_bytes(table, [0, 1, 2]) == bom + SAMPLES[fmt] + b"\n"


def test_json_array_subset_keeps_each_element_byte_for_byte(tmp_path: Path) -> None:
    data = (
        b'[\n  {"id": "1",   "text": "caf\\u00e9",\n   "label": 1.0},\n'
        b'  {"id": "2", "text": "\xc3\xa9t\xc3\xa9", "label": 1e0, "extra": [1, 2]},\n'
        b'  {"id":"3","text":"x","label":2}\n]\n'
    )
    table = read_table(write(tmp_path / "t.json", data))
    out = tmp_path / "kept.json"
    write_subset(table, [0, 2], str(out))
    assert out.read_bytes() == (
        b'[\n  {"id": "1",   "text": "caf\\u00e9",\n   "label": 1.0},\n  {"id":"3","text":"x","label":2}\n]\n'
    )
    write_subset(table, [], str(out))
    assert json.loads(out.read_bytes()) == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'[{"text": "a"}, 3]', r"row 1: expected a JSON object, found int"),
        (b'[{"text": "a"}] trailing', r"line 1: extra data after the array"),
        (b'[{"text": "a"}\n {"text": "b"}]', r"line 2: expected ',' or ']'"),
        (b'[{"text": "a"},\n\n {"text": }]', r"line 3: Expecting value"),
    ],
)
def test_bad_json_array_names_the_place(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=rf"t\.json: .*{message}"):
        read_table(write(tmp_path / "t.json", data))


def test_json_array_cannot_be_written_as_json_lines(tmp_path: Path) -> None:
    table = read_table(write(tmp_path / "t.json", b'[{"text": "a", "label": 1}]'))
    with pytest.raises(InputError, match=r"kept\.jsonl: write the kept rows in the input's format \(json\)"):
        write_subset(table, [0], str(tmp_path / "kept.jsonl"))


@pytest.mark.parametrize("fmt", ["csv", "tsv"])
def test_very_large_field(tmp_path: Path, fmt: str) -> None:
    sep = "," if fmt == "csv" else "\t"
    big = "word " * 60_000  # 300,000 characters: over the csv module's default 131,072 limit
    data = f"text{sep}label\n{big}{sep}pos\nsmall{sep}neg\n".encode()
    table = read_table(write(tmp_path / f"t.{fmt}", data))
    assert table.rows[0]["text"] == big
    assert subset_bytes(table, [0]) == f"text{sep}label\n{big}{sep}pos\n".encode()


# ---- properties ------------------------------------------------------------------------------------

field_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
line_end = st.sampled_from(["\n", "\r\n"])


# csv.writer quotes a field with a line break only when the break is part of its line terminator, so
# "\n" line ends are paired with quoting every field (RFC 4180 writers quote any field with CR or LF).
writer_style = st.sampled_from([("\r\n", csv.QUOTE_MINIMAL), ("\n", csv.QUOTE_ALL)])


@given(
    rows=st.lists(st.tuples(field_text, field_text), min_size=1, max_size=8),
    style=writer_style,
    data=st.data(),
)
def test_csv_subset_reproduces_the_rows_csv_writer_wrote(
    rows: list[tuple[str, str]], style: tuple[str, int], data: st.DataObject
) -> None:
    def record(fields: list[str]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator=style[0], quoting=style[1]).writerow(fields)
        return buffer.getvalue().encode("utf-8")

    # a row whose fields are all blank is a blank line, which readers skip: keep one visible field
    records = [record([f"r{i}", a, b]) for i, (a, b) in enumerate(rows)]
    header = record(["id", "text", "note"])
    table = read_table_bytes(header + b"".join(records), "csv")
    assert [(r["text"], r["note"]) for r in table.rows] == rows
    keep = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1))))
    assert subset_bytes(table, keep) == header + b"".join(records[i] for i in keep)


tsv_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00\t\r\n"), min_size=1, max_size=20
)


# a line of blank fields counts as a blank line (skipped), so the first field is never blank
@given(
    rows=st.lists(st.tuples(tsv_text.filter(str.strip), tsv_text), min_size=1, max_size=8),
    end=line_end,
    data=st.data(),
)
def test_tsv_subset_reproduces_each_line(rows: list[tuple[str, str]], end: str, data: st.DataObject) -> None:
    lines = [f"{a}\t{b}{end}".encode() for a, b in rows]
    header = f"text\tlabel{end}".encode()
    table = read_table_bytes(header + b"".join(lines), "tsv")
    assert [(r["text"], r["label"]) for r in table.rows] == rows
    keep = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1))))
    assert subset_bytes(table, keep) == header + b"".join(lines[i] for i in keep)


@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["text", "label", "x"]), field_text), min_size=1, max_size=6
    ),
    separator=st.sampled_from([",", ", ", ",\n  ", " ,\r\n"]),
    ensure_ascii=st.booleans(),
    data=st.data(),
)
def test_json_array_subset_reproduces_each_element(
    rows: list[dict[str, str]], separator: str, ensure_ascii: bool, data: st.DataObject
) -> None:
    elements = [json.dumps(row, ensure_ascii=ensure_ascii) for row in rows]
    table = read_table_bytes(f"[ {separator.join(elements)}\n]".encode(), "json")
    assert table.rows == rows
    keep = sorted(data.draw(st.sets(st.integers(0, len(rows) - 1))))
    expected = f"[ {separator.join(elements[i] for i in keep)}\n]".encode()
    assert subset_bytes(table, keep) == expected


def read_table_bytes(data: bytes, fmt: str) -> Table:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        return read_table(write(Path(folder) / f"t.{fmt}", data))


@pytest.mark.parametrize(
    ("name", "text", "where", "key"),
    [
        (
            "t.jsonl",
            '{"text": "a", "label": "x"}\n{"text": "b", "label": "x", "label": "y"}\n',
            "line 2",
            "label",
        ),
        ("t.jsonl", '{"text": "a: b", "label" : "x", "text": "c"}\n', "line 1", "text"),
        (
            "t.json",
            '[{"text": "a", "label": "x"}, {"label": "y", "text": "b", "label": "x"}]',
            "row 1",
            "label",
        ),
    ],
    ids=["jsonl", "jsonl-spaced", "json-array"],
)
def test_repeated_json_key_is_refused(tmp_path: Path, name: str, text: str, where: str, key: str) -> None:
    """json reads a repeated key with the last copy winning: one of the two values would be lost unseen."""
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=rf"{name}: {where}: key '{key}' appears more than once"):
        read_table(str(tmp_path / name))


def test_colons_and_nested_objects_are_not_repeated_keys(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "at 10:30: fine", "meta": {"a": 1, "b": {"a": 2}}, "label": "x"}\n')
    assert read_table(str(path)).rows[0]["meta"] == {"a": 1, "b": {"a": 2}}
