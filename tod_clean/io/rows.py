"""Where a table's rows live, and reading them a chunk at a time.

A data file is not held as Python objects. Its bytes stay where they are (a file read again by position,
or bytes already in memory: standard input, small files, in-memory data), with an index of where each
record starts and ends (int64 arrays); Parquet files and ``save_to_disk`` folders stay Arrow (their row
sequences, ``ParquetRows`` and ``DatasetRows``, are in ``tod_clean.io.formats``). Rows are
parsed when asked for, ``CHUNK`` at a time, so memory does not grow with the number of rows beyond those
index arrays.

A file is re-read at each pass over it. Every pass first checks that the file is still the one that was
read (device, inode, size, modification time), and a pass over all of its bytes also checks their sha256:
a file changed while tod-clean works is refused, never mixed into an output.

Why not ``datasets.load_dataset`` for files: not speed, memory or disk (``bench/read_paths.py`` measures
both; BENCHMARKS.md section 11 has the figures), but the promises on files, which an Arrow table does not
keep: the records' bytes (``Dataset.to_json`` rewrites rows: key order, spacing, raw non-ASCII as ``\\u``
escapes, ``/`` as ``\\/``; one ``1.0`` label turns the others into ``0.0``/``1.0``, one extra column adds
``null`` to every other row), the place of a bad value (a list label or a number text loads as a ``Json``
column; a malformed line is "row 27414" of the 10 MiB block it fell in, for line 200,001) and each value's
own type (labels ``0`` then ``"0"`` load as the integer 0). Output bytes and line numbers need the
per-record offsets kept here in any case.
"""

from __future__ import annotations

import contextlib
import hashlib
import operator
import os
import stat
import sys
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tod_clean.errors import InputError
from tod_clean.io import STDIN

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

    def blocks(self) -> Generator[bytes, None, None]:
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

    def blocks(self) -> Generator[bytes, None, None]:
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


def open_bytes(path: str, stdin: BinaryIO | None, *, stdin_name: str = STDIN) -> Bytes:
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


def is_ascending(indices: np.ndarray) -> bool:
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
        if is_ascending(indices):
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
        if not is_ascending(indices):
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


def sha256_of_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
