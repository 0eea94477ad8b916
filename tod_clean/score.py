"""Per-instance losses and influence estimates of a turn-over-dropout run.

For training instance z_i with exposed sub-network m(z_i) and hidden sub-network 1 - m(z_i):

- ``exposed_loss``   L(exposed_i, z_i): loss of the sub-network that trained on z_i
- ``hidden_loss``    L(hidden_i, z_i): loss of the sub-network that hides z_i (out-of-sample only as far as the scope makes it)
- ``full_loss``      L(full, z_i): the whole network, no instance mask
- ``self_influence`` hidden_loss - exposed_loss on z_i itself (high: z_i had to be memorised)
- ``influence``      mean over validation rows z of L(hidden_i, z) - L(exposed_i, z) (negative: z_i hurts)

Layers below the first mask site run once per row and are cached. In the ``head`` scope the whole
train x validation computation is then a batched matrix product: with head features ``A`` [V, D] of the
validation rows, classifier weights ``W`` [C, D] and the exposed mask ``m_i`` [D], the exposed logits are
``A (W * m_i)^T / p + b`` and the hidden logits ``(A W^T - A (W * m_i)^T) / (1-p) + b``, so one GEMM per
block of training instances gives both. Deeper scopes run the masked top layers on (instance, validation
row) pairs in batches (``method="exact"``), or use the first-order (linearized) estimate
(``method="linear"``): with gamma_u the multiplier of masked unit u (1 in the full network, m/p exposed,
(1-m)/(1-p) hidden), ``L(hidden_i, z) - L(exposed_i, z) ~ sum_u delta_iu dL(z)/dgamma_u`` where
``delta_iu = (1-m_iu)/(1-p) - m_iu/p``; one backward pass per validation row gives the gradients ``G``
[V, U], and the whole matrix is ``delta @ G^T``.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.lib.format import open_memmap

from tod_clean.config import INFLUENCE_METHODS, DataColumns, ScoreConfig
from tod_clean.device import pick_device
from tod_clean.encoding import EncodedRows, encode_texts, sorted_batches, window_batches
from tod_clean.errors import ConfigError, RunDirError
from tod_clean.filter import SCORES_ORIGIN, check_scores_origin, default_signal, scores_origin, with_rank
from tod_clean.instances import Instances, instances_from_table
from tod_clean.io.frames import frame_bytes
from tod_clean.io.paths import atomic_output
from tod_clean.io.table import Table
from tod_clean.masks import MASK_SCHEME, MaskMode, instance_masks
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.processes import Processes, current_processes
from tod_clean.progress import NullProgress, Progress
from tod_clean.run.loaded import LoadedRun
from tod_clean.run.rundir import SCORES, SCORES_META, TOKENS_DIR, RunDir, RunInfo
from tod_clean.scopes import HEAD_SITE, Scope
from tod_clean.scopes.architecture import hidden_size_of
from tod_clean.shard import SHARD_KEY, Shard, shard_record


@dataclass
class SelfScores:
    """Per training row losses ``[N]`` float64 and class probabilities ``[N, C]`` float32.

    ``exposed_loss``, ``hidden_loss`` and ``hidden_probs`` are None for a run without instance masks.
    """

    full_loss: np.ndarray
    full_probs: np.ndarray
    exposed_loss: np.ndarray | None
    hidden_loss: np.ndarray | None
    hidden_probs: np.ndarray | None

    def rows(self, start: int, stop: int) -> SelfScores:
        """The scores of rows ``start .. stop - 1``."""
        return SelfScores(
            *(
                None if (values := getattr(self, field.name)) is None else values[start:stop]
                for field in dataclasses.fields(self)
            )
        )

    @property
    def self_influence(self) -> np.ndarray | None:
        if self.hidden_loss is None or self.exposed_loss is None:
            return None
        return self.hidden_loss - self.exposed_loss


# Self-scores sort rows by length inside windows of this many rows (see ``window_batches``).
SELF_WINDOW_ROWS = 1024


def _autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def _nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row: logits ``[B, C]``, labels ``[B]`` -> ``[B]`` float32."""
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")


@torch.no_grad()
def self_scores(
    model: TodClassifier,
    encoded: EncodedRows,
    labels: np.ndarray,
    instance_keys: np.ndarray,
    *,
    batch_size: int = 64,
    window: int | None = None,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: Progress | None = None,
) -> SelfScores:
    """Full, exposed and hidden losses of every training row on itself (one lower pass per row).

    Batches are sorted by length inside windows of ``window`` rows (default ``SELF_WINDOW_ROWS``; see
    ``window_batches``): rows ``[0, n)`` must start at a window boundary of the whole set
    for a part to reproduce the whole set's numbers exactly.
    """
    progress = progress or NullProgress()
    device = torch.device(device)
    model.eval()
    n = len(encoded)
    num_classes = model.classifier.out_features
    modes = [MaskMode.FULL, MaskMode.EXPOSED, MaskMode.HIDDEN] if model.scope.masked else [MaskMode.FULL]
    losses = {mode: np.zeros(n, dtype=np.float64) for mode in modes}
    probs = {mode: np.zeros((n, num_classes), dtype=np.float32) for mode in modes}
    labels_t = torch.as_tensor(labels)
    keys_t = torch.as_tensor(instance_keys)
    progress.start("self-influence", n)
    window = window or SELF_WINDOW_ROWS
    for indices in window_batches(encoded.lengths, batch_size, window):
        batch = encoded.batch(indices, device)
        keys = keys_t[indices].to(device)
        targets = labels_t[indices].to(device)
        with _autocast(device, amp_dtype):
            lower = model.encode_lower(batch)
            for mode in modes:
                logits = model.forward_upper(lower, batch, keys, mode).float()
                losses[mode][indices] = _nll(logits, targets).double().cpu().numpy()
                probs[mode][indices] = logits.softmax(-1).cpu().numpy()
        progress.advance(len(indices))
    progress.finish()
    masked = model.scope.masked
    return SelfScores(
        full_loss=losses[MaskMode.FULL],
        full_probs=probs[MaskMode.FULL],
        exposed_loss=losses[MaskMode.EXPOSED] if masked else None,
        hidden_loss=losses[MaskMode.HIDDEN] if masked else None,
        hidden_probs=probs[MaskMode.HIDDEN] if masked else None,
    )


