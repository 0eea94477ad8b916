"""Reading, validating and writing tabular text data: JSONL, JSON, CSV, TSV and Parquet.

A table keeps the exact bytes of every record (for the line-based formats and JSON arrays), so a filtered
file reproduces each kept row byte for byte. Rows are parsed from where they are stored when asked for, a
chunk at a time (see ``tod_clean.io.rows``): a file larger than memory is read, validated and filtered with
memory that does not grow with its rows beyond a few int64 arrays of N. JSON arrays and standard input are
read into memory. All writes go to a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import io
import json
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import warnings
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tod_clean.errors import InputError, TodCleanError
from tod_clean.io.formats.hub import choose_split, datasets_cache, is_hub_ref, load_split, locate
from tod_clean.io.rows import (
    CHUNK,
    Bytes,
    DatasetRows,
    FileBytes,
    Ints,
    LazyRows,
    LazySequence,
    LineRows,
    MemoryBytes,
    ParquetRows,
    Records,
    delimited_parser,
    delimited_reader,
    json_value,
    open_bytes,
    parse_json_records,
    physical_lines,
)

STDIN = "-"
_BOM = b"\xef\xbb\xbf"
FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def format_of(path: str, *, default: str | None = None) -> str:
    """The data format named by a path's extension (``-`` means ``default``)."""
    if path == STDIN and default is not None:
        return default
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unsupported file type {Path(path).suffix or '(no extension)'!r}; "
            f"use one of {', '.join(FORMATS)} (or - for standard input)"
        )
    return fmt


def check_stdin_format(stdin_format: str | None) -> str:
    """The format data on standard input is read in: ``stdin_format``, JSON Lines when None."""
    if stdin_format is None:
        return "jsonl"
    if stdin_format not in FORMATS.values():
        raise InputError(
            f"stdin format {stdin_format!r}: not a data format; use one of {', '.join(FORMATS.values())}"
        )
    return stdin_format


@dataclass
class Table:
    """The rows of a data file.

    ``rows`` are the parsed records (dicts): a list, or a sequence that parses them from where they are
    stored when asked for (see ``tod_clean.io.rows``). Iterate it, or use ``iter_column`` / ``rows_at``;
    ``column`` and ``to_frame`` hold a whole column or table in memory. ``raw`` holds each record's exact
    bytes for JSONL, JSON arrays, CSV and TSV; ``header`` is what comes before the first record (the
    CSV/TSV header line, a UTF-8 BOM, a JSON array's opening bracket); for a JSON array ``separator`` is
    the text between two elements and ``footer`` what follows the last one. ``lines`` gives the 1-based
    line where each record starts, for error messages. ``data`` holds the file's bytes when they were read
    into memory (standard input, small files, in-memory rows).
    """

    source: str
    format: str
    columns: list[str]
    rows: Sequence[dict[str, Any]]
    sha256: str
    raw: Sequence[bytes] | None = None
    header: bytes | None = None
    lines: Sequence[int] | None = None
    data: bytes = field(default=b"", repr=False)
    separator: bytes | None = None  # set only for a JSON array
    footer: bytes = b""
    dataset: Any = None  # the datasets.Dataset of a save_to_disk folder or an hf: dataset (format "dataset")
    split: str | None = None  # the split read from a DatasetDict folder or an hf: dataset
    # how to read the same rows again: an absolute path or hf:REPO/CONFIG (None for stdin and in-memory rows)
    ref: str | None = None
    scans: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)  # per-column results

    @property
    def json_array(self) -> bool:
        return self.separator is not None

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        """``file: row N (line L)`` for messages; rows count from 0 like the ``row`` output column."""
        line = f" (line {self.lines[row]})" if self.lines is not None else ""
        return f"{self.source}: row {row}{line}"

    def iter_column(self, name: str, start: int = 0, stop: int | None = None) -> Iterator[Any]:
        """The values of column ``name`` in rows ``start .. stop - 1`` (None where a row lacks it), read a
        chunk at a time."""
        stop = len(self) if stop is None else stop
        if isinstance(self.rows, LazyRows):
            return self.rows.values(name, start, stop)
        return (row.get(name) for row in self.rows[start:stop])

    def column(self, name: str) -> list[Any]:
        """All values of a column, in memory (``iter_column`` or ``column_view`` read them as needed)."""
        self.require_columns([name])
        return list(self.iter_column(name))

    def column_view(self, name: str) -> ColumnView:
        self.require_columns([name])
        return ColumnView(self, name)

    def rows_at(self, indices: Sequence[int] | np.ndarray) -> Iterator[dict[str, Any]]:
        """The rows at ``indices``, in that order (ascending indices are read in one pass)."""
        chosen = np.asarray(indices, dtype=np.int64)
        if isinstance(self.rows, LazyRows):
            return self.rows.at(chosen)
        return (self.rows[i] for i in chosen.tolist())

    def to_frame(self) -> pd.DataFrame:
        """All columns as a DataFrame (object values as parsed; CSV values stay text)."""
        return pd.DataFrame(list(self.rows), columns=self.columns)

    def frame_at(self, indices: Sequence[int] | np.ndarray) -> pd.DataFrame:
        """``to_frame().iloc[indices]`` (numbered from 0), without holding the other rows.

        A column's dtype depends on every row (``1`` and a missing value make float64), so columns the
        chosen rows cannot settle get the dtype the whole column has (see ``_frame_dtypes``).
        """
        rows = list(self.rows_at(indices))
        frame = pd.DataFrame(rows, columns=self.columns)
        # a column of objects that are not all missing is an object column in any frame of more rows
        unsettled = [
            name for name in self.columns if not (frame[name].dtype == object and frame[name].notna().any())
        ]
        for name, dtype in (_frame_dtypes(self, unsettled) if unsettled else {}).items():
            if frame[name].dtype == dtype:
                continue
            if pd.api.types.is_object_dtype(dtype):  # the parsed values (1, not 1.0); NaN for a missing key
                frame[name] = pd.Series([row.get(name, np.nan) for row in rows], dtype=object)
            else:
                frame[name] = frame[name].astype(dtype)
        return frame

    def require_columns(self, names: Sequence[str | None]) -> None:
        for name in names:
            if name is not None and name not in self.columns:
                raise InputError(
                    f"{self.source}: column {name!r} not found; columns found: {', '.join(self.columns) or '(none)'}"
                )


