"""Input formats, one reader module each, and the registry ``read_table`` looks them up in.

- ``jsonl``: JSON Lines; ``json_array``: JSON arrays (a ``.json`` file without one is JSON Lines);
  ``delimited``: CSV and TSV; ``parquet``: Parquet; ``lines``: what the line-based readers share.
- ``dataset_dir``: ``save_to_disk`` folders; ``hub``: ``hf:`` datasets in the local Hugging Face cache.
- ``image_folder``: image folders (``DIR/<label>/<file>``).
- ``base``: what a reader implements (how to add a format).

The registry is the two tuples below; their order is the order formats are named in messages and the
order paths are tried in.
"""

from __future__ import annotations

from pathlib import Path

from tod_clean.errors import InputError
from tod_clean.io import STDIN
from tod_clean.io.formats import dataset_dir, delimited, hub, image_folder, json_array, jsonl, parquet
from tod_clean.io.formats.base import DatasetSource, FileFormat

FILE_FORMATS: dict[str, FileFormat] = {
    file_format.name: file_format
    for file_format in (jsonl.JSONL, json_array.JSON, delimited.CSV, delimited.TSV, parquet.PARQUET)
}
# tried before the file formats, in this order
DATASET_SOURCES: tuple[DatasetSource, ...] = (hub.HUB, dataset_dir.DATASET_DIR, image_folder.IMAGE_FOLDER)
# file suffix -> format name
FORMATS = {file_format.suffix: name for name, file_format in FILE_FORMATS.items()}


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
