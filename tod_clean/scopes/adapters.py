"""LoRA adapters on the encoder's layers, added with peft (the ``lora`` and ``lora-plain`` scopes).

Every linear layer inside the encoder's transformer blocks (attention and feed-forward, or the ones named
by ``targets``) gets a rank-``r`` adapter ``W x + B (A x) * alpha / r``; ``add_lora_adapters`` returns
each adapter's ``A``, whose outputs are the rank units the ``lora`` scope masks (lora.py).

peft does the adapter bookkeeping (``inject_adapter_in_model`` replaces the target ``nn.Linear`` modules in
place, so the encoder stays a plain Hugging Face model and its state-dict names stay readable).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from torch import nn

from tod_clean.errors import ConfigError, spelled

if TYPE_CHECKING:
    from tod_clean.scopes.lora import LoraSettings

ADAPTER = "default"
# Linears that read only DeBERTa's relative-position embeddings (share_att_key=False), which are shared by
# every row of a batch, so no row's instance mask can apply to them: they get no adapter.
SHARED_INPUT_LINEARS = ("pos_key_proj", "pos_query_proj")


def target_module_names(encoder: nn.Module, layers: nn.ModuleList, targets: Sequence[str] = ()) -> list[str]:
    """Full names (relative to ``encoder``) of the linear layers inside ``layers`` that get an adapter.

    With no ``targets`` every ``nn.Linear`` of every layer is adapted; otherwise those whose name ends with
    one of ``targets`` (peft's matching rule: ``query`` matches ``...attention.self.query``).
    """
    layer_ids = {id(layer) for layer in layers}
    prefixes = [name + "." for name, module in encoder.named_modules() if id(module) in layer_ids]
    names = [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
        and any(name.startswith(prefix) for prefix in prefixes)
        and name.rpartition(".")[2] not in SHARED_INPUT_LINEARS
    ]
    if targets:
        wanted = set(targets)
        names = [name for name in names if name.rpartition(".")[2] in wanted or name in wanted]
        found = {name.rpartition(".")[2] for name in names} | set(names)
        missing = sorted(wanted - found)
        if missing:
            available = sorted({n.rpartition(".")[2] for n in target_module_names(encoder, layers)})
            raise ConfigError(
                f"{spelled('lora_targets')}: no linear layer named {', '.join(missing)} in the encoder's layers; "
                f"names found: {', '.join(available)}"
            )
    if not names:
        raise ConfigError(f"found no linear layers inside the layers of {type(encoder).__name__} for LoRA")
    return names


def add_lora_adapters(encoder: nn.Module, layers: nn.ModuleList, settings: LoraSettings) -> list[nn.Linear]:
    """Inject LoRA adapters into ``encoder`` in place; return each adapter's ``A`` (the rank units), in order.

    Adapters have no dropout (a random per-step mask on the bottleneck would blur the instance mask) and
    peft's default initialisation (``A`` Kaiming-uniform, ``B`` zero, so training starts at the encoder).
    """
    from peft import LoraConfig, inject_adapter_in_model

    names = target_module_names(encoder, layers, settings.targets)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,  # type: ignore[arg-type]  # peft annotates an int; scaling takes any float
        lora_dropout=0.0,
        bias="none",
        target_modules=names,
    )
    inject_adapter_in_model(config, encoder, adapter_name=ADAPTER)
    rank_units: list[nn.Linear] = []
    for name in names:
        module = encoder.get_submodule(name)
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or ADAPTER not in lora_a:  # pragma: no cover - peft changed its layout
            raise ConfigError(f"peft did not add a LoRA adapter to {name}")
        rank_units.append(lora_a[ADAPTER])
    return rank_units


def lora_parameters(encoder: nn.Module) -> list[nn.Parameter]:
    """Every ``lora_A`` / ``lora_B`` weight of the encoder."""
    return [
        parameter
        for name, parameter in encoder.named_parameters()
        if ".lora_A." in name or ".lora_B." in name
    ]
