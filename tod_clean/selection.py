"""Ranking training rows by a score column and choosing the rows to drop."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from tod_clean.errors import ConfigError, InputError, RunDirError, spelled, switched_on
from tod_clean.io.columns import check_header, check_ids, check_labels, label_codes, label_key
from tod_clean.io.formats import format_of
from tod_clean.io.formats.dataset_dir import is_dataset_dir
from tod_clean.io.formats.delimited import delimited_reader
from tod_clean.io.frames import read_frame_dataset
from tod_clean.io.inputs import read_table
from tod_clean.io.table import Table
from tod_clean.run.rundir import RunInfo
from tod_clean.run.scores import check_scores_origin
from tod_clean.signals import (
    DEFAULT_SIGNAL,
    DEFAULT_SIGNAL_WITH_VALIDATION,
    LABEL_SIGNALS,
    SIGNALS,
    WORSE_WHEN_LOWER,
)

# A class that loses more than this multiple of the overall dropped share (and at least
# DISPROPORTION_MIN_ROWS rows) is named in a warning.
DISPROPORTION = 3.0
DISPROPORTION_MIN_ROWS = 2


def default_signal(columns: list[str]) -> str:
    """The signal rows are ranked by when none is chosen: ``influence`` where the scores have it (scored
    with a validation set), else ``full_loss`` (every scope scores it)."""
    for signal in (DEFAULT_SIGNAL_WITH_VALIDATION, DEFAULT_SIGNAL):
        if signal in columns:
            return signal
    raise ConfigError(f"no score column to filter by; columns found: {', '.join(columns)}")


def default_note(columns: list[str]) -> str:
    """The line the commands print when they rank by the default signal: which one, and why."""
    if default_signal(columns) == DEFAULT_SIGNAL_WITH_VALIDATION:
        return (
            f"ranking by {DEFAULT_SIGNAL_WITH_VALIDATION} on the validation set (the default when it was "
            f"scored: removing the rows that hurt it most raised retrained accuracy under domain shift, "
            f"where removing by {DEFAULT_SIGNAL} lowered it, BENCHMARKS.md section 2); pass "
            f"{spelled('by', DEFAULT_SIGNAL)} to remove the likeliest label errors first"
        )
    return (
        f"ranking by {DEFAULT_SIGNAL} within each class (the default without a validation set: the signal "
        f"measured best at finding label errors, BENCHMARKS.md section 1); pass {spelled('by')} to rank by "
        "another signal (influence needs scores on a validation set)"
    )


def check_scores(scores: np.ndarray, by: str, source: str) -> None:
    """Refuse NaN or infinite scores, naming the first bad row."""
    bad = np.flatnonzero(~np.isfinite(scores))
    if bad.size:
        raise InputError(
            f"{source}: row {bad[0]}, column {by!r}: score is {scores[bad[0]]}, expected a finite number"
        )


def badness(scores: np.ndarray, by: str) -> np.ndarray:
    """float64 ``[N]``, higher = drop first, whatever the column's direction."""
    if by not in SIGNALS:
        raise ConfigError(f"cannot rank by {by!r}; choose one of: {', '.join(SIGNALS)}")
    values = np.asarray(scores, dtype=np.float64)
    return -values if by in WORSE_WHEN_LOWER else values


def class_badness(scores: np.ndarray, by: str, classes: np.ndarray | None) -> np.ndarray:
    """The ranking key, float64 ``[N]`` (higher = drop first), of ``scores`` ``[N]`` with class codes
    ``classes`` int ``[N]`` (None: no classes known).

    A label-error signal (every one but ``influence``) is normalised within each class: the row's badness
    minus its class's median, over the larger of its class's median absolute deviation (MAD) and that of all
    rows (a class of near-identical values must not turn a tiny difference into a top rank). Rare or hard
    classes, whose losses are high by nature, are thus not eaten first by a global cut-off. ``influence``
    (and any signal without classes) is ranked as it is.
    """
    bad = badness(scores, by)
    if classes is None or by not in LABEL_SIGNALS or len(bad) == 0:
        return bad
    overall = float(np.median(np.abs(bad - np.median(bad))))
    keys = np.empty_like(bad)
    _, inverse, counts = np.unique(np.asarray(classes), return_inverse=True, return_counts=True)
    grouped = np.argsort(inverse, kind="stable")  # the rows of each class together: O(N log N) for any count
    for members in np.split(grouped, np.cumsum(counts)[:-1]):
        values = bad[members]
        centre = np.median(values)
        scale = max(float(np.median(np.abs(values - centre))), overall)
        with np.errstate(over="ignore"):  # a subnormal scale: the far rows rank first, as infinity
            keys[members] = (values - centre) / (scale if scale > 0 else 1.0)
    return keys


