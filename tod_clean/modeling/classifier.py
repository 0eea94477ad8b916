"""The classifier: a Hugging Face encoder, a pooled head, and instance-mask hooks placed by scope.

Architecture::

    encoder -> pool (mean or CLS) -> head_dense -> tanh -> [head mask] -> classifier

Scopes (where instance masks sit; every scope but ``none`` includes the head mask):

- ``none``      no instance masks: an ordinary fine-tune (the baseline, and the retraining step).
- ``head``      the head's hidden units only; the encoder is shared by all instances.
- ``layers:K``  also the outputs of the top K encoder layers (one mask per hidden dimension, shared by all
                tokens of a row).
- ``ffn:K``     also the feed-forward intermediate units of the top K layers, so the weights that feed and
                read a hidden unit get exactly zero gradient from the instance.
- ``lora``      the encoder is frozen and LoRA adapters (peft) on the linear layers of every encoder layer
                are masked on their rank units: with the head, every trainable parameter belongs to
                exactly one masked unit (see ``separated_parameters``).
- ``lora-plain``  the same adapters with no instance masks: an ordinary LoRA fine-tune (a baseline).

Masks attach with forward hooks on modules found by shape (the repeated layer list, and the feed-forward
output projection inside each layer), so BERT, RoBERTa (also pre-norm), DistilBERT, ELECTRA, DeBERTa-v2/v3
and ModernBERT encoders all work without per-architecture code. Scopes that put masks inside the encoder are accepted only
for those model types (``TESTED_MODEL_TYPES``: the test suite checks every mask site of each); ``head`` and
``none`` touch nothing inside the encoder and take any encoder. The model's own dropout stays where the model
has it.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tod_clean.errors import ConfigError, OptionError
from tod_clean.masks import MASK_SCHEME, MaskMode, apply_mask, instance_masks
from tod_clean.scopes.adapters import LoraSettings, add_lora_adapters, lora_parameters

HEAD_SITE = 0
LAYER_SITE_BASE = 1000
FFN_SITE_BASE = 2000
LORA_SITE_BASE = 3000

SCOPE_KINDS = ("none", "head", "layers", "ffn", "lora", "lora-plain")
WHOLE_SCOPES = ("none", "head", "lora", "lora-plain")  # scopes that take no layer count
UNMASKED_SCOPES = ("none", "lora-plain")  # ordinary fine-tunes: the baselines and the retraining step
# Model types whose layer list, feed-forward blocks and LoRA targets the test suite checks site by site
# (tests/test_architectures.py). Other encoders get scopes head and none, which touch nothing inside them.
TESTED_MODEL_TYPES = (
    "bert",
    "roberta",
    "roberta-prelayernorm",
    "distilbert",
    "electra",
    "deberta-v2",
    "modernbert",
)
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Scope:
    """Where the instance masks sit: ``kind`` in SCOPE_KINDS and ``depth`` = K top layers (0 for head/none)."""

    kind: str
    depth: int = 0

    @classmethod
    def parse(cls, text: str) -> Scope:
        """Parse ``none``, ``head``, ``lora``, ``layers:K`` or ``ffn:K``."""
        name, _, depth_text = text.strip().partition(":")
        if name not in SCOPE_KINDS:
            raise ConfigError(
                f"scope {text!r} is not one of: none, head, lora, lora-plain, layers:K, ffn:K "
                "(K = number of top layers)"
            )
        if name in WHOLE_SCOPES:
            if depth_text:
                raise ConfigError(f"scope {text!r}: {name!r} takes no layer count")
            return cls(name, 0)
        if not (depth_text.isascii() and depth_text.isdigit()) or int(depth_text) < 1:
            raise ConfigError(f"scope {text!r}: write {name}:K with K a positive number of top layers")
        return cls(name, int(depth_text))

    def __str__(self) -> str:
        return self.kind if self.kind in WHOLE_SCOPES else f"{self.kind}:{self.depth}"

    @property
    def masked(self) -> bool:
        return self.kind not in UNMASKED_SCOPES

    @property
    def adapters(self) -> bool:
        """Whether the encoder is frozen and carries LoRA adapters (``lora``, ``lora-plain``)."""
        return self.kind.startswith("lora")

    @property
    def separated(self) -> bool:
        """Whether the scope itself trains only parameters that belong to one mask unit (``lora``).
        ``head`` and ``ffn:K`` do so only with ``--freeze unmasked``."""
        return self.kind == "lora"


def _config_int(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"the encoder config has none of {names}; this architecture is not supported")


def hidden_size_of(encoder: nn.Module) -> int:
    return _config_int(encoder.config, "hidden_size", "dim", "d_model")


def check_architecture(encoder: nn.Module, scope: Scope) -> None:
    """Refuse, with one line, an encoder that ``scope`` cannot place its masks in correctly."""
    config = getattr(encoder, "config", None)
    model_type = getattr(config, "model_type", None) or type(encoder).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"model type {model_type!r} is an encoder-decoder model; tod-clean fine-tunes encoders "
            f"(BERT-like models: {', '.join(TESTED_MODEL_TYPES)})"
        )
    inside = scope.kind not in ("head", "none")
    if inside and model_type not in TESTED_MODEL_TYPES:
        raise ConfigError(
            f"scope {scope} places masks inside the encoder, which tod-clean does for model types "
            f"{', '.join(TESTED_MODEL_TYPES)}; this model is {model_type!r}: use scope head or none with it"
        )


def find_layer_list(encoder: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The encoder's repeated transformer blocks: ``(parent module, attribute name, the ModuleList)``."""
    num_layers = _config_int(encoder.config, "num_hidden_layers", "n_layers", "num_layers")
    candidates = []
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            candidates.append((name, module))
    if not candidates:
        raise ConfigError(
            f"could not find the {num_layers} transformer layers in {type(encoder).__name__}; "
            "use scope 'head' or 'none' with this architecture"
        )
    name, layers = min(candidates, key=lambda item: item[0].count("."))
    parent_name, _, attribute = name.rpartition(".")
    parent = encoder.get_submodule(parent_name) if parent_name else encoder
    return parent, attribute, layers


