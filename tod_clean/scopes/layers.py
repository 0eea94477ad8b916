"""Scope ``layers:K``: masks on the outputs of the top K encoder layers, besides the head's.

One mask per hidden dimension, shared by all tokens of a row. A layer's output is masked where the next
layer reads it (after any architecture-specific step between layers, such as DeBERTa-v2's convolution);
the last layer's at its output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tod_clean.scopes.base import Scope

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tod_clean.modeling.classifier import TodClassifier

LAYER_SITE_BASE = 1000  # + layer index: the output of that encoder layer


class LayersScope(Scope):
    """The head's site and ``LAYER_SITE_BASE + index`` for each of the top ``depth`` layers."""

    kind = "layers"
    takes_depth = True
    freeze_below = True

    def install_hooks(self, model: TodClassifier) -> None:
        for index in model.masked_layers:
            if index + 1 < model.num_layers:
                model.layers[index + 1].register_forward_pre_hook(
                    _layer_input_hook(model, index), with_kwargs=True
                )
            else:
                model.layers[index].register_forward_hook(_layer_output_hook(model, index))

    def mask_sites(self, model: TodClassifier) -> list[tuple[int, int]]:
        layers = [(LAYER_SITE_BASE + index, model.hidden_size) for index in model.masked_layers]
        return super().mask_sites(model) + layers

    def site_name(self, site: int) -> str:
        if site < LAYER_SITE_BASE:
            return super().site_name(site)
        return f"layer {site - LAYER_SITE_BASE}'s output (the encoder's hidden size)"

    def split_layer(self, model: TodClassifier) -> int:
        first = model.masked_layers[0]
        split = first + 1  # its output is masked, so the next layer's input is cached
        if split == model.num_layers and not model.last_layer_is_output:
            # A final norm (pre-LayerNorm encoders) runs after the masked last layer: the mask does not
            # commute with it, so that layer runs per instance.
            return first
        return split

    def mask_cached(self, model: TodClassifier, states: torch.Tensor, split: int) -> torch.Tensor:
        # The cached states are the output of layer split - 1. A mask on the last layer's output is the
        # same for every token of a row, so it commutes with (mean or CLS) pooling: masking the pooled
        # vector equals pooling the masked states.
        if split - 1 in model.masked_layers:
            return model.mask(states, LAYER_SITE_BASE + split - 1)
        return states

    def frozen_below(self, model: TodClassifier) -> int:
        return model.split_layer - 1  # the layer whose output the first mask is on trains


def _layer_output_hook(model: TodClassifier, index: int) -> Any:
    site = LAYER_SITE_BASE + index

    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):
            return (model.mask(output[0], site),) + tuple(output[1:])
        return model.mask(output, site)

    return hook


def _layer_input_hook(model: TodClassifier, index: int) -> Any:
    site = LAYER_SITE_BASE + index

    def hook(module: nn.Module, args: Any, kwargs: Any) -> Any:
        if args:
            return (model.mask(args[0], site),) + tuple(args[1:]), kwargs
        first = next(iter(kwargs))
        return args, {**kwargs, first: model.mask(kwargs[first], site)}

    return hook
