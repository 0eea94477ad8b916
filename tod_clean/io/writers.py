"""Writing a table's rows back unchanged (a subset, in the input's own format, or a dataset folder), and
atomic writes of bytes and arrays.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from tod_clean.errors import InputError, TodCleanError
from tod_clean.io import STDIN
from tod_clean.io.formats import FORMATS, format_of
from tod_clean.io.formats.dataset_dir import DATASET_FORMAT, is_dataset_dir
from tod_clean.io.formats.hub import is_hub_ref
from tod_clean.io.formats.image_folder import IMAGE_COLUMN, LABEL_COLUMN
from tod_clean.io.formats.parquet import ParquetRows
from tod_clean.io.images import IMAGE_FOLDER_FORMAT
from tod_clean.io.manifest import check_manifest_destination, manifest_bytes
from tod_clean.io.paths import (
    atomic_output,
    check_destination,
    check_outside_hub_cache,
    output_target,
    write_failure,
)
from tod_clean.io.rows import Records
from tod_clean.io.table import Table


def output_format(dest: str | Path, default: str) -> str:
    """The format of an output: by its extension, or ``default`` for ``-`` and for a device or FIFO
    without one (``--out /dev/stdout`` writes what ``--out -`` writes)."""
    if str(dest) == STDIN or (output_target(dest)[1] and Path(dest).suffix.lower() not in FORMATS):
        return default
    return format_of(str(dest))


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
    if table.format == IMAGE_FOLDER_FORMAT:
        check_manifest_destination(table, dest)
        return
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
    failure, or an input file that changed meanwhile, leaves no partial output. An image folder's rows are
    written as a CSV manifest of the kept images (``tod_clean.io.manifest``); no image is touched.
    """
    check_subset_destination(table, dest)
    if table.format == DATASET_FORMAT:
        write_dataset_subset(table, indices, dest)
        return
    if table.format == IMAGE_FOLDER_FORMAT:
        deliver(dest, manifest_bytes(table, indices, dest, IMAGE_COLUMN, LABEL_COLUMN), stdout)
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
    save_dataset(table.dataset.select(np.asarray(indices, dtype=np.int64).tolist()), dest)


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


def save_dataset(dataset: Any, dest: str | Path, *, extra: Mapping[str, bytes] | None = None) -> None:
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
