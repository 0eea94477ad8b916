"""The ``filter`` pipeline: the rows of the training data to keep, by a run's scores, written unchanged."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from tod_clean.errors import ConfigError, spelled
from tod_clean.io import STDIN
from tod_clean.io.frames import frame_bytes
from tod_clean.io.images import check_paths_resolve_in
from tod_clean.io.paths import check_destination, check_distinct_outputs
from tod_clean.io.table import Table
from tod_clean.io.writers import check_subset_destination, deliver, output_format, write_subset, writes_folder
from tod_clean.pipelines.inputs import Data, is_path, path_of, run_data
from tod_clean.run.rundir import SCORES, RunDir
from tod_clean.run.scores import load_scores
from tod_clean.selection import FilterResult, filter_table, read_scores


@dataclass
class Filtered:
    """What ``filter`` chose: the table it read and which of its rows survive."""

    table: Table
    result: FilterResult


def filter(  # noqa: A001 - the verb of the command, on purpose
    run: RunDir,
    data: Data | None = None,
    *,
    scores: pd.DataFrame | str | os.PathLike[str] | None = None,
    scores_source: str | None = None,
    by: str | None = None,
    drop: float | None = None,
    drop_count: int | None = None,
    threshold: float | None = None,
    allow_empty_class: bool = False,
    out: str | os.PathLike[str] | None = None,
    removed: str | os.PathLike[str] | None = None,
    stdin_format: str | None = None,
) -> Filtered:
    """Choose the rows of ``data`` (default: the run's training data) to keep, by ``scores`` (a frame, a
    scores file or folder written by ``score --out``; default: the run's saved scores); write the kept rows
    unchanged to ``out`` (``-``: stdout) and the dropped ones with their scores to ``removed``.

    ``data`` given as ``-`` is read in ``stdin_format`` (default JSON Lines). Without ``drop``,
    ``drop_count`` or ``threshold``, 1% is dropped; without ``by``, rows are ranked by ``influence`` when
    the scores have it (scored with a validation set), else by ``full_loss``. Label-error signals are
    ranked within each class and every class keeps a row unless ``allow_empty_class`` (see
    ``tod_clean.selection.select_rows``). A dataset's (a ``save_to_disk`` folder's or an ``hf:`` dataset's)
    kept rows are written as a ``save_to_disk`` folder.
    """
    if drop is None and drop_count is None and threshold is None:
        drop = 0.01
    if out is not None and data is not None and not is_path(data):
        raise ConfigError("out= writes a data file's kept rows; in-memory data is returned, not written")
    out = None if out is None else os.fspath(out)
    removed = None if removed is None else os.fspath(removed)
    info = run.read_info()
    train_path = info.train_file.path if data is None else path_of(data)
    scores_path = None if scores is None or isinstance(scores, pd.DataFrame) else os.fspath(scores)
    check_distinct_outputs(
        {**run.own_files(), "the training file": train_path, spelled("scores"): scores_path},
        {spelled("out"): out, spelled("removed"): removed},
    )
    if out is not None and train_path is not None and not writes_folder(train_path):
        check_destination(out)  # a dataset's kept rows go to a folder, checked below
    if removed is not None:
        check_destination(removed)
        output_format(removed, "csv")
    if isinstance(scores, pd.DataFrame):
        frame = scores
    elif scores_path is not None:
        frame = read_scores(scores_path)
    else:
        frame = load_scores(run)[0]
    table = run_data(info, data, stdin_format)
    if out is not None:
        check_subset_destination(table, out)
        if (
            out != STDIN
        ):  # relative image paths resolve against the folder holding the file (or dataset folder)
            folder = os.path.dirname(os.path.abspath(out))
            check_paths_resolve_in(table, info.train.columns.image_col, folder, spelled("out", out))
    result = filter_table(
        table,
        frame,
        info,
        by=by,
        fraction=drop,
        count=drop_count,
        threshold=threshold,
        allow_empty_class=allow_empty_class,
        scores_source=scores_source or scores_path or str(run.file(SCORES)),
    )
    # The removed rows' payload is made before anything is written, and the kept rows stream from the input
    # a chunk at a time into a temporary file renamed into place when complete: a failure leaves no
    # partial output.
    removed_payload = None if removed is None else frame_bytes(result.removed, output_format(removed, "csv"))
    if out is not None:
        write_subset(table, result.kept, out)
    if removed is not None and removed_payload is not None:
        deliver(removed, removed_payload)
    return Filtered(table, result)
