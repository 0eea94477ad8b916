"""Batch norm per sub-network, for the channels scope (torch): a ``BatchNorm2d`` whose training statistics
of each channel come only from the rows whose pass runs that channel."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

UnitsInFlight = Callable[[], "torch.Tensor | None"]  # bool [B, C] of the pass in flight; None: full network


class SubNetworkBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` whose batch statistics, channel by channel, are those of the rows whose pass runs
    the channel (``units()``: bool ``[B, C]``, None when the full network runs), and are constants to the
    backward pass.

    In training mode with instance masks in flight, channel c is normalised by the mean and (biased)
    variance over the rows that run c and all their positions, and only a channel that some row runs
    updates its running statistics (with the unbiased variance, as ``BatchNorm2d`` does). A row that does
    not run c gets values normalised by the other rows' statistics, which its mask then zeroes: nothing it
    holds enters c's statistics. The gradient does not flow through the statistics (each row is
    normalised as evaluation mode normalises it, by given numbers), so the gradient of a row's loss stays
    in that row's own computation and reaches only the units the row runs. In evaluation mode, or when the
    full network runs, it is ``BatchNorm2d``.
    """

    units: UnitsInFlight

    @classmethod
    def replacing(cls, source: nn.BatchNorm2d, units: UnitsInFlight) -> SubNetworkBatchNorm2d:
        """A batch norm that holds ``source``'s own parameters and buffers (as ``SyncBatchNorm``'s
        conversion does), so state dicts and optimizers see the same tensors under the same names."""
        if not source.affine or not source.track_running_stats:
            raise ValueError("a sub-network batch norm needs affine parameters and running statistics")
        norm = cls(source.num_features, source.eps, source.momentum)
        norm.weight, norm.bias = source.weight, source.bias
        norm.running_mean, norm.running_var = source.running_mean, source.running_var
        norm.num_batches_tracked = source.num_batches_tracked
        norm.train(source.training)
        norm.units = units
        return norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, C, h, w]`` normalised, in its own dtype (the statistics in float32)."""
        units = self.units() if self.training else None
        if units is None:
            return super().forward(x)
        with torch.no_grad():
            mean, var, count = self.batch_statistics(x.float(), units.to(torch.float32))
            self._update_running(mean, var, count)
        out = nn.functional.batch_norm(x.float(), mean, var, self.weight, self.bias, False, 0.0, self.eps)
        return out.to(x.dtype)

    @staticmethod
    def batch_statistics(
        values: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean, biased variance and number of values ``[C]`` of each channel of ``values`` ``[B, C, h, w]``
        over the rows whose ``weights`` ``[B, C]`` are 1."""
        count = weights.sum(0) * (values.shape[2] * values.shape[3])
        mean = (values.sum((2, 3)) * weights).sum(0) / count.clamp(min=1.0)
        centred = values - mean.view(1, -1, 1, 1)
        var = ((centred * centred).sum((2, 3)) * weights).sum(0) / count.clamp(min=1.0)
        return mean, var, count

    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
        """Move the running statistics of the channels some row ran towards the batch's ``[C]``."""
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        seen = count > 0
        unbiased = var * count / (count - 1.0).clamp(min=1.0)
        for running, batch in ((self.running_mean, mean), (self.running_var, unbiased)):
            moved = (1.0 - momentum) * running.float() + momentum * batch
            running.copy_(torch.where(seen, moved, running.float()).to(running.dtype))
