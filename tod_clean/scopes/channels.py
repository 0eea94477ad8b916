"""Scope ``channels``: masks on the output channels of every convolution of a ResNet, besides the head's.

For the from-scratch image default (``tiny-resnet``) and Hugging Face ResNets (``model_type`` ``resnet``,
basic or bottleneck blocks); other encoders are refused. One mask per channel, shared by every position of
a row's feature map, so every trainable parameter of the network belongs to one masked unit.

**Mask sites.** Every convolution's output is masked after its batch norm (and activation, where it has
one), at the channels the next convolution reads:

- a block's inner convolutions (all but its last): their output channels, site
  ``CHANNEL_SITE_BASE + 1000 (s + 1) + 10 (b + 1) + j`` for convolution j of block b of stage s;
- the residual stream. A channel of the stream is one unit however many blocks add to it through identity
  shortcuts, so everything that writes the stream is masked with that stream's one mask: the stem's
  convolution, the 1x1 projection shortcut that starts a new stream where a stage widens or strides, and
  every block's last convolution, each after its norm and before the residual addition. Site
  ``CHANNEL_SITE_BASE`` for the stream the stem starts (it runs through the first stage when that stage
  keeps the stem's width and stride, as in ``tiny-resnet``), ``CHANNEL_SITE_BASE + 1000 (s + 1)`` for the
  one a projection in stage s starts.

Masking every term of the addition with the same mask equals masking the sum once (``relu(a m/p + b m/p)
= relu(a + b) m/p``), so a stream channel carries the one factor ``m/p`` (exposed) or ``(1-m)/(1-p)``
(hidden) however deep the stage; masking each block's output instead would multiply the identity path by
``1/p`` once per block. A hidden stream channel stays exactly zero through the additions, because the
block's activation maps 0 to 0 (checked when the hooks go in).

**What is separated** (``separated_parameters``: every entry serves one unit, so the loss of an instance
that hides the unit gives it exactly zero gradient, in a batch of any size: see batch norm below): every convolution's output row c
(``weight[c]``, and ``bias[c]`` where there is one) and its batch norm's ``weight[c]`` and ``bias[c]``,
which belong to unit c of the site its output is masked at (the convolution's input channels are units
of the site before: entry ``[c, k]`` gets no gradient when either is hidden); and the head's units as in
every scope. That is every parameter of a ResNet encoder, so the scope trains only those (``separated``,
as ``lora``); the classifier bias, shared by every sub-network, stays at the log class priors. Not
separated: batch norm's ``num_batches_tracked`` (a count of steps); an activation with parameters (PReLU's
one slope, shared by every channel), which stays frozen; and AdamW's moments and weight decay, as in every
scope.

**Batch norm.** Its statistics are where the rows of a training batch meet. The encoder's batch norms
are replaced by ``SubNetworkBatchNorm2d`` (batch_norm.py: the same parameters and buffers, under the same
state-dict keys), which differs from ``BatchNorm2d`` only in a masked pass in training mode:

- *Whose rows make the statistics.* Channel c's batch mean and variance are taken over the rows whose pass
  runs c, and only those rows update c's running statistics (a channel that no row of the batch runs
  keeps them). A stock batch norm would fold every row into every channel's statistics, also the rows
  whose pass hides the channel (computed, then masked), and so carry an instance into the running
  statistics of its hidden channels, which evaluation and scoring normalise with.
- *No gradient through the statistics.* They are constants to the backward pass (each row is normalised
  as evaluation mode normalises it, by given numbers), so the gradient of a row's loss stays in that row's
  own computation and is exactly zero on every unit the row hides, in a batch of any size. Through a
  stock batch norm's statistics it would reach them: row i's loss moves the statistics of a channel i
  runs, which normalise a batch mate j's values, which come from units j runs and i hides.

What is left, and not separated: the statistics are still computed from the batch in the forward pass,
so rows that run a channel normalise each other. A batch mate's loss, and so its gradient on the units
row i hides, depends on row i's pixels (never on i's label: i's loss does not reach those units). It is
absent with one row per batch, and in evaluation mode, where every row is normalised by the running
statistics alone. Removing it would need normalisation without batch statistics: batch norm in
evaluation mode while training (a fixed affine map per channel, without the normalisation that lets the
network train from scratch) or per-row statistics (instance norm, which removes each channel's per-image
mean: another model, whose running statistics no longer describe a row). tests/scopes/test_channels.py
checks each of these claims.

**Scoring.** Nothing runs below the first mask site but the stem; its output, the first stage's input, is
cached per validation row and masked there (``split_layer`` 0). ``--influence turn-over`` runs the exact path
(pairs of training instance and validation row); the linearized one was not measured for this scope.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tod_clean.scopes.base import Scope

if TYPE_CHECKING:
    import torch
    from torch import nn

    from tod_clean.modeling.classifier import TodClassifier
    from tod_clean.scopes.lora import LoraSettings

CHANNEL_SITE_BASE = 10000  # the stem's stream; + 1000 (stage + 1) [+ 10 (block + 1) + convolution]
STAGE_STRIDE = 1000
BLOCK_STRIDE = 10


class ChannelsScope(Scope):
    """The head's site and one site per stream of residual channels and per inner convolution."""

    kind = "channels"
    model_types = ("resnet",)
    separated = True

    def prepare(self, model: TodClassifier, lora: LoraSettings | None) -> None:
        """Swap each masked convolution's batch norm for a ``SubNetworkBatchNorm2d`` that reads its site."""
        from tod_clean.scopes.batch_norm import SubNetworkBatchNorm2d

        for conv, site, channels in conv_sites(model.encoder):
            conv.normalization = SubNetworkBatchNorm2d.replacing(
                conv.normalization, _units_of(model, site, channels)
            )

    def install_hooks(self, model: TodClassifier) -> None:
        for conv, site, _ in conv_sites(model.encoder):
            conv.register_forward_hook(_channel_hook(model, site))

    def mask_sites(self, model: TodClassifier) -> list[tuple[int, int]]:
        sites = sorted({(site, channels) for _, site, channels in conv_sites(model.encoder)})
        return super().mask_sites(model) + sites

    def site_name(self, site: int) -> str:
        if site < CHANNEL_SITE_BASE:
            return super().site_name(site)
        stage, rest = divmod(site - CHANNEL_SITE_BASE, STAGE_STRIDE)
        if stage == 0:
            return "the stem's output channels (the residual channels of the stages that keep its width)"
        if rest == 0:
            return f"stage {stage - 1}'s residual channels"
        block, conv = divmod(rest, BLOCK_STRIDE)
        return f"the output channels of convolution {conv + 1} of block {block - 1} in stage {stage - 1}"

    def split_layer(self, model: TodClassifier) -> int:
        return 0  # only the stem runs below the first mask site

    def mask_cached(self, model: TodClassifier, states: torch.Tensor, split: int) -> torch.Tensor:
        # the cached states are the stem's output (after its max pool, which commutes with a mask of
        # non-negative factors per channel)
        return mask_channels(model, states, CHANNEL_SITE_BASE) if split == 0 else states

    def separated_parameters(self, model: TodClassifier) -> list[torch.Tensor]:
        """The head's, and each masked convolution's weight (and bias) and its batch norm's affine
        parameters: every parameter of the encoder."""
        parameters = super().separated_parameters(model)
        for conv, _, _ in conv_sites(model.encoder):
            for module in (conv.convolution, conv.normalization):
                parameters += [p for p in (module.weight, module.bias) if p is not None]
        return parameters


