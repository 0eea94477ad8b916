"""The exact influence in the layer, feed-forward, LoRA and channels scopes: the masked top of the network
runs on (training instance, validation row) pairs, the layers below the first mask site once per validation
row."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from tod_clean.encoding import sorted_batches
from tod_clean.influence.base import InfluenceBlock
from tod_clean.influence.passes import autocast, nll
from tod_clean.masks import MaskMode
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.runtime.progress import Progress
from tod_clean.scopes.architecture import hidden_size_of


def pair_influence_blocks(
    model: TodClassifier,
    train_keys: np.ndarray,
    val_encoded: Encoded,
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
        with autocast(device, amp_dtype):
            lower = model.encode_lower(batch)
            if pooled_only:
                lower = model.pool(lower, batch.get("attention_mask"))
        chunk = max(1, pair_batch // width)
        for start in range(0, num_train, chunk):
            keys = keys_all[start : start + chunk]
            n = len(keys)
            rows = torch.arange(n, device=device).repeat_interleave(width)
            pair_lower = lower.repeat(n, *([1] * (lower.dim() - 1)))
            pair_inputs = (
                {} if pooled_only else {name: _repeat_rows(value, n) for name, value in batch.items()}
            )
            pair_targets = targets.repeat(n)
            with autocast(device, amp_dtype):
                if pooled_only:
                    exposed = model.forward_pooled(pair_lower, keys, MaskMode.EXPOSED, rows)
                    hidden = model.forward_pooled(pair_lower, keys, MaskMode.HIDDEN, rows)
                else:
                    exposed = model.forward_upper(pair_lower, pair_inputs, keys, MaskMode.EXPOSED, rows)
                    hidden = model.forward_upper(pair_lower, pair_inputs, keys, MaskMode.HIDDEN, rows)
            values = (nll(hidden, pair_targets) - nll(exposed, pair_targets)).view(n, width)
            yield InfluenceBlock(start, np.asarray(val_indices), values)
            progress.advance(n * width)
    progress.finish()


def _repeat_rows(value: torch.Tensor, n: int) -> torch.Tensor:
    """``value`` ``[B, ...]`` (token ids ``[B, T]``, pixels ``[B, 3, H, W]``) stacked ``n`` times: ``[n B, ...]``."""
    return value.repeat(n, *([1] * (value.dim() - 1)))