def _find_linear(layer: nn.Module, in_features: int, out_features: int, what: str) -> nn.Linear:
    matches = [
        module
        for module in layer.modules()
        if isinstance(module, nn.Linear)
        and module.in_features == in_features
        and module.out_features == out_features
    ]
    if len(matches) != 1:
        raise ConfigError(
            f"found {len(matches)} {what}s ({in_features} -> {out_features}) in {type(layer).__name__}, "
            "expected 1; use scope 'layers:K' or 'head' with this architecture"
        )
    return matches[0]


def find_ffn_output(layer: nn.Module, hidden_size: int, intermediate_size: int) -> nn.Linear:
    """The linear layer that reads the feed-forward intermediate units (intermediate -> hidden)."""
    return _find_linear(layer, intermediate_size, hidden_size, "feed-forward output projection")


def find_ffn_input(layer: nn.Module, hidden_size: int, intermediate_size: int) -> nn.Linear:
    """The linear layer that feeds the feed-forward intermediate units: hidden -> intermediate, or
    hidden -> 2 x intermediate in gated (GLU) blocks such as ModernBERT's ``Wi``, whose rows j and
    intermediate + j (value and gate) both feed unit j only."""
    for out_features in (intermediate_size, 2 * intermediate_size):
        matches = [
            module
            for module in layer.modules()
            if isinstance(module, nn.Linear)
            and (module.in_features, module.out_features) == (hidden_size, out_features)
        ]
        if matches:
            break
    return _find_linear(layer, hidden_size, out_features, "feed-forward input projection")


