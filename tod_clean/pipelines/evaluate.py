"""The ``evaluate`` pipeline: a finished run's full network measured on labeled data, the metrics written."""

from __future__ import annotations

import json

from tod_clean.config import AS_TRAINED, ColumnChoice
from tod_clean.errors import spelled
from tod_clean.evaluate import Evaluation, evaluate_run
from tod_clean.io.inputs import read_table
from tod_clean.io.paths import check_destination, check_distinct_outputs, check_suffix
from tod_clean.io.writers import deliver
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.progress import Progress


def evaluate(
    run: RunDir,
    data: str,
    *,
    split: str | None = None,
    stdin_format: str | None = None,
    columns: ColumnChoice = AS_TRAINED,
    out: str | None = None,
    batch_size: int = 64,
    device: str = "auto",
    progress: Progress | None = None,
) -> Evaluation:
    """Evaluate the run on ``data`` (a path; ``-``: standard input in ``stdin_format``; columns default to
    training's); write the metrics as JSON to ``out`` (``-``: stdout), checked before any work."""
    trained = run.read_complete_info().train.columns
    check_distinct_outputs({**run.own_files(), "the data file": data}, {spelled("out"): out})
    if out is not None:
        check_destination(out)
        check_suffix(out, spelled("out"), ".json", "the metrics as JSON")
    result = evaluate_run(
        run,
        read_table(data, split=split, stdin_format=stdin_format),
        columns=columns.like(trained),
        batch_size=batch_size,
        device=device,
        progress=progress,
    )
    if out is not None:
        summary = {"file": data, "run": str(run.path), **result.to_dict()}
        deliver(out, (json.dumps(summary, indent=2, default=str) + "\n").encode("utf-8"))
    return result
