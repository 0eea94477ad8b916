"""A run's saved scores: where they come from (the run and training file they belong to), writing them
as scores.parquet + scores.json, and reading them back with those checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tod_clean.errors import InputError, RunDirError
from tod_clean.io.frames import frame_bytes
from tod_clean.io.paths import atomic_output
from tod_clean.io.table import Table
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir, RunInfo

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


def check_train_file(table: Table, info: RunInfo) -> None:
    if table.sha256 != info.train_file.sha256:
        raise RunDirError(
            f"{table.source}: differs from the file this run was trained on ({info.train_file.path}: "
            f"sha256 {info.train_file.sha256[:12]}..., this file {table.sha256[:12]}...); "
            "score the training data unchanged, or train a new run"
        )


def save_scores_frame(run: RunDir, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write ``frame`` as the run's scores.parquet and ``meta`` as its scores.json.

    Both files are written in full before either replaces the old one, so a failure keeps the old pair.
    """
    import json

    text = json.dumps(meta, indent=2, ensure_ascii=False) + "\n"
    with atomic_output(run.file(SCORES)) as scores_tmp, atomic_output(run.file(SCORES_META)) as meta_tmp:
        scores_tmp.write_bytes(frame_bytes(frame, "parquet"))
        meta_tmp.write_text(text, encoding="utf-8")


def load_scores(run: RunDir) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scores saved by the last ``score`` of this run."""
    import json

    info = run.read_info()
    path = run.file(SCORES)
    if not path.is_file():
        raise RunDirError(f"{run.path}: has no scores yet; run 'tod-clean score --run {run.path}' first")
    try:
        meta = json.loads(run.file(SCORES_META).read_text(encoding="utf-8"))
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        raise RunDirError(
            f"{path}: cannot read the saved scores ({error}); run 'tod-clean score' again"
        ) from None
    if meta.get("train_sha256") != info.train_file.sha256:
        raise RunDirError(f"{path}: belongs to another training file than this run's; score the run again")
    # Scores of the run this folder held before a 'train --overwrite' (a 'score' that finished after it, or
    # files copied in) name that run: every reader of the saved scores refuses them, the API's included.
    check_scores_origin(frame, info, str(path))
    return frame, meta
