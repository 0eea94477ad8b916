"""Why does the model err on a validation row? The training rows that hurt it and helped it most.

For validation row z the per-pair influence of every training row z_i (by default ``gauss-newton``'s; with
``--influence turn-over``, ``L(hidden_i, z) - L(exposed_i, z)``) is computed block by block (never the whole matrix at once) and the extremes are kept:

- **hurt**: the k most negative; by default only among training rows whose label is the wrong prediction
  (the predicted label when z is misclassified, any other label when it is not), as in Kobayashi et al. 2020;
- **helped**: the k most positive among all training rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from tod_clean.config import DataColumns, HurtFrom, ScoreConfig
from tod_clean.errors import ConfigError, InputError
from tod_clean.influence.base import (
    estimator_named,
    influence_blocks,
    resolve_influence_method,
    unmasked_refusal,
)
from tod_clean.instances import instances_from_table
from tod_clean.io.images import ImageColumn
from tod_clean.io.table import Table
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.loaded import LoadedRun
from tod_clean.run.rundir import RunDir
from tod_clean.run.scores import check_train_file
from tod_clean.runtime.device import pick_device
from tod_clean.runtime.processes import Processes, current_processes
from tod_clean.runtime.progress import Progress


@dataclass
class TopInfluence:
    """Per validation row, the k extreme training rows: ``rows`` int64 ``[V, k]`` (-1 = none),
    ``values`` float32 ``[V, k]`` ordered from the most extreme."""

    rows: np.ndarray
    values: np.ndarray


def top_influences(
    model: TodClassifier,
    train_keys: np.ndarray,
    train_labels: np.ndarray,
    val_encoded: Encoded,
    val_labels: np.ndarray,
    val_predicted: np.ndarray,
    *,
    k: int,
    hurt_from: str = "wrong",
    config: ScoreConfig | None = None,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: Progress | None = None,
    processes: Processes | None = None,
    train_rows: Callable[[], Encoded] | None = None,
) -> tuple[TopInfluence, TopInfluence]:
    """(hurt, helped): the k most negative and the k most positive training rows per validation row.

    ``hurt_from="wrong"`` limits the hurt candidates to training rows labeled with the wrong prediction
    (the predicted class if the row is misclassified, else any class but the true one); ``"any"`` uses all.
    With several ``processes``, each searches its block of training rows (``Processes.rows``) and the
    candidates of all are merged: every process returns the same result. ``train_rows`` gives every
    training row's encoded inputs, for estimators that read them (gradient-based ones).
    """
    if hurt_from not in HurtFrom.values():
        raise ConfigError(f"hurt_from must be {HurtFrom.listed(quoted=True)}, got {hurt_from!r}")
    config = config or ScoreConfig()
    processes = processes or Processes()
    first_row, stop = processes.rows(len(train_keys))
    num_val = len(val_encoded)
    hurt_values = torch.full((num_val, k), float("inf"))
    hurt_rows = torch.full((num_val, k), -1, dtype=torch.int64)
    help_values = torch.full((num_val, k), float("-inf"))
    help_rows = torch.full((num_val, k), -1, dtype=torch.int64)
    train_labels_t = torch.as_tensor(train_labels)
    true_t = torch.as_tensor(val_labels)
    predicted_t = torch.as_tensor(val_predicted)
    for block in influence_blocks(
        model,
        train_keys[first_row:stop],
        val_encoded,
        val_labels,
        **config.influence_options(),
        device=device,
        amp_dtype=amp_dtype,
        progress=progress if processes.is_main else None,
        processes=processes,
        train_rows=None if train_rows is None else lambda: train_rows().subset(np.arange(first_row, stop)),
        train_labels=np.asarray(train_labels)[first_row:stop],
    ):
        n = block.values.shape[0]
        start = first_row + block.train_start  # the block's first row among all training rows
        val_index = torch.as_tensor(block.val_index)
        values = block.values.T.float().cpu()  # [v, n]
        rows = torch.arange(start, start + n).expand(len(val_index), n)
        block_labels = train_labels_t[start : start + n][None, :]
        if hurt_from == HurtFrom.WRONG:
            wrong = predicted_t[val_index] != true_t[val_index]
            allowed = torch.where(
                wrong[:, None],
                block_labels == predicted_t[val_index][:, None],
                block_labels != true_t[val_index][:, None],
            )
            candidates = torch.where(allowed, values, torch.tensor(float("inf")))
        else:
            candidates = values
        _merge(hurt_values, hurt_rows, val_index, candidates, rows, largest=False)
        _merge(help_values, help_rows, val_index, values, rows, largest=True)
    if processes.several:  # each process's k best of its rows -> the k best of all rows
        hurt_values, hurt_rows = _merge_processes(processes, hurt_values, hurt_rows, largest=False)
        help_values, help_rows = _merge_processes(processes, help_values, help_rows, largest=True)
    return (
        _finish(hurt_values, hurt_rows),
        _finish(help_values, help_rows),
    )


def _merge_processes(
    processes: Processes, values: torch.Tensor, rows: torch.Tensor, *, largest: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best ``[V, k]`` over every process's k best, ties in process (so row) order."""
    k = values.shape[1]
    all_values = torch.cat(list(processes.gather_all(values)), dim=1)  # [V, count * k], process order
    all_rows = torch.cat(list(processes.gather_all(rows)), dim=1)
    order = _stable_top(all_values, k, largest=largest)
    return all_values.gather(1, order), all_rows.gather(1, order)


