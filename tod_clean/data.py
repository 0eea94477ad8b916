"""Reading, validating and writing tabular text data: JSONL, JSON, CSV, TSV and Parquet.

Rows are kept in two forms: parsed values for the columns tod-clean reads, and (for the line-based
formats) the exact bytes of every record, so a filtered file reproduces each kept row byte for byte.
All writes go to a temporary file that is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import csv
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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tod_clean.errors import InputError
from tod_clean.hub import choose_split, is_hub_ref, load_split, locate

STDIN = "-"
_BOM = b"\xef\xbb\xbf"
# Physical lines end only at \r\n, \r or \n (str.splitlines would also split at \x0c, U+2028, ...).
_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+\Z")
FORMATS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def format_of(path: str, *, default: str | None = None) -> str:
    """The data format named by a path's extension (``-`` means ``default``)."""
    if path == STDIN and default is not None:
        return default
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(
            f"{path}: unsupported file type {Path(path).suffix or '(no extension)'!r}; "
            f"use one of {', '.join(FORMATS)} (or - for JSON Lines on standard input)"
        )
    return fmt


@dataclass
class Table:
    """A data file held in memory.

    ``rows`` are parsed records (dicts). ``raw`` holds each record's exact bytes for JSONL, JSON arrays,
    CSV and TSV; ``header`` is what comes before the first record (the CSV/TSV header line, a UTF-8 BOM,
    a JSON array's opening bracket); for a JSON array ``separator`` is the text between two elements and
    ``footer`` what follows the last one. ``arrow`` holds the table for Parquet. ``lines`` gives the
    1-based line where each record starts, for error messages.
    """

    source: str
    format: str
    columns: list[str]
    rows: list[dict[str, Any]]
    sha256: str
    raw: list[bytes] | None = None
    header: bytes | None = None
    arrow: pa.Table | None = None
    lines: list[int] | None = None
    data: bytes = field(default=b"", repr=False)
    separator: bytes | None = None  # set only for a JSON array
    footer: bytes = b""
    dataset: Any = None  # the datasets.Dataset of a save_to_disk folder or an hf: dataset (format "dataset")
    split: str | None = None  # the split read from a DatasetDict folder or an hf: dataset
    # how to read the same rows again: an absolute path or hf:REPO/CONFIG (None for stdin and in-memory rows)
    ref: str | None = None

    @property
    def json_array(self) -> bool:
        return self.separator is not None

    def __len__(self) -> int:
        return len(self.rows)

    def where(self, row: int) -> str:
        """``file: row N (line L)`` for messages; rows count from 0 like the ``row`` output column."""
        line = f" (line {self.lines[row]})" if self.lines is not None else ""
        return f"{self.source}: row {row}{line}"

    def to_frame(self) -> pd.DataFrame:
        """All columns as a DataFrame (object values as parsed; CSV values stay text)."""
        return pd.DataFrame(self.rows, columns=self.columns)

    def column(self, name: str) -> list[Any]:
        self.require_columns([name])
        return [row.get(name) for row in self.rows]

    def require_columns(self, names: Sequence[str | None]) -> None:
        for name in names:
            if name is not None and name not in self.columns:
                raise InputError(
                    f"{self.source}: column {name!r} not found; columns found: {', '.join(self.columns) or '(none)'}"
                )


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_bytes(path: str, stdin: BinaryIO | None) -> bytes:
    if path == STDIN:
        return (stdin or sys.stdin.buffer).read()
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a data file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def read_table(path: str, *, stdin: BinaryIO | None = None, split: str | None = None) -> Table:
    """Read a data file by extension, JSON Lines from standard input when ``path`` is ``-``, a folder
    written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or a hub dataset in the local
    Hugging Face cache named ``hf:NAME[/CONFIG]`` (``split`` chooses the split of a DatasetDict folder or
    a hub dataset; see ``read_dataset_dir`` and ``read_hub_dataset``)."""
    if is_hub_ref(path):
        return read_hub_dataset(path, split=split)
    if is_dataset_dir(path):
        return read_dataset_dir(path, split=split)
    if split is not None:
        raise InputError(
            f"{path}: not a dataset folder (save_to_disk) or an hf: dataset, so it has no split {split!r}"
        )
    fmt = format_of(path, default="jsonl")
    data = _read_bytes(path, stdin)
    source = "<stdin>" if path == STDIN else path
    sha = hashlib.sha256(data).hexdigest()
    if fmt == "parquet":
        table = _read_parquet(source, data, sha)
    elif fmt == "json" and data.removeprefix(_BOM).lstrip()[:1] == b"[":
        table = _read_json_array(source, data, sha)
    elif fmt in ("jsonl", "json"):
        table = _read_jsonl(source, data, sha, fmt)
    else:
        table = _read_delimited(source, data, sha, fmt)
    if not table.rows:
        raise InputError(f"{source}: the file holds no rows")
    table.data = data
    table.ref = None if path == STDIN else str(Path(path).resolve())
    return table