class ColumnView(LazySequence):
    """The values of column ``name`` in rows ``start .. stop - 1`` of a table, read when used."""

    def __init__(self, table: Table, name: str, start: int = 0, stop: int | None = None) -> None:
        self.table, self.name, self.start = table, name, start
        self.stop = len(table) if stop is None else stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return ColumnView(self.table, self.name, self.start + start, self.start + max(start, stop))
            return [self[i] for i in range(start, stop, step)]
        position = index + len(self) if index < 0 else index
        if not 0 <= position < len(self):
            raise IndexError(f"row {index} out of range (0..{len(self) - 1})")
        return self.table.rows[self.start + position].get(self.name)

    def __iter__(self) -> Iterator[Any]:
        return self.table.iter_column(self.name, self.start, self.stop)


_MISSING = object()


def _frame_dtypes(table: Table, names: list[str]) -> dict[str, Any]:
    """The dtype pandas gives each of ``names`` in a DataFrame of all rows of ``table``.

    pandas infers a column's dtype from the kinds of its values (and, for integers, their range), so one
    value of each kind, and the least and greatest integer, give the same dtype as the whole column.
    """
    samples: dict[str, dict[Any, Any]] = {name: {} for name in names}
    for row in table.rows:
        for name in names:
            value = row.get(name, _MISSING)
            kinds = samples[name]
            if type(value) is int:
                kinds["int-"] = min(kinds.get("int-", value), value)
                kinds["int+"] = max(kinds.get("int+", value), value)
            elif isinstance(value, float) and math.isnan(value):
                kinds.setdefault("nan", value)
            elif value is _MISSING:
                kinds.setdefault("missing", value)
            else:  # datetimes of different time zones make an object column
                kinds.setdefault((type(value), str(getattr(value, "tzinfo", None))), value)
    dtypes = {}
    for name, kinds in samples.items():
        records = [{} if value is _MISSING else {name: value} for value in kinds.values()]
        dtypes[name] = pd.DataFrame(records, columns=[name])[name].dtype
    return dtypes


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def stream_kind(path: str) -> str | None:
    """What ``path`` is when its bytes can be read only once, or never end: standard input, a pipe
    (FIFO), a socket or a device; None for a file, a folder, an ``hf:`` dataset or a missing path."""
    if path == STDIN:
        return "standard input"
    if is_hub_ref(path):
        return None
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def read_table(
    path: str, *, stdin: BinaryIO | None = None, split: str | None = None, stdin_format: str | None = None
) -> Table:
    """Read a data file by extension, standard input when ``path`` is ``-`` (in ``stdin_format``: JSON
    Lines when None; ignored for other paths), a folder
    written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a hub dataset in the local
    Hugging Face cache named ``hf:NAME[/CONFIG]`` (``split`` chooses the split of a DatasetDict folder or
    a hub dataset; see ``read_dataset_dir`` and ``read_hub_dataset``).

    Every record is parsed (and refused with its line if it cannot be) as the file is read, but rows are
    not kept: the table parses them again from the file when they are used. Files up to
    ``rows.IN_MEMORY_LIMIT`` bytes, standard input and JSON arrays are held in memory. Dataset folders and
    hf: datasets are memory-mapped.
    """
    if is_hub_ref(path):
        return read_hub_dataset(path, split=split)
    if is_dataset_dir(path):
        return read_dataset_dir(path, split=split)
    if split is not None:
        raise InputError(
            f"{path}: not a dataset folder (save_to_disk) or an hf: dataset, so it has no split {split!r}"
        )
    fmt = format_of(path, default=check_stdin_format(stdin_format))
    data = open_bytes(path, stdin, stdin_name=STDIN)
    source = "<stdin>" if path == STDIN else path
    if fmt == "parquet":
        table = _read_parquet(source, data)
    elif fmt == "json" and _first_byte(data) == b"[":
        whole = b"".join(data.blocks())
        table = _read_json_array(source, whole, hashlib.sha256(whole).hexdigest())
    elif fmt in ("jsonl", "json"):
        table = _read_jsonl(source, data, fmt)
    else:
        table = _read_delimited(source, data, fmt)
    if not len(table):
        raise InputError(f"{source}: the file holds no rows")
    if isinstance(data, MemoryBytes):
        table.data = data.data
    table.ref = None if path == STDIN else str(Path(path).resolve())
    return table


def _first_byte(data: Bytes) -> bytes:
    """The first byte after a UTF-8 BOM and white space (``[`` starts a JSON array)."""
    skip = _bom_length(data)
    with contextlib.closing(data.blocks()) as blocks:
        for block in blocks:
            cut = min(skip, len(block))
            rest, skip = block[cut:].lstrip(), skip - cut
            if rest:
                return rest[:1]
    return b""


def _bom_length(data: Bytes) -> int:
    return len(_BOM) if data.read(0, min(len(_BOM), len(data))) == _BOM else 0


def _int64(values: array) -> np.ndarray:  # type: ignore[type-arg]
    return np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, dtype=np.int64)


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{source}: not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r})"
        ) from None


