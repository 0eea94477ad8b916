"""Checks of the columns tod-clean reads (texts, labels, ids, header names), each a pass over the
column that keeps nothing per row but int64 arrays.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tod_clean.errors import InputError
from tod_clean.io.rows import CHUNK, LazySequence
from tod_clean.io.table import Table


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
