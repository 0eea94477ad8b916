"""The ``score`` pipeline: a finished run's training rows scored, and the scores written."""

from __future__ import annotations

import json
from pathlib import Path

from tod_clean.config import AS_TRAINED, ColumnChoice, ScoreConfig
from tod_clean.errors import ConfigError, spelled, switched_on
from tod_clean.io import STDIN
from tod_clean.io.frames import frame_output_format
from tod_clean.io.inputs import to_table
from tod_clean.io.paths import check_destination, check_distinct_outputs, check_suffix
from tod_clean.io.table import Table
from tod_clean.io.writers import save_npy
from tod_clean.pipelines.inputs import Data, path_of, run_data
from tod_clean.pipelines.outputs import check_frame_destination, save_frame
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir
from tod_clean.runtime.processes import is_main_process
from tod_clean.runtime.progress import Progress
from tod_clean.runtime.shard import Shard
from tod_clean.score import ScoreResult, save_scores, score_run


def score(
    run: RunDir,
    *,
    train: Data | None = None,
    val: Data | None = None,
    val_split: str | None = None,
    val_columns: ColumnChoice = AS_TRAINED,
    config: ScoreConfig | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    matrix: str | Path | None = None,
    pred_probs: str | Path | None = None,
    shard: str | None = None,
    stdin_format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ScoreResult:
    """Score a finished run's training rows (``train``: its data when the recorded file moved) and, with
    ``val``, their influence on it; write ``out`` (a file, or a ``save_to_disk`` folder for a name without
    extension), ``matrix`` and ``pred_probs``, and save the scores in the run (not with ``shard``).
    ``stdin_format`` is the format of ``train`` or ``val`` given as ``-`` (default JSON Lines).

    Every output is checked against the inputs and for writability before any work. Saved scores that
    hold influence on another validation set (or any, when ``val`` is None) are replaced only with
    ``overwrite``.
    """
    info = run.read_complete_info()
    part = Shard.parse(shard) if shard is not None else None
    if part is not None:
        part.check_rows(info.train_file.rows)
        if out is None or str(out) == STDIN or frame_output_format(out) != "parquet":
            raise ConfigError(
                f"{spelled('shard', shard)} needs {spelled('out', 'PART.parquet')}: a shard is written to its own Parquet file "
                "(never into the run), for 'tod-clean merge'"
            )
        if matrix is not None or pred_probs is not None:
            raise ConfigError(
                f"{spelled('shard', shard)}: {spelled('matrix')} and {spelled('pred_probs')} cover every training row; "
                f"score without {spelled('shard')} to write them"
            )
    if out is not None:
        frame_output_format(out)  # refuse an unsupported extension before the work
    train_path = info.train_file.path if train is None else path_of(train)
    # A shard never writes the run's scores: the run's saved scores stay those of a whole 'score' (or merge).
    run_copy = (
        {}
        if part is not None
        else {f"the run's {SCORES}": run.file(SCORES), f"the run's {SCORES_META}": run.file(SCORES_META)}
    )
    check_distinct_outputs(
        {
            **run.own_files(exclude=(SCORES, SCORES_META) if part is None else ()),
            "the training file": train_path,
            spelled("val"): path_of(val),
        },
        {spelled("out"): out, spelled("matrix"): matrix, spelled("pred_probs"): pred_probs, **run_copy},
    )
    if out is not None:
        check_frame_destination(out)
    for dest in (matrix, pred_probs, *run_copy.values()):
        if dest is not None:
            check_destination(dest)
    check_suffix(matrix, spelled("matrix"), ".npy", "the influence matrix as a NumPy .npy file")
    check_suffix(pred_probs, spelled("pred_probs"), ".npy", "the class probabilities as a NumPy .npy file")
    if pred_probs is not None and not info.scope.masked:
        raise ConfigError(
            f"{run.path}: trained with scope '{info.scope}', so it has no hidden sub-networks for {spelled('pred_probs')}"
        )
    train_table = run_data(info, train, stdin_format)
    val_table = to_table(val, split=val_split, stdin_format=stdin_format) if val is not None else None
    result = score_run(
        run,
        train_table,
        val_table=val_table,
        val_columns=val_columns.like(info.train.columns),
        config=config,
        device=device,
        matrix_path=matrix,
        shard=part,
        progress=progress,
        before_work=None
        if part is not None or overwrite
        else lambda: _check_saved_scores_replaceable(run, val_table),
    )
    if not is_main_process():
        return result  # under accelerate launch every process holds the gathered scores; the main one writes
    if pred_probs is not None:
        assert result.self_scores.hidden_probs is not None
        save_npy(pred_probs, result.self_scores.hidden_probs)
    if out is not None:
        save_frame(result.frame, out)
    if part is None:
        # The run's copy last: if an output above failed, filter still sees the scores it saw before.
        save_scores(run, result)
    return result


def _check_saved_scores_replaceable(run: RunDir, val_table: Table | None) -> None:
    """Refuse to replace saved scores that hold influence on a validation set this scoring does not use:
    a quick look (``score -o - | head``) must not destroy an earlier, longer result."""
    if not run.file(SCORES).is_file() or not run.file(SCORES_META).is_file():
        return
    try:
        saved = json.loads(run.file(SCORES_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # unreadable saved scores are no result to keep; load_scores reports them
    saved_val = saved.get("val_file")
    if saved_val is None or saved.get("train_sha256") != run.read_info().train_file.sha256:
        return
    if val_table is not None and (val_table.ref or val_table.source, val_table.split, val_table.sha256) == (
        saved_val,
        saved.get("val_split"),
        saved.get("val_sha256"),
    ):
        return
    now = "without a validation set" if val_table is None else f"on {val_table.ref or val_table.source}"
    raise ConfigError(
        f"{run.file(SCORES)}: holds the influence of every training row on {saved_val}; scoring {now} "
        f"would replace it: pass {switched_on('overwrite')} to replace it, or score another run directory"
    )