def _utf8_line(source: str, line: bytes, offset: int) -> str:
    """A physical line as text; ``offset`` is where it starts in the file, for the message."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{source}: not UTF-8 text (byte {offset + error.start}: {line[error.start : error.start + 1]!r})"
        ) from None


def _columns_of(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return found


def repeated_key(text: str, value: dict[str, Any]) -> str | None:
    """A key that appears twice in the JSON object ``text`` (parsed: ``value``), which ``json`` reads
    with the last copy winning unseen; None when every key is unique.

    Every key is followed by a colon, so an object with no more colons than distinct keys repeats none:
    only other objects (colons in values, nested objects) are parsed again, keeping the key pairs.
    """
    if text.count(":") <= len(value):
        return None
    try:
        json.loads(text.lstrip("\ufeff"), object_pairs_hook=_unique_pairs)
    except _RepeatedKey as repeated:
        return repeated.key
    except ValueError:  # bytes json reads and str does not (UTF-16/32 guessed from NULs): not checked
        return None
    return None


def _read_jsonl(source: str, data: Bytes, fmt: str) -> Table:
    bom = _bom_length(data)
    starts, ends, lines = array("q"), array("q"), array("q")
    columns: dict[str, None] = {}
    # The first bad line is raised once the whole file is known to be UTF-8, which is said first.
    failure: InputError | None = None
    # JSON text cannot hold a raw line break, so records are physical lines (blank ones are skipped)
    for number, (offset, line) in enumerate(physical_lines(data.blocks(), skip=bom), start=1):
        text = _utf8_line(source, line, offset)
        if failure is not None or not line.strip():
            continue
        try:
            value = json_value(line, text)
        except json.JSONDecodeError as error:
            failure = InputError(f"{source}: line {number}: not valid JSON ({error.msg})")
            continue
        except UnicodeDecodeError as error:  # bytes guessed to be UTF-16/32 from NUL bytes
            failure = InputError(f"{source}: line {number}: not valid JSON ({error})")
            continue
        if not isinstance(value, dict):
            failure = InputError(
                f"{source}: line {number}: expected a JSON object, found {type(value).__name__}"
            )
            continue
        repeated = repeated_key(text, value)
        if repeated is not None:
            failure = InputError(
                f"{source}: line {number}: key {repeated!r} appears more than once in the object"
            )
            continue
        for key in value:
            if key not in columns:
                columns[key] = None
        starts.append(offset)
        ends.append(offset + len(line))
        lines.append(number)
    if failure is not None:
        raise failure
    header = data.read(0, bom) or None
    return _line_table(source, data, fmt, list(columns), parse_json_records, starts, ends, lines, header)


def _line_table(
    source: str,
    data: Bytes,
    fmt: str,
    columns: list[str],
    parse: Callable[[list[bytes]], list[dict[str, Any]]],
    starts: array,  # type: ignore[type-arg]
    ends: array,  # type: ignore[type-arg]
    lines: array,  # type: ignore[type-arg]
    header: bytes | None,
) -> Table:
    """The table of a line-based file (JSON Lines, CSV, TSV): record ``i`` is the bytes
    ``starts[i]:ends[i]`` and starts on line ``lines[i]``; ``parse`` turns records into rows when used."""
    assert data.sha256 is not None
    records = Records(data, _int64(starts), _int64(ends))
    return Table(
        source,
        fmt,
        columns,
        LineRows(records, parse),
        data.sha256,
        raw=records,
        header=header,
        lines=Ints(_int64(lines)),
    )


def _read_json_array(source: str, data: bytes, sha: str) -> Table:
    """A JSON array of objects, keeping each element's exact text so filtered output is byte for byte."""
    text = _decode(source, data)
    bom = _BOM if data.startswith(_BOM) else b""
    decoder = json.JSONDecoder()

    def fail(position: int, message: str) -> InputError:
        return InputError(
            f"{source}: not valid JSON (line {text.count(chr(10), 0, position) + 1}: {message})"
        )

    def skip_space(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    start = skip_space(0)
    if text[start : start + 1] != "[":
        raise fail(start, "expected a JSON array of objects")
    position = skip_space(start + 1)
    spans: list[tuple[int, int]] = []
    rows: list[dict[str, Any]] = []
    if text[position : position + 1] == "]":
        end_of_array = position
    else:
        while True:
            try:
                value, end = decoder.raw_decode(text, position)
            except json.JSONDecodeError as error:
                raise fail(error.pos, error.msg) from None
            if not isinstance(value, dict):
                raise InputError(
                    f"{source}: row {len(rows)}: expected a JSON object, found {type(value).__name__}"
                )
            repeated = repeated_key(text[position:end], value)
            if repeated is not None:
                raise InputError(
                    f"{source}: row {len(rows)}: key {repeated!r} appears more than once in the object"
                )
            rows.append(value)
            spans.append((position, end))
            position = skip_space(end)
            if text[position : position + 1] == ",":
                position = skip_space(position + 1)
                continue
            if text[position : position + 1] != "]":
                raise fail(position, "expected ',' or ']' after an array element")
            end_of_array = position
            break
    if text[skip_space(end_of_array + 1) :]:
        raise fail(skip_space(end_of_array + 1), "extra data after the array")
    # Elements are joined with the file's own separator; UTF-8 re-encodes each span to its original bytes.
    first = spans[0][0] if spans else end_of_array
    separator = text[spans[0][1] : spans[1][0]] if len(spans) > 1 else ", "
    footer = text[spans[-1][1] :] if spans else text[end_of_array:]
    return Table(
        source,
        "json",
        _columns_of(rows),
        rows,
        sha,
        raw=[text[a:b].encode("utf-8") for a, b in spans],
        header=bom + text[:first].encode("utf-8"),
        separator=separator.encode("utf-8"),
        footer=footer.encode("utf-8"),
    )


def _read_delimited(source: str, data: Bytes, fmt: str) -> Table:
    bom = _bom_length(data)
    consumed = [0, bom]  # physical lines read so far, and the offset where they end

    def feed() -> Iterator[str]:
        for offset, line in physical_lines(data.blocks(), skip=bom):
            text = _utf8_line(source, line, offset)
            consumed[:] = [consumed[0] + 1, offset + len(line)]
            yield text

    physical = feed()
    reader = delimited_reader(physical, fmt)
    starts, ends, lines = array("q"), array("q"), array("q")
    header: list[str] | None = None
    header_span = (bom, bom)
    # A bad header or field count is raised once the whole file is known to be readable CSV.
    problem: InputError | None = None
    first_line, first_offset = 0, bom  # where the record being read starts
    try:
        for fields in reader:
            if any(f.strip() for f in fields):
                if header is None:
                    header, header_span = fields, (first_offset, consumed[1])
                    try:
                        check_header(source, header, first_line + 1)
                    except InputError as error:
                        problem = error
                else:
                    if len(fields) != len(header) and problem is None:
                        problem = InputError(
                            f"{source}: line {first_line + 1}: {len(fields)} fields, but the header has {len(header)}"
                        )
                    starts.append(first_offset)
                    ends.append(consumed[1])
                    lines.append(first_line + 1)
            first_line, first_offset = consumed
    except csv.Error as error:
        malformed = InputError(f"{source}: line {reader.line_num}: malformed {fmt.upper()} ({error})")
        for _ in physical:  # the rest must still be UTF-8, which is said first
            pass
        raise malformed from None
    if header is None:
        raise InputError(f"{source}: the file holds no rows")
    if problem is not None:
        raise problem
    return _line_table(
        source,
        data,
        fmt,
        list(header),
        delimited_parser(list(header), fmt),
        starts,
        ends,
        lines,
        data.read(0, bom) + data.read(*header_span),
    )


def check_header(source: str, header: Sequence[str], line: int | None = 1) -> None:
    """Refuse a header with an empty or repeated column name: rows would silently lose a column (the first
    or the last copy winning). ``line`` is the header's line in a text file, None for Parquet's schema."""
    where = f"{source}: line {line}" if line is not None else source
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise InputError(f"{where}: column {position} of the header has an empty name")
        if name in seen:
            raise InputError(f"{where}: column name {name!r} appears more than once in the header")
        seen.add(name)


def _raise_field_size_limit() -> None:
    """Let fields be as large as the platform allows (the csv module's default stops at 128 KiB)."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long narrower than sys.maxsize (Windows)
            limit //= 2


_raise_field_size_limit()


def _read_parquet(source: str, data: Bytes) -> Table:
    if isinstance(data, FileBytes):
        data.verify()  # one pass over the bytes: the sha256
    try:
        with data.parquet() as parquet:
            columns = list(parquet.schema_arrow.names)
            groups = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            for _ in parquet.iter_batches(
                batch_size=CHUNK
            ):  # decode every page now: a damaged file fails here
                pass
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{source}: not a readable Parquet file ({error})") from None
    check_header(source, columns, None)
    assert data.sha256 is not None
    return Table(source, "parquet", columns, ParquetRows(data, groups), data.sha256)


# --------------------------------------------------------------------------------------------------
# validation of the columns tod-clean reads: each a pass over the column, keeping nothing per row but
# int64 arrays


def label_key(value: Any) -> str:
    """The text form labels are matched by, so ``1`` in JSON and ``"1"`` in CSV are the same class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def check_texts(table: Table, column: str) -> Sequence[str]:
    """The values of a text column (read from the table when used); each must be a non-empty string."""
    table.require_columns([column])
    for row, value in enumerate(table.iter_column(column)):
        if not isinstance(value, str):
            shown = "missing" if value is None else f"{type(value).__name__} {value!r}"
            raise InputError(f"{table.where(row)}, column {column!r}: expected text, found {shown}")
        if not value.strip():
            raise InputError(f"{table.where(row)}, column {column!r}: empty text")
    return table.column_view(column)


@dataclass
class LabelCodes:
    """A label column, read once: ``codes`` int32 ``[N]`` index ``keys``, the distinct label keys (see
    ``label_key``) in order of first appearance; ``any_text`` tells whether any label is a string."""

    codes: np.ndarray
    keys: list[str]
    any_text: bool


def label_codes(table: Table, column: str) -> LabelCodes:
    """The labels of a column, each a string or an integer (kept with the table: read once)."""
    known = table.scans.get(("labels", column))
    if known is not None:
        return known  # type: ignore[no-any-return]
    table.require_columns([column])
    codes = array("i")
    index: dict[str, int] = {}
    any_text = False
    for row, value in enumerate(table.iter_column(column)):
        bad = (
            value is None
            or isinstance(value, bool)
            or (isinstance(value, float) and (math.isnan(value) or not value.is_integer()))
            or not isinstance(value, (str, int, float))
            or (isinstance(value, str) and not value.strip())
        )
        if bad:
            raise InputError(
                f"{table.where(row)}, column {column!r}: expected a class label (text or integer), found {value!r}"
            )
        any_text = any_text or isinstance(value, str)
        key = label_key(value)
        code = index.get(key)
        if code is None:
            code = index[key] = len(index)
        codes.append(code)
    result = LabelCodes(np.frombuffer(codes, dtype=np.int32), list(index), any_text)
    table.scans["labels", column] = result
    return result


class _LabelKeys(LazySequence):
    def __init__(self, labels: LabelCodes) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels.codes)

    def __getitem__(self, index: Any) -> Any:
        keys = self.labels.keys
        if isinstance(index, slice):
            return [keys[code] for code in self.labels.codes[index].tolist()]
        return keys[int(self.labels.codes[index])]

    def __iter__(self) -> Iterator[str]:
        keys, codes = self.labels.keys, self.labels.codes
        for first in range(0, len(codes), CHUNK):
            yield from (keys[code] for code in codes[first : first + CHUNK].tolist())


