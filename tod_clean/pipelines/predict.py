"""The ``predict`` pipeline: every row of any data predicted by a finished run's full network, written."""

from __future__ import annotations

import os

import pandas as pd

from tod_clean.config import AS_TRAINED, ColumnChoice
from tod_clean.errors import spelled
from tod_clean.io.inputs import to_table
from tod_clean.io.paths import check_distinct_outputs
from tod_clean.pipelines.inputs import Data, is_path
from tod_clean.pipelines.outputs import check_frame_destination, save_frame
from tod_clean.predict import predict_run
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.progress import Progress


def predict(
    run: RunDir,
    data: Data,
    *,
    split: str | None = None,
    stdin_format: str | None = None,
    columns: ColumnChoice = AS_TRAINED,
    labels: bool | None = None,
    out: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Predict every row of ``data`` (a path, ``-`` for standard input in ``stdin_format``, default JSON
    Lines, a DataFrame or a Dataset) with the run's full network; write the frame to ``out`` (by
    extension, a ``save_to_disk`` folder for a name without one, ``-`` for CSV on stdout), checked before
    any work. Returns the frame.

    A column given in ``columns`` must be in the data (a ``label_col`` makes the rows labeled unless
    ``labels=False``); the others default to training's (its label and id columns when present).
    """
    info = run.read_complete_info()
    path = os.fspath(data) if is_path(data) else None
    out = None if out is None else os.fspath(out)
    check_distinct_outputs({**run.own_files(), "the data file": path}, {spelled("out"): out})
    if out is not None:
        check_frame_destination(out)
    table = to_table(data, split=split, stdin_format=stdin_format)
    trained = info.train.columns
    if columns.label_col is not None and labels is not False:
        labels = True
    frame = predict_run(
        run,
        table,
        columns=columns.like(trained, table.columns),
        labels=labels,
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    if out is not None:
        save_frame(frame, out)
    return frame
