"""An encoder and tokenizer loaded from a model folder or hub name (each way it can fail refused with one
clear error), the limits the loaded model sets on the options, and the classifier built on an encoder."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from torch import nn

from tod_clean.config import TrainConfig, resolve_model
from tod_clean.encoding import TOKENIZER_FILES, empty_vocabulary
from tod_clean.errors import ConfigError, first_line, spelled
from tod_clean.masks import mask_options
from tod_clean.modeling.classifier import TodClassifier


def load_pretrained(model_name: str) -> tuple[nn.Module, Any]:
    """The encoder and tokenizer of a local folder or hub name, with one clear error if either fails.

    Any checkpoint ``AutoModel`` reads gives its encoder: a base model, or a task model (say
    ``BertForSequenceClassification``), whose head weights are left out; tod-clean adds its own head.
    """
    from transformers import AutoTokenizer

    path = resolve_model(model_name)
    local = check_model_folder(model_name, path)
    if local:
        path = str(Path(path).expanduser())  # "~/models/x": the folder check_model_folder found

    def load_tokenizer(local_files_only: bool) -> Any:
        return AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)

    encoder, tokenizer = load_encoder_and(
        model_name, path, local, load_tokenizer, what="an encoder and tokenizer"
    )
    size = empty_vocabulary(tokenizer)
    if size is not None:
        where = f"the folder {path}" if local else "the hub repository"
        raise ConfigError(
            f"{spelled('model', model_name)}: no tokenizer files in {where} (none of {TOKENIZER_FILES}); the "
            f"tokenizer would know only its {size} special tokens, so every word would be unknown: save the "
            "model's tokenizer there too (tokenizer.save_pretrained)"
        )
    embedded = getattr(getattr(encoder, "config", None), "vocab_size", None)
    if isinstance(embedded, int) and len(tokenizer) > embedded:
        raise ConfigError(
            f"{spelled('model', model_name)}: its tokenizer has {len(tokenizer)} tokens, but the encoder embeds only "
            f"{embedded} (vocab_size in its config.json): the tokenizer belongs to another model"
        )
    return encoder, tokenizer


def load_encoder_and(
    model_name: str, path: str, local: bool, load_preprocessor: Callable[[bool], Any], *, what: str
) -> tuple[nn.Module, Any]:
    """The encoder in ``path`` (``AutoModel``, safetensors only) and what ``load_preprocessor`` returns (its
    tokenizer or image processor), each given ``local_files_only``.

    Both come from the local cache first (no network, no retries, when they are there) and from the hub
    only for a hub name that is not a ``local`` folder; every way loading fails becomes one ConfigError
    saying which ``what`` could not be loaded.
    """
    from transformers import AutoModel

    def load(local_files_only: bool) -> tuple[nn.Module, Any, dict[str, Any]]:
        preprocessor = load_preprocessor(local_files_only)
        # safetensors only: pickle weights (pytorch_model.bin) can run code when loaded
        encoder, loading = AutoModel.from_pretrained(
            path,
            local_files_only=local_files_only,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported by check_encoder_weights as one line, not raised
        )
        return encoder, preprocessor, loading

    try:
        try:
            encoder, preprocessor, loading = load(local_files_only=True)
        except OSError:
            if local:
                raise
            check_hub_reachable(model_name)
            with errors_only("huggingface_hub"):
                encoder, preprocessor, loading = load(local_files_only=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{spelled('model', model_name)}: cannot load {what} ({first_line(error)})"
        ) from None
    check_encoder_weights(model_name, loading)
    return encoder, preprocessor


HUB_TIMEOUT_S = 10


def check_hub_reachable(model_name: str) -> None:
    """Refuse a hub name that is not in the local cache when the hub cannot be reached (offline mode, no
    network): one request, instead of huggingface_hub's retries, which print a warning each and take a
    minute before the same failure."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    not_cached = f"{spelled('model', model_name)}: neither a local folder nor in the local Hugging Face cache"
    if constants.is_offline_mode():
        raise ConfigError(
            f"{not_cached}, and HF_HUB_OFFLINE is set; give a local model folder, or download the model "
            "while online"
        )
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # the HTTP client's connection errors (no network, DNS, proxy, timeout)
        raise ConfigError(
            f"{not_cached}, and the hub ({constants.ENDPOINT}) cannot be reached ({first_line(error)}); give "
            "a local model folder, or connect to download it"
        ) from None


