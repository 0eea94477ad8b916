"""The kept images of an image folder as a manifest: a CSV file of ``image`` (a path) and ``label``.

``filter`` never moves, copies or deletes a user's image: what it writes for an image folder is this list
of the images kept, which tod-clean (and pandas, or ``datasets``' CSV loader) reads back as a table of
image paths. A CSV rather than JSON Lines, because a manifest is a list a user opens in a spreadsheet or
checks with ``grep``; rather than a new folder of links, because links break on other file systems and
when copied. Paths are written relative to the manifest's own folder, the folder tod-clean resolves a
table's relative image paths against, so the manifest moves together with the images; a manifest written
to standard output, or on another drive than its images, holds absolute paths.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tod_clean.errors import InputError
from tod_clean.io import STDIN
from tod_clean.io.images import image_base
from tod_clean.io.table import Table

MANIFEST_SUFFIX = ".csv"


def check_manifest_destination(table: Table, dest: str) -> None:
    """Refuse a manifest output not named ``.csv`` (standard output and devices pass)."""
    if dest != STDIN and Path(dest).suffix.lower() != MANIFEST_SUFFIX and not dest.startswith("/dev/"):
        raise InputError(
            f"{dest}: an image folder's kept images are written as a CSV manifest of their paths and labels "
            f"(the images stay where they are); give a file name ending in {MANIFEST_SUFFIX}"
        )


def manifest_bytes(
    table: Table, indices: Sequence[int] | np.ndarray, dest: str, image_col: str, label_col: str
) -> bytes:
    """The manifest of the rows at ``indices`` (in that order) for a file at ``dest``."""
    base = image_base(table)
    # the folder with its links followed: a reader goes up ("..") from where a link points, not from the
    # link (so a manifest written into a linked folder still finds its images)
    folder = None if dest == STDIN or dest.startswith("/dev/") else Path(os.path.realpath(dest)).parent
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "label"])
    for row in table.rows_at(indices):
        path = Path(os.path.abspath(base / str(row[image_col])))
        shown = str(path)
        if folder is not None:
            with contextlib.suppress(ValueError):  # another drive (Windows): the absolute path
                shown = Path(os.path.relpath(path, folder)).as_posix()
        writer.writerow([shown, row[label_col]])
    return buffer.getvalue().encode("utf-8")
