"""Training and validation instances: texts or images, label ids and instance keys taken from a validated
table; and the image column of a table, found when the options do not name it."""

from __future__ import annotations

import dataclasses
import logging
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tod_clean.config import DEFAULT_IMAGE_MODEL, DEFAULT_MODEL, DataColumns, TrainConfig
from tod_clean.errors import InputError, OptionError
from tod_clean.io.columns import LabelCodes, check_ids, check_texts, label_codes, label_names_of
from tod_clean.io.images import ImageColumn, check_images, find_image_column
from tod_clean.io.table import Table
from tod_clean.masks import MASK_SCHEME, key_from_id

log = logging.getLogger(__name__)


@dataclass
class Instances:
    """N rows ready for the model.

    ``texts``, ``text_pairs``, ``ids``: the validated columns' values, read from the table when used
    (``tod_clean.io.table.ColumnView``; plain lists work too); ``texts`` is None for images;
    ``images``: the validated image column (``tod_clean.io.images.ImageColumn``), None for texts;
    ``labels``: int64 ``[N]`` class indices into the run's label list (-1 where the table has no labels);
    ``instance_keys``: int64 ``[N]`` the row number, or a hash of the id column's value;
    ``ids``: the id column's values, if one was given.
    """

    texts: Sequence[str] | None
    text_pairs: Sequence[str] | None
    labels: np.ndarray
    instance_keys: np.ndarray
    ids: Sequence[Any] | None
    images: ImageColumn | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def shown(self, row: int) -> str:
        """Row ``row`` as outputs show it: its text, or its image's name (its path as written, or a note that
        the cell holds the image's bytes)."""
        if self.images is not None:
            return self.images.label(self.images[row])
        assert self.texts is not None
        return self.texts[row]

    def rows(self, start: int, stop: int) -> Instances:
        """The instances of rows ``start .. stop - 1`` (their keys unchanged: masks do not move)."""
        return Instances(
            None if self.texts is None else self.texts[start:stop],
            None if self.text_pairs is None else self.text_pairs[start:stop],
            self.labels[start:stop],
            self.instance_keys[start:stop],
            None if self.ids is None else self.ids[start:stop],
            None if self.images is None else self.images[start:stop],
        )


def resolve_columns(table: Table, columns: DataColumns) -> DataColumns:
    """``columns`` with the image column found, when the rows are images the options did not name: an
    image column is looked for when ``image_col`` is unset and the table has no ``text_col``, or when
    ``image_col`` (the training data's) is not a column of this table (say, an image folder's ``image``)."""
    if columns.images and columns.image_col in table.columns:
        return columns
    if not columns.images and columns.text_col in table.columns:
        return columns
    found = find_image_column(table) if len(table) else None
    return columns if found is None else dataclasses.replace(columns, image_col=found)


def for_table(config: TrainConfig, table: Table) -> TrainConfig:
    """``config`` for training on ``table``: its image column found (see ``resolve_columns``) and, for
    images, the default model the embedded image classifier; ``--augment`` refused for texts. An image or
    text column the options named (other than the default ``text``) must be a column of ``table``."""
    named = config.columns.image_col or config.columns.text_col
    if config.columns.images or named != DataColumns().text_col:
        # a column the options named must be there: not replaced by an image column found by type
        table.require_columns([named])
    columns = resolve_columns(table, config.columns)
    model = DEFAULT_IMAGE_MODEL if columns.images and config.model == DEFAULT_MODEL else config.model
    if config.augment and not columns.images:
        raise OptionError("augment", "transforms images; these rows are texts (no image column)")
    if columns == config.columns and model == config.model:
        return config
    return dataclasses.replace(config, columns=columns, model=model)


def instance_keys_of(
    table: Table, id_col: str | None, mask_scheme: int = MASK_SCHEME
) -> tuple[np.ndarray, Sequence[Any] | None]:
    """Instance keys ``[N]`` int64: row numbers, or stable hashes of a unique id column."""
    if id_col is None:
        return np.arange(len(table), dtype=np.int64), None
    ids = check_ids(table, id_col)
    keys = np.fromiter((key_from_id(value, mask_scheme) for value in ids), dtype=np.int64, count=len(ids))
    return keys, ids


