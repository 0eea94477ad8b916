"""Choosing the torch device and mixed precision."""

from __future__ import annotations

import torch

from tod_clean.errors import ConfigError, spelled


def pick_device(name: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"{spelled('device')} {name!r} is not a device; use cpu, cuda, cuda:N or auto"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"{spelled('device')} {name!r} asked for, but CUDA is not available on this machine"
        )
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA when supported (or when asked for); otherwise full precision (None)."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None