def _stable_top(values: torch.Tensor, k: int, *, largest: bool) -> torch.Tensor:
    """Column indices of the k best per row, ties kept in column order."""
    return torch.sort(values, dim=1, descending=largest, stable=True).indices[:, :k]


def _merge(
    best_values: torch.Tensor,
    best_rows: torch.Tensor,
    val_index: torch.Tensor,
    values: torch.Tensor,
    rows: torch.Tensor,
    *,
    largest: bool,
) -> None:
    k = best_values.shape[1]
    joined_values = torch.cat([best_values[val_index], values], dim=1)
    joined_rows = torch.cat([best_rows[val_index], rows], dim=1)
    top_values, order = joined_values.topk(k, dim=1, largest=largest, sorted=True)
    best_values[val_index] = top_values
    best_rows[val_index] = joined_rows.gather(1, order)


def _finish(values: torch.Tensor, rows: torch.Tensor) -> TopInfluence:
    missing = ~torch.isfinite(values)
    return TopInfluence(
        rows.masked_fill(missing, -1).numpy(), values.masked_fill(missing, float("nan")).numpy()
    )


@dataclass
class ExplainResult:
    """One row per (validation row, kind, rank) in ``frame``; ``accuracy`` of the full network;
    ``influence_method`` the estimator influence was computed with (exact, linear, gauss-newton, ...); for images, the checked image
    columns of the training and validation tables (``frame``'s ``train_row`` and ``val_row`` index them),
    so pages can show the pictures."""

    frame: pd.DataFrame
    explained: int
    misclassified: int
    accuracy: float
    influence_method: str = "exact"
    train_images: ImageColumn | None = None
    val_images: ImageColumn | None = None


