"""How the pipelines write a scores or predictions frame: a file by its extension, or a ``save_to_disk``
folder for a name without one."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tod_clean.io.formats.dataset_dir import DATASET_FORMAT
from tod_clean.io.frames import (
    check_frame_folder_destination,
    frame_output_format,
    write_frame,
    write_frame_dataset,
)
from tod_clean.io.paths import check_destination


def check_frame_destination(dest: str | Path) -> None:
    """Refuse a scores output before the work: a folder name (a ``save_to_disk`` folder, see
    ``frame_output_format``) that may not be written, a file with an unsupported extension or that
    cannot be written."""
    if frame_output_format(dest) == DATASET_FORMAT:
        check_frame_folder_destination(dest)
    else:
        check_destination(dest)


def save_frame(frame: pd.DataFrame, dest: str | Path) -> None:
    """Write a scores frame: a ``save_to_disk`` folder for a folder name, else a file by its extension."""
    if frame_output_format(dest) == DATASET_FORMAT:
        write_frame_dataset(frame, dest)
    else:
        write_frame(frame, str(dest))
