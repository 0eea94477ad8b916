"""The ``score`` workflow: a finished run and its training file (and a validation set) -> a scores table.

Opens the run, checks the inputs, computes each training row's self-scores and, with a validation set, its
influence (``tod_clean.influence``), under a shard or several processes, and writes scores.parquet and
scores.json; the score columns are described in ``tod_clean.signals``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tod_clean.config import DataColumns, ScoreConfig
from tod_clean.errors import ConfigError, spelled
from tod_clean.influence.base import estimator_named, resolve_influence_method, unmasked_refusal
from tod_clean.influence.gather import gather_matrix, influence
from tod_clean.influence.self_scores import SELF_WINDOW_ROWS, SelfScores, self_scores
from tod_clean.instances import Instances, instances_from_table
from tod_clean.io.table import Table
from tod_clean.model_inputs import Encoded, encode_instances
from tod_clean.run.loaded import LoadedRun
from tod_clean.run.rundir import TOKENS_DIR, RunDir
from tod_clean.run.scores import SCORES_ORIGIN, check_train_file, save_scores_frame, scores_origin
from tod_clean.runtime.device import pick_device
from tod_clean.runtime.processes import Processes, current_processes
from tod_clean.runtime.progress import Progress
from tod_clean.runtime.shard import SHARD_KEY, Shard, shard_record
from tod_clean.selection import default_signal, with_rank


@dataclass
class ScoreResult:
    frame: pd.DataFrame
    meta: dict[str, Any]
    self_scores: SelfScores
    influence: np.ndarray | None


def score_run(
    run: RunDir,
    train_table: Table,
    *,
    val_table: Table | None = None,
    val_columns: DataColumns | None = None,
    config: ScoreConfig | None = None,
    device: str = "auto",
    matrix_path: str | Path | None = None,
    shard: Shard | None = None,
    progress: Progress | None = None,
    processes: Processes | None = None,
    before_work: Callable[[], None] | None = None,
) -> ScoreResult:
    """Score every training row of a finished run (and its influence on ``val_table``, if given).

    ``before_work``, if given, is called once the inputs are validated and before the model loads (the
    caller's last checks, which should not pre-empt the inputs' own errors).

    With ``shard``, only that shard's block of rows (see ``tod_clean.runtime.shard``): the frame has no ``rank``
    and records the shard in its attrs (Parquet schema metadata).

    The outputs (``matrix_path`` writable, no matrix with ``shard``) are checked where the options enter,
    by the ``score`` pipeline.

    Under ``accelerate launch`` (``processes``, by default read from the launcher's environment) process
    K of N scores the block of rows ``--shard K/N`` would (of the shard's rows, with ``shard``); every
    process returns the gathered result, and only the main process writes ``matrix_path``.
    """
    config = config or ScoreConfig()
    processes = processes or current_processes(device)
    info = run.read_complete_info()
    check_train_file(train_table, info)
    columns = info.train.columns
    train_instances = instances_from_table(
        train_table, columns, info.labels, mask_scheme=info.train.mask_scheme
    )
    all_instances = train_instances
    first_row, stop = 0, len(all_instances)
    if shard is not None:  # the score pipeline refused --matrix with --shard
        first_row, stop = shard.check_rows(len(train_instances))
        train_instances = _rows_of(train_instances, first_row, stop)
    val_instances = None
    if val_table is not None:
        val_instances = instances_from_table(val_table, val_columns or columns, info.labels, with_keys=False)
    if matrix_path is not None and val_table is None:
        raise ConfigError(f"{spelled('matrix')} needs a validation set ({spelled('val')})")
    if val_table is not None:
        estimator = estimator_named(config.influence_method).resolve(info.scope, info.keep_prob)
        refusal = unmasked_refusal(info.scope, config.influence_method)
        if refusal is not None:
            raise ConfigError(f"{run.path}: {refusal}")
        estimator.check_split(shard=shard is not None, several=processes.several)
    if before_work is not None:
        before_work()
    loaded = LoadedRun.open(run, info, processes.device or pick_device(device))
    model, tokenizer, torch_device = loaded.model, loaded.tokenizer, loaded.device
    amp_dtype, max_length = loaded.amp_dtype, loaded.max_length
    # this process's rows: all of them, or its block under several processes
    own_start, own_stop = first_row, stop
    if processes.several:
        start, end = processes.rows(len(train_instances))
        own_start, own_stop = first_row + start, first_row + end
    mine = _rows_of(all_instances, own_start, own_stop)
    # Self-scores run on the whole length-sorting windows around these rows (at most two windows more),
    # so a shard or a process computes its rows exactly as scoring every row in one process does.
    window = SELF_WINDOW_ROWS
    span_start = own_start // window * window
    span_stop = (
        min(-(-own_stop // window) * window, len(all_instances)) if own_stop > own_start else span_start
    )
    span = _rows_of(all_instances, span_start, span_stop)
    # the span's rows of the training tokens (tokens/, as train kept them; tokenised when missing)
    span_encoded = encode_instances(tokenizer, span, max_length, cache_dir=run.file(TOKENS_DIR))
    scores = self_scores(
        model,
        span_encoded,
        span.labels,
        span.instance_keys,
        batch_size=config.batch_size,
        window=window,
        device=torch_device,
        amp_dtype=amp_dtype,
        progress=progress if processes.is_main else None,
    ).rows(own_start - span_start, own_stop - span_start)
    influence_values = None
    if val_instances is not None:
        val_encoded = encode_instances(tokenizer, val_instances, max_length)
        with ExitStack() as stack:
            own_matrix: Path | None = None
            if processes.several and matrix_path is not None and len(mine) > 0:
                # each process writes its rows' matrix here; then the main process gathers them
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="tod-clean-rows-"))
                own_matrix = Path(folder) / "rows.npy"
            influence_values = influence(
                model,
                mine.instance_keys,
                val_encoded,
                val_instances.labels,
                **config.influence_options(),
                device=torch_device,
                amp_dtype=amp_dtype,
                matrix_path=own_matrix if processes.several else matrix_path,
                progress=progress if processes.is_main else None,
                processes=processes,
                # this process's training rows, for estimators that read them
                train_rows=lambda: span_encoded.subset(
                    np.arange(own_start - span_start, own_stop - span_start)
                ),
                train_labels=mine.labels,
                # the rows outside the shard, for a preconditioner fitted on every row
                other_train_rows=lambda: _other_rows(
                    all_instances, first_row, stop, processes, tokenizer, max_length, run
                ),
            )
            if processes.several and matrix_path is not None:
                gather_matrix(processes, own_matrix, matrix_path, len(train_instances), len(val_encoded))
    if processes.several:
        scores, influence_values = _gather_scores(processes, scores, influence_values, len(train_instances))
    frame = scores_frame(
        train_instances, info.labels, scores, influence_values, first_row=first_row, rank=shard is None
    )
    # Parquet outputs carry this (pandas keeps DataFrame.attrs in the schema metadata), so filter and
    # report can refuse scores of another run; CSV and JSON Lines are checked row by row instead.
    frame.attrs[SCORES_ORIGIN] = scores_origin(info)
    meta = {
        "train_file": info.train_file.path,
        "train_sha256": info.train_file.sha256,
        "val_file": None if val_table is None else (val_table.ref or val_table.source),
        "val_split": None if val_table is None else val_table.split,
        "val_sha256": None if val_table is None else val_table.sha256,
        # the validation columns read: another column of the same file is another validation set
        **_val_columns_meta(val_table, val_columns or columns),
        "val_rows": 0 if val_table is None else len(val_table),
        "rank_by": default_signal(list(frame.columns)),
        "scope": str(info.scope),
        "keep_prob": info.keep_prob,
        # exact or linear: how the influence column was computed (None without a validation set)
        "influence_method": None
        if val_table is None
        else resolve_influence_method(info.scope, info.keep_prob, config.influence_method),
    }
    if shard is not None:
        frame.attrs[SHARD_KEY] = shard_record(shard, info.train_file.rows, meta)
    return ScoreResult(frame, meta, scores, influence_values)


def _other_rows(
    instances: Instances,
    first_row: int,
    stop: int,
    processes: Processes,
    tokenizer: Any,
    max_length: int,
    run: RunDir,
) -> list[tuple[Encoded, np.ndarray]]:
    """The training rows before and after a shard's block ``[first_row, stop)`` (none without a shard),
    this process's share of each under several processes: their tokens and labels."""
    parts = []
    for start, end in ((0, first_row), (stop, len(instances))):
        if processes.several:
            mine_start, mine_end = processes.rows(end - start)
            start, end = start + mine_start, start + mine_end
        if end > start:
            rows = _rows_of(instances, start, end)
            encoded = encode_instances(tokenizer, rows, max_length, cache_dir=run.file(TOKENS_DIR))
            parts.append((encoded, rows.labels))
    return parts


def _val_columns_meta(val_table: Table | None, columns: DataColumns) -> dict[str, str | None]:
    """What scores record of the validation columns they read (None each, without a validation set)."""
    used = None if val_table is None else columns
    return {
        "val_text_col": None if used is None else used.text_col,
        "val_text_pair_col": None if used is None else used.text_pair_col,
        "val_label_col": None if used is None else used.label_col,
    }


def _gather_scores(
    processes: Processes, scores: SelfScores, influence_values: np.ndarray | None, num_rows: int
) -> tuple[SelfScores, np.ndarray | None]:
    """Every process's block of scores, gathered in row order (in every process)."""

    def gathered(values: np.ndarray | None) -> np.ndarray | None:
        if values is None:
            return None
        return processes.gather_rows(torch.from_numpy(np.ascontiguousarray(values)), num_rows).numpy()

    full_loss, full_probs = gathered(scores.full_loss), gathered(scores.full_probs)
    assert full_loss is not None and full_probs is not None
    return (
        SelfScores(
            full_loss=full_loss,
            full_probs=full_probs,
            exposed_loss=gathered(scores.exposed_loss),
            hidden_loss=gathered(scores.hidden_loss),
            hidden_probs=gathered(scores.hidden_probs),
        ),
        gathered(influence_values),
    )


def _rows_of(instances: Instances, start: int, stop: int) -> Instances:
    """The instances of training rows ``start .. stop - 1`` (their keys unchanged: masks do not move)."""
    return instances.rows(start, stop)


def scores_frame(
    instances: Instances,
    label_names: list[Any],
    scores: SelfScores,
    influence_values: np.ndarray | None,
    *,
    first_row: int = 0,
    rank: bool = True,
) -> pd.DataFrame:
    """One row per training instance: row, id, label, the score columns and ``rank`` (1 = drop first).

    ``instances`` may be a block of the training rows starting at ``first_row`` (a shard): ``row`` keeps
    the global row number; pass ``rank=False`` there, since rank depends on every row.
    """
    labels = instances.labels
    rows = np.arange(len(instances))
    columns: dict[str, Any] = {"row": rows + first_row}
    if instances.ids is not None:
        columns["id"] = instances.ids
    columns["label"] = [label_names[i] for i in labels]
    names = np.array(label_names, dtype=object)
    if influence_values is not None:
        columns["influence"] = influence_values
    if scores.self_influence is not None:
        assert (
            scores.hidden_loss is not None
            and scores.exposed_loss is not None
            and scores.hidden_probs is not None
        )
        columns["self_influence"] = scores.self_influence
        columns["hidden_loss"] = scores.hidden_loss
        columns["exposed_loss"] = scores.exposed_loss
    columns["full_loss"] = scores.full_loss
    if scores.hidden_probs is not None:
        columns["hidden_prob"] = scores.hidden_probs[rows, labels].astype(np.float64)
        columns["hidden_pred"] = names[scores.hidden_probs.argmax(1)]
    columns["full_prob"] = scores.full_probs[rows, labels].astype(np.float64)
    columns["full_pred"] = names[scores.full_probs.argmax(1)]
    frame = pd.DataFrame(columns)
    return with_rank(frame) if rank else frame


def save_scores(run: RunDir, result: ScoreResult) -> None:
    """Keep the scores in the run directory, where ``filter`` finds them."""
    save_scores_frame(run, result.frame, result.meta)
