"""The ``train``, ``score`` and ``filter`` workflows, one implementation for the command line and the API.

Each takes data as a path (a data file, ``-`` for standard input, a ``save_to_disk`` folder, an ``hf:``
dataset in the local cache) or in memory (a ``pandas.DataFrame``, a ``datasets.Dataset``), refuses every
bad option and output before any work, calls the core, and writes its outputs. ``tod_clean.cli`` parses
options into these calls and prints; ``tod_clean.api`` converts arguments and returns frames.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tod_clean.config import DataColumns, ScoreConfig, TrainConfig, columns_like
from tod_clean.errors import ConfigError
from tod_clean.filter import FilterResult, filter_table, read_scores
from tod_clean.io import STDIN
from tod_clean.io.formats.dataset_dir import DATASET_FORMAT
from tod_clean.io.frames import (
    check_frame_folder_destination,
    frame_bytes,
    frame_output_format,
    write_frame,
    write_frame_dataset,
)
from tod_clean.io.inputs import to_table
from tod_clean.io.paths import check_destination, check_distinct_outputs, check_suffix
from tod_clean.io.table import Table
from tod_clean.io.writers import (
    check_subset_destination,
    deliver,
    output_format,
    save_npy,
    write_subset,
    writes_folder,
)
from tod_clean.processes import is_main_process
from tod_clean.progress import Progress
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir, RunInfo
from tod_clean.score import ScoreResult, load_scores, save_scores, score_run
from tod_clean.shard import Shard

if TYPE_CHECKING:
    from tod_clean.train import TrainResult

Data = Any  # a path (str or os.PathLike), a pandas.DataFrame or a datasets.Dataset


def is_path(data: Data) -> bool:
    """Whether ``data`` names data (a file, ``-``, a folder, ``hf:...``) rather than holding rows."""
    return isinstance(data, (str, os.PathLike))


def _path(data: Data | None) -> str | None:
    return os.fspath(data) if data is not None and is_path(data) else None


def known_options(config: type, options: dict[str, Any], *, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """``options`` as keyword arguments of the ``config`` dataclass; an unknown name is a ConfigError."""
    known = {f.name for f in dataclasses.fields(config)} - set(reserved)
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r}; the options are: {', '.join(sorted(known))}")
    return options


def train_config(
    *,
    text_col: str = "text",
    text_pair_col: str | None = None,
    label_col: str = "label",
    id_col: str | None = None,
    **options: Any,
) -> TrainConfig:
    """A ``TrainConfig`` from the column names and any other of its fields by name (``lora_targets`` may be
    comma-separated text); ranges are checked by ``TrainConfig`` itself."""
    options = known_options(TrainConfig, options, reserved=("columns", "mask_scheme"))
    columns = DataColumns(text_col=text_col, text_pair_col=text_pair_col, label_col=label_col, id_col=id_col)
    return TrainConfig(columns=columns, **options)


def train(
    config: TrainConfig,
    data: Data,
    run: RunDir,
    *,
    split: str | None = None,
    stdin_format: str | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train a new run on ``data`` (in-memory rows are kept in the run as ``train.jsonl``; rows from stdin,
    read in ``stdin_format``, as ``train.<format>``)."""
    table = to_table(data, split=split, stdin_format=stdin_format)
    # A missing column is reported before training's imports (transformers, peft: seconds) load.
    columns = config.columns
    table.require_columns([columns.text_col, columns.text_pair_col, columns.label_col, columns.id_col])
    from tod_clean.train import train as train_run

    train_path = os.fspath(data) if is_path(data) else STDIN
    return train_run(config, table, run, train_path=train_path, overwrite=overwrite, progress=progress)


def resume(
    run: RunDir,
    data: Data | None = None,
    *,
    stdin_format: str | None = None,
    progress: Progress | None = None,
) -> TrainResult:
    """Continue an interrupted run on its training data (``data`` when it moved: the same rows)."""
    from tod_clean.train import resume as resume_run

    info = run.read_info()
    instead = "give the same rows as a file: tod-clean train FILE --resume"
    return resume_run(_run_data(info, data, stdin_format, instead=instead), run, progress=progress)


def _run_data(
    info: RunInfo, data: Data | None, stdin_format: str | None = None, *, instead: str = "pass --train FILE"
) -> Table:
    """The run's training rows: ``data`` when given (a path read with the run's split, stdin in
    ``stdin_format``), else its file (a copy of stdin is read by its extension: train.csv is CSV;
    ``instead`` says how to give the rows when that file was a pipe: see ``RunInfo.train_source``)."""
    if data is None:
        return to_table(info.train_source(instead=instead), split=info.train_file.split)
    split = info.train_file.split if is_path(data) else None
    return to_table(data, split=split, stdin_format=stdin_format)


def check_frame_destination(dest: str | Path) -> None:
    """Refuse a scores output before the work: a folder name (a ``save_to_disk`` folder, see
    ``frame_output_format``) that may not be written, a file with an unsupported extension or that
    cannot be written."""
    if frame_output_format(dest) == DATASET_FORMAT:
        check_frame_folder_destination(dest)
    else:
        check_destination(dest)


