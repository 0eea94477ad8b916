"""Scopes: where a run's instance masks sit, one module per kind, behind one interface.

- ``base.py``          the ``Scope`` interface and registry (its docstring lists what a new scope implements)
- ``none.py``          ``none``: no masks, an ordinary fine-tune
- ``head.py``          ``head``: the head's hidden units only
- ``layers.py``        ``layers:K``: also the outputs of the top K encoder layers
- ``ffn.py``           ``ffn:K``: also the feed-forward units of the top K layers
- ``lora.py``          ``lora`` / ``lora-plain``: a frozen encoder with LoRA adapters, masked on their rank units
- ``channels.py``      ``channels``: the output channels of every convolution of a ResNet
- ``adapters.py``      adding the LoRA adapters with peft (torch)
- ``batch_norm.py``    the channels scope's batch norm, whose statistics follow each row's mask (torch)
- ``architecture.py``  finding layer lists, feed-forward linears and sizes in an encoder (torch)

Importing this package registers the built-in kinds and loads no torch; the torch code of a scope loads
when a model is built with it.
"""

# The built-in kinds register in the order --help and messages list them.
# isort: off
from tod_clean.scopes.base import HEAD_SITE, Scope
from tod_clean.scopes.none import NoneScope
from tod_clean.scopes.head import HeadScope
from tod_clean.scopes.layers import LAYER_SITE_BASE, LayersScope
from tod_clean.scopes.ffn import FFN_SITE_BASE, FfnScope
from tod_clean.scopes.lora import LORA_SITE_BASE, LoraPlainScope, LoraScope, LoraSettings
from tod_clean.scopes.channels import CHANNEL_SITE_BASE, ChannelsScope

# isort: on

SCOPE_KINDS = tuple(Scope.registry)  # the built-in kinds

__all__ = [
    "CHANNEL_SITE_BASE",
    "FFN_SITE_BASE",
    "HEAD_SITE",
    "LAYER_SITE_BASE",
    "LORA_SITE_BASE",
    "SCOPE_KINDS",
    "ChannelsScope",
    "FfnScope",
    "HeadScope",
    "LayersScope",
    "LoraPlainScope",
    "LoraScope",
    "LoraSettings",
    "NoneScope",
    "Scope",
]
