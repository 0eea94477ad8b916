"""Where a table's rows live, and reading them a chunk at a time.

A data file is not held as Python objects. Its bytes stay where they are (a file read again by position,
or bytes already in memory: standard input, small files, in-memory data), with an index of where each
record starts and ends (int64 arrays); Parquet files and ``save_to_disk`` folders stay Arrow. Rows are
parsed when asked for, ``CHUNK`` at a time, so memory does not grow with the number of rows beyond those
index arrays.

A file is re-read at each pass over it. Every pass first checks that the file is still the one that was
read (device, inode, size, modification time), and a pass over all of its bytes also checks their sha256:
a file changed while tod-clean works is refused, never mixed into an output.

Why not ``datasets.load_dataset`` for files: not speed, memory or disk. Measured with ``bench/read_paths.py``
(BENCHMARKS.md section 11; 10^6 rows, 89 MiB of JSON Lines, 2 cores, medians of 3): read, check and tokenize
here take 52.7 s, peak RSS 544 MiB (398 MiB anonymous), a 43.9 MiB ``tokens/``; ``load_dataset("json")`` +
``.map(tokenize)`` take 39.4 s (36.6 s keeping only ``input_ids``), peak 717 MiB (466 MiB anonymous; the
rest are mapped Arrow pages), 186.6 MiB of cache (107.0 MiB lean), without train's column checks (9.5 s
of the 52.7 s here), and a second command reads its warm cache in 6.0 s against 17.3 s here (the file
is parsed and checked again). Anonymous memory grows no faster there from 10^5 to 10^6 rows (+31 MiB,
+53 MiB here). The reasons are the promises on files, which an Arrow table does not keep: the records'
bytes (``Dataset.to_json`` rewrites rows: key order, spacing, raw non-ASCII as ``\\u`` escapes, ``/`` as
``\\/``; one ``1.0`` label turns the others into ``0.0``/``1.0``, one extra column adds ``null`` to every
other row), the place of a bad value (a list label or a number text loads as a ``Json`` column; a
malformed line is "row 27414" of the 10 MiB block it fell in, for line 200,001) and each value's own type
(labels ``0`` then ``"0"`` load as the integer 0). Output bytes and line numbers need the per-record
offsets kept here in any case.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import operator
import os
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tod_clean.errors import InputError

BLOCK = 1 << 20  # bytes read at a time
CHUNK = 4096  # rows parsed at a time
# Files up to this size are read into memory once: small inputs stay fast, and need no re-reading.
IN_MEMORY_LIMIT = 1 << 20


# ---- bytes ------------------------------------------------------------------------------------------


class MemoryBytes:
    """Bytes held in memory (standard input, a small file, in-memory rows)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.sha256: str | None = hashlib.sha256(data).hexdigest()

    def __len__(self) -> int:
        return len(self.data)

    def blocks(self) -> Iterator[bytes]:
        yield self.data

    def read(self, start: int, stop: int) -> bytes:
        return self.data[start:stop]

    def spans(self, starts: np.ndarray, ends: np.ndarray, *, verify: bool) -> Iterator[list[bytes]]:
        data = self.data
        for first in range(0, len(starts), CHUNK):
            bounds = zip(
                starts[first : first + CHUNK].tolist(), ends[first : first + CHUNK].tolist(), strict=True
            )
            yield [data[a:b] for a, b in bounds]

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[int, int], bytes]]:
        yield self.read

    @contextlib.contextmanager
    def parquet(self) -> Iterator[pq.ParquetFile]:
        yield pq.ParquetFile(pa.BufferReader(self.data))

    def verify(self) -> None:
        pass


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class FileBytes:
    """A regular file, read again by position at each pass (see the module docstring)."""

    def __init__(self, path: str, info: os.stat_result) -> None:
        self.path = path
        self.identity = _identity(info)
        self.size = info.st_size
        self.sha256: str | None = None  # set by the first pass over every byte

    def __len__(self) -> int:
        return self.size

    def changed(self) -> InputError:
        return InputError(
            f"{self.path}: changed while tod-clean was reading it; run the command again once the file is complete"
        )

    @contextlib.contextmanager
    def _open(self) -> Iterator[BinaryIO]:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError:
            raise self.changed() from None
        with handle:
            if _identity(os.fstat(handle.fileno())) != self.identity:
                raise self.changed()
            yield handle

    def _check(self, digest: Any) -> None:
        if self.sha256 is None:
            self.sha256 = digest.hexdigest()
        elif digest.hexdigest() != self.sha256:
            raise self.changed()

    def blocks(self) -> Iterator[bytes]:
        """Every byte, ``BLOCK`` at a time; the sha256 is taken (first pass) or checked (later ones)."""
        digest = hashlib.sha256()
        with self._open() as handle:
            while block := handle.read(BLOCK):
                digest.update(block)
                yield block
        self._check(digest)

    def read(self, start: int, stop: int) -> bytes:
        with self.reader() as read:
            return read(start, stop)

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[int, int], bytes]]:
        """A function reading bytes ``start:stop``, for reads in any order."""
        with self._open() as handle:

            def read(start: int, stop: int) -> bytes:
                handle.seek(start)
                data = handle.read(stop - start)
                if len(data) != stop - start:
                    raise self.changed()
                return data

            yield read

    def spans(self, starts: np.ndarray, ends: np.ndarray, *, verify: bool) -> Iterator[list[bytes]]:
        """The bytes ``starts[i]:ends[i]`` (ascending starts), ``CHUNK`` records at a time, in one sequential
        read. With ``verify`` the whole file is read and its sha256 checked after the last record."""
        digest = hashlib.sha256() if verify else None
        with self._open() as handle:
            position = 0  # file offset of buffer[0]; position + len(buffer) is the offset read up to
            buffer = b""
            if digest is None and len(starts):
                position = int(starts[0])
                handle.seek(position)
            for first in range(0, len(starts), CHUNK):
                records = []
                bounds = zip(
                    starts[first : first + CHUNK].tolist(), ends[first : first + CHUNK].tolist(), strict=True
                )
                for start, stop in bounds:
                    while position + len(buffer) < stop:
                        block = handle.read(BLOCK)
                        if not block:
                            raise self.changed()
                        if digest is not None:
                            digest.update(block)
                        keep = min(start, position + len(buffer))  # drop what lies before this record
                        buffer = buffer[keep - position :] + block
                        position = keep
                    records.append(buffer[start - position : stop - position])
                yield records
            if digest is not None:
                while block := handle.read(BLOCK):
                    digest.update(block)
                self._check(digest)

    @contextlib.contextmanager
    def parquet(self) -> Iterator[pq.ParquetFile]:
        with self._open() as handle:
            yield pq.ParquetFile(handle)

    def verify(self) -> None:
        """Read every byte again and check the sha256."""
        for _ in self.blocks():
            pass