class _StopForward(Exception):
    """Raised by a capture hook to end a forward pass once the wanted activations are in hand."""


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
        hidden = hidden_size_of(encoder)
        head_dim = head_dim or hidden
        self.head_dense = nn.Linear(hidden, head_dim)
        self.head_act = nn.Tanh()
        self.classifier = nn.Linear(head_dim, num_labels)
        self._state = MaskState()
        self._shared_input = False  # inside a computation on inputs shared by every row (see lora hooks)
        check_architecture(encoder, scope)
        # Only the arguments the encoder takes (ModernBERT and DistilBERT have no token types).
        accepted = inspect.signature(encoder.forward).parameters
        self._encoder_inputs = tuple(name for name in ENCODER_INPUTS if name in accepted)
        # A tuple, so these references to modules inside the encoder are not registered twice.
        self._layer_ref: tuple[nn.Module, str, nn.ModuleList] | None = None
        if scope.kind in ("head", "none"):
            # The head's masks need nothing inside the encoder: one without a layer list of the expected
            # shape (ALBERT shares one layer) still works, with the whole encoder as the cached part.
            with contextlib.suppress(ConfigError):
                self._layer_ref = find_layer_list(encoder)
            self.num_layers = (
                len(self._layers)
                if self._layer_ref
                else _config_int(encoder.config, "num_hidden_layers", "n_layers", "num_layers")
            )
        else:
            self._layer_ref = find_layer_list(encoder)
            self.num_layers = len(self._layers)
        if scope.depth > self.num_layers:
            raise ConfigError(
                f"scope {scope} asks for {scope.depth} top layers but the encoder has {self.num_layers}"
            )
        self.masked_layers = list(range(self.num_layers - scope.depth, self.num_layers))
        self._rank_units: list[nn.Linear] = []
        if scope.adapters:
            if lora is None:
                raise ValueError(f"scope {scope} needs LoraSettings")
            for parameter in encoder.parameters():
                parameter.requires_grad_(False)
            self._rank_units = add_lora_adapters(encoder, self._layers, lora)
        self._last_layer_is_output: bool | None = None
        self._install_hooks(hidden)
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
                f"{self.mask_groups}: more groups than the {units} units of {self._site_name(site)}, so some "
                f"groups would have no unit there and their rows no exposed sub-network; use at most {units} "
                "groups",
                mentions=("head_dim", "lora_rank"),
            )

    def _site_name(self, site: int) -> str:
        """A mask site for messages; an option that sets its units is a ``{keyword}`` field."""
        if site == HEAD_SITE:
            return "the head ({head_dim})"
        if site >= LORA_SITE_BASE:
            return "each LoRA adapter ({lora_rank})"
        if site >= FFN_SITE_BASE:
            return f"layer {site - FFN_SITE_BASE}'s feed-forward block (the encoder's intermediate size)"
        return f"layer {site - LAYER_SITE_BASE}'s output (the encoder's hidden size)"

    @property
    def _layer_parent(self) -> nn.Module:
        return self._found_layers[0]

    @property
    def _layer_attr(self) -> str:
        return self._found_layers[1]

    @property
    def _layers(self) -> nn.ModuleList:
        return self._found_layers[2]

    @property
    def _found_layers(self) -> tuple[nn.Module, str, nn.ModuleList]:
        if self._layer_ref is None:  # only scopes head and none run without one, and never ask
            raise ConfigError(f"scope {self.scope} needs the encoder's layer list, which was not found")
        return self._layer_ref

    # ----------------------------------------------------------------------------------------------
    # mask hooks

    def _install_hooks(self, hidden: int) -> None:
        if self.scope.kind == "layers":
            # A layer's output is masked where the next layer reads it (after any architecture-specific
            # step between layers, such as DeBERTa-v2's convolution); the last layer's at its output.
            for index in self.masked_layers:
                if index + 1 < self.num_layers:
                    self._layers[index + 1].register_forward_pre_hook(
                        self._layer_input_hook(index), with_kwargs=True
                    )
                else:
                    self._layers[index].register_forward_hook(self._layer_output_hook(index))
        elif self.scope.kind == "ffn":
            intermediate = _config_int(self.encoder.config, "intermediate_size", "hidden_dim")
            for index in self.masked_layers:
                find_ffn_input(self._layers[index], hidden, intermediate)  # refuse a block it cannot separate
                linear = find_ffn_output(self._layers[index], hidden, intermediate)
                linear.register_forward_pre_hook(self._ffn_input_hook(index))
        elif self.scope.kind == "lora":  # lora-plain: the same adapters, no masks
            for index, rank_units in enumerate(self._rank_units):
                rank_units.register_forward_hook(self._rank_output_hook(LORA_SITE_BASE + index))
            # DeBERTa projects its relative-position embeddings, one tensor shared by every row of the
            # batch, with the attention's query/key linears (share_att_key): no row's mask can apply there,
            # so inside that computation the adapters add nothing, in every mode and at any batch size.
            for module in self.encoder.modules():
                bias = getattr(module, "disentangled_attention_bias", None)
                if callable(bias):
                    module.disentangled_attention_bias = self._without_adapters(bias)

    def _mask(self, x: torch.Tensor, site: int) -> torch.Tensor:
        state = self._state
        if state.mode is MaskMode.FULL or state.keys is None:
            return x if state.gates is None else self._gate(x, site, state.gates)
        exposed = state.cache.get(site)
        if exposed is None:
            exposed = instance_masks(
                self.mask_seed,
                state.keys,
                site,
                x.shape[-1],
                self.keep_prob,
                self.mask_scheme,
                self.mask_groups,
            )
            if state.rows is not None:
                exposed = exposed[state.rows]
            state.cache[site] = exposed
        return apply_mask(x, exposed, state.mode, self.keep_prob)

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

    def _layer_output_hook(self, index: int) -> Any:
        site = LAYER_SITE_BASE + index

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            if isinstance(output, tuple):
                return (self._mask(output[0], site),) + tuple(output[1:])
            return self._mask(output, site)

        return hook

    def _layer_input_hook(self, index: int) -> Any:
        site = LAYER_SITE_BASE + index

        def hook(module: nn.Module, args: Any, kwargs: Any) -> Any:
            if args:
                return (self._mask(args[0], site),) + tuple(args[1:]), kwargs
            first = next(iter(kwargs))
            return args, {**kwargs, first: self._mask(kwargs[first], site)}

        return hook

    def _rank_output_hook(self, site: int) -> Any:
        def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            if self._shared_input:
                return output * 0.0  # no gradient either: the adapter does not learn from shared inputs
            return self._mask(output, site)

        return hook

    def _without_adapters(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            previous, self._shared_input = self._shared_input, True
            try:
                return method(*args, **kwargs)
            finally:
                self._shared_input = previous

        return call

    def _ffn_input_hook(self, index: int) -> Any:
        site = FFN_SITE_BASE + index

        def hook(module: nn.Module, args: Any) -> Any:
            return (self._mask(args[0], site),) + tuple(args[1:])

        return hook

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
    def _ungated(self) -> Iterator[None]:
        # The cached lower states must be the plain network's: a mask site's hook can run before the
        # capture hook at the split, and ``forward_upper`` gates that site itself.
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

    def pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return last_hidden[:, 0]
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
            return self.classifier(self._mask(features.float(), HEAD_SITE))

    def _encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k in self._encoder_inputs}
        return self.encoder(**inputs).last_hidden_state

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        instance_keys: torch.Tensor | None = None,
        mode: MaskMode = MaskMode.FULL,
    ) -> torch.Tensor:
        with self.masking(instance_keys, mode):
            last_hidden = self._encode(batch)
            pooled = self.pool(last_hidden, batch["attention_mask"])
            return self.classify(self.head_features(pooled))

    # ----------------------------------------------------------------------------------------------
    # split forward for scoring: everything below the first mask site runs once and is cached

    @property
    def split_layer(self) -> int:
        """Index of the first layer that runs per instance; ``num_layers`` means only the head does."""
        if self.scope.kind == "ffn":
            return self.masked_layers[0]
        if self.scope.kind == "lora":
            return 0
        if self.scope.kind == "layers":
            split = self.masked_layers[0] + 1  # its output is masked, so the next layer's input is cached
            if split == self.num_layers and not self.last_layer_is_output:
                # A final norm (pre-LayerNorm encoders) runs after the masked last layer: the mask does
                # not commute with it, so that layer runs per instance.
                return self.masked_layers[0]
            return split
        return self.num_layers

    @property
    def last_layer_is_output(self) -> bool:
        """Whether the encoder returns its last layer's output unchanged (no final norm after the layer
        list). Found once by a 4-token probe in eval mode, which compares the two exactly."""
        if self._last_layer_is_output is None:
            captured: list[torch.Tensor] = []

            def capture(module: nn.Module, args: Any, output: Any) -> None:
                captured.append(output[0] if isinstance(output, tuple) else output)

            vocab = _config_int(self.encoder.config, "vocab_size")
            device = next(self.encoder.parameters()).device
            input_ids = (torch.arange(4, device=device).view(1, 4) + 5) % vocab
            batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
            handle = self._layers[self.num_layers - 1].register_forward_hook(capture)
            was_training = self.encoder.training
            try:
                self.encoder.eval()
                with torch.no_grad(), self._ungated():
                    last_hidden = self._encode(batch)
            finally:
                handle.remove()
                self.encoder.train(was_training)
            self._last_layer_is_output = bool(
                captured
                and captured[-1].shape == last_hidden.shape
                and torch.equal(captured[-1], last_hidden)
            )
        return self._last_layer_is_output

    def encode_lower(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Unmasked hidden states entering layer ``split_layer`` (the last layer's output if it is
        ``num_layers``): ``[B, T, hidden]``."""
        captured: list[torch.Tensor] = []
        if self.split_layer < self.num_layers:

            def capture(module: nn.Module, args: Any, kwargs: Any) -> None:
                captured.append(args[0] if args else next(iter(kwargs.values())))
                raise _StopForward

            handle = self._layers[self.split_layer].register_forward_pre_hook(capture, with_kwargs=True)
            try:
                with self._ungated():
                    self._encode(batch)
            except _StopForward:
                pass
            finally:
                handle.remove()
            return captured[0]
        with self._ungated():
            return self._encode(batch)

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
        with self.masking(instance_keys, mode, rows):
            split = self.split_layer
            if split == self.num_layers:
                return self._from_pooled(self.pool(lower, batch["attention_mask"]))
            if self.scope.kind == "layers" and split - 1 in self.masked_layers:
                lower = self._mask(lower, LAYER_SITE_BASE + split - 1)
            last_hidden = self._run_layers_from(split, lower, batch)
            return self.classify(self.head_features(self.pool(last_hidden, batch["attention_mask"])))

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
            return self._from_pooled(pooled)

    def _from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        # A mask on the last layer's output is the same for every token of a row, so it commutes with
        # (mean or CLS) pooling: masking the pooled vector equals pooling the masked states.
        if self.scope.kind == "layers":
            pooled = self._mask(pooled, LAYER_SITE_BASE + self.num_layers - 1)
        return self.classify(self.head_features(pooled))

    def _run_layers_from(
        self, start: int, hidden_states: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        # The model's own forward still builds the attention mask (in whatever form the architecture
        # wants); the layers below ``start`` are removed for the call and their output is injected.
        upper = nn.ModuleList(list(self._layers)[start:])

        def inject(module: nn.Module, args: Any, kwargs: Any) -> Any:
            if args:
                return (hidden_states,) + tuple(args[1:]), kwargs
            first = next(iter(kwargs))
            return args, {**kwargs, first: hidden_states}

        handle = upper[0].register_forward_pre_hook(inject, with_kwargs=True)
        setattr(self._layer_parent, self._layer_attr, upper)
        # DeBERTa-v2 applies a convolution after "layer 0" of its list; that belongs to the cached part.
        conv = getattr(self._layer_parent, "conv", None)
        if conv is not None and start > 0:
            setattr(self._layer_parent, "conv", None)  # noqa: B010
        try:
            return self._encode(batch)
        finally:
            setattr(self._layer_parent, self._layer_attr, self._layers)
            if conv is not None:
                setattr(self._layer_parent, "conv", conv)  # noqa: B010
            handle.remove()

    def mask_sites(self) -> list[tuple[int, int]]:
        """``(site, number of units)`` of every mask site of the scope, in increasing site order."""
        if not self.scope.masked:
            return []
        sites = [(HEAD_SITE, self.classifier.in_features)]
        if self.scope.kind == "layers":
            hidden = hidden_size_of(self.encoder)
            sites += [(LAYER_SITE_BASE + index, hidden) for index in self.masked_layers]
        elif self.scope.kind == "ffn":
            intermediate = _config_int(self.encoder.config, "intermediate_size", "hidden_dim")
            sites += [(FFN_SITE_BASE + index, intermediate) for index in self.masked_layers]
        elif self.scope.kind == "lora":
            sites += [
                (LORA_SITE_BASE + index, rank_units.out_features)
                for index, rank_units in enumerate(self._rank_units)
            ]
        return sites

    def separated_parameters(self) -> list[torch.Tensor]:
        """Parameters whose every entry serves one mask unit, so an instance that hides the unit gives it
        exactly zero gradient: the head's hidden units (input row, bias, output column), in ``ffn`` scopes
        the weights that feed and read the masked feed-forward units, in ``lora`` the adapters' rank units
        (row j of A, column j of B). The classifier bias is shared by every sub-network: not here."""
        parameters: list[torch.Tensor] = [
            self.head_dense.weight,
            self.head_dense.bias,
            self.classifier.weight,
        ]
        if self.scope.kind == "lora":
            parameters += lora_parameters(self.encoder)
        if self.scope.kind == "ffn":
            hidden = hidden_size_of(self.encoder)
            intermediate = _config_int(self.encoder.config, "intermediate_size", "hidden_dim")
            for index in self.masked_layers:
                layer = self._layers[index]
                feed = find_ffn_input(layer, hidden, intermediate)
                read = find_ffn_output(layer, hidden, intermediate)
                parameters += [feed.weight, read.weight] + ([feed.bias] if feed.bias is not None else [])
        return parameters

    def lower_parameters(self) -> list[nn.Parameter]:
        """Encoder parameters below the first masked layer: embeddings and unmasked lower layers."""
        upper = {
            id(p)
            for index in range(self.split_layer, self.num_layers)
            for p in self._layers[index].parameters()
        }
        if self.scope.kind == "layers":
            upper |= {id(p) for p in self._layers[self.split_layer - 1].parameters()}
        return [p for p in self.encoder.parameters() if id(p) not in upper]
