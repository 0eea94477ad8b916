"""Scope ``ffn:K``: masks on the feed-forward intermediate units of the top K layers, besides the head's.

The mask sits at the input of the linear layer that reads the intermediate units (found by shape, see
architecture.py), so the weights that feed and read a hidden unit get exactly zero gradient from the
instance (``separated_parameters``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tod_clean.scopes.base import Scope

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tod_clean.modeling.classifier import TodClassifier

FFN_SITE_BASE = 2000  # + layer index: that layer's feed-forward intermediate units


class FfnScope(Scope):
    """The head's site and ``FFN_SITE_BASE + index`` for each of the top ``depth`` layers."""

    kind = "ffn"
    takes_depth = True
    freeze_below = True
    freeze_unmasked = True
    linear_by_default = True
    # measured (BENCHMARKS.md section 6): Spearman of the mean influence against the exact path 0.954 at
    # ffn:2, 0.267 at ffn:6 (masking every block's feed-forward units is too large a step for first order)
    linear_max_depth = 2

    def install_hooks(self, model: TodClassifier) -> None:
        from tod_clean.scopes.architecture import find_ffn_input, find_ffn_output, intermediate_size_of

        intermediate = intermediate_size_of(model.encoder)
        for index in model.masked_layers:
            layer = model.layers[index]
            find_ffn_input(layer, model.hidden_size, intermediate)  # refuse a block it cannot separate
            linear = find_ffn_output(layer, model.hidden_size, intermediate)
            linear.register_forward_pre_hook(_ffn_input_hook(model, index))

    def mask_sites(self, model: TodClassifier) -> list[tuple[int, int]]:
        from tod_clean.scopes.architecture import intermediate_size_of

        intermediate = intermediate_size_of(model.encoder)
        blocks = [(FFN_SITE_BASE + index, intermediate) for index in model.masked_layers]
        return super().mask_sites(model) + blocks

    def site_name(self, site: int) -> str:
        if site < FFN_SITE_BASE:
            return super().site_name(site)
        return f"layer {site - FFN_SITE_BASE}'s feed-forward block (the encoder's intermediate size)"

    def split_layer(self, model: TodClassifier) -> int:
        return model.masked_layers[0]

    def separated_parameters(self, model: TodClassifier) -> list[torch.Tensor]:
        """The head's, and the weights that feed and read the masked feed-forward units."""
        from tod_clean.scopes.architecture import find_ffn_input, find_ffn_output, intermediate_size_of

        parameters = super().separated_parameters(model)
        intermediate = intermediate_size_of(model.encoder)
        for index in model.masked_layers:
            layer = model.layers[index]
            feed = find_ffn_input(layer, model.hidden_size, intermediate)
            read = find_ffn_output(layer, model.hidden_size, intermediate)
            parameters += [feed.weight, read.weight] + ([feed.bias] if feed.bias is not None else [])
        return parameters


def _ffn_input_hook(model: TodClassifier, index: int) -> Any:
    site = FFN_SITE_BASE + index

    def hook(module: nn.Module, args: Any) -> Any:
        return (model.mask(args[0], site),) + tuple(args[1:])

    return hook