def label_ids(table: Table, column: str, label_names: Sequence[Any]) -> np.ndarray:
    """Class indices of a label column, refusing labels the training data did not have."""
    index = {str(name): position for position, name in enumerate(label_names)}
    labels = label_codes(table, column)
    unknown = [code for code, key in enumerate(labels.keys) if key not in index]
    if unknown:
        row = int(np.flatnonzero(np.isin(labels.codes, unknown))[0])
        known = ", ".join(str(name) for name in label_names)
        key = labels.keys[labels.codes[row]]
        alike = [name for name in index if _spelling(name) == _spelling(key)]
        cased = [name for name in index if _spelling(name).casefold() == _spelling(key).casefold()]
        hint = ""
        if alike:
            hint = (
                f"; it differs from the training label {alike[0]!r} only in white space or Unicode "
                f"normalization (code points {ascii(key)} and {ascii(alike[0])})"
            )
        elif cased:
            hint = f"; it differs from the training label {cased[0]!r} only by case"
        raise InputError(
            f"{table.where(row)}, column {column!r}: label {key!r} was not in the "
            f"training data (labels: {known}){hint}"
        )
    # the class index of each distinct key, looked up by each row's code
    return np.array([index[key] for key in labels.keys], dtype=np.int64)[labels.codes]


def _spelling(key: str) -> str:
    """The form two spellings of one label share: NFC and no surrounding white space."""
    return unicodedata.normalize("NFC", key).strip()


def _first_rows(labels: LabelCodes) -> np.ndarray:
    """The first row of each distinct label key: int64 ``[len(keys)]``."""
    first = np.full(len(labels.keys), -1, dtype=np.int64)
    codes, rows = np.unique(labels.codes, return_index=True)
    first[codes] = rows
    return first


def check_label_spellings(table: Table, column: str, labels: LabelCodes) -> None:
    """Refuse two labels that are one after NFC normalization and stripping white space ("café" typed
    two ways print alike but would be two classes); warn about labels that differ only by case (which may
    be meant: they stay two classes)."""
    first = _first_rows(labels)
    seen: dict[str, int] = {}
    by_case: dict[str, int] = {}
    for code, key in enumerate(labels.keys):
        spelling = _spelling(key)
        other = seen.setdefault(spelling, code)
        if other != code:
            a, b = labels.keys[other], key
            how = (
                "surrounding white space"
                if a.strip() == b.strip()
                else f"Unicode normalization (code points {ascii(a)} and {ascii(b)})"
            )
            raise InputError(
                f"{table.where(int(first[code]))}, column {column!r}: label {b!r} and label {a!r} "
                f"({table.where(int(first[other]))}) differ only in {how}, so they would be two classes; "
                "write each label one way"
            )
        cased = by_case.setdefault(spelling.casefold(), code)
        if cased != code:
            log.warning(
                "%s, column %r: labels %r and %r (%s) differ only by case; they are trained as two classes",
                table.where(int(first[code])),
                column,
                key,
                labels.keys[cased],
                table.where(int(first[cased])),
            )


def training_labels(table: Table, column: str) -> list[Any]:
    """The sorted label names of a training table; at least two classes are required, and no two may
    be spellings of one label (see ``check_label_spellings``)."""
    labels = label_codes(table, column)
    if labels.any_text:
        check_label_spellings(table, column, labels)
    names = label_names_of(labels.keys)
    if len(names) < 2:
        raise InputError(
            f"{table.source}, column {column!r}: found only one label ({names[0]!r}); a classifier needs two or more"
        )
    # Integer labels (JSON, Parquet) stay integers in outputs; text labels stay text, "01" included.
    if not labels.any_text:
        return [int(name) for name in names]
    return list(names)


def instances_from_table(
    table: Table,
    columns: DataColumns,
    label_names: Sequence[Any] | None,
    *,
    with_keys: bool = True,
    mask_scheme: int = MASK_SCHEME,
) -> Instances:
    """Validate the text (or image), pair, label and id columns of ``table`` and build its instances.

    With ``label_names=None`` the table has no labels to read (``labels`` is all -1). Images are each
    decoded once here, so a bad one is refused before any work (``tod_clean.io.images``).
    """
    columns = resolve_columns(table, columns) if columns.images else columns
    if columns.images:
        table.require_columns([columns.image_col])
    else:
        table.require_columns([columns.text_col, columns.text_pair_col])
    if label_names is not None:
        table.require_columns([columns.label_col])
    texts = images = pairs = None
    if columns.images:
        assert columns.image_col is not None
        images = check_images(table, columns.image_col)
    else:
        texts = check_texts(table, columns.text_col)
        pairs = check_texts(table, columns.text_pair_col) if columns.text_pair_col else None
    if label_names is None:
        labels = np.full(len(table), -1, dtype=np.int64)
    else:
        labels = label_ids(table, columns.label_col, label_names)
    if with_keys:
        keys, ids = instance_keys_of(table, columns.id_col, mask_scheme)
    else:
        keys, ids = np.arange(len(table), dtype=np.int64), None
    return Instances(texts, pairs, labels, keys, ids, images)
