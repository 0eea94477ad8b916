"""The split forward pass for scoring: the layers below the first mask site run once per row and are
cached, the layers above run once per (instance, row) with that instance's masks.

The scope says where to split (``Scope.split_layer``) and masks the cached states where a mask sits on
them (``Scope.mask_cached``). The encoder's own forward still runs the upper part, so it builds the
attention mask in whatever form the architecture wants: the layers below the split are taken out of its
layer list for the call and their cached output is injected into the first layer left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tod_clean.masks import MaskMode
from tod_clean.scopes.architecture import config_int

if TYPE_CHECKING:
    from tod_clean.modeling.classifier import TodClassifier


class _StopForward(Exception):
    """Raised by a capture hook to end a forward pass once the wanted activations are in hand."""


def last_layer_is_output(model: TodClassifier) -> bool:
    """Whether the encoder returns its last layer's output unchanged (no final norm after the layer
    list), found by a probe in eval mode (4 tokens, or one image of the size the config names), which
    compares the two exactly."""
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    device = next(model.encoder.parameters()).device
    batch = _image_probe(model.encoder.config, device) if model.images else _text_probe(model, device)
    handle = model.layers[model.num_layers - 1].register_forward_hook(capture)
    was_training = model.encoder.training
    try:
        model.encoder.eval()
        with torch.no_grad(), model.ungated():
            last_hidden = model.encode(batch)
    finally:
        handle.remove()
        model.encoder.train(was_training)
    return bool(
        captured and captured[-1].shape == last_hidden.shape and torch.equal(captured[-1], last_hidden)
    )


def _text_probe(model: TodClassifier, device: torch.device) -> dict[str, torch.Tensor]:
    vocab = config_int(model.encoder.config, "vocab_size")
    input_ids = (torch.arange(4, device=device).view(1, 4) + 5) % vocab
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


def _image_probe(config: Any, device: torch.device) -> dict[str, torch.Tensor]:
    """One image of the size the vision encoder's config names, of distinct values."""
    side, channels = config_int(config, "image_size"), config_int(config, "num_channels")
    pixels = torch.linspace(-1.0, 1.0, channels * side * side, device=device)
    return {"pixel_values": pixels.view(1, channels, side, side)}


def encode_lower(model: TodClassifier, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Unmasked hidden states entering layer ``model.split_layer`` (the last layer's output if it is
    ``num_layers``): ``[B, T, hidden]``."""
    # The cached states must be the plain network's: a mask site's hook can run before the capture hook
    # at the split, and ``forward_upper`` gates that site itself.
    split = model.split_layer
    if split == model.num_layers:
        with model.ungated():
            return model.encode(batch)
    captured: list[torch.Tensor] = []

    def capture(module: nn.Module, args: Any, kwargs: Any) -> None:
        captured.append(args[0] if args else next(iter(kwargs.values())))
        raise _StopForward

    handle = model.layers[split].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with model.ungated():
            model.encode(batch)
    except _StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


def forward_upper(
    model: TodClassifier,
    lower: torch.Tensor,
    batch: dict[str, torch.Tensor],
    instance_keys: torch.Tensor | None,
    mode: MaskMode,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[B, C]`` from cached ``encode_lower`` states ``[B, T, hidden]``, with each row's masks."""
    with model.masking(instance_keys, mode, rows):
        split = model.split_layer
        if split == model.num_layers:
            return from_pooled(model, model.pool(lower, batch.get("attention_mask")))
        lower = model.scope.mask_cached(model, lower, split)
        last_hidden = run_layers_from(model, split, lower, batch)
        return model.classify(model.head_features(model.pool(last_hidden, batch.get("attention_mask"))))


def from_pooled(model: TodClassifier, pooled: torch.Tensor) -> torch.Tensor:
    """Logits ``[B, C]`` from pooled last-layer states ``[B, hidden]``, in the masking state in flight."""
    pooled = model.scope.mask_cached(model, pooled, model.num_layers)
    return model.classify(model.head_features(pooled))


def run_layers_from(
    model: TodClassifier, start: int, hidden_states: torch.Tensor, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The encoder's last hidden states ``[B, T, hidden]`` with ``hidden_states`` entering layer
    ``start`` in place of what the layers below it compute."""
    parent, attribute, layers = model.found_layers
    upper = nn.ModuleList(list(layers)[start:])

    def inject(module: nn.Module, args: Any, kwargs: Any) -> Any:
        if args:
            return (hidden_states,) + tuple(args[1:]), kwargs
        first = next(iter(kwargs))
        return args, {**kwargs, first: hidden_states}

    handle = upper[0].register_forward_pre_hook(inject, with_kwargs=True)
    setattr(parent, attribute, upper)
    # DeBERTa-v2 applies a convolution after "layer 0" of its list; that belongs to the cached part.
    conv = getattr(parent, "conv", None)
    if conv is not None and start > 0:
        setattr(parent, "conv", None)  # noqa: B010
    try:
        return model.encode(batch)
    finally:
        setattr(parent, attribute, layers)
        if conv is not None:
            setattr(parent, "conv", conv)  # noqa: B010
        handle.remove()
