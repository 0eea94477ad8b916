"""Ranking training rows by a score column and choosing the rows to drop."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tod_clean.data import (
    Table,
    check_header,
    check_ids,
    check_labels,
    format_of,
    is_dataset_dir,
    label_key,
    read_frame_dataset,
    read_table,
)
from tod_clean.errors import ConfigError, InputError, RunDirError
from tod_clean.rows import delimited_reader
from tod_clean.rundir import RunInfo

# Which end of each score column marks a row to remove.
WORSE_WHEN_LOWER = ("influence", "hidden_prob", "full_prob")
WORSE_WHEN_HIGHER = ("self_influence", "hidden_loss", "full_loss", "exposed_loss")
SIGNALS = WORSE_WHEN_LOWER + WORSE_WHEN_HIGHER

# The label-error signal used when no validation set was scored (chosen in BENCHMARKS.md).
DEFAULT_SELF_SIGNAL = "full_loss"


def default_signal(columns: list[str]) -> str:
    """``influence`` when a validation set was scored, else the default label-error signal."""
    for name in ("influence", DEFAULT_SELF_SIGNAL, "full_loss"):
        if name in columns:
            return name
    raise ConfigError(f"no score column to filter by; columns found: {', '.join(columns)}")


def check_scores(scores: np.ndarray, by: str, source: str) -> None:
    """Refuse NaN or infinite scores, naming the first bad row."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise InputError(
            f"{source}: row {bad[0]}, column {by!r}: score is {scores[bad[0]]}, expected a finite number"
        )


def worst_first(scores: np.ndarray, by: str) -> np.ndarray:
    """Row indices ordered from the first row to drop to the last; ties keep row order."""
    if by not in SIGNALS:
        raise ConfigError(f"cannot rank by {by!r}; choose one of: {', '.join(SIGNALS)}")
    keys = scores if by in WORSE_WHEN_LOWER else -scores
    return np.argsort(keys, kind="stable")


def with_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (scores of every training row) with its ``rank`` column set, last: 1 = the first row to
    drop under the default signal. Rank depends on every row, so it is computed over whole scores only."""
    by = default_signal(list(frame.columns))
    ranks = np.empty(len(frame), dtype=np.int64)
    ranks[worst_first(frame[by].to_numpy(dtype=np.float64), by)] = np.arange(1, len(frame) + 1)
    frame["rank"] = ranks
    return frame


def drop_count_for(num_rows: int, fraction: float) -> int:
    """Rows dropped by a fraction: rounded half up, so 1% of 250 rows is 3."""
    if not math.isfinite(fraction) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"--drop must be a fraction between 0 and 1 (exclusive), got {fraction}")
    exact = Decimal(str(fraction)) * num_rows  # decimal, so 0.29 x 50 is 14.5, not 14.4999...
    return min(num_rows, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def check_drop_options(
    *, by: str | None, fraction: float | None, count: int | None, threshold: float | None
) -> None:
    """Refuse a bad ``--by`` or anything but exactly one valid drop criterion, before any work."""
    given = [
        name
        for name, value in (("--drop", fraction), ("--drop-count", count), ("--threshold", threshold))
        if value is not None
    ]
    if len(given) != 1:
        raise ConfigError(
            f"give exactly one of --drop, --drop-count, --threshold (got {', '.join(given) or 'none'})"
        )
    if by is not None and by not in SIGNALS:
        raise ConfigError(f"--by {by}: cannot rank by it; choose one of: {', '.join(SIGNALS)}")
    if fraction is not None:
        drop_count_for(1, fraction)
    if threshold is not None and not math.isfinite(threshold):
        # NaN compares false with every score (nothing dropped); an infinite threshold drops all or none
        raise ConfigError(f"--threshold must be a finite number, got {threshold}")
    if count is not None and count < 0:
        raise ConfigError(f"--drop-count must be 0 or more, got {count}")


def rows_to_drop(
    scores: np.ndarray,
    *,
    by: str,
    fraction: float | None = None,
    count: int | None = None,
    threshold: float | None = None,
) -> np.ndarray:
    """Sorted indices of the rows to drop, by exactly one of a fraction, a count or a threshold.

    ``scores`` is float ``[N]``. With a threshold, rows strictly beyond it are dropped: below it for
    columns where lower is worse (``influence``), above it for the others.
    """
    check_drop_options(by=by, fraction=fraction, count=count, threshold=threshold)
    order = worst_first(scores, by)
    if threshold is not None:
        beyond = scores < threshold if by in WORSE_WHEN_LOWER else scores > threshold
        return np.sort(np.flatnonzero(beyond))
    if fraction is not None:
        count = drop_count_for(len(scores), fraction)
    assert count is not None
    if not 0 <= count <= len(scores):
        raise ConfigError(
            f"--drop-count must be between 0 and the number of rows ({len(scores)}), got {count}"
        )
    return np.sort(order[:count])


# The DataFrame.attrs key (kept in Parquet schema metadata) naming the run and training file of scores.
SCORES_ORIGIN = "tod_clean_scores"


def scores_origin(info: RunInfo) -> dict[str, Any]:
    """What ``score`` records about the scores it writes: the run's fingerprint and training file."""
    return {"run": info.fingerprint, "train_sha256": info.train_file.sha256, "rows": info.train_file.rows}


