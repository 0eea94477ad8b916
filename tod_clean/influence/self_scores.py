"""Scores of every training row on itself: its full, exposed and hidden losses and class probabilities.

``full_loss`` is L(full, z_i) (the whole network, no instance mask); ``exposed_loss`` L(exposed_i, z_i)
(the sub-network that trained on z_i); ``hidden_loss`` L(hidden_i, z_i) (the sub-network that hides z_i);
``self_influence`` their difference. Layers below the first mask site run once per row for all three.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tod_clean.encoding import window_batches
from tod_clean.influence.passes import autocast, nll
from tod_clean.masks import MaskMode
from tod_clean.model_inputs import Encoded
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.runtime.progress import NullProgress, Progress


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
        sliced: dict[str, Any] = {
            field.name: None if (values := getattr(self, field.name)) is None else values[start:stop]
            for field in dataclasses.fields(self)
        }
        return dataclasses.replace(self, **sliced)

    @property
    def self_influence(self) -> np.ndarray | None:
        if self.hidden_loss is None or self.exposed_loss is None:
            return None
        return self.hidden_loss - self.exposed_loss


# Self-scores sort rows by length inside windows of this many rows (see ``window_batches``).
SELF_WINDOW_ROWS = 1024


@torch.no_grad()
def self_scores(
    model: TodClassifier,
    encoded: Encoded,
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
        with autocast(device, amp_dtype):
            lower = model.encode_lower(batch)
            for mode in modes:
                logits = model.forward_upper(lower, batch, keys, mode).float()
                losses[mode][indices] = nll(logits, targets).double().cpu().numpy()
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
