"""Per-row predictions of a finished run's full network (no instance mask) on any data.

One row out per row in: ``row`` (its 0-based number in the input), ``id`` (with an id column), one
``prob_<label>`` column per class (float64, summing to 1), ``predicted_label`` and, for labeled rows,
``label`` and ``loss`` (the cross-entropy ``-log prob`` of the given label). A label the training data did
not have is refused (naming its row and value): the model has no probability for it; predict without
labels (``labels=False``, ``--no-labels``) to get the other columns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tod_clean.config import AS_TRAINED, DataColumns
from tod_clean.instances import instances_from_table
from tod_clean.io.table import Table
from tod_clean.run.loaded import LoadedRun
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.device import pick_device
from tod_clean.runtime.progress import Progress

PROB_PREFIX = "prob_"


def prob_column(label: Any) -> str:
    """The output column of one class's probability: ``prob_<label>``."""
    return f"{PROB_PREFIX}{label}"


def predict_run(
    run: RunDir,
    table: Table,
    *,
    columns: DataColumns | None = None,
    labels: bool | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """The full network's predictions for every row of ``table`` (columns: see the module docstring).

    ``columns``: the table's text, pair, label and id columns (default: training's, the id column only if
    present). ``labels``: read the label column (True: it must be there; None: if it is there; False:
    ignore it).
    """
    info = run.read_complete_info()
    columns = columns or AS_TRAINED.like(info.train.columns, table.columns)
    if labels is None:
        labels = columns.label_col in table.columns
    instances = instances_from_table(table, columns, info.labels if labels else None)
    network = LoadedRun.open(run, info, pick_device(device))
    probs = network.probs(network.encode(instances), batch_size=batch_size, progress=progress)
    frame = pd.DataFrame({"row": np.arange(len(instances), dtype=np.int64)})
    if instances.ids is not None:
        frame["id"] = list(instances.ids)
    for position, name in enumerate(info.labels):
        frame[prob_column(name)] = probs[:, position].astype(np.float64)
    # integer labels (JSON, Parquet) stay integers, text labels text, as in the score output's label column
    integer = all(isinstance(name, int) for name in info.labels)
    names = np.array(info.labels, dtype=np.int64 if integer else object)
    frame["predicted_label"] = names[probs.argmax(1)]
    if labels:
        frame["label"] = names[instances.labels]
        picked = probs[np.arange(len(instances)), instances.labels].astype(np.float64)
        frame["loss"] = -np.log(np.clip(picked, 1e-12, 1.0))  # as evaluate's mean loss
    return frame