def check_scores_origin(scores: pd.DataFrame, info: RunInfo, source: str) -> None:
    """Refuse scores written for another run or another training file.

    Parquet scores name their run; every format must hold one row per training row, numbered 0..N-1.
    Labels and ids, when the scores have them, are compared with the table row by row in ``match_scores``.
    """
    origin = scores.attrs.get(SCORES_ORIGIN)
    if isinstance(origin, dict):
        if origin.get("train_sha256") != info.train_file.sha256:
            raise RunDirError(
                f"{source}: scores of another training file (sha256 {str(origin.get('train_sha256'))[:12]}..., "
                f"this run's {info.train_file.sha256[:12]}...); score this run again"
            )
        if origin.get("run") != info.fingerprint:
            raise RunDirError(
                f"{source}: scores of another run of the same training file (run fingerprint "
                f"{str(origin.get('run'))[:12]}..., this run's {info.fingerprint[:12]}...); score this run again"
            )
    if "row" not in scores.columns:
        raise InputError(
            f"{source}: not a scores file written by 'tod-clean score' (no column 'row'; "
            f"columns found: {', '.join(map(str, scores.columns))})"
        )
    rows = pd.to_numeric(scores["row"], errors="coerce").to_numpy(dtype=np.float64)
    expected = np.arange(info.train_file.rows, dtype=np.float64)
    if len(rows) != info.train_file.rows or not np.array_equal(np.sort(rows), expected):
        raise InputError(
            f"{source}: holds {len(rows)} score rows, but the run was trained on {info.train_file.rows} rows "
            f"({info.train_file.path}); these scores belong to another file or run"
        )


def _check_aligned(
    table: Table, aligned: pd.DataFrame, info: RunInfo, source: str, *, check_id: bool
) -> None:
    """Refuse scores whose label (or id) disagrees with the table row they were matched to."""
    label_col = info.train.columns.label_col
    if label_col in table.columns and "label" in aligned.columns:
        for row, (key, value) in enumerate(
            zip(check_labels(table, label_col), aligned["label"], strict=True)
        ):
            if label_key(value) != key:
                raise InputError(
                    f"{source}: score row {aligned['row'].iloc[row]}, column 'label': {value!r}, but "
                    f"{table.where(row)} has label {table.rows[row].get(label_col)!r}; "
                    "these scores belong to another file or run"
                )
    id_col = info.id_col
    if check_id and id_col is not None and "id" in aligned.columns:
        for row, (value, score_id) in enumerate(zip(check_ids(table, id_col), aligned["id"], strict=True)):
            if label_key(value) != label_key(score_id):
                raise InputError(
                    f"{source}: score row {aligned['row'].iloc[row]}, column 'id': {score_id!r}, but "
                    f"{table.where(row)} has id {value!r}; these scores belong to another file or run"
                )


