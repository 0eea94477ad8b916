"""The linearized influence (``--influence linear``): a first-order estimate from gate gradients.

With gamma_u the multiplier of masked unit u (1 in the full network, m/p exposed, (1-m)/(1-p) hidden),
``L(hidden_i, z) - L(exposed_i, z) ~ sum_u delta_iu dL(z)/dgamma_u`` where
``delta_iu = (1-m_iu)/(1-p) - m_iu/p``; one backward pass per validation row gives the gradients ``G``
[V, U], and the whole matrix is ``delta @ G^T``, one product per block.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from tod_clean.encoding import sorted_batches
from tod_clean.influence.base import InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.influence.passes import autocast, nll
from tod_clean.masks import MaskMode, instance_masks
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.runtime.processes import Processes
from tod_clean.runtime.progress import NullProgress, Progress


@dataclass
class GateGradients:
    """dL(z_v)/dgamma_u of validation rows: ``values`` float32 ``[V, U]``, the sites' units concatenated
    in the order of ``sites`` = ``[(site, units), ...]`` (``TodClassifier.mask_sites``)."""

    sites: list[tuple[int, int]]
    values: torch.Tensor


def gate_gradients(
    model: TodClassifier,
    encoded: Encoded,
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
        with torch.no_grad(), autocast(device, amp_dtype):
            lower = model.encode_lower(batch)  # below the first mask site: no gate, no graph
        with torch.enable_grad(), model.gating() as gates, autocast(device, amp_dtype):
            logits = model.forward_upper(lower, batch, None, MaskMode.FULL)
            loss = nll(logits, targets).sum()
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
    val_encoded: Encoded,
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


class LinearInfluence(InfluenceEstimator):
    """Every masked scope: ``linear_influence_blocks``."""

    name = "linear"

    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        return linear_influence_blocks(
            task.model,
            task.train_keys,
            task.val_encoded,
            task.val_labels,
            batch_size=task.batch_size,
            chunk_mib=task.chunk_mib,
            device=task.device,
            amp_dtype=task.amp_dtype,
            progress=task.progress,
            processes=task.processes,
        )
