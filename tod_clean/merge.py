"""``merge``: the parts written by ``score --shard K/N`` put back together as the scores one ``score`` would
have written.

A part is a Parquet file whose schema metadata records the run fingerprint, the training file's sha256, the
validation file's sha256 and the shard with its rows (``tod_clean.runtime.shard``). Parts carry no
``rank``: it depends on every row, so ``merge`` computes it over all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tod_clean.errors import ConfigError, InputError, RunDirError
from tod_clean.io.formats import format_of
from tod_clean.run.rundir import RunInfo
from tod_clean.run.scores import SCORES_ORIGIN
from tod_clean.runtime.shard import SHARD_KEY, Shard
from tod_clean.selection import read_scores, with_rank


@dataclass
class _Part:
    source: str
    frame: pd.DataFrame
    origin: dict[str, Any]
    shard: Shard
    start: int
    stop: int
    meta: dict[str, Any]


def _read_part(path: str) -> _Part:
    not_shard = (
        f"{path}: not a shard of scores (shards are the Parquet files written by "
        "'tod-clean score --shard K/N --out PART.parquet')"
    )
    if format_of(path) != "parquet":
        raise InputError(not_shard)
    frame = read_scores(path)
    record, origin = frame.attrs.get(SHARD_KEY), frame.attrs.get(SCORES_ORIGIN)
    try:
        assert isinstance(record, dict) and isinstance(origin, dict) and isinstance(record["meta"], dict)
        shard = Shard(int(record["index"]), int(record["count"]))
        start, stop = int(record["start"]), int(record["stop"])
    except (AssertionError, KeyError, TypeError, ValueError):
        raise InputError(not_shard) from None
    rows = pd.to_numeric(frame.get("row", pd.Series(dtype=object)), errors="coerce").to_numpy(np.float64)
    if not np.array_equal(rows, np.arange(start, stop, dtype=np.float64)):
        raise InputError(
            f"{path}: its rows are not the rows {start}..{stop - 1} its metadata records for shard {shard}; "
            "the file was changed after 'score' wrote it: score this shard again"
        )
    return _Part(
        path, frame.drop(columns=["rank"], errors="ignore"), origin, shard, start, stop, record["meta"]
    )


# What else a part's influence depends on besides the validation file: the option that set it, by meta key.
SCORING_OPTIONS = {
    "influence_method": "--influence",
    "val_text_col": "--val-text-col",
    "val_text_pair_col": "--val-text-pair-col",
    "val_label_col": "--val-label-col",
}


def _check_same_scoring(part: _Part, first: _Part) -> None:
    """Refuse a part whose influence was computed another way than the first part's (another method, or
    other columns of the same validation file): merged, the column would mix two different quantities."""
    for key, option in SCORING_OPTIONS.items():
        value, expected = part.meta.get(key, _UNRECORDED), first.meta.get(key, _UNRECORDED)
        if value != expected:
            raise InputError(
                f"{part.source}: scored with {option} {_shown(value)}, but {first.source} with {option} "
                f"{_shown(expected)}; score every shard with the same {option}"
            )


_UNRECORDED = object()


def _shown(setting: Any) -> str:
    if setting is _UNRECORDED:
        return "(not recorded: scored by an older tod-clean)"
    return "(none)" if setting is None else str(setting)


def merge_shards(paths: Sequence[str], info: RunInfo | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scores of all training rows from the parts, in row order, ``rank`` computed over all rows,
    and the scores' metadata (what ``score`` saves as scores.json).

    Refuses, naming the file: a file that is not a part; parts of another run (``info``'s, else the first
    part's), of another training file or scored on another validation file; parts of another number of
    shards; a shard given twice; a missing shard.
    """
    if not paths:
        raise ConfigError("give the part files to merge (written by 'tod-clean score --shard K/N')")
    parts = [_read_part(str(path)) for path in paths]
    first = parts[0]
    run = info.fingerprint if info is not None else first.origin.get("run")
    train_sha = info.train_file.sha256 if info is not None else first.origin.get("train_sha256")
    num_rows: Any = info.train_file.rows if info is not None else first.origin.get("rows")
    against = f"the run's ({info.train_file.path})" if info is not None else f"{first.source}'s"
    by_index: dict[int, _Part] = {}
    for part in parts:
        if part.origin.get("train_sha256") != train_sha:
            raise RunDirError(
                f"{part.source}: a shard scored on another training file (sha256 "
                f"{str(part.origin.get('train_sha256'))[:12]}..., {against} {str(train_sha)[:12]}...); "
                "score it again on the run's training file"
            )
        if part.origin.get("run") != run:
            raise RunDirError(
                f"{part.source}: a shard of another run (fingerprint {str(part.origin.get('run'))[:12]}..., "
                f"{against} {str(run)[:12]}...); score it again with this run"
            )
        val_sha, first_val_sha = part.meta.get("val_sha256"), first.meta.get("val_sha256")
        if val_sha != first_val_sha:

            def named(sha: Any) -> str:
                return "no validation file" if sha is None else f"validation sha256 {str(sha)[:12]}..."

            raise InputError(
                f"{part.source}: scored on another validation file ({named(val_sha)}; {first.source}: "
                f"{named(first_val_sha)}); score every shard with the same --val"
            )
        _check_same_scoring(part, first)
        if part.shard.count != first.shard.count:
            raise InputError(
                f"{part.source}: shard {part.shard} of {part.shard.count}, but {first.source} is one of "
                f"{first.shard.count} shards; merge the parts of one split"
            )
        if (part.start, part.stop) != part.shard.rows(int(num_rows)):
            raise InputError(
                f"{part.source}: shard {part.shard} holds rows {part.start}..{part.stop - 1}, but of "
                f"{num_rows} training rows it should hold {'..'.join(map(str, part.shard.rows(int(num_rows))))}"
            )
        if list(part.frame.columns) != list(first.frame.columns):
            raise InputError(
                f"{part.source}: columns {', '.join(part.frame.columns)} differ from {first.source}'s "
                f"({', '.join(first.frame.columns)}); score every shard the same way"
            )
        other = by_index.get(part.shard.index)
        if other is not None:
            raise InputError(
                f"{part.source}: shard {part.shard} (rows {part.start}..{part.stop - 1}) again: "
                f"{other.source} holds the same rows"
            )
        by_index[part.shard.index] = part
    for index in range(first.shard.count):
        if index not in by_index:
            shard = Shard(index, first.shard.count)
            start, stop = shard.rows(int(num_rows))
            raise InputError(
                f"missing shard {shard} (rows {start}..{stop - 1} of {num_rows}): no part given holds it; "
                f"score it with 'tod-clean score --shard {shard}'"
            )
    ordered = [by_index[index] for index in range(first.shard.count)]
    frame = with_rank(pd.concat([part.frame for part in ordered], ignore_index=True))
    frame.attrs = {SCORES_ORIGIN: dict(first.origin)}
    return frame, dict(first.meta)
