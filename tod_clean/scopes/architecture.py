"""Finding the parts of a Hugging Face encoder that scopes put masks on, by shape, not by name.

The repeated layer list, the feed-forward projections inside each layer and the sizes in the config are
found the same way in BERT, RoBERTa (also pre-norm), DistilBERT, ELECTRA, DeBERTa-v2/v3 and ModernBERT, and
in the vision transformers ViT and DeiT, so no scope needs per-architecture code. Scopes that put masks inside the encoder are accepted only for those
model types (``TESTED_MODEL_TYPES``: the test suite checks every mask site of each), or for the ones a scope
names itself (``Scope.model_types``: ``channels`` takes ResNets); the others take any encoder.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tod_clean.errors import ConfigError
from tod_clean.scopes.base import Scope

# Model types whose layer list, feed-forward blocks and LoRA targets the test suite checks site by site
# (tests/scopes/test_architecture.py). Other encoders get scopes head and none, which touch nothing inside.
TESTED_MODEL_TYPES = (
    "bert",
    "roberta",
    "roberta-prelayernorm",
    "distilbert",
    "electra",
    "deberta-v2",
    "modernbert",
    "vit",
    "deit",
)


def config_int(config: Any, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise ConfigError(f"the encoder config has none of {names}; this architecture is not supported")


def hidden_size_of(encoder: nn.Module) -> int:
    """Width of the encoder's last hidden states (a convolutional encoder's: its last stage's channels)."""
    stages = getattr(encoder.config, "hidden_sizes", None)
    if (
        not isinstance(getattr(encoder.config, "hidden_size", None), int)
        and isinstance(stages, list)
        and stages
    ):
        return int(stages[-1])
    return config_int(encoder.config, "hidden_size", "dim", "d_model")


def intermediate_size_of(encoder: nn.Module) -> int:
    """Units of each feed-forward block (the intermediate layer between its two projections)."""
    return config_int(encoder.config, "intermediate_size", "hidden_dim")


def layer_count_of(encoder: nn.Module) -> int:
    """The encoder's number of layers (a convolutional encoder's: its stages)."""
    stages = getattr(encoder.config, "depths", None)
    if not isinstance(getattr(encoder.config, "num_hidden_layers", None), int) and isinstance(stages, list):
        return len(stages)
    return config_int(encoder.config, "num_hidden_layers", "n_layers", "num_layers")


def check_architecture(encoder: nn.Module, scope: Scope) -> None:
    """Refuse, with one line, an encoder that ``scope`` cannot place its masks in correctly."""
    config = getattr(encoder, "config", None)
    model_type = getattr(config, "model_type", None) or type(encoder).__name__
    if getattr(config, "is_encoder_decoder", False):
        raise ConfigError(
            f"model type {model_type!r} is an encoder-decoder model; tod-clean fine-tunes encoders "
            f"(BERT-like models: {', '.join(TESTED_MODEL_TYPES)})"
        )
    types = scope.model_types or TESTED_MODEL_TYPES
    if scope.inside_encoder and model_type not in types:
        raise ConfigError(
            f"scope {scope} places masks inside the encoder, which tod-clean does for model types "
            f"{', '.join(types)}; this model is {model_type!r}: use scope {scopes_for(model_type)} with it"
        )


def scopes_for(model_type: str) -> str:
    """The scopes that take an encoder of ``model_type``, as ``--scope`` spells them: ``head, channels or
    none``."""
    fitting = [
        (f"{kind}:K" if found.takes_depth else kind, found)
        for kind, found in Scope.registry.items()
        if not found.inside_encoder or model_type in (found.model_types or TESTED_MODEL_TYPES)
    ]
    # the head first, then the scopes inside the encoder in registration order, none last
    fitting.sort(key=lambda item: 1 if item[1].inside_encoder else 0 if item[1].masked else 2)
    names = [name for name, _ in fitting]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]


def find_layer_list(encoder: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """The encoder's repeated transformer blocks: ``(parent module, attribute name, the ModuleList)``."""
    num_layers = layer_count_of(encoder)
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
