"""Folders written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (memory-mapped Arrow)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tod_clean.errors import InputError
from tod_clean.io import STDIN
from tod_clean.io.formats.base import DatasetSource
from tod_clean.io.rows import CHUNK, LazyRows
from tod_clean.io.table import Table

DATASET_FORMAT = "dataset"


def is_dataset_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    folder = Path(path)
    if str(path) == STDIN or not folder.is_dir():
        return False
    return (folder / "dataset_dict.json").is_file() or (
        (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()
    )


def arrow_sha256(files: Sequence[Path]) -> str:
    """sha256 over Arrow files (names and bytes, in name order): the rows' fingerprint."""
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda path: path.name):
        digest.update(path.name.encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def read_dataset_dir(path: str, split: str | None = None) -> Table:
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
    sha = arrow_sha256(list(folder.glob("*.arrow")))
    ref = str(Path(path).resolve())
    return Table(
        source, DATASET_FORMAT, columns, DatasetRows(dataset), sha, dataset=dataset, split=split, ref=ref
    )


class DatasetRows(LazyRows):
    """Rows of a ``datasets.Dataset`` (memory-mapped Arrow), with ``ClassLabel`` codes as their names
    (-1, no label: None)."""

    def __init__(self, dataset: Any) -> None:
        from datasets import ClassLabel

        self.dataset, self.length = dataset, dataset.num_rows
        self.class_labels = {
            name: feature for name, feature in dataset.features.items() if isinstance(feature, ClassLabel)
        }

    def named(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``rows`` of the Dataset with their ClassLabel codes replaced by names, in place."""
        for name, feature in self.class_labels.items():
            for row in rows:
                code = row[name]
                row[name] = None if code is None or code < 0 else feature.int2str(code)
        return rows

    def chunks(self, start: int, stop: int) -> Iterator[list[dict[str, Any]]]:
        for first in range(start, stop, CHUNK):
            # rows as Dataset.to_list gives them (Arrow values, whatever format the Dataset has)
            yield self.named(self.dataset.select(range(first, min(stop, first + CHUNK))).to_list())


DATASET_DIR = DatasetSource("dataset folder", is_dataset_dir, read_dataset_dir)