def check_labels(table: Table, column: str) -> Sequence[str]:
    """Label keys (see ``label_key``) of a label column; each must be a string or an integer."""
    return _LabelKeys(label_codes(table, column))


def label_names_of(keys: Sequence[str]) -> list[str]:
    """Sorted distinct label keys: numerically when all look like integers, else alphabetically."""
    distinct = set(keys)
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses
    if all(re.fullmatch(r"-?[0-9]+", key) for key in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def _id_problem(value: Any) -> str | None:
    if (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    ):
        return "missing id"
    # an id is hashed by its text form, which only a plain value has stably (not a list or an object)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return f"expected an id (text or a number), found {type(value).__name__} {value!r}"
    return None


def check_ids(table: Table, column: str) -> Sequence[Any]:
    """Values of an id column (read from the table when used); each must be present and unique."""
    table.require_columns([column])
    hashes = np.empty(len(table), dtype=np.int64)
    bad: InputError | None = None
    checked = len(table)  # rows before the first bad one, among which a repeat is reported first
    for row, value in enumerate(table.iter_column(column)):
        problem = _id_problem(value)
        if problem is not None:
            bad, checked = InputError(f"{table.where(row)}, column {column!r}: {problem}"), row
            break
        hashes[row] = hash(label_key(value))
    repeat = _first_repeat(table, column, hashes[:checked])
    if repeat is not None:
        row, first, value = repeat
        raise InputError(
            f"{table.where(row)}, column {column!r}: duplicate id {value!r} (also at row {first}); "
            "instance ids must be unique"
        )
    if bad is not None:
        raise bad
    return table.column_view(column)


def _first_repeat(table: Table, column: str, hashes: np.ndarray) -> tuple[int, int, Any] | None:
    """The first row among rows ``0 .. len(hashes) - 1`` whose id repeats an earlier row's, that earlier
    row, and the id. Only rows whose id hash repeats (``hashes``) are read again, and compared exactly."""
    order = np.argsort(hashes, kind="stable")
    repeats = hashes[order][1:] == hashes[order][:-1]
    if not repeats.any():
        return None
    suspects = np.zeros(len(hashes), dtype=bool)
    suspects[order[1:][repeats]] = True
    suspects[order[:-1][repeats]] = True
    rows = np.flatnonzero(suspects)
    seen: dict[str, int] = {}
    for row, found in zip(rows.tolist(), table.rows_at(rows), strict=True):
        value = found.get(column)
        text = label_key(value)
        if text in seen:
            return row, seen[text], value
        seen[text] = row
    return None


# --------------------------------------------------------------------------------------------------
# writing


# Outputs behave like a shell redirection. A regular file, a symbolic link to one, or a new name is
# written to a temporary file beside the real target, which is renamed over it when complete: readers
# never see half a file, and a link stays a link. Anything else (a device such as /dev/null, a FIFO, a
# socket, and every path through /dev or /proc, such as /dev/stdout) cannot be replaced by a rename, so
# the finished output is written through it in place.

_SYSTEM_FOLDERS = (Path("/dev"), Path("/proc"))


def _link_chain(path: Path) -> list[Path]:
    """``path`` and every symbolic link it passes through on the way to its target, as absolute paths."""
    chain = [Path(os.path.abspath(path))]
    for _ in range(40):  # the kernel's own limit on links followed
        current = chain[-1]
        if not current.is_symlink():
            break
        chain.append(Path(os.path.abspath(current.parent / os.readlink(current))))
    return chain


def output_target(dest: str | Path) -> tuple[Path, bool]:
    """Where an output really goes: ``(path, in_place)``.

    ``in_place`` is True for a destination written through as it is (a device, FIFO or socket, or a
    path through /dev or /proc); otherwise ``path`` is the real file a rename must replace (symbolic
    links resolved, so the link itself is kept).
    """
    chain = _link_chain(Path(dest))
    if any(folder == link or folder in link.parents for link in chain for folder in _SYSTEM_FOLDERS):
        return Path(dest), True
    try:
        mode: int | None = os.stat(dest).st_mode
    except OSError:  # a new file, or a link to one
        mode = None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return Path(dest), True
    return Path(os.path.realpath(dest)), False


# errno values that say the destination cannot take the bytes, whatever wrote them: never a bug of ours.
_WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


def write_failure(error: BaseException) -> str | None:
    """Why a write failed, when ``error`` says the disk is full (or over quota, read-only, the file too
    big): an OSError's errno, or the "(os error N)" of a Rust library (safetensors, tokenizers). None
    for any other error, which keeps its traceback."""
    code = error.errno if isinstance(error, OSError) else None
    if code is None:
        found = re.search(r"\(os error (\d+)\)", str(error))
        code = int(found.group(1)) if found else None
    return os.strerror(code) if code in _WRITE_FAILURES else None


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


@contextlib.contextmanager
def atomic_output(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path; when the block succeeds, it becomes ``dest`` (see ``output_target``).

    On any failure, interruptions included, the temporary file is removed and ``dest`` is left as it was.
    """
    target, in_place = output_target(dest)
    if in_place:
        with tempfile.TemporaryDirectory(prefix="tod-clean-") as folder:
            tmp = Path(folder) / "output.tmp"
            try:
                yield tmp
            except Exception as error:
                reason = write_failure(error)
                if reason is None:
                    raise
                raise InputError(
                    f"{dest}: cannot write its temporary copy in {folder} ({reason}); free space there or "
                    "set TMPDIR"
                ) from None
            try:
                with open(tmp, "rb") as source, open(dest, "wb") as sink:
                    shutil.copyfileobj(source, sink)
            except OSError as error:
                raise InputError(f"{dest}: cannot write ({error.strerror})") from None
        return
    if not target.parent.is_dir():
        raise InputError(f"{dest}: the folder {target.parent} does not exist")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as error:
        raise InputError(f"{dest}: cannot write in the folder {target.parent} ({error.strerror})") from None
    os.close(handle)
    tmp_path = Path(name)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        yield tmp_path
        os.replace(tmp_path, target)
    except OSError as error:
        tmp_path.unlink(missing_ok=True)
        if error.filename not in (str(tmp_path), str(target)) or error.strerror is None:
            # raised by the caller's block: ours to reword only when the disk refused the bytes
            reason = write_failure(error)
            if reason is None:
                raise
            raise InputError(f"{dest}: cannot write ({reason})") from None
        raise InputError(f"{dest}: cannot write ({error.strerror})") from None
    except BaseException as error:
        tmp_path.unlink(missing_ok=True)
        reason = None if isinstance(error, TodCleanError) else write_failure(error)
        if reason is None:
            raise
        raise InputError(f"{dest}: cannot write ({reason})") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_destination(dest: str | Path) -> None:
    """Refuse, before any work is done, an output that cannot be written.

    A missing folder, a folder given as the output, a folder we may not write in, and a read-only file
    are refused; ``-`` (standard output) always passes.
    """
    if str(dest) == STDIN:
        return
    target, in_place = output_target(dest)
    if in_place:
        if not target.exists() or not _writable(target):
            raise InputError(f"{dest}: cannot write there (not a writable file or device)")
        return
    shown = str(dest) if target == Path(os.path.abspath(dest)) else f"{dest} (-> {target})"
    if target.is_dir():
        raise InputError(f"{shown}: is a folder, expected a file name")
    if not target.parent.is_dir():
        raise InputError(f"{shown}: the folder {target.parent} does not exist")
    if not _writable(target.parent):
        raise InputError(f"{shown}: the folder {target.parent} is not writable")
    if target.exists() and not _writable(target):
        raise InputError(f"{shown}: the file is read-only; tod-clean does not replace it")


def check_suffix(dest: str | Path | None, option: str, suffix: str, what: str) -> None:
    """Refuse an output file named for another format than the one ``option`` writes (``--matrix x.csv``
    would hold ``.npy`` bytes); ``-``, devices and FIFOs, which have no format of their own, pass."""
    if dest is None or str(dest) == STDIN or output_target(dest)[1]:
        return
    if Path(dest).suffix.lower() != suffix:
        raise InputError(f"{dest}: {option} writes {what}; give a file name ending in {suffix}")


def output_format(dest: str | Path, default: str) -> str:
    """The format of an output: by its extension, or ``default`` for ``-`` and for a device or FIFO
    without one (``--out /dev/stdout`` writes what ``--out -`` writes)."""
    if str(dest) == STDIN or (output_target(dest)[1] and Path(dest).suffix.lower() not in FORMATS):
        return default
    return format_of(str(dest))


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file: the same real path, or the same inode (hard links)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist yet
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    real_folder = Path(os.path.realpath(folder))
    return real_folder.is_dir() and real_folder in Path(os.path.realpath(path)).parents


def _collide(a: Path, b: Path) -> bool:
    """Two paths a command must not both read and write, or write twice.

    Devices, FIFOs and sockets (``/dev/null``, ``/dev/stdout``) are never replaced, so they may be named
    twice, as a shell allows.
    """
    if output_target(a)[1] and output_target(b)[1]:
        return False
    return _same_file(a, b) or _inside(a, b) or _inside(b, a)


def check_distinct_outputs(
    inputs: Mapping[str, str | Path | None], outputs: Mapping[str, str | Path | None]
) -> None:
    """Refuse, before any work, an output that is an input or another output of the same command.

    ``inputs`` and ``outputs`` map a name for messages (``--out``, ``the training file``) to a path;
    None is skipped. Paths are compared by real path and by file identity, so symbolic and hard links to
    an input are caught; a path inside a folder collides with the folder. ``-`` is standard input among
    the inputs and standard output among the outputs, where it may appear only once.
    """
    given_inputs = [
        (name, path, str(p) if is_hub_ref(str(p)) else None)
        for name, p in inputs.items()
        if p is not None and str(p) != STDIN and (path := _input_path(str(p))) is not None
    ]
    written: list[tuple[str, Path]] = []
    to_stdout: str | None = None
    for name, value in outputs.items():
        if value is None:
            continue
        if str(value) == STDIN:
            if to_stdout is not None:
                raise InputError(f"{to_stdout} and {name} both write to standard output; give one a file")
            to_stdout = name
            continue
        path = Path(value)
        for in_name, in_path, ref in given_inputs:
            if ref is not None and _inside(in_path, path):
                raise InputError(
                    f"{path}: {name} holds the Hugging Face datasets cache ({in_path}) that {in_name} ({ref}) "
                    "is read from; choose an output path outside it"
                )
            if ref is not None and _collide(path, in_path):
                raise InputError(
                    f"{path}: {name} is inside the Hugging Face datasets cache ({in_path}) that {in_name} "
                    f"({ref}) is read from, where it would be taken for a dataset; choose an output path "
                    "outside the cache"
                )
            if _collide(path, in_path):
                raise InputError(
                    f"{path}: {name} would overwrite {in_name} ({in_path}); choose another output path"
                )
        for out_name, out_path in written:
            if _collide(path, out_path):
                raise InputError(
                    f"{path}: {name} and {out_name} ({out_path}) are the same file; give each its own path"
                )
        written.append((name, path))


def _input_path(path: str) -> Path | None:
    """Where an input's data lie: the path, or for an ``hf:`` dataset the whole ``datasets`` cache (None
    when it is not cached: reading it will say so). Not just its prepared folder: a folder written beside
    it would be taken for a newer preparation (or, anywhere in the cache, for another dataset or
    configuration), and every later read of the dataset would read it."""
    if not is_hub_ref(path):
        return Path(path)
    try:
        locate(path)
    except InputError:
        return None
    return datasets_cache()


def check_outside_hub_cache(dest: str | Path) -> None:
    """Refuse a ``save_to_disk`` folder output inside the Hugging Face ``datasets`` cache, whatever the
    inputs: there it would be taken for a prepared hub dataset (see ``_input_path``)."""
    cache = datasets_cache()
    target = Path(os.path.abspath(dest))
    if _same_file(target, cache) or _inside(target, cache):
        raise InputError(
            f"{dest}: is inside the Hugging Face datasets cache ({cache}), where a dataset folder would be "
            "taken for a prepared hub dataset; choose an output folder outside the cache"
        )


def deliver(dest: str, payload: bytes, stdout: BinaryIO | None = None) -> None:
    """Write ``payload`` to ``dest`` atomically, or to stdout when ``dest`` is ``-``."""
    if dest == STDIN:
        out = stdout or sys.stdout.buffer
        out.write(payload)
        out.flush()
        return
    with atomic_output(dest) as tmp:
        tmp.write_bytes(payload)


def _with_newline(line: bytes) -> bytes:
    return line if line.endswith((b"\n", b"\r")) else line + b"\n"


def _write_rows(table: Table, indices: Sequence[int] | np.ndarray, sink: BinaryIO) -> None:
    """Write the rows at ``indices`` (in that order) to ``sink`` in the table's own format, unchanged,
    a chunk at a time (ascending indices in one pass over the file, which checks it has not changed)."""
    if table.format == DATASET_FORMAT:
        raise InputError(
            f"{table.source}: a dataset folder's rows are written as a dataset folder, not a file"
        )
    chosen = np.asarray(indices, dtype=np.int64)
    if table.json_array:
        assert table.raw is not None and table.header is not None and table.separator is not None
        raw = table.raw
        sink.write(table.header + table.separator.join(raw[i] for i in chosen.tolist()) + table.footer)
        return
    if table.format in ("jsonl", "json", "csv", "tsv"):
        assert table.raw is not None
        if table.format in ("csv", "tsv"):
            assert table.header is not None
            sink.write(_with_newline(table.header))
        else:
            sink.write(table.header or b"")
        chunks = (
            table.raw.chunks_at(chosen)
            if isinstance(table.raw, Records)
            else [[table.raw[i] for i in chosen]]
        )
        for chunk in chunks:
            sink.write(b"".join(_with_newline(record) for record in chunk))
        return
    assert isinstance(table.rows, ParquetRows)
    table.rows.write(chosen, sink)


def subset_bytes(table: Table, indices: Sequence[int] | np.ndarray) -> bytes:
    """The rows at ``indices`` (in that order), in the table's own format, unchanged."""
    buffer = io.BytesIO()
    _write_rows(table, indices, buffer)
    return buffer.getvalue()


def check_subset_destination(table: Table, dest: str) -> None:
    """Refuse a destination for rows of ``table`` in another format, or in a missing folder."""
    if table.format == DATASET_FORMAT:
        check_dataset_destination(table, dest)
        return
    check_destination(dest)
    if dest != STDIN:
        out_format = output_format(dest, table.format)
        line_json = not table.json_array and {out_format, table.format} <= {"jsonl", "json"}
        if out_format != table.format and not line_json:
            raise InputError(
                f"{dest}: write the kept rows in the input's format ({table.format}), not {out_format}"
            )


def write_subset(
    table: Table, indices: Sequence[int] | np.ndarray, dest: str, *, stdout: BinaryIO | None = None
) -> None:
    """Write the rows at ``indices`` unchanged, in the table's format, to ``dest`` or stdout (``-``).

    Rows stream to a temporary file (for stdout too) that becomes the output only when complete: a
    failure, or an input file that changed meanwhile, leaves no partial output.
    """
    check_subset_destination(table, dest)
    if table.format == DATASET_FORMAT:
        write_dataset_subset(table, indices, dest)
        return
    if dest == STDIN:
        with tempfile.TemporaryFile(prefix="tod-clean-") as spool:
            try:
                _write_rows(table, indices, spool)
                spool.seek(0)  # flushes the last rows
            except OSError as error:
                reason = write_failure(error)
                if reason is None:
                    raise
                raise InputError(
                    f"standard output: cannot hold the rows in {tempfile.gettempdir()} until they are complete "
                    f"({reason}); free space there, set TMPDIR, or pass --out FILE"
                ) from None
            out = stdout or sys.stdout.buffer
            shutil.copyfileobj(spool, out)
            out.flush()
        return
    with atomic_output(dest) as tmp, open(tmp, "wb") as sink:
        _write_rows(table, indices, sink)


def save_npy(dest: str | Path, array: np.ndarray) -> None:
    """Write a NumPy array as ``.npy`` atomically."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    with atomic_output(dest) as tmp:
        tmp.write_bytes(buffer.getvalue())


def frame_bytes(frame: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return frame.to_csv(index=False).encode("utf-8")
    if fmt == "tsv":
        return frame.to_csv(index=False, sep="\t").encode("utf-8")
    if fmt in ("jsonl", "json"):
        records = frame.to_dict(orient="records")
        clean = [{k: _json_safe(v) for k, v in r.items()} for r in records]
        if fmt == "json":
            return (json.dumps(clean, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in clean).encode("utf-8")
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def _json_safe(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def write_frame(frame: pd.DataFrame, dest: str, *, stdout: BinaryIO | None = None) -> None:
    """Write a DataFrame by ``dest``'s extension, or as CSV to stdout when ``dest`` is ``-``."""
    check_destination(dest)
    deliver(dest, frame_bytes(frame, output_format(dest, "csv")), stdout)


# --------------------------------------------------------------------------------------------------
# in-memory data: pandas DataFrames and Hugging Face datasets

IN_MEMORY_FORMAT = "jsonl"  # how in-memory rows are serialised, fingerprinted and kept in a run


def is_dataset(data: object) -> bool:
    """Whether ``data`` is a ``datasets.Dataset`` (checked without importing ``datasets``)."""
    datasets = sys.modules.get("datasets")
    return datasets is not None and isinstance(data, datasets.Dataset)


def to_table(
    data: str | os.PathLike[str] | pd.DataFrame | Any,
    *,
    stdin: BinaryIO | None = None,
    split: str | None = None,
    stdin_format: str | None = None,
) -> Table:
    """A ``Table`` from a data file path (see ``read_table``), a ``pandas.DataFrame`` or a
    ``datasets.Dataset``.

    In-memory rows become canonical JSON Lines (one ``json.dumps`` object per row, columns in the
    frame's order, UTF-8, NaN and missing values as ``null``), and the table is read back from those
    bytes: its ``sha256`` is the hash of that serialisation, so equal rows give equal fingerprints in any
    session, and ``data`` holds the bytes a run keeps as its copy of the training data. A Dataset's
    ``ClassLabel`` columns hold label names, not their integer codes.
    """
    if isinstance(data, (str, os.PathLike)):
        return read_table(os.fspath(data), stdin=stdin, split=split, stdin_format=stdin_format)
    if isinstance(data, pd.DataFrame):
        columns = [str(name) for name in data.columns]
        if len(set(columns)) != len(columns):
            repeated = next(name for name in columns if columns.count(name) > 1)
            raise InputError(f"<DataFrame>: column name {repeated!r} appears more than once")
        rows = [dict(zip(columns, values, strict=True)) for values in data.itertuples(index=False, name=None)]
        return table_from_records(rows, columns, source="<DataFrame>")
    if is_dataset(data):
        return table_from_records(_dataset_rows(data), list(data.column_names), source="<Dataset>")
    raise InputError(
        f"expected a data file path, a pandas DataFrame or a datasets.Dataset, got {type(data).__name__}"
    )


def _dataset_rows(dataset: Any) -> list[dict[str, Any]]:
    """A Dataset's rows as dicts, with ``ClassLabel`` codes replaced by their names (-1, no label: None)."""
    from datasets import ClassLabel

    rows: list[dict[str, Any]] = dataset.to_list()
    for name, feature in dataset.features.items():
        if isinstance(feature, ClassLabel):
            for row in rows:
                code = row[name]
                row[name] = None if code is None or code < 0 else feature.int2str(code)
    return rows


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)  # dates, decimals, ...: their text form