def match_scores(
    table: Table, scores: pd.DataFrame, info: RunInfo, *, source: str = "scores"
) -> pd.DataFrame:
    """Scores aligned to the rows of ``table`` (one score row per table row, same order).

    The unchanged training file matches by row number. A changed file (reordered, filtered, or with rows
    added) matches by id when the run was trained with an id column; otherwise it is refused. Scores of
    another run or file are refused (``source`` names them in messages).
    """
    check_scores_origin(scores, info, source)
    if table.sha256 == info.train_file.sha256:
        if len(scores) == len(table) and np.array_equal(scores["row"].to_numpy(), np.arange(len(table))):
            # in row order, as score writes them: the same columns renumbered, not copied
            aligned = scores.copy(deep=False)
            aligned.index = pd.RangeIndex(len(aligned))
        else:
            by_row = scores.set_index("row", drop=False).sort_index()
            if len(by_row) != len(table) or not np.array_equal(
                by_row.index.to_numpy(), np.arange(len(table))
            ):
                raise InputError(
                    f"the scores hold {len(scores)} rows but {table.source} has {len(table)}; score the run again"
                )
            aligned = by_row.reset_index(drop=True)
        _check_aligned(table, aligned, info, source, check_id=True)
        return aligned
    id_col = info.id_col
    if id_col is None or "id" not in scores.columns:
        raise RunDirError(
            f"{table.source}: differs from the file the run was trained on ({info.train_file.path}); rows can be "
            "matched only in that unchanged file, or by id when the run was trained with --id-col"
        )
    position = {label_key(value): index for index, value in enumerate(scores["id"])}
    rows = []
    for row, value in enumerate(check_ids(table, id_col)):
        index = position.get(label_key(value))
        if index is None:
            raise InputError(f"{table.where(row)}, column {id_col!r}: id {value!r} has no score in this run")
        rows.append(index)
    aligned = scores.iloc[rows].reset_index(drop=True)
    _check_aligned(table, aligned, info, source, check_id=False)
    return aligned


# Columns of a scores file that hold text: ids and labels must not become numbers ("0009" is not 9) or
# missing values ("nan", "" and "NA" are labels like any other).
_TEXT_SCORE_COLUMNS = ("id", "label", "hidden_pred", "full_pred")


def read_scores(path: str) -> pd.DataFrame:
    """Scores written by ``score --out``: a CSV, TSV, JSON Lines or Parquet file, or a ``save_to_disk``
    folder (its marker keeps the run and training data it belongs to, as Parquet's metadata does)."""
    if is_dataset_dir(path):
        return read_frame_dataset(path)
    fmt = format_of(path)
    try:
        if fmt == "parquet":
            check_header(path, pq.ParquetFile(path).schema_arrow.names, None)
            return pd.read_parquet(path)
        if fmt in ("csv", "tsv"):
            # pandas renames a repeated column (influence.1) and the first copy would win: refused instead
            with open(path, encoding="utf-8-sig", newline="") as lines:
                check_header(path, next(delimited_reader(lines, fmt), []))
            header = pd.read_csv(path, sep="\t" if fmt == "tsv" else ",", nrows=0).columns
            text = [name for name in header if name in _TEXT_SCORE_COLUMNS]
            return pd.read_csv(
                path,
                sep="\t" if fmt == "tsv" else ",",
                dtype=dict.fromkeys(text, str),
                keep_default_na=False,
                na_values={name: ["", "nan", "NaN"] for name in header if name not in _TEXT_SCORE_COLUMNS},
            )
        # json, not pandas: pandas guesses types (dates, numbers) from the values
        return read_table(path).to_frame()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError) as error:
        raise InputError(f"{path}: cannot read scores ({error})") from None


@dataclass
class FilterResult:
    """Which rows of a table survive, and a report of the dropped ones with their scores."""

    by: str
    kept: np.ndarray  # sorted row indices
    dropped: np.ndarray  # sorted row indices
    removed: pd.DataFrame  # the dropped rows' columns followed by their score columns

    @property
    def worse_when(self) -> str:
        return "lowest" if self.by in WORSE_WHEN_LOWER else "highest"


def filter_table(
    table: Table,
    scores: pd.DataFrame,
    info: RunInfo,
    *,
    by: str | None = None,
    fraction: float | None = None,
    count: int | None = None,
    threshold: float | None = None,
    scores_source: str = "scores",
) -> FilterResult:
    """Rank the rows of ``table`` by a score column and choose the rows to drop."""
    aligned = match_scores(table, scores, info, source=scores_source)
    by = by or default_signal(list(aligned.columns))
    if by not in SIGNALS:
        raise ConfigError(f"--by {by}: cannot rank by it; choose one of: {', '.join(SIGNALS)}")
    if by not in aligned.columns:
        raise ConfigError(f"--by {by}: no such score column; columns found: {', '.join(aligned.columns)}")
    values = aligned[by].to_numpy(dtype=np.float64)
    check_scores(values, by, scores_source)
    dropped = rows_to_drop(values, by=by, fraction=fraction, count=count, threshold=threshold)
    kept = np.setdiff1d(np.arange(len(table)), dropped)
    rows = table.frame_at(dropped)
    report = aligned.iloc[dropped].reset_index(drop=True).drop(columns=["id", "label"], errors="ignore")
    report.columns = [f"score_{name}" if name in rows.columns else name for name in report.columns]
    return FilterResult(by, kept, dropped, rows.join(report))