Bytes = MemoryBytes | FileBytes


def open_bytes(path: str, stdin: BinaryIO | None, *, stdin_name: str = "-") -> Bytes:
    """The bytes of ``path`` (standard input for ``stdin_name``): in memory up to ``IN_MEMORY_LIMIT``
    (and for anything but a regular file, such as a pipe), else left in the file."""
    if path == stdin_name:
        return MemoryBytes((stdin or sys.stdin.buffer).read())
    try:
        with open(path, "rb") as handle:
            info = os.fstat(handle.fileno())
            if stat.S_ISREG(info.st_mode) and info.st_size > IN_MEMORY_LIMIT:
                return FileBytes(path, info)
            return MemoryBytes(handle.read())
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a data file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read ({error.strerror})") from None


def physical_lines(blocks: Iterator[bytes], *, skip: int = 0) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` of each physical line from byte ``skip`` on, ``line`` with its end.

    Lines end only at ``\\r\\n``, ``\\r`` or ``\\n`` (``bytes.splitlines``; a line end of UTF-8 text is never
    part of a multi-byte character), the same split whether the bytes come in one block or many.
    """
    offset = 0
    carry = b""
    for block in blocks:
        if skip:
            cut = min(skip, len(block))
            block, skip, offset = block[cut:], skip - cut, offset + cut
        data = carry + block if carry else block
        if not data:
            continue
        lines = data.splitlines(keepends=True)
        # the last line may go on in the next block: no line end yet, or a \r that a \n may follow
        carry = lines.pop() if not lines[-1].endswith(b"\n") else b""
        for line in lines:
            yield offset, line
            offset += len(line)
    if carry:
        yield offset, carry


# ---- sequences read on demand -------------------------------------------------------------------------


class LazySequence(Sequence[Any]):
    """A sequence read on demand; equal to any sequence with equal items (so tests compare it to lists)."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {len(self)}>"


def _position(index: Any, length: int) -> int:
    position = operator.index(index)
    if position < 0:
        position += length
    if not 0 <= position < length:
        raise IndexError(f"row {index} out of range (0..{length - 1})")
    return position


def _ascending(indices: np.ndarray) -> bool:
    return bool(np.all(indices[1:] >= indices[:-1]))


class Ints(LazySequence):
    """An int64 array seen as a sequence of Python ints (line numbers)."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.values[index].tolist()
        return int(self.values[_position(index, len(self))])

    def __iter__(self) -> Iterator[int]:
        for first in range(0, len(self.values), CHUNK):
            yield from self.values[first : first + CHUNK].tolist()


class Records(LazySequence):
    """The exact bytes of each record: ``source`` bytes ``starts[i]:ends[i]``."""

    def __init__(self, source: Bytes, starts: np.ndarray, ends: np.ndarray) -> None:
        self.source, self.starts, self.ends = source, starts, ends

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return [record for chunk in self.chunks(start, stop) for record in chunk]
            return [self[i] for i in range(start, stop, step)]
        position = _position(index, len(self))
        return self.source.read(int(self.starts[position]), int(self.ends[position]))

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks(0, len(self)):
            yield from chunk

    def chunks(self, start: int, stop: int) -> Iterator[list[bytes]]:
        """Records ``start .. stop - 1``; a pass over all of them checks the file's sha256 too."""
        whole = start == 0 and stop == len(self)
        yield from self.source.spans(self.starts[start:stop], self.ends[start:stop], verify=whole)

    def chunks_at(self, indices: np.ndarray) -> Iterator[list[bytes]]:
        """The records at ``indices``: ascending ones in one checked pass over the file, others by position."""
        if _ascending(indices):
            yield from self.source.spans(self.starts[indices], self.ends[indices], verify=True)
            return
        with self.source.reader() as read:
            for first in range(0, len(indices), CHUNK):
                chosen = indices[first : first + CHUNK]
                bounds = zip(self.starts[chosen].tolist(), self.ends[chosen].tolist(), strict=True)
                yield [read(a, b) for a, b in bounds]
        self.source.verify()


class LazyRows(LazySequence):
    """Rows (dicts) parsed from their storage ``CHUNK`` at a time."""

    length: int

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step == 1:
                return [row for chunk in self.chunks(start, stop) for row in chunk]
            return [self[i] for i in range(start, stop, step)]
        return self.one(_position(index, len(self)))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for chunk in self.chunks(0, len(self)):
            yield from chunk

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        raise NotImplementedError

    def one(self, index: int) -> dict[str, Any]:
        return self[index : index + 1][0]  # type: ignore[no-any-return]

    def values(self, name: str, start: int, stop: int) -> Iterator[Any]:
        """The values of column ``name`` in rows ``start .. stop - 1`` (None where a row lacks it)."""
        for chunk in self.chunks(start, stop):
            for row in chunk:
                yield row.get(name)

    def at(self, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        """The rows at ``indices``, in that order."""
        if not len(indices):
            return
        if not _ascending(indices):
            for index in indices.tolist():
                yield self.one(index)
            return
        position, j = int(indices[0]), 0
        for chunk in self.chunks(position, int(indices[-1]) + 1):
            end = position + len(chunk)
            while j < len(indices) and indices[j] < end:
                yield chunk[int(indices[j]) - position]
                j += 1
            position = end


class LineRows(LazyRows):
    """Rows of a line-based file (JSON Lines, CSV, TSV): each parsed from its record's bytes."""

    def __init__(self, records: Records, parse: Callable[[list[bytes]], list[dict[str, Any]]]) -> None:
        self.records, self.parse, self.length = records, parse, len(records)

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        for raw in self.records.chunks(start, stop):
            yield self.parse(raw)

    def one(self, index: int) -> dict[str, Any]:
        return self.parse([self.records[index]])[0]

    def at(self, indices: np.ndarray) -> Iterator[dict[str, Any]]:
        for raw in self.records.chunks_at(indices):
            yield from self.parse(raw)


def json_value(line: bytes, text: str) -> Any:
    """``json.loads`` of a line as bytes (which also takes a leading UTF-8 BOM, and guesses UTF-16/32 from
    NUL bytes), through its decoded ``text`` where that is the same and faster."""
    if line[:3] == b"\xef\xbb\xbf" or b"\x00" in line[:4]:
        return json.loads(line)
    return json.loads(text)


def parse_json_records(records: list[bytes]) -> list[dict[str, Any]]:
    return [json_value(record, record.decode("utf-8")) for record in records]


def delimited_parser(header: list[str], fmt: str) -> Callable[[list[bytes]], list[dict[str, Any]]]:
    """A parser of CSV/TSV records (each one or more physical lines) into dicts keyed by ``header``."""

    def parse(records: list[bytes]) -> list[dict[str, Any]]:
        lines = (line.decode("utf-8") for record in records for line in record.splitlines(keepends=True))
        rows = [dict(zip(header, fields, strict=True)) for fields in delimited_reader(lines, fmt)]
        assert len(rows) == len(records)
        return rows

    return parse


def delimited_reader(lines: Iterator[str], fmt: str) -> Any:
    # TSV (IANA text/tab-separated-values) has no quoting: a quote is an ordinary character.
    if fmt == "tsv":
        return csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    return csv.reader(lines, delimiter=",")


class ParquetRows(LazyRows):
    """Rows of a Parquet file, decoded a batch at a time."""

    def __init__(self, source: Bytes, row_groups: list[int]) -> None:
        self.source = source
        self.group_starts = np.concatenate([[0], np.cumsum(row_groups, dtype=np.int64)])
        self.length = int(self.group_starts[-1])

    def _batches(self, start: int, stop: int, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        """Record batches covering rows ``start .. stop - 1`` exactly."""
        if start >= stop:
            return
        first = int(np.searchsorted(self.group_starts, start, side="right")) - 1
        last = int(np.searchsorted(self.group_starts, stop - 1, side="right")) - 1
        with self.source.parquet() as parquet:
            position = int(self.group_starts[first])
            groups = list(range(first, last + 1))
            for batch in parquet.iter_batches(batch_size=CHUNK, row_groups=groups, columns=columns):
                end = position + batch.num_rows
                if end > start and position < stop:
                    yield batch.slice(max(start - position, 0), min(stop, end) - max(start, position))
                position = end

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        for batch in self._batches(start, stop, None):
            yield batch.to_pylist()

    def values(self, name: str, start: int, stop: int) -> Iterator[Any]:
        for batch in self._batches(start, stop, [name]):
            yield from batch.column(0).to_pylist()

    def write(self, indices: np.ndarray, handle: BinaryIO) -> None:
        """The rows at ``indices`` (in that order) as a Parquet file, with the schema of this one."""
        with self.source.parquet() as parquet:
            writer = pq.ParquetWriter(handle, parquet.schema_arrow)
            if not _ascending(indices):
                writer.write_table(parquet.read().take(pa.array(indices)))
            else:
                pending: list[pa.RecordBatch] = []
                position, j = 0, 0
                for batch in parquet.iter_batches(batch_size=CHUNK):
                    end = position + batch.num_rows
                    k = int(np.searchsorted(indices, end))
                    if k > j:
                        pending.append(batch.take(pa.array(indices[j:k] - position)))
                        j = k
                    position = end
                    if sum(b.num_rows for b in pending) >= 16 * CHUNK:
                        writer.write_table(pa.Table.from_batches(pending, parquet.schema_arrow))
                        pending = []
                if pending:
                    writer.write_table(pa.Table.from_batches(pending, parquet.schema_arrow))
            writer.close()
        self.source.verify()


class DatasetRows(LazyRows):
    """Rows of a ``datasets.Dataset`` (memory-mapped Arrow), with ``ClassLabel`` codes as their names
    (-1, no label: None)."""

    def __init__(self, dataset: Any) -> None:
        from datasets import ClassLabel

        self.dataset, self.length = dataset, dataset.num_rows
        self.class_labels = {
            name: feature for name, feature in dataset.features.items() if isinstance(feature, ClassLabel)
        }

    def _named(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for name, feature in self.class_labels.items():
            for row in rows:
                code = row[name]
                row[name] = None if code is None or code < 0 else feature.int2str(code)
        return rows

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        for first in range(start, stop, CHUNK):
            # rows as Dataset.to_list gives them (Arrow values, whatever format the Dataset has)
            yield self._named(self.dataset.select(range(first, min(stop, first + CHUNK))).to_list())
