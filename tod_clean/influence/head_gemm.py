"""The exact head-scope influence as blocked matrix products.

With head features ``A`` [V, D] of the validation rows, classifier weights ``W`` [C, D] and the exposed mask
``m_i`` [D], the exposed logits are ``A (W * m_i)^T / p + b`` and the hidden logits
``(A W^T - A (W * m_i)^T) / (1-p) + b``, so one GEMM per block of training instances gives both. On a CPU
the blocks are split by training rows across worker threads, and the losses are computed in cache-sized
tiles with the fastest formula each validation row's logits allow without overflow.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tod_clean.encoding import sorted_batches
from tod_clean.influence.base import InfluenceBlock
from tod_clean.influence.passes import autocast
from tod_clean.masks import MASK_SCHEME, instance_masks
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.runtime.progress import NullProgress, Progress
from tod_clean.scopes import HEAD_SITE


def head_features(
    model: TodClassifier,
    encoded: Encoded,
    *,
    batch_size: int,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Head activations before the head mask, float32 ``[N, D]`` in row order (head scope only)."""
    features = torch.zeros((len(encoded), model.classifier.in_features), dtype=torch.float32, device=device)
    for indices in sorted_batches(encoded.lengths, batch_size):
        batch = encoded.batch(indices, device)
        with autocast(device, amp_dtype):
            pooled = model.pool(model.encode_lower(batch), batch.get("attention_mask"))
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
    chunk_mib: float = 256,
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

            def fill_masks(rows: slice, keys: torch.Tensor = keys, masks: torch.Tensor = masks) -> None:
                _float_masks(
                    keys[rows], mask_seed, width, keep_prob, mask_scheme, mask_groups, out=masks[rows]
                )

            run(n, fill_masks)
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

                def block_influence(
                    rows: slice,
                    masks: torch.Tensor = masks,
                    targets: list[tuple[torch.Tensor | None, _HeadTargets]] = targets,
                    values: torch.Tensor = values,
                    product: torch.Tensor | None = product,
                    sums: torch.Tensor = sums,
                ) -> None:
                    _head_block_influence(
                        masks[rows],
                        targets,
                        keep_prob,
                        out=values[rows],
                        product=None if product is None else product[rows],
                        row_sums=sums[rows],
                    )

                run(n, block_influence)
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
    assert targets.constant is not None  # set for two classes at p = 1/2, the only use of this path
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
