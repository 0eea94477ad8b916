"""The scope interface and its registry: a scope says where a run's instance masks sit.

A scope is one subclass of ``Scope``, registered under its ``kind`` (the name ``--scope`` takes) when the
class is defined; ``Scope.parse("ffn:2")`` looks the kind up. Adding a scope is one new module with one
subclass, imported by ``scopes/__init__.py`` (``head.py`` is the smallest example, ``ffn.py`` the fullest).
A new scope sets or overrides:

- **name and options**: ``kind``, and ``takes_depth`` when it is written ``kind:K`` (K top layers, in
  ``depth``); ``model_types`` when it places masks in other encoders than the tested transformers;
- **mask sites**: ``mask_sites`` lists ``(site id, number of units)``; ``site_name`` names a site in
  messages. Site ids are hashed into every mask, so an existing scope's ids never change and a new scope
  takes a base of its own (``HEAD_SITE`` here, ``LAYER_SITE_BASE`` in layers.py, ``FFN_SITE_BASE`` in
  ffn.py, ``LORA_SITE_BASE`` in lora.py, ``CHANNEL_SITE_BASE`` in channels.py). Every masked scope
  includes the head mask (``HEAD_SITE``);
- **passes**: ``prepare`` changes the encoder before the hooks go in (adapters, batch norms); ``install_hooks``
  registers forward hooks that call ``model.mask(x, site)`` at each site, which runs the exposed, hidden
  or full network as ``model.masking`` says; ``split_layer`` and ``mask_cached`` let the split forward
  pass (modeling/split_forward.py) run the layers below the masks once;
- **parameters per unit**: ``separated_parameters`` (those whose every entry serves one mask unit, the
  only ones trained with ``--freeze unmasked``), ``frozen_below`` (where ``--freeze below`` stops), and
  the flags ``freeze_below`` / ``freeze_unmasked`` saying which of those freeze modes the scope takes;
- **influence**: ``head_only`` (every mask is on the head, so exact influence is one matrix product per
  block) and ``linear_by_default`` / ``linear_max_depth`` (what ``--influence turn-over`` picks at keep
  probability 0.5, and up to which depth).

The class attributes are plain values and the methods are torch code that imports what it needs when it
runs, so the config parses and checks a scope without loading torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from tod_clean.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from tod_clean.modeling.classifier import TodClassifier
    from tod_clean.scopes.lora import LoraSettings

HEAD_SITE = 0  # the head's hidden units: a mask site of every masked scope


@dataclass(frozen=True)
class Scope:
    """A parsed ``--scope``: the registered subclass of its kind, with ``depth`` = K top layers (0 when
    the kind takes no layer count)."""

    depth: int = 0

    kind: ClassVar[str]
    takes_depth: ClassVar[bool] = False
    masked: ClassVar[bool] = True  # False: an ordinary fine-tune (the baselines and the retraining step)
    # The encoder is frozen and carries LoRA adapters (``lora``, ``lora-plain``).
    adapters: ClassVar[bool] = False
    # The scope itself trains only parameters that belong to one mask unit (``lora``); ``head`` and
    # ``ffn:K`` do so only with ``--freeze unmasked``.
    separated: ClassVar[bool] = False
    # Places anything inside the encoder, so it needs the layer list and a tested model type.
    inside_encoder: ClassVar[bool] = True
    # The model types it places its masks in; None: the transformer encoders the test suite checks
    # (``architecture.TESTED_MODEL_TYPES``).
    model_types: ClassVar[tuple[str, ...] | None] = None
    freeze_below: ClassVar[bool] = False  # takes ``--freeze below``
    freeze_unmasked: ClassVar[bool] = False  # takes ``--freeze unmasked``
    head_only: ClassVar[bool] = False  # every mask site is the head's
    # ``--influence turn-over`` is linear at keep probability 0.5 (``ffn``, ``lora``). At p = 0.5 the exposed and
    # hidden multipliers average to 1 for every unit (m/p + (1-m)/(1-p) = 2), so the expansion at gamma = 1
    # is the midpoint rule and the second-order terms cancel; other keep probabilities were not measured.
    # A scope is linear by default only where bench/linear_influence.py measured the linear ranking close
    # to the exact one (BENCHMARKS.md, "Linearized influence for deep scopes"): not ``layers`` (a whole
    # layer's output at half width moves the loss too far from linear), nor ``head`` (its exact path is
    # already a matrix product).
    linear_by_default: ClassVar[bool] = False
    # The deepest ``depth`` at which that was measured to hold; deeper runs get the exact path (None: any
    # depth, the scope takes none or every depth was measured).
    linear_max_depth: ClassVar[int | None] = None

    registry: ClassVar[dict[str, type[Scope]]] = {}  # kind -> class, in registration order

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("kind")
        if kind is None:  # a base shared by several kinds
            return
        if kind in Scope.registry:
            raise ValueError(f"scope kind {kind!r} is registered twice")
        Scope.registry[kind] = cls

    def __post_init__(self) -> None:
        if self.takes_depth != (self.depth > 0):
            raise ValueError(f"scope {self.kind!r} with depth {self.depth}")

    @classmethod
    def of(cls, kind: str, depth: int = 0) -> Scope:
        """The scope of a registered ``kind`` (``depth`` top layers for the kinds that take a count)."""
        return Scope.registry[kind](depth)

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse ``kind`` or ``kind:K`` (``none``, ``head``, ``lora``, ``layers:K``, ``ffn:K``...)."""
        name, _, depth_text = text.strip().partition(":")
        scope_class = Scope.registry.get(name)
        if scope_class is None:
            whole = [kind for kind, found in Scope.registry.items() if not found.takes_depth]
            counted = [f"{kind}:K" for kind, found in Scope.registry.items() if found.takes_depth]
            raise ConfigError(
                f"scope {text!r} is not one of: {', '.join(whole + counted)} (K = number of top layers)"
            )
        if not scope_class.takes_depth:
            if depth_text:
                raise ConfigError(f"scope {text!r}: {name!r} takes no layer count")
            return scope_class()
        if not (depth_text.isascii() and depth_text.isdigit()) or int(depth_text) < 1:
            raise ConfigError(f"scope {text!r}: write {name}:K with K a positive number of top layers")
        return scope_class(int(depth_text))

    def __str__(self) -> str:
        return f"{self.kind}:{self.depth}" if self.takes_depth else self.kind

    @property
    def linear_measured(self) -> bool:
        """``--influence turn-over`` may compute this scope linearly (at keep probability 0.5): the
        scope's kind is ``linear_by_default`` and this depth is within ``linear_max_depth``."""
        deep = self.linear_max_depth is not None and self.depth > self.linear_max_depth
        return self.linear_by_default and not deep

    # ---- placing the masks in a TodClassifier (torch code) ----------------------------------------

    def prepare(self, model: TodClassifier, lora: LoraSettings | None) -> None:
        """Change the encoder before the hooks go in (add adapters, freeze it); by default nothing."""

    def install_hooks(self, model: TodClassifier) -> None:
        """Register the forward hooks that mask the sites inside the encoder; the head's mask needs none
        (``TodClassifier.classify`` applies it)."""

    def mask_sites(self, model: TodClassifier) -> list[tuple[int, int]]:
        """``(site, number of units)`` of every mask site, in increasing site order."""
        return [(HEAD_SITE, model.classifier.in_features)] if self.masked else []

    def site_name(self, site: int) -> str:
        """A mask site for messages; an option that sets its units is a ``{keyword}`` field."""
        return "the head ({head_dim})"

    def split_layer(self, model: TodClassifier) -> int:
        """Index of the first layer that runs per instance; ``num_layers`` means only the head does."""
        return model.num_layers

    def mask_cached(self, model: TodClassifier, states: torch.Tensor, split: int) -> torch.Tensor:
        """Mask the cached states that enter layer ``split`` (the pooled last layer's output when it is
        ``num_layers``) where a mask sits on them; by default none does."""
        return states

    def separated_parameters(self, model: TodClassifier) -> list[torch.Tensor]:
        """Parameters whose every entry serves one mask unit, so an instance that hides the unit gives it
        exactly zero gradient. Here the head's hidden units (input row, bias, output column); the
        classifier bias is shared by every sub-network: not here."""
        return [model.head_dense.weight, model.head_dense.bias, model.classifier.weight]

    def frozen_below(self, model: TodClassifier) -> int:
        """The encoder layers below this index (and the embeddings) freeze with ``--freeze below``."""
        return model.split_layer
