"""The classifier: a Hugging Face encoder, a pooled head, and the instance masks of a scope.

Architecture::

    encoder -> pool (mean or CLS) -> head_dense -> tanh -> [head mask] -> classifier

``TodClassifier`` holds what every scope shares: the head, the masking state that every mask site reads
(which instance keys, which sub-network), the gates of the linearized influence, and the forward passes.
Everything a scope decides (where its masks sit, which parameters belong to one mask unit, where the split
forward pass splits) is asked of its ``Scope`` object (tod_clean/scopes/). The model's own dropout stays
where the model has it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from tod_clean.config import Pooling
from tod_clean.errors import ConfigError, OptionError
from tod_clean.masks import MASK_SCHEME, MaskMode, apply_mask, instance_masks
from tod_clean.modeling import split_forward
from tod_clean.scopes import HEAD_SITE, LoraSettings, Scope
from tod_clean.scopes.architecture import check_architecture, find_layer_list, hidden_size_of, layer_count_of

ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values")


@dataclass
class MaskState:
    """The instance keys and mode of the forward pass in flight, read by every mask hook.

    ``keys`` holds the distinct instance keys ``[n]`` and ``rows`` maps each batch row to one of them
    ``[B]``, so a batch that pairs n training instances with many validation rows hashes n masks, not B.
    """

    mode: MaskMode = MaskMode.FULL
    keys: torch.Tensor | None = None
    rows: torch.Tensor | None = None
    gates: dict[int, torch.Tensor] | None = None  # site -> [B, U] gate of ones, see ``TodClassifier.gating``

    def __post_init__(self) -> None:
        self.cache: dict[int, torch.Tensor] = {}


class TodClassifier(nn.Module):
    """Encoder + pooled classification head with turn-over-dropout instance masks.

    ``forward`` returns logits ``[B, num_labels]`` (float32). Pass ``instance_keys`` (int64 ``[B]``) and a
    ``mode`` to run the exposed or hidden sub-network of each row's instance; with no keys, or with
    ``MaskMode.FULL``, the full network runs with no instance mask.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        *,
        scope: Scope,
        keep_prob: float,
        mask_seed: int,
        pooling: str = "mean",
        head_dim: int | None = None,
        mask_scheme: int = MASK_SCHEME,
        mask_groups: int = 0,
        lora: LoraSettings | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.scope = scope
        self.keep_prob = keep_prob
        self.mask_seed = mask_seed
        self.mask_scheme = mask_scheme
        self.mask_groups = mask_groups
        self.pooling = pooling
        self.hidden_size = hidden_size_of(encoder)
        head_dim = head_dim or self.hidden_size
        self.head_dense = nn.Linear(self.hidden_size, head_dim)
        self.head_act = nn.Tanh()
        self.classifier = nn.Linear(head_dim, num_labels)
        self._state = MaskState()
        check_architecture(encoder, scope)
        # Only the arguments the encoder takes (ModernBERT and DistilBERT have no token types).
        accepted = inspect.signature(encoder.forward).parameters
        self._encoder_inputs = tuple(name for name in ENCODER_INPUTS if name in accepted)
        # A tuple, so these references to modules inside the encoder are not registered twice.
        self._layer_ref: tuple[nn.Module, str, nn.ModuleList] | None = None
        if scope.inside_encoder:
            self._layer_ref = find_layer_list(encoder)
            self.num_layers = len(self.layers)
        else:
            # The head's masks need nothing inside the encoder: one without a layer list of the expected
            # shape (ALBERT shares one layer) still works, with the whole encoder as the cached part.
            with contextlib.suppress(ConfigError):
                self._layer_ref = find_layer_list(encoder)
            self.num_layers = len(self.layers) if self._layer_ref else layer_count_of(encoder)
        if scope.depth > self.num_layers:
            raise ConfigError(
                f"scope {scope} asks for {scope.depth} top layers but the encoder has {self.num_layers}"
            )
        self.masked_layers = list(range(self.num_layers - scope.depth, self.num_layers))
        self.rank_units: list[nn.Linear] = []  # each adapter's A, for scopes that add adapters
        self._last_layer_is_output: bool | None = None
        scope.prepare(self, lora)
        scope.install_hooks(self)
        self._check_mask_groups()

    def _check_mask_groups(self) -> None:
        """Refuse more groups than a mask site has units: a group with no unit there would train, and
        hide, nothing at that site, so its rows' exposed sub-network would be empty."""
        if not self.mask_groups or not self.scope.masked:
            return
        site, units = min(self.mask_sites(), key=lambda item: item[1])
        if self.mask_groups > units:
            raise OptionError(
                "mask_groups",
                f"{self.mask_groups}: more groups than the {units} units of {self.scope.site_name(site)}, "
                f"so some groups would have no unit there and their rows no exposed sub-network; use at most "
                f"{units} groups",
                mentions=("head_dim", "lora_rank"),
            )

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder's repeated transformer blocks."""
        return self.found_layers[2]

    @property
    def found_layers(self) -> tuple[nn.Module, str, nn.ModuleList]:
        """``(parent module, attribute name, the ModuleList)`` of the encoder's layer list."""
        if self._layer_ref is None:  # only scopes outside the encoder run without one, and never ask
            raise ConfigError(f"scope {self.scope} needs the encoder's layer list, which was not found")
        return self._layer_ref

    # ----------------------------------------------------------------------------------------------
    # masking state, read by the scope's hooks

    def mask(self, x: torch.Tensor, site: int) -> torch.Tensor:
        """``x`` ``[B, ..., U]`` at mask site ``site``, as the masking state in flight says: each row's
        exposed or hidden sub-network, the full network, or the full network times the site's gate."""
        state = self._state
        if state.mode is MaskMode.FULL or state.keys is None:
            return x if state.gates is None else self._gate(x, site, state.gates)
        return apply_mask(x, self._exposed_units(site, x.shape[-1]), state.mode, self.keep_prob)

    def active_units(self, site: int, num_units: int) -> torch.Tensor | None:
        """The units of ``site`` that the pass in flight runs, row by row: bool ``[B, num_units]`` (each
        row's exposed units, or the units it hides in a hidden pass); None when the full network runs.
        For what reads a site's mask before the site masks (the channels scope's batch norms)."""
        state = self._state
        if state.mode is MaskMode.FULL or state.keys is None:
            return None
        exposed = self._exposed_units(site, num_units)
        return ~exposed if state.mode is MaskMode.HIDDEN else exposed

    def _exposed_units(self, site: int, num_units: int) -> torch.Tensor:
        """Each row's exposed units at ``site`` (bool ``[B, num_units]``), hashed once per pass."""
        state = self._state
        assert state.keys is not None
        exposed = state.cache.get(site)
        if exposed is None:
            exposed = instance_masks(
                self.mask_seed,
                state.keys,
                site,
                num_units,
                self.keep_prob,
                self.mask_scheme,
                self.mask_groups,
            )
            if state.rows is not None:
                exposed = exposed[state.rows]
            state.cache[site] = exposed
        return exposed

    @staticmethod
    def _gate(x: torch.Tensor, site: int, gates: dict[int, torch.Tensor]) -> torch.Tensor:
        """``x`` ``[B, ..., U]`` times the site's gate ``[B, U]`` (ones, made on first use), broadcast over
        tokens as ``apply_mask`` broadcasts a mask: the gate is the unit multiplier gamma_u of a row."""
        gate = gates.get(site)
        if gate is None:
            gate = torch.ones((x.shape[0], x.shape[-1]), dtype=torch.float32, device=x.device)
            gates[site] = gate.requires_grad_(True)
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (x.shape[-1],)
        return x * gate.to(x.dtype).view(shape)

    @contextlib.contextmanager
    def masking(
        self,
        instance_keys: torch.Tensor | None,
        mode: MaskMode,
        rows: torch.Tensor | None = None,
    ) -> Iterator[None]:
        """Run forward passes inside this block with the given instance keys and mode."""
        previous = self._state
        if instance_keys is None or not self.scope.masked:
            mode = MaskMode.FULL
        # Gates opened by ``gating`` stay open through the nested full-network passes of ``forward``.
        self._state = MaskState(mode, instance_keys, rows, previous.gates)
        try:
            yield
        finally:
            self._state = previous

    @contextlib.contextmanager
    def ungated(self) -> Iterator[None]:
        """Forward passes inside this block run the plain full network: no masks, no gates."""
        previous = self._state
        self._state = MaskState()
        try:
            yield
        finally:
            self._state = previous

    @contextlib.contextmanager
    def gating(self) -> Iterator[dict[int, torch.Tensor]]:
        """Full-network passes inside this block multiply every mask site by a gate of ones.

        Yields a dict that fills, during the forward pass, with one float32 leaf tensor ``[B, U]``
        (``requires_grad``) per mask site reached (``HEAD_SITE``, ``LAYER_SITE_BASE + layer``, ...): the
        derivative of a loss with respect to it is dL/dgamma_u, the sensitivity of each row's loss to the
        multiplier of unit u that the exposed (m/p) and hidden ((1-m)/(1-p)) sub-networks change. Gates
        are made per forward pass: run one pass per block, then read the gradients. Passes with instance
        keys in exposed or hidden mode ignore the gates.
        """
        if not self.scope.masked:
            raise ValueError(f"scope {self.scope} has no mask sites to gate")
        previous = self._state
        gates: dict[int, torch.Tensor] = {}
        self._state = MaskState(MaskMode.FULL, None, None, gates)
        try:
            yield gates
        finally:
            self._state = previous

    # ----------------------------------------------------------------------------------------------
    # forward passes

    @property
    def images(self) -> bool:
        """Whether the encoder reads images (``pixel_values``) rather than token ids."""
        return "pixel_values" in self._encoder_inputs

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """``[B, hidden]`` from ``[B, T, hidden]``: the first token (cls), or the mean over the tokens the
        attention mask keeps (every token when it is None: images, whose tokens are all real)."""
        if self.pooling == Pooling.CLS:
            return last_hidden[:, 0]
        if attention_mask is None:
            return last_hidden.mean(1)
        weights = attention_mask.to(last_hidden.dtype).unsqueeze(-1)
        return (last_hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def head_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """Head activations before the head mask: ``[B, head_dim]`` float32.

        The head always runs in float32, outside any autocast: the batched influence path computes the
        same logits as a float32 matrix product, and both must agree under bf16 encoders too.
        """
        with torch.autocast(pooled.device.type, enabled=False):
            return self.head_act(self.head_dense(pooled.float()))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Head mask (per the current masking state) then the classifier: logits ``[B, C]`` float32."""
        with torch.autocast(features.device.type, enabled=False):
            return self.classifier(self.mask(features.float(), HEAD_SITE))

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The encoder's last hidden states ``[B, T, hidden]`` from the inputs it takes in ``batch``; a
        convolutional vision encoder's feature map ``[B, C, h, w]`` comes as its ``h * w`` positions
        ``[B, h * w, C]``, so mean pooling is its global average pooling."""
        inputs = {k: v for k, v in batch.items() if k in self._encoder_inputs}
        hidden = self.encoder(**inputs).last_hidden_state
        if hidden.dim() == 4:
            hidden = hidden.flatten(2).transpose(1, 2)
        return hidden

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        instance_keys: torch.Tensor | None = None,
        mode: MaskMode = MaskMode.FULL,
    ) -> torch.Tensor:
        with self.masking(instance_keys, mode):
            last_hidden = self.encode(batch)
            pooled = self.pool(last_hidden, batch.get("attention_mask"))
            return self.classify(self.head_features(pooled))

    # ----------------------------------------------------------------------------------------------
    # split forward for scoring (modeling/split_forward.py): what is below the first mask site runs once

    @property
    def split_layer(self) -> int:
        """Index of the first layer that runs per instance; ``num_layers`` means only the head does."""
        return self.scope.split_layer(self)

    @property
    def last_layer_is_output(self) -> bool:
        """Whether the encoder returns its last layer's output unchanged (no final norm after the layer
        list). Found once, by ``split_forward.last_layer_is_output``."""
        if self._last_layer_is_output is None:
            self._last_layer_is_output = split_forward.last_layer_is_output(self)
        return self._last_layer_is_output

    def encode_lower(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unmasked hidden states entering layer ``split_layer`` (the last layer's output if it is
        ``num_layers``): ``[B, T, hidden]``."""
        return split_forward.encode_lower(self, batch)

    def forward_upper(
        self,
        lower: torch.Tensor,
        batch: dict[str, torch.Tensor],
        instance_keys: torch.Tensor | None,
        mode: MaskMode,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, C]`` from cached ``encode_lower`` states, with each row's instance masks.

        Equal to ``forward(batch, keys, mode)``: the layers below ``split_layer`` are replaced by ``lower``.
        ``rows`` (int64 ``[B]``) maps batch rows to ``instance_keys`` when several rows share an instance.
        """
        return split_forward.forward_upper(self, lower, batch, instance_keys, mode, rows)

    def forward_pooled(
        self,
        pooled: torch.Tensor,
        instance_keys: torch.Tensor | None,
        mode: MaskMode,
        rows: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, C]`` from pooled last-layer states ``[B, hidden]`` (when ``split_layer`` is
        ``num_layers``: scopes head and layers:1), with each row's instance masks."""
        if self.split_layer != self.num_layers:
            raise ValueError(f"scope {self.scope} masks inside the encoder; use forward_upper")
        with self.masking(instance_keys, mode, rows):
            return split_forward.from_pooled(self, pooled)

    # ----------------------------------------------------------------------------------------------
    # parameters by mask unit (training partitions and freeze modes)

    def mask_sites(self) -> list[tuple[int, int]]:
        """``(site, number of units)`` of every mask site of the scope, in increasing site order."""
        return self.scope.mask_sites(self)

    def separated_parameters(self) -> list[torch.Tensor]:
        """Parameters whose every entry serves one mask unit, so an instance that hides the unit gives it
        exactly zero gradient (see ``Scope.separated_parameters``)."""
        return self.scope.separated_parameters(self)

    def lower_parameters(self) -> list[nn.Parameter]:
        """Encoder parameters below the first masked layer: embeddings and unmasked lower layers."""
        upper = {
            id(p)
            for index in range(self.scope.frozen_below(self), self.num_layers)
            for p in self.layers[index].parameters()
        }
        return [p for p in self.encoder.parameters() if id(p) not in upper]
