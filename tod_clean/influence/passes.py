"""Pieces of the forward passes every estimator runs: the autocast context and the per-row loss."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` to ``amp_dtype`` on ``device``; no autocast for None."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row: logits ``[B, C]``, labels ``[B]`` -> ``[B]`` float32."""
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