@contextmanager
def _matrix_writer(path: str | Path | None, shape: tuple[int, int]) -> Iterator[np.ndarray | None]:
    """A float32 .npy memory map written to a temporary file and renamed when complete."""
    if path is None:
        yield None
        return
    with atomic_output(path) as tmp:
        matrix = open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
        yield matrix
        matrix.flush()
        del matrix


@dataclass
class InfluenceBlock:
    """Per-pair influence of training rows ``train_start .. train_start + n`` on validation rows ``val_index``.

    ``values`` is float32 ``[n, v]``: ``L(hidden_i, z_v) - L(exposed_i, z_v)``; ``row_sums`` float32
    ``[n]``, when given, is ``values.sum(1)`` (computed where ``values`` was still in cache). Both may be
    views of buffers that the next block overwrites: use or copy them before asking for the next block.
    """

    train_start: int
    val_index: np.ndarray
    values: torch.Tensor
    row_sums: torch.Tensor | None = None

    def sums(self) -> np.ndarray:
        """``values.sum(1)`` as float64 ``[n]`` (a float32 cascade sum: exact enough)."""
        sums = self.values.sum(1) if self.row_sums is None else self.row_sums
        return sums.double().cpu().numpy()


@torch.no_grad()
def influence_blocks(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: EncodedRows,
    val_labels: np.ndarray,
    *,
    batch_size: int = 64,
    chunk_mib: int = 256,
    pair_batch: int = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    method: str = "auto",
    progress: Progress | None = None,
    processes: Processes | None = None,
) -> Iterator[InfluenceBlock]:
    """The train x validation influence matrix, block by block, never whole in memory.

    ``method``: ``exact`` (the sub-networks' losses), ``linear`` (their first-order estimate from gate
    gradients, see ``linear_influence_blocks``) or ``auto`` (see ``resolve_influence_method``).
    With several ``processes`` (every one of them must iterate), the validation side that every training
    row needs (head features; gate gradients) is computed a block of validation rows per process and
    gathered; the training rows are the caller's to split.
    """
    if not model.scope.masked:
        raise ValueError("influence needs a run with instance masks (scope other than 'none')")
    progress = progress or NullProgress()
    device = torch.device(device)
    model.eval()
    if resolve_influence_method(model.scope, model.keep_prob, method) == "linear":
        yield from linear_influence_blocks(
            model,
            train_keys,
            val_encoded,
            val_labels,
            batch_size=batch_size,
            chunk_mib=chunk_mib,
            device=device,
            amp_dtype=amp_dtype,
            progress=progress,
            processes=processes,
        )
    elif model.scope.head_only:

        def features_of(rows: np.ndarray) -> torch.Tensor:
            subset = val_encoded.subset(rows)
            return head_features(model, subset, batch_size=batch_size, device=device, amp_dtype=amp_dtype)

        features = (processes or Processes()).map_rows(len(val_encoded), features_of).to(device)
        yield from head_influence_blocks(
            features,
            torch.as_tensor(val_labels, device=device),
            model.classifier.weight.detach().float(),
            model.classifier.bias.detach().float(),
            torch.as_tensor(train_keys, device=device),
            keep_prob=model.keep_prob,
            mask_seed=model.mask_seed,
            mask_scheme=model.mask_scheme,
            mask_groups=model.mask_groups,
            chunk_mib=chunk_mib,
            progress=progress,
        )
    else:
        yield from _pair_blocks(
            model,
            train_keys,
            val_encoded,
            val_labels,
            batch_size,
            pair_batch,
            chunk_mib,
            device,
            amp_dtype,
            progress,
        )


def influence(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: EncodedRows,
    val_labels: np.ndarray,
    *,
    matrix_path: str | Path | None = None,
    **options: Any,
) -> np.ndarray:
    """Influence of each training instance on the validation set: float64 ``[N]``.

    ``influence[i] = mean_v L(hidden_i, v) - L(exposed_i, v)``. With ``matrix_path``, the whole
    ``[N, V]`` float32 matrix of per-pair values is written there as ``.npy``. ``options`` are those of
    ``influence_blocks``.
    """
    totals = np.zeros(len(train_keys), dtype=np.float64)
    with _matrix_writer(matrix_path, (len(train_keys), len(val_encoded))) as matrix:
        for block in influence_blocks(model, train_keys, val_encoded, val_labels, **options):
            rows = slice(block.train_start, block.train_start + block.values.shape[0])
            totals[rows] += block.sums()
            if matrix is not None:
                matrix[rows, block.val_index] = block.values.cpu().numpy()
    return totals / len(val_encoded)


# Bytes of the influence matrix gathered from all processes at a time (per process, in memory).
_GATHER_BYTES = 64 * 2**20


