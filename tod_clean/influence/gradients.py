"""Per-row loss gradients of a trained network, projected, and the influence estimators built on them.

The gradient of one row's loss with respect to a linear layer's weight is ``sum_t d_t x_t^T``: the outer
products, over the row's tokens t, of the gradient d_t at the layer's output and the layer's input x_t.
Each layer's gradient is projected by two fixed Gaussian matrices, ``P_out^T (sum_t d_t x_t^T) P_in``
(the factored projection of LoGra: Choe et al. 2024, "What is Your Data Worth to GPT?"), to ``k x k``
numbers, computed as ``sum_t (P_out^T d_t)(P_in^T x_t)^T`` without forming the full gradient. A row's
projected gradient is those blocks side by side: ``width = sum over layers of k_out * k_in`` numbers.

Two estimators use them (positive = the training row lowers the validation row's loss):

- ``gradient``: ``g_train . g_val``, gradient similarity (TracIn at the last checkpoint: Pruthi et al.
  2020);
- ``gauss-newton``: ``g_train^T (G_l + lambda_l I)^{-1} g_val`` per layer l, where ``G_l`` is the mean of
  ``g g^T`` of layer l's block over the training rows and ``lambda_l = damping * trace(G_l) / k^2``: a
  block-diagonal Gauss-Newton influence function (Koh and Liang 2017) in the projected space, as TRAK
  (Park et al. 2023) computes it with one model.

The estimators read the linear layers of the top half of the encoder's transformer blocks (rounded up)
and of the head (``TOP_BLOCKS_READ``), so the backward pass stops halfway down: on the LDS benchmark
(BENCHMARKS section 12) the top 3 of MiniLM-L6's 6 blocks predict retraining as well as all 6 (LDS 0.405
against 0.393, paired difference +0.012 [-0.006, +0.028]) at a smaller cost; the top 1 loses (-0.022
[-0.043, -0.001]). An encoder without a layer list that tod-clean finds gives every linear layer.
Of those, each on the path to the logits is used (a layer whose output gets no gradient, such as a
BERT pooler that the classifier does not read, is left out, as is one called more than once per forward,
such as DeBERTa's query and key projections, reused on the relative positions, or one applied to
something other than the rows, such as its position projections); layers narrower than ``k`` keep that side
whole. Memory: the preconditioned validation gradients ``[V, width]`` and one block of training rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tod_clean.encoding import sorted_batches
from tod_clean.errors import ConfigError
from tod_clean.influence.base import InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.model_inputs import Encoded
from tod_clean.runtime.processes import Processes
from tod_clean.scopes import Scope

DEFAULT_PROJECTION = 16  # k: each linear layer's gradient becomes at most k x k numbers
DEFAULT_DAMPING = 0.1  # lambda_l as a fraction of the mean eigenvalue of layer l's Gauss-Newton block
PROJECTION_SEED = 0
TOP_BLOCKS_READ = 0.5  # the share of the encoder's transformer blocks (from the top) whose gradients are read
# gauss-newton keeps the training rows' projected gradients between its two passes when they take at most
# this many times --chunk-mib (4 x 256 MiB by default: about 54,000 rows of the 20 layers
# read in MiniLM-L6, 4,896 numbers each)
CACHE_BUDGETS = 4


@dataclass(frozen=True)
class Layer:
    """One linear layer's part of a projected gradient: columns ``start:stop``, and its projections
    (None: that side is kept whole)."""

    module: nn.Linear
    project_in: torch.Tensor | None
    project_out: torch.Tensor | None
    start: int
    stop: int


def layers_with_gradient(
    forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    modules: Sequence[nn.Module],
    batch: dict[str, torch.Tensor],
    labels: torch.Tensor,
) -> set[nn.Module]:
    """Those of ``modules`` called once per forward, on the batch's rows, whose output gets a gradient from
    the summed cross-entropy of ``forward(batch)`` (a BERT pooler the classifier does not read gets none).
    A module called more than once (DeBERTa's query and key projections, applied again to the
    relative-position embeddings shared by the batch) or on something other than the rows (DeBERTa's
    position projections) has no per-row gradient at one output, and is left out. ``batch`` must hold at
    least 2 rows, so that a shared input of one row is told apart. The parameters must require gradients."""
    outputs: dict[nn.Module, torch.Tensor] = {}
    calls: dict[nn.Module, int] = {}

    rows = len(labels)

    def capture(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        outputs[module] = output
        # a call on something other than the batch's rows (DeBERTa's position projections of the shared
        # relative-position embeddings) counts as a second call: no per-row gradient there either
        per_row = args[0].dim() >= 2 and args[0].shape[0] == rows
        calls[module] = calls.get(module, 0) + (1 if per_row else 2)

    handles = [m.register_forward_hook(capture) for m in modules]
    try:
        with torch.enable_grad():
            loss = nn.functional.cross_entropy(forward(batch).float(), labels, reduction="sum")
            present = [m for m in modules if calls.get(m) == 1]
            grads = torch.autograd.grad(loss, [outputs[m] for m in present], allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    return {m for m, grad in zip(present, grads, strict=True) if grad is not None}


def linear_layers(model: nn.Module, top_blocks: float | None = None) -> list[nn.Linear]:
    """``model``'s linear layers in module order; with ``top_blocks`` (a share of the encoder's transformer
    blocks, counted from the top, rounded up) only those inside the top blocks and those outside the
    encoder (the head). Every layer when ``model`` has no ``layers`` list of blocks (tod-clean's classifier
    has one when it found the encoder's) or ``top_blocks`` is None."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        blocks = model.layers
    except (AttributeError, ConfigError):  # no block list: every layer
        return linears
    encoder = getattr(model, "encoder", None)
    if top_blocks is None or not isinstance(blocks, nn.ModuleList) or not isinstance(encoder, nn.Module):
        return linears
    read = min(len(blocks), max(1, math.ceil(top_blocks * len(blocks))))
    inside_read = {id(m) for block in blocks[len(blocks) - read :] for m in block.modules()}
    inside_encoder = {id(m) for m in encoder.modules()}
    return [m for m in linears if id(m) in inside_read or id(m) not in inside_encoder]


class ProjectedGradients:
    """Projected per-row loss gradients of ``model``'s linear layers (see the module docstring): every
    one, or with ``top_blocks`` those of ``linear_layers(model, top_blocks)``.

    ``forward(batch)`` must return logits ``[B, C]``; rows must not interact (no batch statistics), so that
    the gradient of the summed loss at a layer's output holds each row's own gradient.
    """

    def __init__(
        self,
        model: nn.Module,
        forward: Callable[[dict[str, torch.Tensor]], torch.Tensor],
        probe: dict[str, torch.Tensor],
        probe_labels: torch.Tensor,
        *,
        k: int = DEFAULT_PROJECTION,
        seed: int = PROJECTION_SEED,
        top_blocks: float | None = None,
    ) -> None:
        self.model = model
        self.forward = forward
        device = probe_labels.device
        candidates = linear_layers(model, top_blocks)
        used = layers_with_gradient(forward, candidates, probe, probe_labels)
        generator = torch.Generator().manual_seed(seed)
        layers, start = [], 0
        for module in candidates:
            if module not in used:
                continue
            project_in = self._projection(module.in_features, k, generator, device)
            project_out = self._projection(module.out_features, k, generator, device)
            width = (module.in_features if project_in is None else k) * (
                module.out_features if project_out is None else k
            )
            layers.append(Layer(module, project_in, project_out, start, start + width))
            start += width
        self.layers: list[Layer] = layers
        self.width = start

    @staticmethod
    def _projection(
        size: int, k: int, generator: torch.Generator, device: torch.device
    ) -> torch.Tensor | None:
        if size <= k:
            return None
        return (torch.randn(size, k, generator=generator) / k**0.5).to(device)

    def _captured(
        self, modules: list[nn.Linear]
    ) -> tuple[list[Any], dict[nn.Module, tuple[torch.Tensor, torch.Tensor]]]:
        captured: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

        def capture(module: nn.Module, args: Any, output: torch.Tensor) -> None:
            captured[module] = (args[0], output)

        return [m.register_forward_hook(capture) for m in modules], captured

    def _loss(self, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        logits = self.forward(batch).float()
        return nn.functional.cross_entropy(logits, labels, reduction="sum")

    def __call__(self, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """float32 ``[B, width]``: each row's projected gradient of its own cross-entropy."""
        modules = [layer.module for layer in self.layers]
        handles, captured = self._captured(modules)
        try:
            with torch.enable_grad():
                loss = self._loss(batch, labels)
                grads = torch.autograd.grad(loss, [captured[m][1] for m in modules])
        finally:
            for handle in handles:
                handle.remove()
        out = torch.empty(len(labels), self.width, device=labels.device)
        for layer, d in zip(self.layers, grads, strict=True):
            x = captured[layer.module][0].detach().float()
            d = d.float()
            # positions in between: none for the head (one per row), tokens, or a ConvNeXt's H x W
            x, d = x.reshape(len(x), -1, x.shape[-1]), d.reshape(len(d), -1, d.shape[-1])
            if layer.project_in is not None:
                x = x @ layer.project_in
            if layer.project_out is not None:
                d = d @ layer.project_out
            out[:, layer.start : layer.stop] = torch.einsum("bto,bti->boi", d, x).reshape(len(labels), -1)
        return out


def layer_moments(
    gradients: Iterator[torch.Tensor], layers: list[Layer], device: torch.device | str = "cpu"
) -> tuple[list[torch.Tensor], int]:
    """Per layer, the sum over rows of ``g g^T`` of its block (float64, on ``device``), and the number of
    rows (zeros and 0 when ``gradients`` yields none: a process that holds no training row)."""
    sums = [
        torch.zeros(layer.stop - layer.start, layer.stop - layer.start, dtype=torch.float64, device=device)
        for layer in layers
    ]
    count = 0
    for block in gradients:
        block = block.double().to(device)
        for total, layer in zip(sums, layers, strict=True):
            part = block[:, layer.start : layer.stop]
            total += part.T @ part
        count += len(block)
    return sums, count


def precondition(
    values: torch.Tensor, moments: list[torch.Tensor], count: int, layers: list[Layer], damping: float
) -> torch.Tensor:
    """``values`` ``[R, width]`` with each layer's block multiplied by ``(G_l + lambda_l I)^{-1}``
    (``G_l = moments[l] / count``), float32."""
    out = torch.empty_like(values, dtype=torch.float32)
    for moment, layer in zip(moments, layers, strict=True):
        mean = moment / count
        size = len(mean)
        lam = damping * torch.trace(mean) / size
        if lam <= 0:  # a layer with no gradient on any row: its block adds nothing
            out[:, layer.start : layer.stop] = 0.0
            continue
        system = mean + lam * torch.eye(size, dtype=mean.dtype, device=mean.device)
        part = values[:, layer.start : layer.stop].double()
        out[:, layer.start : layer.stop] = torch.linalg.solve(system, part.T).T.float()
    return out


def _grads_enabled(
    model: nn.Module, modules: Sequence[nn.Module] | None = None
) -> list[tuple[nn.Parameter, bool]]:
    """Turn on ``requires_grad`` for every parameter (frozen ones too: the gradients here are of the
    trained network, not of what training updated), or only for those of ``modules`` and off for the
    rest (so the forward pass records no graph below the lowest of them), returning the previous flags."""
    flags = [(parameter, parameter.requires_grad) for parameter in model.parameters()]
    wanted = None if modules is None else {id(p) for m in modules for p in m.parameters()}
    for parameter, _ in flags:
        parameter.requires_grad_(wanted is None or id(parameter) in wanted)
    return flags


def _contiguous_blocks(rows: int, block_rows: int) -> Iterator[np.ndarray]:
    for start in range(0, rows, block_rows):
        yield np.arange(start, min(start + block_rows, rows))


class ProjectedGradientInfluence(InfluenceEstimator):
    """Influence ``g_i^T M g_z`` from the projected gradients of the run's full network (see the module
    docstring), for any scope, masked or not. A subclass says what ``M`` is by turning the validation
    gradients ``[V, width]`` into the matrix each training row's gradient is multiplied by
    (``validation_side``), and whether that needs a pass over every training row first."""

    projection = DEFAULT_PROJECTION
    top_blocks: float | None = TOP_BLOCKS_READ
    passes_over_train = 1

    def applies_to(self, scope: Scope) -> bool:
        return True

    def validation_side(
        self,
        val: torch.Tensor,
        layers: list[Layer],
        train_gradients: Callable[[], Iterator[torch.Tensor]],
        processes: Processes | None = None,
    ) -> torch.Tensor:
        """float32 ``[V, width]``: what each training row's gradient is multiplied by. ``train_gradients``
        yields this process's training rows' gradients; with several ``processes`` the others hold the
        rest."""
        raise NotImplementedError

    def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
        model, device = task.model, task.device
        train = task.train_encoded()
        if task.train_labels is None:
            raise ConfigError(
                "this influence method needs the training rows' labels, which this command lacks"
            )
        train_labels = torch.as_tensor(task.train_labels)
        val_labels = torch.as_tensor(task.val_labels)
        rows, val_rows = len(train), len(task.val_encoded)
        flags = _grads_enabled(model, linear_layers(model, self.top_blocks))
        try:
            # the layers are found on validation rows, which every shard and process has (one may hold no
            # training row); at least 2 of them, see layers_with_gradient
            probe = np.resize(np.arange(min(4, val_rows)), max(2, min(4, val_rows)))
            gradients = ProjectedGradients(
                model,
                model,
                task.val_encoded.batch(probe, device),
                val_labels[probe].to(device),
                k=self.projection,
                top_blocks=self.top_blocks,
            )
            # rows outside this caller's (a --shard's others): the preconditioner's pass reads them too
            others = task.other_train_rows() if self.passes_over_train > 1 and task.other_train_rows else []
            other_rows = sum(len(encoded) for encoded, _ in others)
            task.progress.start(
                f"influence ({self.name})", self.passes_over_train * rows + other_rows + val_rows
            )

            def of(
                encoded: Encoded, labels: torch.Tensor, batches: list[np.ndarray]
            ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
                for indices in batches:
                    values = gradients(encoded.batch(indices, device), labels[indices].to(device))
                    task.progress.advance(len(indices))
                    yield indices, values

            val = torch.empty(val_rows, gradients.width, device=device)
            for indices, values in of(
                task.val_encoded, val_labels, sorted_batches(task.val_encoded.lengths, task.batch_size)
            ):
                val[torch.as_tensor(indices, device=device)] = values

            # A first pass over the training rows (the preconditioner's) keeps their gradients when they fit
            # in CACHE_BUDGETS x the memory budget: the scoring pass then reads them instead of recomputing.
            keep = (
                self.passes_over_train > 1
                and rows * gradients.width * 4 <= CACHE_BUDGETS * task.chunk_mib * 2**20
            )
            kept = torch.empty(rows, gradients.width) if keep else None

            def train_gradients() -> Iterator[torch.Tensor]:
                for indices, values in of(
                    train, train_labels, sorted_batches(train.lengths, task.batch_size)
                ):
                    if kept is not None:
                        kept[torch.as_tensor(indices)] = values.cpu()
                    yield values
                for encoded, labels in others:  # fitted on, not scored
                    for _, values in of(
                        encoded, torch.as_tensor(labels), sorted_batches(encoded.lengths, task.batch_size)
                    ):
                        yield values

            val_side = self.validation_side(val, gradients.layers, train_gradients, task.processes)
            block_rows = max(1, int(task.chunk_mib * 2**20) // (4 * max(val_rows, gradients.width)))
            for block in _contiguous_blocks(rows, block_rows):
                values = torch.empty(len(block), val_rows, device=device)
                if kept is not None:
                    values[:] = kept[block[0] : block[-1] + 1].to(device) @ val_side.T
                    task.progress.advance(len(block))
                else:
                    for indices, grads in of(
                        train.subset(block),
                        train_labels[block],
                        sorted_batches(train.lengths[block], task.batch_size),
                    ):
                        values[torch.as_tensor(indices, device=device)] = grads @ val_side.T
                yield InfluenceBlock(int(block[0]), np.arange(val_rows), values)
            task.progress.finish()
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)


class GradientSimilarity(ProjectedGradientInfluence):
    """``--influence gradient``: gradient similarity ``g_i . g_z`` of the projected gradients over the
    linear layers read (TracIn at the last checkpoint, Pruthi et al. 2020, with LoGra's projection). One pass
    over the training rows, each row's value its own: works with ``--shard`` and several processes."""

    name = "gradient"

    def validation_side(
        self,
        val: torch.Tensor,
        layers: list[Layer],
        train_gradients: Callable[[], Iterator[torch.Tensor]],
        processes: Processes | None = None,
    ) -> torch.Tensor:
        return val


class GaussNewtonInfluence(ProjectedGradientInfluence):
    """``--influence gauss-newton``: a block-diagonal Gauss-Newton influence function of projected
    gradients of the run's full network (see the module docstring). Any scope, masked or not.

    Influence of training row i on validation row z: ``g_i^T (G + lambda I)^{-1} g_z / N`` per layer
    block, summed: the first-order change of z's loss when i is left out of N rows. The preconditioner
    needs every training row before any block: under several processes each sums its rows' ``g g^T`` and
    the sums are added up; one ``--shard`` sums the other shards' rows too (``other_train_rows``: each
    shard makes the preconditioner's gradient pass over every row, then scores its own). One gradient pass
    over the training rows whose results are kept for the scoring when they fit (``CACHE_BUDGETS``), else a
    second pass; one over the validation rows.
    """

    name = "gauss-newton"
    needs_all_rows = True
    combines_processes = True  # the per-layer sums of g g^T are added up across processes
    passes_over_train = 2
    damping = DEFAULT_DAMPING

    def validation_side(
        self,
        val: torch.Tensor,
        layers: list[Layer],
        train_gradients: Callable[[], Iterator[torch.Tensor]],
        processes: Processes | None = None,
    ) -> torch.Tensor:
        moments, count = layer_moments(train_gradients(), layers, val.device)
        if processes is not None and processes.several:  # each process summed its rows: add them up
            moments = [processes.gather_all(moment).sum(0).to(moment.device) for moment in moments]
            count = round(processes.sum([float(count)])[0])
        if count == 0:
            raise ValueError("no training rows")
        # (G + lambda I)^{-1} g_z / N: precondition the validation side once (G is symmetric)
        return precondition(val, moments, count, layers, self.damping) / count
