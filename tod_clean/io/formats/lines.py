"""What the readers of line-based files (JSON Lines, CSV, TSV) share: the UTF-8 BOM, UTF-8 lines, and the
Table of a file whose records are byte spans.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable
from typing import Any

import numpy as np

from tod_clean.errors import InputError
from tod_clean.io.rows import Bytes, Ints, LineRows, Records
from tod_clean.io.table import Table

BOM = b"\xef\xbb\xbf"


def bom_length(data: Bytes) -> int:
    return len(BOM) if data.read(0, min(len(BOM), len(data))) == BOM else 0


def _int64(values: array) -> np.ndarray:  # type: ignore[type-arg]
    return np.frombuffer(values, dtype=np.int64) if len(values) else np.zeros(0, dtype=np.int64)


def utf8_line(source: str, line: bytes, offset: int) -> str:
    """A physical line as text; ``offset`` is where it starts in the file, for the message."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(
            f"{source}: not UTF-8 text (byte {offset + error.start}: {line[error.start : error.start + 1]!r})"
        ) from None


def line_table(
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