def gather_matrix(
    processes: Processes, local_path: Path | None, path: str | Path, num_rows: int, num_val: int
) -> None:
    """Write the ``[num_rows, num_val]`` float32 matrix to ``path`` on the main process, from the row
    blocks of every process (``local_path``: this process's ``[stop - start, num_val]`` .npy, None when
    it holds no rows), a slice of rows of each process at a time."""
    blocks = [Shard(index, processes.count).rows(num_rows) for index in range(processes.count)]
    local = (
        np.load(local_path, mmap_mode="r")
        if local_path is not None
        else np.zeros((0, num_val), dtype=np.float32)
    )
    width = max(stop - start for start, stop in blocks)
    chunk = max(1, _GATHER_BYTES // max(1, num_val * 4 * processes.count))
    writer = _matrix_writer(path, (num_rows, num_val)) if processes.is_main else nullcontext(None)
    with writer as matrix:
        for offset in range(0, width, chunk):
            size = min(chunk, width - offset)  # rows of this slice, the same in every process
            part = torch.zeros((size, num_val), dtype=torch.float32)
            mine = np.array(local[offset : offset + size], dtype=np.float32)  # a copy, out of the map
            part[: len(mine)] = torch.from_numpy(mine)
            gathered = processes.gather_all(part).numpy()  # [count, size, num_val]
            if matrix is None:
                continue
            for index, (start, stop) in enumerate(blocks):
                rows = max(0, min(size, stop - start - offset))
                matrix[start + offset : start + offset + rows] = gathered[index, :rows]


def head_features(
    model: TodClassifier,
    encoded: EncodedRows,
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Head activations before the head mask, float32 ``[N, D]`` in row order (head scope only)."""
    features = torch.zeros((len(encoded), model.classifier.in_features), dtype=torch.float32, device=device)
    for indices in sorted_batches(encoded.lengths, batch_size):
        batch = encoded.batch(indices, device)
        with _autocast(device, amp_dtype):
            pooled = model.pool(model.encode_lower(batch), batch["attention_mask"])
            features[torch.as_tensor(indices, device=device)] = model.head_features(pooled).float()
    return features


def head_influence(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    train_keys: torch.Tensor,
    **options: Any,
) -> np.ndarray:
    """Mean head-scope influence ``[N]`` float64 over the validation rows (see ``head_influence_blocks``)."""
    totals = np.zeros(len(train_keys), dtype=np.float64)
    for block in head_influence_blocks(features, labels, weight, bias, train_keys, **options):
        rows = slice(block.train_start, block.train_start + block.values.shape[0])
        totals[rows] += block.sums()
    return totals / max(1, features.shape[0])


@torch.no_grad()
def head_influence_blocks(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    train_keys: torch.Tensor,
    *,
    keep_prob: float,
    mask_seed: int,
    mask_scheme: int = MASK_SCHEME,
    mask_groups: int = 0,
    chunk_mib: int = 256,
    block_shape: tuple[int, int] | None = None,
    progress: Progress | None = None,
) -> Iterator[InfluenceBlock]:
    """Head-scope influence from cached validation head features, as blocked matrix products.

    ``features`` float32 ``[V, D]`` (head activations before the head mask), ``labels`` int64 ``[V]``,
    classifier ``weight`` ``[C, D]`` and ``bias`` ``[C]``, ``train_keys`` int64 ``[N]``. Blocks cover
    ``n`` training rows times ``v`` validation rows; every tensor of a block, the class-weighted validation
    features ``[C*v, D]`` included, is sized from ``chunk_mib``, so peak memory is bounded whatever N, V and
    C are. ``block_shape`` = (training rows, validation rows) per block overrides the sizes derived from
    ``chunk_mib``. Blocks come training block by training block (each training block's masks are
    generated once), validation blocks inside.

    A row's cross-entropy depends only on the C - 1 differences between the other classes' logits and its
    label's, so each block is one ``[n, D] x [D, (C-1)*v]`` product (the floor of the computation), then
    the losses in cache-sized tiles.
    """
    progress = progress or NullProgress()
    num_classes, width = weight.shape
    num_val, num_train = features.shape[0], len(train_keys)
    columns = 1 if num_classes == 2 else num_classes  # memory accounting (conservative for C > 2)
    budget = chunk_mib * 2**20
    # The class-weighted features of a validation block take at most a quarter of the budget.
    val_chunk = max(1, min(num_val, int(budget // 4 // (columns * width * 4 + 1))))
    # Per (training row, validation row) pair, at most six float32 temporaries of ``columns`` values are
    # counted; generating a training row's [D] mask holds a few int64 hash intermediates.
    per_row_bytes = val_chunk * columns * 4 * 6 + width * 40
    chunk = max(1, int((budget - val_chunk * columns * width * 4) // per_row_bytes))
    if block_shape is not None:
        chunk, val_chunk = block_shape
    weight, bias = weight.float(), bias.float()
    val_ranges = [(start, min(start + val_chunk, num_val)) for start in range(0, num_val, val_chunk)]

    def targets_of(rows: tuple[int, int]) -> list[tuple[torch.Tensor | None, _HeadTargets]]:
        block = slice(*rows)
        return _head_targets(features[block].float(), labels[block], weight, bias, keep_prob)

    # One validation block: its targets once. Several: rebuilt per training block (cost 1/(2n) of its GEMM).
    only_targets = targets_of(val_ranges[0]) if len(val_ranges) == 1 else None
    # Blocks depend on the budget and the shapes only, never on the thread count or on the training rows
    # of a shard: a product's shape changes its rounding, and shards must merge bit for bit.
    workers = torch.get_num_threads() if features.device.type == "cpu" else 1
    # Buffers reused block after block (fresh ones would be fresh pages: page faults cost as much as the
    # losses). Flat, so that the first n * v values are a contiguous [n, v] whatever the block's shape.
    most_train, most_val = min(chunk, num_train), min(val_chunk, num_val)
    masks_buffer = torch.empty((most_train, width), dtype=torch.float32, device=features.device)
    values_buffer = torch.empty(most_train * most_val, dtype=torch.float32, device=features.device)
    sums_buffer = torch.empty(most_train, dtype=torch.float32, device=features.device)
    product_buffer = (
        torch.empty(most_train * (num_classes - 1) * most_val, dtype=torch.float32, device=features.device)
        if num_classes > 2
        else None
    )
    progress.start("influence", num_train * num_val)
    with _RowWorkers(workers) as run:
        for start in range(0, num_train, chunk):
            keys = train_keys[start : start + chunk]
            n = len(keys)
            masks = masks_buffer[:n]
            run(
                n,
                lambda rows, keys=keys, masks=masks: _float_masks(
                    keys[rows], mask_seed, width, keep_prob, mask_scheme, mask_groups, out=masks[rows]
                ),
            )
            for val_rows in val_ranges:
                v = val_rows[1] - val_rows[0]
                targets = only_targets or targets_of(val_rows)
                values = values_buffer[: n * v].view(n, v)
                product = (
                    None
                    if product_buffer is None
                    else product_buffer[: n * (num_classes - 1) * v].view(n, -1)
                )
                sums = sums_buffer[:n]
                run(
                    n,
                    lambda rows, masks=masks, targets=targets, values=values, product=product, sums=sums: (
                        _head_block_influence(
                            masks[rows],
                            targets,
                            keep_prob,
                            out=values[rows],
                            product=None if product is None else product[rows],
                            row_sums=sums[rows],
                        )
                    ),
                )
                yield InfluenceBlock(start, np.arange(*val_rows), values, sums)
                progress.advance(n * v)
    progress.finish()


# Fewer rows than this per worker thread are not split: a small block gains nothing from threads.
_WORKER_ROWS = 64
# A product over fewer training rows is computed padded to this many (see ``_targets_influence``).
_PRODUCT_ROWS = 64


class _RowWorkers:
    """Runs a function over row slices on ``workers`` threads, each with one torch thread.

    On a CPU every part of the head-scope computation (mask hashing, the block's GEMM, the losses) is
    split by training rows: each worker thread runs all of it on its own contiguous rows, single-threaded
    (torch releases the GIL inside its operations). The losses are many small element-wise operations on
    cache-sized tiles, which torch's own thread pool cannot split profitably; rows split across threads
    keep both the GEMM and the element-wise work on every core. ``run(n, fn)`` calls ``fn(slice)`` over a
    partition of ``range(n)`` and returns when all are done; torch's thread count is 1 only meanwhile.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, workers)
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _RowWorkers:
        if self.workers > 1:
            self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tod-clean-head")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def __call__(self, n: int, fn: Callable[[slice], object]) -> None:
        parts = min(self.workers, n // _WORKER_ROWS)
        if self.pool is None or parts < 2:
            fn(slice(0, n))
            return
        bounds = [n * k // parts for k in range(parts + 1)]
        with _one_thread():
            futures = [
                self.pool.submit(_single_threaded, fn, slice(bounds[k], bounds[k + 1])) for k in range(parts)
            ]
            for future in futures:
                future.result()


def _single_threaded(fn: Callable[[slice], object], rows: slice) -> None:
    torch.set_num_threads(1)  # per thread (OpenMP), and this thread's BLAS calls
    fn(rows)


# Elements per tile of the loss computation: in L2 cache (with the exposed buffer), large enough that the
# per-operation overhead (a few microseconds) stays small against the work.
_TILE = 131072
# Elements per call of the mask hash: its ~40 integer temporaries stay in cache.
_MASK_ELEMENTS = 262144
# The plain formula exponentiates logit differences: it is used for validation rows whose differences
# stay within this bound under every possible mask (float32 exp overflows past 88.7).
_PLAIN_LIMIT = 80.0
_FORMULAS = ("half", "plain", "shifted")


def _float_masks(
    keys: torch.Tensor,
    mask_seed: int,
    width: int,
    keep_prob: float,
    scheme: int,
    groups: int,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The exposed head masks of ``keys`` as float32 ``[n, D]`` (1 = kept), hashed in cache-sized slices."""
    masks = torch.empty((len(keys), width), dtype=torch.float32, device=keys.device) if out is None else out
    rows = max(1, _MASK_ELEMENTS // width) if keys.device.type == "cpu" else max(1, len(keys))
    with _one_thread():
        for start in range(0, len(keys), rows):
            part = keys[start : start + rows]
            masks[start : start + len(part)] = instance_masks(
                mask_seed, part, HEAD_SITE, width, keep_prob, scheme, groups
            )
    return masks


@dataclass
class _HeadTargets:
    """Validation rows seen through logit differences (each other class c minus the row's label y).

    ``directions`` float32 ``[(C-1)*v, D]`` (class-major): features times ``w_c - w_y``;
    ``exposed_offset`` ``[C-1, v]``: ``b_c - b_y``; ``hidden_offset`` ``[C-1, v]``: the full network's
    difference over ``1-p`` plus ``b_c - b_y``. With ``x`` = directions times an exposed mask, the exposed
    difference is ``x/p + exposed_offset`` and the hidden one ``-x/(1-p) + hidden_offset``.

    ``formula`` (see ``_targets_losses``): ``"plain"`` where no difference can exceed ``_PLAIN_LIMIT`` in
    size under any mask, so exponentials cannot overflow; ``"half"``, a faster plain form for two classes
    at ``p = 1/2`` (``constant`` = ``exp(hidden_offset + exposed_offset)``, within the same limit);
    ``"shifted"`` otherwise.
    """

    directions: torch.Tensor
    exposed_offset: torch.Tensor
    hidden_offset: torch.Tensor
    formula: str
    constant: torch.Tensor | None = None


def _head_targets(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, keep_prob: float
) -> list[tuple[torch.Tensor | None, _HeadTargets]]:
    """The targets of a validation block: ``(columns, targets)`` parts, ``columns`` None for all rows.

    Each validation row takes the fastest formula its differences allow under every mask (bounded from
    its features before any product): ``half``, ``plain`` or ``shifted``; one part per formula in use.
    """
    num_classes, width = weight.shape
    v = features.shape[0]
    classes = torch.arange(num_classes, device=features.device).expand(v, num_classes)
    others = classes[classes != labels[:, None]].view(v, num_classes - 1)  # [v, C-1], in class order
    directions = torch.empty((num_classes - 1, v, width), dtype=torch.float32, device=features.device)
    for column in range(num_classes - 1):
        torch.mul(features, weight[others[:, column]] - weight[labels], out=directions[column])
    full = directions.sum(-1)  # [C-1, v]
    exposed_offset = (bias[others] - bias[labels][:, None]).T.contiguous()  # [C-1, v]
    hidden_offset = full / (1.0 - keep_prob) + exposed_offset
    # A mask keeps any subset of units: x lies between the sums of the negative and positive terms.
    low, high = directions.clamp(max=0.0).sum(-1), directions.clamp(min=0.0).sum(-1)
    exposed_extremes = torch.stack([exposed_offset + low / keep_prob, exposed_offset + high / keep_prob])
    hidden_extremes = torch.stack(
        [hidden_offset - low / (1.0 - keep_prob), hidden_offset - high / (1.0 - keep_prob)]
    )
    limit = _PLAIN_LIMIT - math.log(num_classes - 1)  # 1 + sum of C-1 exponentials stays normal too
    plain = (torch.cat([exposed_extremes, hidden_extremes]).abs() <= limit).all(0).all(0)  # [v]
    # The half formula also exponentiates h + e, the same for every mask at p = 1/2 (see ``_half_ratio``).
    half = (
        plain & ((hidden_offset + exposed_offset).abs() <= _PLAIN_LIMIT).all(0)
        if keep_prob == 0.5 and num_classes == 2
        else torch.zeros_like(plain)
    )
    formula = torch.where(half, 0, torch.where(plain, 1, 2))  # [v]: half, plain, shifted

    def part(rows: torch.Tensor | None, code: int) -> tuple[torch.Tensor | None, _HeadTargets]:
        select = slice(None) if rows is None else rows
        exposed, hidden = exposed_offset[:, select], hidden_offset[:, select]
        return rows, _HeadTargets(
            directions[:, select].reshape(-1, width),
            exposed,
            hidden,
            _FORMULAS[code],
            torch.exp(hidden + exposed) if code == 0 else None,
        )

    codes = [code for code in range(len(_FORMULAS)) if bool((formula == code).any())]
    if len(codes) == 1:
        return [part(None, codes[0])]
    return [part(torch.nonzero(formula == code).squeeze(1), code) for code in codes]


def _head_block_influence(
    masks: torch.Tensor,
    parts: list[tuple[torch.Tensor | None, _HeadTargets]],
    keep_prob: float,
    out: torch.Tensor | None = None,
    product: torch.Tensor | None = None,
    row_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """``L(hidden_i, z_v) - L(exposed_i, z_v)``, float32 ``[n, v]``, for exposed masks ``[n, D]``.

    ``out`` receives the result; ``product`` (``[n, (C-1)*v]``, C > 2) holds the block's product;
    ``row_sums`` ``[n]``, if given, receives the result's row sums.
    """
    num_val = sum(targets.exposed_offset.shape[1] for _, targets in parts)
    if out is None:
        out = torch.empty((masks.shape[0], num_val), dtype=torch.float32, device=masks.device)
    if len(parts) == 1 and parts[0][0] is None:
        return _targets_influence(masks, parts[0][1], keep_prob, out, product, row_sums)
    for columns, targets in parts:
        out[:, columns] = _targets_influence(masks, targets, keep_prob)
    if row_sums is not None:
        torch.sum(out, 1, out=row_sums)
    return out


def _targets_influence(
    masks: torch.Tensor,
    targets: _HeadTargets,
    keep_prob: float,
    out: torch.Tensor | None = None,
    product: torch.Tensor | None = None,
    row_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """One ``[n, D] x [D, (C-1)*v]`` product, then the losses tile by tile (in cache): ``[n, v]``.

    With logit differences ``d`` (C - 1 per pair) the cross-entropy is ``log(1 + sum exp d)``, so the
    influence is ``log(S_h / S_e)``: one logarithm per pair. Targets that are not ``plain`` use the
    shifted form ``m + log(exp(-m) + sum exp(d - m))``, ``m = max(0, max d)``.
    """
    diffs, v = targets.exposed_offset.shape
    n = masks.shape[0]
    if out is None:
        out = torch.empty((n, v), dtype=torch.float32, device=masks.device)
    if n == 0:
        return out
    # For two classes the product goes straight into ``out``; the losses then overwrite it tile by tile.
    if diffs == 1:
        product = out
    elif product is None:
        product = torch.empty((n, diffs * v), dtype=torch.float32, device=masks.device)
    if n < _PRODUCT_ROWS and masks.device.type == "cpu":
        # BLAS takes another kernel for a product of a few rows, which rounds differently: padded, a
        # training row's values do not depend on how many rows share its block (a shard's last block).
        padded = torch.zeros((_PRODUCT_ROWS, masks.shape[1]), dtype=masks.dtype, device=masks.device)
        padded[:n] = masks
        product.copy_(torch.mm(padded, targets.directions.T)[:n])
    else:
        torch.mm(masks, targets.directions.T, out=product)
    return _targets_losses(product, targets, keep_prob, out, row_sums)


def _targets_losses(
    raw: torch.Tensor,
    targets: _HeadTargets,
    keep_prob: float,
    out: torch.Tensor,
    row_sums: torch.Tensor | None = None,
) -> torch.Tensor:
    """The losses of a block from its product ``raw`` ``[n, (C-1)*v]`` (overwritten), into ``out`` ``[n, v]``
    (which may be ``raw`` itself for two classes), tile by tile in cache; their row sums into ``row_sums``."""
    diffs, v = targets.exposed_offset.shape
    n = raw.shape[0]
    # Tiles are for CPU caches; on a GPU one tile per block keeps kernel launches few.
    tile_rows = max(1, _TILE // (diffs * v)) if raw.device.type == "cpu" else n
    exposed_buffer = torch.empty((min(tile_rows, n), diffs, v), dtype=torch.float32, device=raw.device)
    one = torch.ones((), dtype=torch.float32, device=raw.device)  # a tensor: no scalar wrapping per call
    with _one_thread():
        for start in range(0, n, tile_rows):
            rows = slice(start, start + tile_rows)
            hidden = raw[rows].view(-1, diffs, v)  # the differences in place (for two classes: the result)
            exposed = exposed_buffer[: hidden.shape[0]]
            if diffs == 1:  # two classes: flat [r, v] views, fewer operations
                hidden, exposed = hidden.view(-1, v), exposed.view(-1, v)
            influence = _tile_influence(hidden, exposed, targets, keep_prob, one, out[rows])
            if row_sums is not None:
                torch.sum(influence, 1, out=row_sums[rows])
    return out


def _tile_influence(
    hidden: torch.Tensor,
    exposed: torch.Tensor,
    targets: _HeadTargets,
    keep_prob: float,
    one: torch.Tensor,
    out: torch.Tensor,
) -> torch.Tensor:
    """One tile's influence into ``out`` ``[r, v]``, from its products ``hidden`` (``[r, C-1, v]``, or
    ``[r, v]`` for two classes; overwritten) with ``exposed`` (the same shape) as scratch."""
    if targets.formula == "half":  # the offsets are applied inside
        return _half_ratio(hidden, exposed, targets, one, out).log_()
    torch.add(targets.exposed_offset, hidden, alpha=1.0 / keep_prob, out=exposed)
    torch.add(targets.hidden_offset, hidden, alpha=-1.0 / (1.0 - keep_prob), out=hidden)
    if targets.formula == "plain":
        return torch.div(_plain_sum(hidden, one), _plain_sum(exposed, one), out=out).log_()
    exposed_max, exposed_sum = _shifted_sum(exposed)
    hidden_max, hidden_sum = _shifted_sum(hidden)
    return torch.div(hidden_sum, exposed_sum, out=out).log_().add_(hidden_max).sub_(exposed_max)


@contextmanager
def _one_thread() -> Iterator[None]:
    """torch's thread count is 1 meanwhile. Element-wise work on cache-sized tiles runs on the calling
    thread: handing each small operation to torch's pool costs more than it saves, and stalls for
    milliseconds when the machine is busy. (Inside ``_RowWorkers`` every thread already has one torch
    thread; in a block too small to split, the product outside this context keeps every thread.)"""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _half_ratio(
    raw: torch.Tensor, buffer: torch.Tensor, targets: _HeadTargets, one: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """``S_h / S_e`` for two classes at ``p = 1/2`` with one exponential per pair (``raw`` = x, ``[r, v]``,
    overwritten; ``buffer`` ``[r, v]`` scratch).

    At ``p = 1/2`` the exposed difference is ``e = exposed_offset + 2x`` and the hidden one
    ``h = hidden_offset - 2x = (hidden_offset + exposed_offset) - e``, so ``exp(h) = c / E`` with
    ``E = exp(e)`` and ``c = targets.constant``: ``S_h / S_e = (1 + c/E) / (1 + E)``, every term within
    float32's range where the plain formula's are (``c/E = exp(h)``).
    """
    exposed = torch.add(targets.exposed_offset, raw, alpha=2.0, out=raw).exp_()
    hidden_sum = torch.div(targets.constant, exposed, out=buffer).add_(one)
    return torch.div(hidden_sum, exposed.add_(one), out=out)


def _plain_sum(diffs: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    """``1 + sum_c exp(d_c)`` of logit differences ``[r, C-1, v]`` or, for two classes, ``[r, v]``
    (overwritten) -> ``[r, v]``."""
    diffs.exp_()
    total = diffs if diffs.dim() == 2 else diffs.sum(1)
    return total.add_(one)


def _shifted_sum(diffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For logit differences ``[r, C-1, v]`` or ``[r, v]`` (two classes; overwritten): ``m = max(0, max d)``
    and ``S = exp(-m) + sum exp(d - m)``, both ``[r, v]``, so that the cross-entropy is ``m + log S``."""
    if diffs.dim() == 2:
        shift = diffs.clamp_min(0.0)
        return shift, diffs.sub_(shift).exp_().add_(torch.exp(-shift))
    shift = diffs.amax(1).clamp_min_(0.0)
    total = diffs.sub_(shift[:, None]).exp_().sum(1)
    return shift, total.add_(torch.exp(-shift))


def _pair_blocks(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: EncodedRows,
    val_labels: np.ndarray,
    batch_size: int,
    pair_batch: int,
    chunk_mib: float,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    progress: Progress,
) -> Iterator[InfluenceBlock]:
    """Layer and feed-forward scopes: the masked top of the network runs on (instance, row) pairs."""
    num_train = len(train_keys)
    keys_all = torch.as_tensor(train_keys, device=device)
    labels_all = torch.as_tensor(val_labels)
    val_block = max(1, min(batch_size, pair_batch))
    progress.start("influence", num_train * len(val_encoded))
    pooled_only = model.split_layer == model.num_layers  # layers:1: masks commute with pooling
    if pooled_only:  # a pair costs a head pass, not an encoder pass: far bigger blocks fit
        pair_batch = max(pair_batch, int(chunk_mib * 2**20 // (hidden_size_of(model.encoder) * 4 * 8)))
        val_block = max(val_block, min(len(val_encoded), pair_batch // 64))
    for val_indices in sorted_batches(val_encoded.lengths, val_block):
        batch = val_encoded.batch(val_indices, device)
        width = len(val_indices)
        targets = labels_all[val_indices].to(device)
        with _autocast(device, amp_dtype):
            lower = model.encode_lower(batch)
            if pooled_only:
                lower = model.pool(lower, batch["attention_mask"])
        chunk = max(1, pair_batch // width)
        for start in range(0, num_train, chunk):
            keys = keys_all[start : start + chunk]
            n = len(keys)
            rows = torch.arange(n, device=device).repeat_interleave(width)
            pair_lower = lower.repeat(n, *([1] * (lower.dim() - 1)))
            pair_inputs = {} if pooled_only else {name: value.repeat(n, 1) for name, value in batch.items()}
            pair_targets = targets.repeat(n)
            with _autocast(device, amp_dtype):
                if pooled_only:
                    exposed = model.forward_pooled(pair_lower, keys, MaskMode.EXPOSED, rows)
                    hidden = model.forward_pooled(pair_lower, keys, MaskMode.HIDDEN, rows)
                else:
                    exposed = model.forward_upper(pair_lower, pair_inputs, keys, MaskMode.EXPOSED, rows)
                    hidden = model.forward_upper(pair_lower, pair_inputs, keys, MaskMode.HIDDEN, rows)
            values = (_nll(hidden, pair_targets) - _nll(exposed, pair_targets)).view(n, width)
            yield InfluenceBlock(start, np.asarray(val_indices), values)
            progress.advance(n * width)
    progress.finish()


# ---- the linearized path: gate gradients of the validation rows, then one product per block ---------

# ``auto`` computes linearly the scopes whose ``linear_by_default`` says so, at this keep probability only
# (see ``Scope.linear_by_default``).
AUTO_LINEAR_KEEP_PROB = 0.5


def resolve_influence_method(scope: Scope, keep_prob: float, method: str) -> str:
    """``exact`` or ``linear``: the method ``method`` (one of INFLUENCE_METHODS) means for a run of
    ``scope`` trained at ``keep_prob``."""
    if method not in INFLUENCE_METHODS:
        raise ConfigError(f"influence method must be one of {', '.join(INFLUENCE_METHODS)}, got {method!r}")
    if method != "auto":
        return method
    measured = scope.linear_by_default and abs(keep_prob - AUTO_LINEAR_KEEP_PROB) < 1e-9
    return "linear" if measured else "exact"


@dataclass
class GateGradients:
    """dL(z_v)/dgamma_u of validation rows: ``values`` float32 ``[V, U]``, the sites' units concatenated
    in the order of ``sites`` = ``[(site, units), ...]`` (``TodClassifier.mask_sites``)."""

    sites: list[tuple[int, int]]
    values: torch.Tensor


def gate_gradients(
    model: TodClassifier,
    encoded: EncodedRows,
    labels: np.ndarray,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> GateGradients:
    """Gradient of each row's full-network loss with respect to every masked unit's multiplier.

    One forward and one backward pass per batch, with gates of ones at every mask site (parameters get
    no gradient: only the gates are differentiated). Rows never interact in eval mode and row b's gate
    scales only row b's activations, so the gradient of the batch's summed loss with respect to row b's
    gate is exactly row b's own gradient. Returns float32 ``[len(encoded), U]`` in row order.
    """
    device = torch.device(device)
    model.eval()
    sites = model.mask_sites()
    offsets = np.cumsum([0] + [units for _, units in sites])
    values = torch.zeros((len(encoded), int(offsets[-1])), dtype=torch.float32, device=device)
    labels_t = torch.as_tensor(labels)
    for indices in sorted_batches(encoded.lengths, batch_size):
        batch = encoded.batch(indices, device)
        targets = labels_t[indices].to(device)
        with torch.no_grad(), _autocast(device, amp_dtype):
            lower = model.encode_lower(batch)  # below the first mask site: no gate, no graph
        with torch.enable_grad(), model.gating() as gates, _autocast(device, amp_dtype):
            logits = model.forward_upper(lower, batch, None, MaskMode.FULL)
            loss = _nll(logits, targets).sum()
            reached = sorted((site, gate.shape[1]) for site, gate in gates.items())
            if reached != sites:  # a hook missed or doubled: a bug, not a user error
                raise RuntimeError(f"gated pass reached mask sites {reached}, expected {sites}")
            grads = torch.autograd.grad(loss, [gates[site] for site, _ in sites])
        values[torch.as_tensor(indices, device=device)] = torch.cat(grads, dim=1).float()
    return GateGradients(sites, values)


def gate_deltas(model: TodClassifier, train_keys: torch.Tensor, sites: list[tuple[int, int]]) -> torch.Tensor:
    """``gamma_hidden - gamma_exposed`` of every training key and unit: float32 ``[n, U]``.

    A unit the instance exposes has multiplier 1/p in its exposed sub-network and 0 in its hidden one
    (delta -1/p); a unit it hides, 0 and 1/(1-p) (delta 1/(1-p)). Units in the order of ``sites``.
    """
    p = model.keep_prob
    parts = []
    for site, units in sites:
        exposed = instance_masks(
            model.mask_seed, train_keys, site, units, p, model.mask_scheme, model.mask_groups
        )
        parts.append(torch.where(exposed, -1.0 / p, 1.0 / (1.0 - p)).to(torch.float32))
    return torch.cat(parts, dim=1)


def linear_influence_blocks(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: EncodedRows,
    val_labels: np.ndarray,
    *,
    batch_size: int = 64,
    chunk_mib: float = 256,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    block_shape: tuple[int, int] | None = None,
    progress: Progress | None = None,
    processes: Processes | None = None,
) -> Iterator[InfluenceBlock]:
    """First-order influence ``delta [n, U] @ G^T [U, v]`` per block (float32 ``[n, v]`` values).

    ``G`` = ``gate_gradients`` of a block of validation rows and ``delta`` = ``gate_deltas`` of a block of
    training keys. The gradient block ``[v, U]`` takes at most half of ``chunk_mib``; a training block's
    deltas, mask-hash intermediates and values fill the rest, so peak memory is bounded whatever N and V
    are. ``block_shape`` = (training rows, validation rows) per block overrides those sizes.
    """
    progress = progress or NullProgress()
    device = torch.device(device)
    sites = model.mask_sites()
    units = sum(count for _, count in sites)
    num_train, num_val = len(train_keys), len(val_encoded)
    budget = chunk_mib * 2**20
    val_chunk = max(1, min(num_val, int(budget // 2 // (units * 4))))
    # Per training row: its float32 deltas, about five int64 hash intermediates of the widest site, and
    # a row of values.
    widest = max(count for _, count in sites)
    per_row_bytes = units * 4 + widest * 40 + val_chunk * 4
    chunk = max(1, int((budget - val_chunk * units * 4) // per_row_bytes))
    if block_shape is not None:
        chunk, val_chunk = block_shape
    keys_all = torch.as_tensor(train_keys, device=device)
    progress.start("influence (linear)", num_train * num_val)
    for val_start in range(0, num_val, val_chunk):
        val_index = np.arange(val_start, min(num_val, val_start + val_chunk))

        def gradients(rows: np.ndarray, val_index: np.ndarray = val_index) -> torch.Tensor:
            return gate_gradients(
                model,
                val_encoded.subset(val_index[rows]),
                val_labels[val_index[rows]],
                batch_size=batch_size,
                device=device,
                amp_dtype=amp_dtype,
            ).values

        grads = (processes or Processes()).map_rows(len(val_index), gradients).to(device)  # [v, U]
        for start in range(0, num_train, chunk):
            deltas = gate_deltas(model, keys_all[start : start + chunk], sites)  # [n, U]
            yield InfluenceBlock(start, val_index, deltas @ grads.T)
            progress.advance(deltas.shape[0] * len(val_index))
    progress.finish()


# ---- the `score` workflow: a run directory + data files -> a scores table ------------------------


@dataclass
class ScoreResult:
    frame: pd.DataFrame
    meta: dict[str, Any]
    self_scores: SelfScores
    influence: np.ndarray | None


def check_train_file(table: Table, info: RunInfo) -> None:
    if table.sha256 != info.train_file.sha256:
        raise RunDirError(
            f"{table.source}: differs from the file this run was trained on ({info.train_file.path}: "
            f"sha256 {info.train_file.sha256[:12]}..., this file {table.sha256[:12]}...); "
            "score the training data unchanged, or train a new run"
        )


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

    With ``shard``, only that shard's block of rows (see ``tod_clean.shard``): the frame has no ``rank``
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
        raise ConfigError("--matrix needs a validation set (--val)")
    if val_table is not None and not info.scope.masked:
        raise ConfigError(
            f"{run.path}: trained with scope '{info.scope}' (no instance masks), so it has no influence to score"
        )
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
    scores = self_scores(
        model,
        # the span's rows of the training tokens (tokens/, as train kept them; tokenised when missing)
        encode_texts(tokenizer, span.texts, span.text_pairs, max_length, cache_dir=run.file(TOKENS_DIR)),
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
        val_encoded = encode_texts(tokenizer, val_instances.texts, val_instances.text_pairs, max_length)
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
                batch_size=config.batch_size,
                chunk_mib=config.chunk_mib,
                pair_batch=config.pair_batch,
                device=torch_device,
                amp_dtype=amp_dtype,
                method=config.influence_method,
                matrix_path=own_matrix if processes.several else matrix_path,
                progress=progress if processes.is_main else None,
                processes=processes,
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
        "keep_prob": info.train.keep_prob,
        # exact or linear: how the influence column was computed (None without a validation set)
        "influence_method": None
        if val_table is None
        else resolve_influence_method(info.scope, info.train.keep_prob, config.influence_method),
    }
    if shard is not None:
        frame.attrs[SHARD_KEY] = shard_record(shard, info.train_file.rows, meta)
    return ScoreResult(frame, meta, scores, influence_values)


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
    return Instances(
        instances.texts[start:stop],
        None if instances.text_pairs is None else instances.text_pairs[start:stop],
        instances.labels[start:stop],
        instances.instance_keys[start:stop],
        None if instances.ids is None else instances.ids[start:stop],
    )


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
