"""``Table``, the rows of one input (a data file, standard input, a dataset folder, an ``hf:`` dataset or
in-memory rows) as the readers in ``tod_clean.io.formats`` leave them, and ``ColumnView``, one column read
when used."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tod_clean.errors import InputError
from tod_clean.io.rows import LazyRows, LazySequence


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
                return type(self)(self.table, self.name, self.start + start, self.start + max(start, stop))
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
