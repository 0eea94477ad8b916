"""Data entering tod-clean as a Table: a data file, standard input, a dataset folder or an ``hf:`` dataset
through the registered readers (``tod_clean.io.formats``), or in-memory rows (a DataFrame, a Dataset).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from tod_clean.errors import InputError
from tod_clean.io import STDIN
from tod_clean.io.formats import DATASET_SOURCES, FILE_FORMATS, FORMATS, check_stdin_format, format_of
from tod_clean.io.formats.dataset_dir import DatasetRows
from tod_clean.io.formats.jsonl import read_jsonl
from tod_clean.io.images import IMAGE_SUFFIXES
from tod_clean.io.rows import MemoryBytes, open_bytes
from tod_clean.io.table import Table


def read_table(
    path: str, *, stdin: BinaryIO | None = None, split: str | None = None, stdin_format: str | None = None
) -> Table:
    """Read a data file by extension, standard input when ``path`` is ``-`` (in ``stdin_format``: JSON
    Lines when None; ignored for other paths), a folder written by ``Dataset.save_to_disk`` /
    ``DatasetDict.save_to_disk``, or a hub dataset in the local Hugging Face cache named
    ``hf:NAME[/CONFIG]`` (``split`` chooses the split of a DatasetDict folder or a hub dataset; see
    ``formats.dataset_dir.read_dataset_dir`` and ``formats.hub.read_hub_dataset``). Each is read by the
    reader ``tod_clean.io.formats`` registers for it.

    Every record is parsed (and refused with its line if it cannot be) as the file is read, but rows are
    not kept: the table parses them again from the file when they are used. Files up to
    ``rows.IN_MEMORY_LIMIT`` bytes, standard input and JSON arrays are held in memory. Dataset folders and
    hf: datasets are memory-mapped.
    """
    for dataset_source in DATASET_SOURCES:
        if dataset_source.claims(path):
            return dataset_source.read(path, split)
    if split is not None:
        raise InputError(
            f"{path}: not a dataset folder (save_to_disk) or an hf: dataset, so it has no split {split!r}"
        )
    if path != STDIN and Path(path).is_dir() and Path(path).suffix.lower() not in FORMATS:
        raise InputError(
            f"{path}: a folder, but neither an image folder (class folders holding image files: "
            f"{', '.join(IMAGE_SUFFIXES)}; no class folder here holds one) nor a datasets save_to_disk folder"
        )
    fmt = format_of(path, default=check_stdin_format(stdin_format))
    data = open_bytes(path, stdin, stdin_name=STDIN)
    source = "<stdin>" if path == STDIN else path
    table = FILE_FORMATS[fmt].read(source, data)
    if not len(table):
        raise InputError(f"{source}: the file holds no rows")
    if isinstance(data, MemoryBytes):
        table.data = data.data
    table.ref = None if path == STDIN else str(Path(path).resolve())
    return table


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
        return table_from_records(
            DatasetRows(data).named(data.to_list()), list(data.column_names), source="<Dataset>"
        )
    raise InputError(
        f"expected a data file path, a pandas DataFrame or a datasets.Dataset, got {type(data).__name__}"
    )


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
    table = read_jsonl(source, MemoryBytes(data), IN_MEMORY_FORMAT)
    table.columns = list(columns)
    table.lines = None  # rows have no lines to point at; messages name the row
    table.data = data
    return table
