"""Scopes ``lora`` and ``lora-plain``: a frozen encoder with LoRA adapters (adapters.py, with peft).

In ``lora`` the adapters' rank units carry instance masks: rank unit j of an adapter is row j of ``A`` and
column j of ``B``, and the mask sits on the ``r``-dimensional bottleneck ``A x`` (one mask per row of the
batch, shared by all its tokens). With the head masked too and every other parameter frozen, every
trainable parameter belongs to exactly one masked unit (``separated``). ``lora-plain`` is the same adapters
with no instance masks: an ordinary LoRA fine-tune (a baseline).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tod_clean.scopes.base import Scope

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tod_clean.modeling.classifier import TodClassifier

LORA_SITE_BASE = 3000  # + adapter index (in the order adapters.add_lora_adapters returns them)


@dataclass(frozen=True)
class LoraSettings:
    """Rank, scaling numerator and target module names (suffixes; empty = every linear in each layer)."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = ()


class AdapterScope(Scope):
    """What ``lora`` and ``lora-plain`` share: the encoder frozen, adapters added to its layers."""

    adapters = True

    def prepare(self, model: TodClassifier, lora: LoraSettings | None) -> None:
        from tod_clean.scopes.adapters import add_lora_adapters

        if lora is None:
            raise ValueError(f"scope {self} needs LoraSettings")
        for parameter in model.encoder.parameters():
            parameter.requires_grad_(False)
        model.rank_units = add_lora_adapters(model.encoder, model.layers, lora)


class LoraScope(AdapterScope):
    """The head's site and ``LORA_SITE_BASE + index`` on each adapter's rank units."""

    kind = "lora"
    separated = True
    linear_by_default = True

    def install_hooks(self, model: TodClassifier) -> None:
        shared = _SharedInput()
        for index, rank_units in enumerate(model.rank_units):
            rank_units.register_forward_hook(_rank_output_hook(model, LORA_SITE_BASE + index, shared))
        # DeBERTa projects its relative-position embeddings, one tensor shared by every row of the batch,
        # with the attention's query/key linears (share_att_key): no row's mask can apply there, so inside
        # that computation the adapters add nothing, in every mode and at any batch size.
        for module in model.encoder.modules():
            bias = getattr(module, "disentangled_attention_bias", None)
            if callable(bias):
                # a method replaced on the instance (nn.Module types its attributes as tensors or modules)
                module.disentangled_attention_bias = _without_adapters(bias, shared)  # type: ignore[assignment]

    def mask_sites(self, model: TodClassifier) -> list[tuple[int, int]]:
        adapters = [
            (LORA_SITE_BASE + index, rank_units.out_features)
            for index, rank_units in enumerate(model.rank_units)
        ]
        return super().mask_sites(model) + adapters

    def site_name(self, site: int) -> str:
        if site < LORA_SITE_BASE:
            return super().site_name(site)
        return "each LoRA adapter ({lora_rank})"

    def split_layer(self, model: TodClassifier) -> int:
        return 0

    def separated_parameters(self, model: TodClassifier) -> list[torch.Tensor]:
        """The head's, and the adapters' rank units (row j of A, column j of B)."""
        from tod_clean.scopes.adapters import lora_parameters

        return super().separated_parameters(model) + lora_parameters(model.encoder)


class LoraPlainScope(AdapterScope):
    """The adapters with no mask site."""

    kind = "lora-plain"
    masked = False


class _SharedInput:
    """Whether a computation on inputs shared by every row of the batch is in flight."""

    active = False


def _rank_output_hook(model: TodClassifier, site: int, shared: _SharedInput) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        if shared.active:
            return output * 0.0  # no gradient either: the adapter does not learn from shared inputs
        return model.mask(output, site)

    return hook


def _without_adapters(method: Callable[..., Any], shared: _SharedInput) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        previous, shared.active = shared.active, True
        try:
            return method(*args, **kwargs)
        finally:
            shared.active = previous

    return call
