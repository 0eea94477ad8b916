"""Image folders: ``DIR/<label>/<file>`` (the layout ``datasets``' ``imagefolder`` reads), one class per
sub-folder, read as a table of two columns, ``image`` (the file's path relative to ``DIR``) and ``label``
(the sub-folder's name).

Rows are the images in order of label, then file name (so the same folder always gives the same rows and
instance keys). Files directly in ``DIR`` (a README, a metadata file) are left out; inside a class folder
hidden files (``.DS_Store``) are left out and every other file must be an image with one of
``IMAGE_SUFFIXES``. A class folder that holds no image, or only one, is refused: one image is no class a
classifier can learn, and ``filter`` would have to keep it whatever its score. The fingerprint (sha256) is
taken over every image's relative path and bytes, so a run can tell the same images again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tod_clean.errors import InputError
from tod_clean.io import STDIN
from tod_clean.io.formats.base import DatasetSource
from tod_clean.io.formats.dataset_dir import is_dataset_dir
from tod_clean.io.images import IMAGE_FOLDER_FORMAT, IMAGE_SUFFIXES
from tod_clean.io.table import Table

IMAGE_COLUMN = "image"
LABEL_COLUMN = "label"


def _visible(folder: Path) -> list[Path]:
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def is_image_folder(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a folder (not a ``save_to_disk`` one) with a sub-folder holding an image file."""
    folder = Path(path)
    if str(path) == STDIN or not folder.is_dir() or is_dataset_dir(folder):
        return False
    try:
        return any(
            entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES
            for sub in folder.iterdir()
            if sub.is_dir()
            for entry in sub.iterdir()
        )
    except OSError:
        return False


def read_image_folder(path: str, split: str | None = None) -> Table:
    """An image folder as a Table (format ``imagefolder``; see the module docstring)."""
    if split is not None:
        raise InputError(f"{path}: an image folder has no splits; drop --split {split}")
    root = Path(path)
    rows: list[dict[str, str]] = []
    digest = hashlib.sha256()
    for class_folder in (entry for entry in _visible(root) if entry.is_dir()):
        images = []
        for entry in _visible(class_folder):
            if entry.is_dir():
                raise InputError(
                    f"{entry}: a folder inside the class folder {class_folder.name!r}; an image folder is "
                    f"DIR/<label>/<file> with the images directly in each label's folder"
                )
            if entry.suffix.lower() not in IMAGE_SUFFIXES:
                raise InputError(
                    f"{entry}: not an image file (tod-clean reads {', '.join(IMAGE_SUFFIXES)}); move it out of "
                    "the class folder"
                )
            images.append(entry)
        if not images:
            raise InputError(f"{class_folder}: an empty class folder (no images); add images or remove it")
        if len(images) == 1:
            raise InputError(
                f"{class_folder}: the class {class_folder.name!r} has one image ({images[0].name}); a class "
                "needs at least two to be learned, and filter would have to keep its one image whatever its "
                "score: add images or remove the folder"
            )
        for image in images:
            relative = image.relative_to(root).as_posix()
            rows.append({IMAGE_COLUMN: relative, LABEL_COLUMN: class_folder.name})
            digest.update(relative.encode("utf-8") + b"\0")
            try:
                digest.update(image.read_bytes())
            except OSError as error:
                raise InputError(f"{image}: cannot read ({error.strerror})") from None
    if not rows:
        raise InputError(f"{path}: no class folders (DIR/<label>/<file>) with images")
    ref = str(root.resolve())
    return Table(path, IMAGE_FOLDER_FORMAT, [IMAGE_COLUMN, LABEL_COLUMN], rows, digest.hexdigest(), ref=ref)


IMAGE_FOLDER = DatasetSource("image folder", is_image_folder, read_image_folder)
