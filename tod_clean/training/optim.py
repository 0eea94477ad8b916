"""What trains, and how fast: the optimizer's parameter groups (head, LoRA adapters, encoder) with their
learning rates and weight decay, the warm-up and linear-decay schedule, and the freezing modes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import get_scheduler

from tod_clean.config import Freeze, TrainConfig
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes.adapters import lora_parameters


def make_optimizer(model: TodClassifier, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the encoder, LoRA adapters and head at their own learning rates; no decay on biases
    and norms."""
    head = [model.head_dense, model.classifier]
    head_ids = {id(p) for module in head for p in module.parameters()}
    adapter_ids = {id(p) for p in lora_parameters(model.encoder)}
    rates = {
        "encoder": config.learning_rate,
        "head": config.head_learning_rate,
        "lora": config.lora_learning_rate,
    }
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if id(parameter) in head_ids else "lora" if id(parameter) in adapter_ids else "encoder"
        groups.setdefault((part, parameter.ndim >= 2), []).append(parameter)
    param_groups = [
        {"params": params, "lr": rates[part], "weight_decay": config.weight_decay if decay else 0.0}
        for (part, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups)


def set_trainable(model: TodClassifier, config: TrainConfig) -> None:
    """Freeze what ``config`` says: layers below the masks (``below``), or everything but the parameters
    that belong to one mask unit (``unmasked``, and always in the lora scope)."""
    if config.freeze == Freeze.BELOW:
        for parameter in model.lower_parameters():
            parameter.requires_grad_(False)
    elif config.separated:
        separated = {id(p) for p in model.separated_parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in separated)


def log_priors(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """Log class frequencies ``[C]`` float32 of int64 ``labels`` (a class with no row counts as half a row)."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    counts[counts == 0] = 0.5
    return torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, rows: int) -> Any:
    """The learning rate's linear warm-up (``warmup_ratio`` of the steps) and linear decay to zero over
    the optimizer steps of training ``rows`` rows for ``config.epochs`` epochs."""
    batches_per_epoch = math.ceil(rows / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    return get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
