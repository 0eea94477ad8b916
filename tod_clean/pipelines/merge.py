"""The ``merge`` pipeline: the parts written by ``score --shard K/N`` put together, written and saved as a
run's scores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tod_clean.errors import ConfigError, spelled
from tod_clean.io.frames import frame_output_format
from tod_clean.io.paths import check_destination, check_distinct_outputs
from tod_clean.merge import merge_shards
from tod_clean.pipelines.outputs import check_frame_destination, save_frame
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir
from tod_clean.run.scores import save_scores_frame


def merge(
    parts: list[str], *, out: str | None = None, run: RunDir | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Merge the score ``parts`` (checked against ``run``'s training rows and fingerprint when given)
    into one frame, ranked over all rows; write it to ``out`` and save it as ``run``'s scores (at least
    one of them), both checked before any work. Returns the frame and the scores' metadata."""
    if out is None and run is None:
        raise ConfigError(
            f"give {spelled('out', 'FILE')}, {spelled('run', 'RUN')} (save as the run's scores) or both"
        )
    info = run.read_complete_info() if run is not None else None
    if out is not None:
        frame_output_format(out)  # refuse an unsupported extension before the work
    run_copy: dict[str, Path] = (
        {}
        if run is None
        else {f"the run's {SCORES}": run.file(SCORES), f"the run's {SCORES_META}": run.file(SCORES_META)}
    )
    own = {} if run is None else run.own_files(exclude=(SCORES, SCORES_META))
    check_distinct_outputs(
        {**own, **{f"the part {part}": part for part in parts}}, {spelled("out"): out, **run_copy}
    )
    if out is not None:
        check_frame_destination(out)
    for dest in run_copy.values():
        check_destination(dest)
    frame, meta = merge_shards(parts, info)
    if out is not None:
        save_frame(frame, out)
    if run is not None:
        save_scores_frame(run, frame, meta)
    return frame, meta