def save_frame(frame: pd.DataFrame, dest: str | Path) -> None:
    """Write a scores frame: a ``save_to_disk`` folder for a folder name, else a file by its extension."""
    if frame_output_format(dest) == DATASET_FORMAT:
        write_frame_dataset(frame, dest)
    else:
        write_frame(frame, str(dest))


def score(
    run: RunDir,
    *,
    train: Data | None = None,
    val: Data | None = None,
    val_split: str | None = None,
    val_text_col: str | None = None,
    val_text_pair_col: str | None = None,
    val_label_col: str | None = None,
    config: ScoreConfig | None = None,
    device: str = "auto",
    out: str | Path | None = None,
    matrix: str | Path | None = None,
    pred_probs: str | Path | None = None,
    shard: str | None = None,
    stdin_format: str | None = None,
    overwrite: bool = False,
    overwrite_option: str = "overwrite=True",
    progress: Progress | None = None,
) -> ScoreResult:
    """Score a finished run's training rows (``train``: its data when the recorded file moved) and, with
    ``val``, their influence on it; write ``out`` (a file, or a ``save_to_disk`` folder for a name without
    extension), ``matrix`` and ``pred_probs``, and save the scores in the run (not with ``shard``).
    ``stdin_format`` is the format of ``train`` or ``val`` given as ``-`` (default JSON Lines).

    Every output is checked against the inputs and for writability before any work. Saved scores that
    hold influence on another validation set (or any, when ``val`` is None) are replaced only with
    ``overwrite`` (``overwrite_option`` names it in the error: the caller's spelling).
    """
    info = run.read_complete_info()
    part = Shard.parse(shard) if shard is not None else None
    if part is not None:
        part.check_rows(info.train_file.rows)
        if out is None or str(out) == STDIN or frame_output_format(out) != "parquet":
            raise ConfigError(
                f"--shard {shard} needs --out PART.parquet: a shard is written to its own Parquet file "
                "(never into the run), for 'tod-clean merge'"
            )
        if matrix is not None or pred_probs is not None:
            raise ConfigError(
                f"--shard {shard}: --matrix and --pred-probs cover every training row; score without --shard "
                "to write them"
            )
    if out is not None:
        frame_output_format(out)  # refuse an unsupported extension before the work
    train_path = info.train_file.path if train is None else _path(train)
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
            "--val": _path(val),
        },
        {"--out": out, "--matrix": matrix, "--pred-probs": pred_probs, **run_copy},
    )
    if out is not None:
        check_frame_destination(out)
    for dest in (matrix, pred_probs, *run_copy.values()):
        if dest is not None:
            check_destination(dest)
    check_suffix(matrix, "--matrix", ".npy", "the influence matrix as a NumPy .npy file")
    check_suffix(pred_probs, "--pred-probs", ".npy", "the class probabilities as a NumPy .npy file")
    if pred_probs is not None and not info.scope.masked:
        raise ConfigError(
            f"{run.path}: trained with scope '{info.scope}', so it has no hidden sub-networks for --pred-probs"
        )
    train_table = _run_data(info, train, stdin_format)
    val_table = to_table(val, split=val_split, stdin_format=stdin_format) if val is not None else None
    result = score_run(
        run,
        train_table,
        val_table=val_table,
        val_columns=columns_like(info.train.columns, val_text_col, val_text_pair_col, val_label_col),
        config=config,
        device=device,
        matrix_path=matrix,
        shard=part,
        progress=progress,
        before_work=None
        if part is not None or overwrite
        else lambda: _check_saved_scores_replaceable(run, val_table, overwrite_option),
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


def _check_saved_scores_replaceable(run: RunDir, val_table: Table | None, overwrite_option: str) -> None:
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
        f"would replace it: pass {overwrite_option} to replace it, or score another run directory"
    )


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
    ``drop_count`` or ``threshold``, 1% is dropped; without ``by``, rows are ranked by ``full_loss``.
    Label-error signals are ranked within each class and every class keeps a row unless
    ``allow_empty_class`` (see ``tod_clean.filter.select_rows``). A dataset's (a ``save_to_disk``
    folder's or an ``hf:`` dataset's) kept rows are written as a ``save_to_disk`` folder.
    """
    if drop is None and drop_count is None and threshold is None:
        drop = 0.01
    if out is not None and data is not None and not is_path(data):
        raise ConfigError("out= writes a data file's kept rows; in-memory data is returned, not written")
    out = None if out is None else os.fspath(out)
    removed = None if removed is None else os.fspath(removed)
    info = run.read_info()
    train_path = info.train_file.path if data is None else _path(data)
    scores_path = None if scores is None or isinstance(scores, pd.DataFrame) else os.fspath(scores)
    check_distinct_outputs(
        {**run.own_files(), "the training file": train_path, "--scores": scores_path},
        {"--out": out, "--removed": removed},
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
    table = _run_data(info, data, stdin_format)
    if out is not None:
        check_subset_destination(table, out)
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