@contextlib.contextmanager
def errors_only(logger_name: str) -> Iterator[None]:
    """Only errors from the logger ``logger_name`` while the block runs: huggingface_hub logs each retry
    of a download as a warning (so a failure would not be one line), transformers warns of backends
    tod-clean does not want."""
    log = logging.getLogger(logger_name)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def check_encoder_weights(model_name: str, loading: dict[str, Any]) -> None:
    """Refuse a checkpoint that leaves encoder weights at their random start (weights that do not fit the
    config, or a checkpoint of another model): training would quietly start from noise. The pooler is
    never used (tod-clean pools the last hidden states itself), and task checkpoints often lack it."""
    mismatched = sorted(
        str(item[0] if isinstance(item, tuple) else item) for item in loading["mismatched_keys"]
    )
    missing = sorted(name for name in loading["missing_keys"] if not name.startswith("pooler."))
    if mismatched:
        raise ConfigError(
            f"{spelled('model', model_name)}: {len(mismatched)} weights have other shapes than its config.json says "
            f"(first: {mismatched[0]})"
        )
    if missing:
        raise ConfigError(
            f"{spelled('model', model_name)}: {len(missing)} encoder weights are missing from the checkpoint "
            f"(first: {missing[0]}); it does not match its config.json"
        )


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


def check_model_folder(model_name: str, path: str) -> bool:
    """Whether ``path`` is a local model folder; refuse one that is missing, incomplete or pickled.

    A path that does not exist is taken for a hub name only if it looks like one (``name`` or
    ``org/name``); anything else that names no folder is an error, not a hub lookup.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        looks_like_hub_name = (
            path.count("/") <= 1 and not path.startswith((".", "/", "~")) and "\\" not in path
        )
        if looks_like_hub_name:
            return False
        raise ConfigError(f"{spelled('model', model_name)}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"{spelled('model', model_name)}: not a folder; give a model folder or a hub name")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"{spelled('model', model_name)}: not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        pickled = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
        if pickled:
            raise ConfigError(
                f"{spelled('model', model_name)}: holds only pickle weights ({pickled[0]}), which tod-clean does not "
                "load; convert them to model.safetensors (model.save_pretrained(folder) does)"
            )
        raise ConfigError(
            f"{spelled('model', model_name)}: no model weights (model.safetensors) in the folder"
        )
    return True


# Fewer tokens than this leave a row a word or two after the special tokens: a classifier of nothing.
MIN_MAX_LENGTH = 8


def position_limit(encoder: nn.Module, tokenizer: Any) -> int | None:
    """The most tokens per row the encoder can embed (None when neither the model nor tokenizer says)."""
    limits = []
    positions = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style embeddings number positions from padding_idx + 1
        padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
        limits.append(positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0))
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:  # unset is a huge sentinel value
        limits.append(model_max)
    return min(limits) if limits else None


def check_max_length(config: TrainConfig, encoder: nn.Module, tokenizer: Any) -> None:
    """Refuse a --max-length that leaves no room for text, or that the model cannot embed."""
    pair = config.columns.text_pair_col is not None
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    floor = max(MIN_MAX_LENGTH, special + (2 if pair else 1))
    if config.max_length < floor:
        raise ConfigError(
            f"{spelled('max_length', str(config.max_length))}: too short; {special} of the tokens go to special tokens, "
            f"use at least {floor}"
        )
    limit = position_limit(encoder, tokenizer)
    if limit is not None and config.max_length > limit:
        raise ConfigError(
            f"{spelled('max_length', str(config.max_length))}: the model {config.model} takes at most {limit} tokens per row"
        )


def build_classifier(encoder: nn.Module, config: TrainConfig, num_labels: int) -> TodClassifier:
    """The classifier ``config`` describes (scope, masks, pooling, head, LoRA) on ``encoder``, with a head
    of ``num_labels`` classes."""
    return TodClassifier(
        encoder,
        num_labels,
        scope=config.parsed_scope,
        pooling=config.pooling,
        head_dim=config.head_dim,
        lora=config.lora,
        **mask_options(config),  # keep_prob and mask_seed resolved by __post_init__
    )