def _json_cell(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def table_from_records(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, source: str) -> Table:
    """A ``Table`` of in-memory rows through their canonical JSON Lines (see ``to_table``)."""
    if not rows:
        raise InputError(f"{source}: holds no rows")
    data = "".join(
        json.dumps(
            {name: _json_cell(row.get(name)) for name in columns}, ensure_ascii=False, default=_json_default
        )
        + "\n"
        for row in rows
    ).encode("utf-8")
    table = _read_jsonl(source, MemoryBytes(data), IN_MEMORY_FORMAT)
    table.columns = list(columns)
    table.lines = None  # rows have no lines to point at; messages name the row
    table.data = data
    return table


# --------------------------------------------------------------------------------------------------
# folders written by datasets' save_to_disk

DATASET_FORMAT = "dataset"


def is_dataset_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    folder = Path(path)
    if str(path) == STDIN or not folder.is_dir():
        return False
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def _arrow_sha256(files: Sequence[Path]) -> str:
    """sha256 over Arrow files (names and bytes, in name order): the rows' fingerprint."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda path: path.name):
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_dataset_dir(path: str, *, split: str | None = None) -> Table:
    """A ``save_to_disk`` folder as a Table (format ``dataset``).

    A DatasetDict needs ``split`` unless it holds one split. ``ClassLabel`` columns hold label names.
    ``sha256`` is a hash of the (split's) Arrow files, so a run can tell the same rows again.
    """
    try:
        from datasets import DatasetDict, load_from_disk
    except ImportError:  # pragma: no cover - a declared dependency
        raise InputError(f"{path}: reading a dataset folder needs the datasets package") from None
    try:
        loaded = load_from_disk(path)
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable dataset folder ({error})") from None
    folder = Path(path)
    if isinstance(loaded, DatasetDict):
        splits = list(loaded)
        if split is None:
            if len(splits) != 1:
                raise InputError(
                    f"{path}: a DatasetDict with splits {', '.join(splits)}; choose one with --split"
                )
            split = splits[0]
        if split not in loaded:
            raise InputError(f"{path}: no split {split!r}; splits found: {', '.join(splits)}")
        dataset, folder, source = loaded[split], folder / split, f"{path} (split {split})"
    else:
        if split is not None:
            raise InputError(f"{path}: holds one Dataset, not a DatasetDict; drop --split {split}")
        dataset, source = loaded, path
    if dataset.num_rows == 0:
        raise InputError(f"{source}: the dataset holds no rows")
    columns = list(dataset.column_names)
    sha = _arrow_sha256(list(folder.glob("*.arrow")))
    ref = str(Path(path).resolve())
    return Table(
        source, DATASET_FORMAT, columns, DatasetRows(dataset), sha, dataset=dataset, split=split, ref=ref
    )


def read_hub_dataset(ref: str, *, split: str | None = None) -> Table:
    """A hub dataset in the local Hugging Face cache (``hf:NAME[/CONFIG]``, see ``tod_clean.io.formats.hub``) as a
    Table (format ``dataset``), read offline; refused with one line when it is not cached.

    A dataset with several splits needs ``split``. ``ClassLabel`` columns hold label names. ``sha256`` is a
    hash of the split's Arrow files in the cache; ``ref`` names the configuration read (``hf:REPO/CONFIG``),
    so a run finds the same rows again even when another configuration is cached later.
    """
    cached = locate(ref)
    split = choose_split(cached, split, ref)
    dataset, files = load_split(cached, split)
    source = f"{ref} (split {split})"
    if dataset.num_rows == 0:
        raise InputError(f"{source}: the dataset holds no rows")
    sha = _arrow_sha256(files)
    return Table(
        source,
        DATASET_FORMAT,
        list(dataset.column_names),
        DatasetRows(dataset),
        sha,
        dataset=dataset,
        split=split,
        ref=cached.ref,
    )


def writes_folder(path: str) -> bool:
    """Whether the rows of the data at ``path`` (a data file, a dataset folder or an ``hf:`` dataset) are
    written as a ``save_to_disk`` folder: they have no bytes of their own to copy."""
    return is_hub_ref(path) or is_dataset_dir(path)


def check_dataset_destination(table: Table, dest: str) -> None:
    """Refuse an output for a dataset's rows that is not a new folder, an empty one, or a dataset
    folder (which is replaced), or that is named like a data file."""
    kind = "an hf: dataset's" if table.ref is not None and is_hub_ref(table.ref) else "a dataset folder's"
    if dest == STDIN:
        raise InputError(f"{table.source}: {kind} kept rows go to a folder: give --out FOLDER")
    check_outside_hub_cache(dest)
    target = Path(dest)
    if not target.exists() and target.suffix.lower() in FORMATS:
        raise InputError(
            f"{dest}: {kind} kept rows are written as a save_to_disk folder (its features kept), not as a "
            f"{target.suffix} file; give --out a folder name"
        )
    if target.exists() and not (target.is_dir() and (not any(target.iterdir()) or is_dataset_dir(target))):
        raise InputError(f"{dest}: exists and is not a dataset folder; give a new folder for the kept rows")
    if not target.resolve().parent.is_dir():
        raise InputError(f"{dest}: the folder {target.resolve().parent} does not exist")


def write_dataset_subset(table: Table, indices: Sequence[int] | np.ndarray, dest: str) -> None:
    """Save the rows at ``indices`` of a dataset's Dataset as a new ``save_to_disk`` folder, written beside
    ``dest`` and renamed into place when complete."""
    check_dataset_destination(table, dest)
    _save_dataset(table.dataset.select(np.asarray(indices, dtype=np.int64).tolist()), dest)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars while tod-clean saves (the CLI shows its own progress)."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    with warnings.catch_warnings():  # an HF_DATASETS_DISABLE_PROGRESS_BARS setting wins, with a warning
        warnings.simplefilter("ignore")
        disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                enable_progress_bars()


def _save_dataset(dataset: Any, dest: str | Path, *, extra: Mapping[str, bytes] | None = None) -> None:
    """``dataset.save_to_disk`` into a temporary folder beside ``dest`` (with ``extra`` files: name ->
    bytes), which then replaces ``dest``; on any failure ``dest`` is left as it was."""
    target = Path(dest).resolve()
    if not target.parent.is_dir():
        raise InputError(f"{dest}: the folder {target.parent} does not exist")
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    except OSError as error:
        raise InputError(f"{dest}: cannot write in the folder {target.parent} ({error.strerror})") from None
    try:
        with _quiet_datasets():
            dataset.save_to_disk(str(staging / "dataset"))
        for name, payload in (extra or {}).items():
            (staging / "dataset" / name).write_bytes(payload)
        if target.exists():
            # moved aside, not deleted, until the new folder is in place
            os.replace(target, staging / "old")
        os.replace(staging / "dataset", target)
    except Exception as error:
        reason = None if isinstance(error, TodCleanError) else write_failure(error)
        if reason is None:
            raise
        raise InputError(f"{dest}: cannot write ({reason})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# a DataFrame (scores) as a save_to_disk folder

# Written into every frame folder tod-clean saves: it marks the folder as tod-clean's (so a later write may
# replace it) and keeps the frame's attrs (what Parquet keeps in its schema metadata).
FRAME_MARKER = "tod-clean-frame.json"


def is_folder_name(dest: str | Path) -> bool:
    """Whether an output names a folder rather than a file: it ends with ``/`` or has no extension (a
    device such as ``/dev/stdout`` is a file)."""
    text = str(dest)
    if text == STDIN or output_target(text)[1]:
        return False
    return text.endswith(("/", os.sep)) or not Path(text).suffix


def frame_output_format(dest: str | Path, default: str = "csv") -> str:
    """The format of a frame output that may be a dataset folder: ``dataset`` for a folder name (see
    ``is_folder_name``), else by extension (``default`` for ``-``)."""
    return DATASET_FORMAT if is_folder_name(dest) else output_format(dest, default)


def is_frame_dir(path: str | Path) -> bool:
    """Whether ``path`` is a frame folder tod-clean wrote (``write_frame_dataset``)."""
    return is_dataset_dir(path) and (Path(path) / FRAME_MARKER).is_file()


def check_frame_folder_destination(dest: str | Path) -> None:
    """Refuse a folder for a frame unless it is new, empty, or a frame folder tod-clean wrote before."""
    check_outside_hub_cache(dest)
    target = Path(dest)
    if target.exists():
        if not target.is_dir():
            raise InputError(
                f"{dest}: exists and is not a folder; give a new folder name for a dataset folder"
            )
        if any(target.iterdir()) and not is_frame_dir(target):
            raise InputError(
                f"{dest}: exists and was not written by tod-clean; give a new or empty folder (tod-clean "
                "replaces only a folder it wrote)"
            )
    parent = Path(os.path.abspath(target)).parent
    if not parent.is_dir():
        raise InputError(f"{dest}: the folder {parent} does not exist")
    if not _writable(parent):
        raise InputError(f"{dest}: the folder {parent} is not writable")


def write_frame_dataset(frame: pd.DataFrame, dest: str | Path) -> None:
    """Save ``frame`` as a ``save_to_disk`` folder (one Dataset, columns and dtypes as Parquet keeps them),
    with ``frame.attrs`` in its marker file; atomically, replacing only a frame folder tod-clean wrote."""
    from datasets import Dataset

    check_frame_folder_destination(dest)
    marker = {"tool": "tod-clean", "attrs": frame.attrs}
    extra = {FRAME_MARKER: (json.dumps(marker, ensure_ascii=False, default=str, indent=1) + "\n").encode()}
    _save_dataset(Dataset.from_pandas(frame, preserve_index=False), dest, extra=extra)


def read_frame_dataset(path: str | Path) -> pd.DataFrame:
    """A frame folder (or any one-Dataset ``save_to_disk`` folder) as a DataFrame, attrs restored."""
    from datasets import Dataset, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable dataset folder ({error})") from None
    if not isinstance(loaded, Dataset):
        raise InputError(f"{path}: a DatasetDict with splits {', '.join(loaded)}; expected one Dataset")
    frame = loaded.to_pandas()
    assert isinstance(frame, pd.DataFrame)
    marker = Path(path) / FRAME_MARKER
    if marker.is_file():
        try:
            frame.attrs.update(json.loads(marker.read_text(encoding="utf-8")).get("attrs") or {})
        except (OSError, ValueError, AttributeError) as error:
            raise InputError(f"{marker}: cannot read ({error})") from None
    return frame