def explain_run(
    run: RunDir,
    train_table: Table,
    val_table: Table,
    *,
    val_columns: DataColumns | None = None,
    k: int = 5,
    errors_only: bool = False,
    val_rows: Sequence[int] | None = None,
    val_id: str | None = None,
    hurt_from: str = "wrong",
    max_rows: int | None = None,
    config: ScoreConfig | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> ExplainResult:
    """Explain validation rows of a finished run by their most harmful and most helpful training rows.

    Under ``accelerate launch`` each process searches its block of training rows; every process returns
    the merged result."""
    if k < 1:
        raise ConfigError(f"--top must be a positive number of training rows, got {k}")
    info = run.read_complete_info()
    refusal = unmasked_refusal(info.scope, (config or ScoreConfig()).influence_method)
    if refusal is not None:
        raise ConfigError(f"{run.path}: {refusal}")
    check_train_file(train_table, info)
    train = instances_from_table(
        train_table, info.train.columns, info.labels, mask_scheme=info.train.mask_scheme
    )
    if val_columns is None:
        trained = info.train.columns
        id_col = trained.id_col if trained.id_col in val_table.columns else None
        val_columns = DataColumns(
            trained.text_col, trained.text_pair_col, trained.label_col, id_col, image_col=trained.image_col
        )
    val = instances_from_table(val_table, val_columns, info.labels)
    selected = np.arange(len(val))
    if val_id is not None:
        if val.ids is None:
            raise ConfigError("--id needs an id column in the validation file (--val-id-col)")
        matches = [i for i, value in enumerate(val.ids) if str(value) == val_id]
        if not matches:
            raise InputError(f"{val_table.source}: no row with id {val_id!r}")
        selected = np.array(matches)
    if val_rows is not None:
        bad = [r for r in val_rows if not 0 <= r < len(val)]
        if bad:
            raise InputError(f"{val_table.source}: --index {bad[0]} is out of range (rows 0..{len(val) - 1})")
        selected = np.array(sorted(set(val_rows)), dtype=np.int64)

    processes = current_processes(device)
    config = config or ScoreConfig()
    estimator = estimator_named(config.influence_method).resolve(info.scope, info.keep_prob)
    estimator.check_split(shard=False, several=processes.several)
    network = LoadedRun.open(run, info, processes.device or pick_device(device))
    model, torch_device, amp_dtype = network.model, network.device, network.amp_dtype
    val_encoded = network.encode(val)
    probs = network.probs(val_encoded, batch_size=config.batch_size)
    predicted = probs.argmax(1)
    accuracy = float((predicted == val.labels).mean())
    misclassified = int((predicted != val.labels).sum())
    if errors_only:
        selected = selected[predicted[selected] != val.labels[selected]]
    if max_rows is not None:
        selected = selected[:max_rows]
    method = resolve_influence_method(info.scope, info.keep_prob, config.influence_method)
    # sentence pairs: each text's second text in a column after it
    columns = _columns(train.text_pairs is not None, val.text_pairs is not None)
    if len(selected) == 0:
        return ExplainResult(
            pd.DataFrame(columns=columns), 0, misclassified, accuracy, method, train.images, val.images
        )
    subset = val_encoded.subset(selected)
    hurt, helped = top_influences(
        model,
        train.instance_keys,
        train.labels,
        subset,
        val.labels[selected],
        predicted[selected],
        k=min(k, len(train)),
        hurt_from=hurt_from,
        config=config,
        device=torch_device,
        amp_dtype=amp_dtype,
        progress=progress,
        processes=processes,
        train_rows=lambda: network.encode(train),
    )
    records: list[dict[str, Any]] = []
    names = info.labels
    for position, val_row in enumerate(selected):
        for kind, top in (("hurt", hurt), ("helped", helped)):
            for rank, (train_row, value) in enumerate(
                zip(top.rows[position], top.values[position], strict=True), 1
            ):
                if train_row < 0:
                    continue
                records.append(
                    {
                        "val_row": int(val_row),
                        "val_id": None if val.ids is None else val.ids[int(val_row)],
                        "val_label": names[int(val.labels[val_row])],
                        "val_pred": names[int(predicted[val_row])],
                        "val_prob": float(probs[val_row, val.labels[val_row]]),
                        "kind": kind,
                        "rank": rank,
                        "train_row": int(train_row),
                        "train_id": None if train.ids is None else train.ids[train_row],
                        "train_label": names[int(train.labels[train_row])],
                        "influence": float(value),
                        "train_text": train.shown(int(train_row)),
                        "train_text_pair": None
                        if train.text_pairs is None
                        else train.text_pairs[int(train_row)],
                        "val_text": val.shown(int(val_row)),
                        "val_text_pair": None if val.text_pairs is None else val.text_pairs[int(val_row)],
                    }
                )
    frame = pd.DataFrame(records, columns=columns)
    return ExplainResult(frame, len(selected), misclassified, accuracy, method, train.images, val.images)


_COLUMNS = [
    "val_row",
    "val_id",
    "val_label",
    "val_pred",
    "val_prob",
    "kind",
    "rank",
    "train_row",
    "train_id",
    "train_label",
    "influence",
    "train_text",
    "val_text",
]


def _columns(train_pairs: bool, val_pairs: bool) -> list[str]:
    """The frame's columns: ``train_text_pair`` and ``val_text_pair`` follow their texts for sentence pairs."""
    columns = []
    for name in _COLUMNS:
        columns.append(name)
        if (name == "train_text" and train_pairs) or (name == "val_text" and val_pairs):
            columns.append(f"{name}_pair")
    return columns
