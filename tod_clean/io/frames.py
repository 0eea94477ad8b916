"""DataFrames (score tables) as outputs: CSV, TSV, JSON Lines, JSON or Parquet bytes, or a ``save_to_disk``
folder that tod-clean marks as its own.
"""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tod_clean.errors import InputError
from tod_clean.io import STDIN
from tod_clean.io.formats.dataset_dir import DATASET_FORMAT, is_dataset_dir
from tod_clean.io.paths import check_destination, check_outside_hub_cache, output_target, writable
from tod_clean.io.writers import deliver, output_format, save_dataset


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
    check_outside_hub_cache(dest)
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
    if not writable(parent):
        raise InputError(f"{dest}: the folder {parent} is not writable")


def write_frame_dataset(frame: pd.DataFrame, dest: str | Path) -> None:
    """Save ``frame`` as a ``save_to_disk`` folder (one Dataset, columns and dtypes as Parquet keeps them),
    with ``frame.attrs`` in its marker file; atomically, replacing only a frame folder tod-clean wrote."""
    from datasets import Dataset

    check_frame_folder_destination(dest)
    marker = {"tool": "tod-clean", "attrs": frame.attrs}
    extra = {FRAME_MARKER: (json.dumps(marker, ensure_ascii=False, default=str, indent=1) + "\n").encode()}
    save_dataset(Dataset.from_pandas(frame, preserve_index=False), dest, extra=extra)


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