def conv_sites(encoder: nn.Module) -> list[tuple[Any, int, int]]:
    """``(convolution module, site, output channels)`` of every masked convolution of a Hugging Face
    ``ResNetModel``, in forward order: the stem, then per block its shortcut projection (if any) and its
    convolutions. A convolution module is a ``ResNetConvLayer`` or ``ResNetShortCut`` (a ``Conv2d`` in
    ``.convolution`` and a ``BatchNorm2d`` in ``.normalization``); its output is what the site masks."""
    import torch
    from torch import nn
    from transformers.models.resnet.modeling_resnet import ResNetConvLayer, ResNetShortCut

    from tod_clean.errors import ConfigError

    def refuse(what: str) -> ConfigError:
        return ConfigError(
            f"scope channels: {what} in this {type(encoder).__name__}, not a ResNet as tod-clean knows it; "
            "use scope head or none with it"
        )

    stem = getattr(getattr(encoder, "embedder", None), "embedder", None)
    stages = getattr(getattr(encoder, "encoder", None), "stages", None)
    if not isinstance(stem, ResNetConvLayer) or not isinstance(stages, nn.ModuleList):
        raise refuse("no stem convolution and list of stages")
    sites: list[tuple[Any, int, int]] = [(stem, CHANNEL_SITE_BASE, stem.convolution.out_channels)]
    stream, width = CHANNEL_SITE_BASE, stem.convolution.out_channels
    for s, stage in enumerate(stages):
        blocks: Any = stage.layers
        for b, block in enumerate(blocks):
            convs = list(getattr(block, "layer", ()))
            if not convs or not all(isinstance(conv, ResNetConvLayer) for conv in convs):
                raise refuse(f"block {b} of stage {s} is not a sequence of convolutions")
            if b + 1 >= STAGE_STRIDE // BLOCK_STRIDE or len(convs) > BLOCK_STRIDE:
                raise refuse(f"stage {s} has more blocks, or block {b} more convolutions, than sites")
            if isinstance(block.shortcut, ResNetShortCut):
                if b > 0:
                    raise refuse(f"a projection shortcut inside stage {s} (block {b})")
                stream = CHANNEL_SITE_BASE + STAGE_STRIDE * (s + 1)
                width = block.shortcut.convolution.out_channels
                sites.append((block.shortcut, stream, width))
            elif not isinstance(block.shortcut, nn.Identity) or convs[-1].convolution.out_channels != width:
                raise refuse(f"block {b} of stage {s} adds an identity shortcut of another width")
            if float(block.activation(torch.zeros(1))) != 0.0:
                raise refuse(f"block {b} of stage {s}'s activation does not map 0 to 0")
            for j, conv in enumerate(convs[:-1]):
                site = CHANNEL_SITE_BASE + STAGE_STRIDE * (s + 1) + BLOCK_STRIDE * (b + 1) + j
                sites.append((conv, site, conv.convolution.out_channels))
            sites.append((convs[-1], stream, width))
    return sites


def mask_channels(model: TodClassifier, x: torch.Tensor, site: int) -> torch.Tensor:
    """``x`` ``[B, C, h, w]`` masked at ``site`` on its channels (``model.mask`` masks the last dim)."""
    return model.mask(x.movedim(1, -1), site).movedim(-1, 1)


def _channel_hook(model: TodClassifier, site: int) -> Any:
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return mask_channels(model, output, site)

    return hook


def _units_of(model: TodClassifier, site: int, channels: int) -> Callable[[], torch.Tensor | None]:
    return lambda: model.active_units(site, channels)