def worst_first(scores: np.ndarray, by: str, classes: np.ndarray | None = None) -> np.ndarray:
    """Row indices ordered from the first row to drop to the last; ties keep row order. With ``classes``
    (int ``[N]``), label-error signals are ranked within their class (see ``class_badness``)."""
    keys, bad = class_badness(scores, by, classes), badness(scores, by)
    # Normalised keys can round two different scores of a class to one value: the score breaks the tie,
    # so that within a class the order is always that of the score itself; then row order.
    return np.lexsort((np.arange(len(keys)), -bad, -keys))


def with_rank(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` (scores of every training row) with its ``rank`` column set, last: 1 = the first row to
    drop under the default ranking (as filter ranks without --by: ``influence`` where scored, else
    ``full_loss`` within each class; the class floor aside). Rank depends on every row, so it is computed over whole scores only."""
    by = default_signal(list(frame.columns))
    classes = None
    if "label" in frame.columns:
        classes = pd.factorize(np.array([label_key(value) for value in frame["label"]], dtype=object))[0]
    ranks = np.empty(len(frame), dtype=np.int64)
    ranks[worst_first(frame[by].to_numpy(dtype=np.float64), by, classes)] = np.arange(1, len(frame) + 1)
    frame["rank"] = ranks
    return frame


def drop_count_for(num_rows: int, fraction: float) -> int:
    """Rows dropped by a fraction: rounded half up, so 1% of 250 rows is 3."""
    if not math.isfinite(fraction) or not 0.0 < fraction < 1.0:
        raise ConfigError(f"{spelled('drop')} must be a fraction between 0 and 1 (exclusive), got {fraction}")
    exact = Decimal(str(fraction)) * num_rows  # decimal, so 0.29 x 50 is 14.5, not 14.4999...
    return min(num_rows, int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)))


def check_drop_options(
    *, by: str | None, fraction: float | None, count: int | None, threshold: float | None
) -> None:
    """Refuse a bad ``by`` or anything but exactly one valid drop criterion, before any work."""
    criteria = {spelled("drop"): fraction, spelled("drop_count"): count, spelled("threshold"): threshold}
    given = [name for name, value in criteria.items() if value is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of {', '.join(criteria)} (got {', '.join(given) or 'none'})")
    if by is not None and by not in SIGNALS:
        raise ConfigError(f"{spelled('by', by)}: cannot rank by it; choose one of: {', '.join(SIGNALS)}")
    if fraction is not None:
        drop_count_for(1, fraction)
    if threshold is not None and not math.isfinite(threshold):
        # NaN compares false with every score (nothing dropped); an infinite threshold drops all or none
        raise ConfigError(f"{spelled('threshold')} must be a finite number, got {threshold}")
    if count is not None and count < 0:
        raise ConfigError(f"{spelled('drop_count')} must be 0 or more, got {count}")


@dataclass
class Selection:
    """The rows chosen to drop: ``order`` int64 ``[N]`` is the ranking used (worst first), ``dropped`` the
    dropped rows in that order, ``spared`` the class codes whose last row the class floor kept."""

    order: np.ndarray
    dropped: np.ndarray
    spared: list[int]


def _criterion(fraction: float | None, count: int | None, threshold: float | None, rows: int) -> str:
    """The drop criterion as the user spelled it, for messages."""
    if threshold is not None:
        return spelled("threshold", str(threshold))
    if fraction is not None:
        return f"{spelled('drop', str(fraction))} ({drop_count_for(rows, fraction)} of {rows} rows)"
    return spelled("drop_count", str(count))


def select_rows(
    scores: np.ndarray,
    *,
    by: str,
    fraction: float | None = None,
    count: int | None = None,
    threshold: float | None = None,
    classes: np.ndarray | None = None,
    allow_empty_class: bool = False,
) -> Selection:
    """The rows to drop, by exactly one of a fraction, a count or a threshold.

    ``scores`` is float ``[N]``; ``classes`` int ``[N]`` the rows' class codes, or None. A fraction or a
    count drops the first rows of ``worst_first(scores, by, classes)``. A threshold drops the rows strictly
    beyond it on the score itself: below it for columns where lower is worse (``influence``), above it for
    the others. With ``classes``, every class keeps at least one row (its best-ranked) unless
    ``allow_empty_class``; a count that cannot be met so is refused.
    """
    check_drop_options(by=by, fraction=fraction, count=count, threshold=threshold)
    order = worst_first(scores, by, classes)
    floor = classes is not None and not allow_empty_class and len(order) > 0
    # the row of each class ranked last: the one the class floor keeps
    last_of_class = np.zeros(len(order), dtype=bool)
    if floor:
        assert classes is not None
        in_order = np.asarray(classes)[order]
        _, last_from_end = np.unique(in_order[::-1], return_index=True)
        last_of_class[order[len(order) - 1 - last_from_end]] = True
    if threshold is not None:
        beyond = scores < threshold if by in WORSE_WHEN_LOWER else scores > threshold
        chosen = beyond[order]
        spared: list[int] = []
        if floor:
            assert classes is not None
            codes, inverse = np.unique(classes, return_inverse=True)
            within = np.bincount(inverse, weights=~beyond, minlength=len(codes))  # rows not beyond, per class
            emptied = [int(code) for code in codes[within == 0]]
            spare = last_of_class & np.isin(classes, emptied)
            chosen &= ~spare[order]
            spared = emptied
        return Selection(order, order[chosen], spared)
    if fraction is not None:
        count = drop_count_for(len(scores), fraction)
    assert count is not None
    if not 0 <= count <= len(scores):
        raise ConfigError(
            f"{spelled('drop_count')} must be between 0 and the number of rows ({len(scores)}), got {count}"
        )
    if not floor:
        return Selection(order, order[:count], [])
    assert classes is not None
    droppable = order[~last_of_class[order]]
    if count > len(droppable):
        raise ConfigError(
            f"{_criterion(fraction, count, None, len(scores))} would empty a class: at most "
            f"{len(droppable)} of {len(scores)} rows can be dropped while each of the "
            f"{len(order) - len(droppable)} classes keeps a row; drop fewer, or pass {switched_on('allow_empty_class')}"
        )
    dropped = droppable[:count]
    spared = []
    if count:
        position = np.empty(len(order), dtype=np.int64)
        position[order] = np.arange(len(order))
        cut = position[dropped[-1]]
        protected = np.flatnonzero(last_of_class)
        spared = sorted(int(classes[row]) for row in protected if position[row] < cut)
    return Selection(order, dropped, spared)


def rows_to_drop(scores: np.ndarray, **criterion: Any) -> np.ndarray:
    """Sorted indices of the rows ``select_rows(scores, **criterion)`` drops."""
    return np.sort(select_rows(scores, **criterion).dropped)


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
            f"matched only in that unchanged file, or by id when the run was trained with {spelled('id_col')}"
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
    removed: pd.DataFrame  # the dropped rows, worst first: their columns, their score columns, their rank
    order: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the ranking, worst first
    warnings: list[str] = field(default_factory=list)  # one line each, for stderr and the report
    note: str | None = None  # which signal was ranked by and why, when none was chosen

    @property
    def worse_when(self) -> str:
        return "lowest" if self.by in WORSE_WHEN_LOWER else "highest"


def table_classes(table: Table, aligned: pd.DataFrame, label_col: str) -> tuple[np.ndarray, list[str]] | None:
    """Class codes int ``[N]`` of the rows and the class names they index: from the table's label column,
    else from the scores' ``label`` column; None when neither is there."""
    if label_col in table.columns:
        labels = label_codes(table, label_col)
        return labels.codes, labels.keys
    if "label" in aligned.columns:
        codes, names = pd.factorize(np.array([label_key(value) for value in aligned["label"]], dtype=object))
        return codes, [str(name) for name in names]
    return None


def class_warnings(
    classes: np.ndarray, names: list[str], dropped: np.ndarray, spared: list[int]
) -> list[str]:
    """One line naming the classes that lose a disproportionate share of their rows (more than
    ``DISPROPORTION`` times the overall share, and at least ``DISPROPORTION_MIN_ROWS`` rows), those emptied
    and those whose last row the class floor kept; no line when there is none."""
    total, lost = len(classes), len(dropped)
    if lost == 0:
        return []
    sizes = np.bincount(classes, minlength=len(names))
    losses = np.bincount(classes[dropped], minlength=len(names))
    overall = lost / total
    parts = []
    for code, name in enumerate(names):
        size, loss = int(sizes[code]), int(losses[code])
        emptied = size > 0 and loss == size
        heavy = loss >= DISPROPORTION_MIN_ROWS and loss / size > DISPROPORTION * overall
        if not (heavy or emptied or code in spared):
            continue
        part = f"class {name!r} loses {loss} of {size} rows ({loss / size:.2%})"
        if emptied:
            part += f": emptied ({switched_on('allow_empty_class')})"
        elif code in spared:
            part += f": its last row kept (pass {switched_on('allow_empty_class')} to drop it)"
        parts.append(part)
    if not parts:
        return []
    return [f"{'; '.join(parts)}; against {overall:.2%} of all rows: check these rows before removing them"]


def filter_table(
    table: Table,
    scores: pd.DataFrame,
    info: RunInfo,
    *,
    by: str | None = None,
    fraction: float | None = None,
    count: int | None = None,
    threshold: float | None = None,
    allow_empty_class: bool = False,
    scores_source: str = "scores",
) -> FilterResult:
    """Rank the rows of ``table`` by a score column and choose the rows to drop.

    Label-error signals are ranked within each class, influence globally (see ``class_badness``); every
    class keeps a row unless ``allow_empty_class``; dropping every row is refused.
    """
    check_drop_options(by=by, fraction=fraction, count=count, threshold=threshold)
    aligned = match_scores(table, scores, info, source=scores_source)
    note = None if by is not None else default_note(list(aligned.columns))
    by = by or default_signal(list(aligned.columns))
    if by not in SIGNALS:
        raise ConfigError(f"{spelled('by', by)}: cannot rank by it; choose one of: {', '.join(SIGNALS)}")
    if by not in aligned.columns:
        raise ConfigError(
            f"{spelled('by', by)}: no such score column; columns found: {', '.join(aligned.columns)}"
        )
    values = aligned[by].to_numpy(dtype=np.float64)
    check_scores(values, by, scores_source)
    known = table_classes(table, aligned, info.train.columns.label_col)
    classes, names = known if known is not None else (None, [])
    selection = select_rows(
        values,
        by=by,
        fraction=fraction,
        count=count,
        threshold=threshold,
        classes=classes,
        allow_empty_class=allow_empty_class,
    )
    if len(table) and len(selection.dropped) == len(table):
        criterion = _criterion(fraction, count, threshold, len(table))
        hint = (
            f"choose a {'lower' if by in WORSE_WHEN_LOWER else 'higher'} threshold"
            if threshold is not None
            else "drop fewer"
        )
        raise ConfigError(
            f"{criterion} drops all {len(table)} rows by {by}: nothing would be left to train on; {hint}"
        )
    dropped = np.sort(selection.dropped)
    kept = np.setdiff1d(np.arange(len(table)), dropped)
    ranks = np.empty(len(table), dtype=np.int64)
    ranks[selection.order] = np.arange(1, len(table) + 1)
    worst = selection.dropped
    # frame_at reads in file order; the report lists the rows worst first
    rows = table.frame_at(dropped).iloc[np.searchsorted(dropped, worst)].reset_index(drop=True)
    report = aligned.iloc[worst].reset_index(drop=True).drop(columns=["id", "label", "rank"], errors="ignore")
    report["rank"] = ranks[worst]  # the rank under the signal and ranking actually used
    report.columns = [f"score_{name}" if name in rows.columns else name for name in report.columns]
    warnings = [] if classes is None else class_warnings(classes, names, worst, selection.spared)
    return FilterResult(by, kept, dropped, rows.join(report), selection.order, warnings, note)