def _decode(source: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{source}: not UTF-8 text (byte {error.start}: {data[error.start : error.start + 1]!r})"
        ) from None


def _columns_of(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _read_jsonl(source: str, data: bytes, sha: str, fmt: str) -> Table:
    _decode(source, data)  # reject non-UTF-8 early with a clear message
    bom = _BOM if data.startswith(_BOM) else b""
    rows: list[dict[str, Any]] = []
    raw: list[bytes] = []
    lines: list[int] = []
    # JSON text cannot hold a raw line break, so records are physical lines (blank ones are skipped)
    for number, line in enumerate(data[len(bom) :].splitlines(keepends=True), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{source}: line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(value, dict):
            raise InputError(f"{source}: line {number}: expected a JSON object, found {type(value).__name__}")
        rows.append(value)
        raw.append(line)
        lines.append(number)
    return Table(source, fmt, _columns_of(rows), rows, sha, raw=raw, header=bom or None, lines=lines)


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


def _read_delimited(source: str, data: bytes, sha: str, fmt: str) -> Table:
    text = _decode(source, data)
    bom = len(data) - len(data.removeprefix(b"\xef\xbb\xbf"))
    physical = _LINE.findall(text)
    consumed: list[int] = []

    def feed() -> Iterator[str]:
        for index, line in enumerate(physical):
            consumed.append(index)
            yield line

    # TSV (IANA text/tab-separated-values) has no quoting: a quote is an ordinary character.
    if fmt == "tsv":
        reader = csv.reader(feed(), delimiter="\t", quoting=csv.QUOTE_NONE)
    else:
        reader = csv.reader(feed(), delimiter=",")
    records: list[tuple[list[str], int, int]] = []  # fields, first physical line, end line (exclusive)
    start = 0
    try:
        for fields in reader:
            end = consumed[-1] + 1
            if any(f.strip() for f in fields):
                records.append((fields, start, end))
            start = end
    except csv.Error as error:
        raise InputError(f"{source}: line {reader.line_num}: malformed {fmt.upper()} ({error})") from None
    if not records:
        raise InputError(f"{source}: the file holds no rows")
    header, h_start, h_end = records[0]
    _check_header(source, header, h_start + 1)
    encoded = [line.encode("utf-8") for line in physical]
    header_bytes = data[:bom] + b"".join(encoded[h_start:h_end])
    rows: list[dict[str, Any]] = []
    raw: list[bytes] = []
    lines: list[int] = []
    for fields, first, end in records[1:]:
        if len(fields) != len(header):
            raise InputError(
                f"{source}: line {first + 1}: {len(fields)} fields, but the header has {len(header)}"
            )
        rows.append(dict(zip(header, fields, strict=True)))
        raw.append(b"".join(encoded[first:end]))
        lines.append(first + 1)
    return Table(source, fmt, list(header), rows, sha, raw=raw, header=header_bytes, lines=lines)


def _check_header(source: str, header: list[str], line: int) -> None:
    """Refuse a header with an empty or repeated column name: rows would silently lose a column."""
    seen: set[str] = set()
    for position, name in enumerate(header, start=1):
        if not name.strip():
            raise InputError(f"{source}: line {line}: column {position} of the header has an empty name")
        if name in seen:
            raise InputError(
                f"{source}: line {line}: column name {name!r} appears more than once in the header"
            )
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


def _read_parquet(source: str, data: bytes, sha: str) -> Table:
    try:
        arrow = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as error:
        raise InputError(f"{source}: not a readable Parquet file ({error})") from None
    return Table(source, "parquet", list(arrow.column_names), arrow.to_pylist(), sha, arrow=arrow)


# --------------------------------------------------------------------------------------------------
# validation of the columns tod-clean reads


def label_key(value: Any) -> str:
    """The text form labels are matched by, so ``1`` in JSON and ``"1"`` in CSV are the same class."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def check_texts(table: Table, column: str) -> list[str]:
    """The values of a text column; each must be a non-empty string."""
    texts = table.column(column)
    for row, value in enumerate(texts):
        if not isinstance(value, str):
            shown = "missing" if value is None else f"{type(value).__name__} {value!r}"
            raise InputError(f"{table.where(row)}, column {column!r}: expected text, found {shown}")
        if not value.strip():
            raise InputError(f"{table.where(row)}, column {column!r}: empty text")
    return texts


def check_labels(table: Table, column: str) -> list[str]:
    """Label keys (see ``label_key``) of a label column; each must be a string or an integer."""
    keys = []
    for row, value in enumerate(table.column(column)):
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
        keys.append(label_key(value))
    return keys


def label_names_of(keys: Sequence[str]) -> list[str]:
    """Sorted distinct label keys: numerically when all look like integers, else alphabetically."""
    distinct = set(keys)
    # ASCII digits only: str.isdigit() is also true of "²", which int() refuses
    if all(re.fullmatch(r"-?[0-9]+", key) for key in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def check_ids(table: Table, column: str) -> list[Any]:
    """Values of an id column; each must be present and unique."""
    ids = table.column(column)
    seen: dict[str, int] = {}
    for row, value in enumerate(ids):
        if (
            value is None
            or (isinstance(value, str) and not value.strip())
            or (isinstance(value, float) and math.isnan(value))
        ):
            raise InputError(f"{table.where(row)}, column {column!r}: missing id")
        # an id is hashed by its text form, which only a plain value has stably (not a list or an object)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise InputError(
                f"{table.where(row)}, column {column!r}: expected an id (text or a number), "
                f"found {type(value).__name__} {value!r}"
            )
        text = label_key(value)
        if text in seen:
            raise InputError(
                f"{table.where(row)}, column {column!r}: duplicate id {value!r} (also at row {seen[text]}); "
                "instance ids must be unique"
            )
        seen[text] = row
    return ids


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
            yield tmp
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
            raise  # raised by the caller's block: not ours to reword
        raise InputError(f"{dest}: cannot write ({error.strerror})") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


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
        (name, path)
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
        for in_name, in_path in given_inputs:
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
    """Where an input's data lie: the path, or for an ``hf:`` dataset its folder in the cache (None when it
    is not cached: reading it will say so)."""
    if not is_hub_ref(path):
        return Path(path)
    try:
        return locate(path).folder
    except InputError:
        return None


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


def subset_bytes(table: Table, indices: Sequence[int]) -> bytes:
    """The rows at ``indices`` (in that order), in the table's own format, unchanged."""
    if table.format == DATASET_FORMAT:
        raise InputError(
            f"{table.source}: a dataset folder's rows are written as a dataset folder, not a file"
        )
    if table.json_array:
        assert table.raw is not None and table.header is not None and table.separator is not None
        return table.header + table.separator.join(table.raw[i] for i in indices) + table.footer
    if table.format in ("jsonl", "json"):
        assert table.raw is not None
        return (table.header or b"") + b"".join(_with_newline(table.raw[i]) for i in indices)
    if table.format in ("csv", "tsv"):
        assert table.raw is not None and table.header is not None
        return _with_newline(table.header) + b"".join(_with_newline(table.raw[i]) for i in indices)
    assert table.arrow is not None
    buffer = io.BytesIO()
    pq.write_table(table.arrow.take(pa.array(np.asarray(indices, dtype=np.int64))), buffer)
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


def write_subset(table: Table, indices: Sequence[int], dest: str, *, stdout: BinaryIO | None = None) -> None:
    """Write the rows at ``indices`` unchanged, in the table's format, to ``dest`` or stdout (``-``)."""
    check_subset_destination(table, dest)
    if table.format == DATASET_FORMAT:
        write_dataset_subset(table, indices, dest)
        return
    deliver(dest, subset_bytes(table, indices), stdout)


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
        return read_table(os.fspath(data), stdin=stdin, split=split)
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
    table = _read_jsonl(source, data, hashlib.sha256(data).hexdigest(), IN_MEMORY_FORMAT)
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
    rows = _dataset_rows(dataset)
    columns = list(dataset.column_names)
    sha = _arrow_sha256(list(folder.glob("*.arrow")))
    ref = str(Path(path).resolve())
    return Table(source, DATASET_FORMAT, columns, rows, sha, dataset=dataset, split=split, ref=ref)


def read_hub_dataset(ref: str, *, split: str | None = None) -> Table:
    """A hub dataset in the local Hugging Face cache (``hf:NAME[/CONFIG]``, see ``tod_clean.hub``) as a
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
    rows = _dataset_rows(dataset)
    sha = _arrow_sha256(files)
    return Table(
        source,
        DATASET_FORMAT,
        list(dataset.column_names),
        rows,
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


def write_dataset_subset(table: Table, indices: Sequence[int], dest: str) -> None:
    """Save the rows at ``indices`` of a dataset's Dataset as a new ``save_to_disk`` folder, written beside
    ``dest`` and renamed into place when complete."""
    check_dataset_destination(table, dest)
    _save_dataset(table.dataset.select(list(indices)), dest)


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
