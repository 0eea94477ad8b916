"""Every encoder architecture tod-clean places masks in, from a local model folder, and the ones it refuses.

For each architecture of ``ARCHITECTURES`` (tiny random configs, the real MiniLM tokenizer):
- a folder saved from ``AutoModelForSequenceClassification`` loads as its encoder (the head is left out);
- every mask site a scope claims hides its units: the gradient of an instance's exposed loss with respect to
  the activations a site masks is exactly zero on the units the instance hides, and reaches the output
  through the units it exposes (so the site is on the path to the logits, not beside it);
- ``tod-clean train`` (1 epoch) then ``tod-clean score`` run through the command line for head, lora,
  layers:1 and ffn:1.
Encoders the hooks cannot handle get one error line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import transformers
from torch import nn

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import (
    ARCHITECTURES,
    VISION_ARCHITECTURES,
    make_rows,
    random_batch,
    random_pixels,
    tiny_config,
    tiny_encoder,
    write_rows,
)
from tod_clean.config import TrainConfig
from tod_clean.errors import ConfigError
from tod_clean.masks import MaskMode, instance_masks
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.modeling.loading import build_classifier, load_pretrained
from tod_clean.scopes import FFN_SITE_BASE, HEAD_SITE, LAYER_SITE_BASE, LORA_SITE_BASE
from tod_clean.scopes.architecture import find_layer_list

KEYS = torch.tensor([987654321, -5])
# DeBERTa-v3 (deberta-v2 with share_att_key) too: LoRA on its query/key also sees the shared position
# embeddings; and RoBERTa-PreLayerNorm, a pre-norm encoder with a final norm.
ALL = ARCHITECTURES + ("deberta-v3", "roberta-prelayernorm")
# and the vision transformers (ViT, DeiT), whose layers take the same scopes, on random images
WITH_VISION = ALL + VISION_ARCHITECTURES
MASK_SEED = 11


def save_model_folder(folder: Path, config: Any, tokenizer: Any, *, task: bool = False) -> Path:
    """``config`` with the tokenizer's vocabulary, random weights (seed 0) and the tokenizer, as a local
    model folder; ``task`` saves the sequence-classification model (encoder + its own head)."""
    config.vocab_size = tokenizer.vocab_size
    config.pad_token_id = tokenizer.pad_token_id
    if hasattr(config, "max_position_embeddings"):
        config.max_position_embeddings = 130  # RoBERTa numbers positions from pad_token_id + 1
    config.num_labels = 3
    torch.manual_seed(0)
    kind = transformers.AutoModelForSequenceClassification if task else transformers.AutoModel
    kind.from_config(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def task_folders(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    """One folder per architecture, saved from its ``...ForSequenceClassification`` model."""
    return {
        arch: save_model_folder(tmp_path_factory.mktemp(arch), tiny_config(arch), tokenizer, task=True)
        for arch in ALL
    }


# ---- any checkpoint AutoModel reads gives its encoder --------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_sequence_classification_checkpoint_gives_its_encoder(arch: str, task_folders: dict) -> None:
    encoder, _ = load_pretrained(str(task_folders[arch]))
    saved = transformers.AutoModelForSequenceClassification.from_pretrained(str(task_folders[arch]))
    base = saved.base_model.state_dict()
    loaded = encoder.state_dict()
    shared = [name for name in loaded if name in base]
    assert len(shared) >= len(loaded) - 2  # all but a pooler the task model does not have
    for name in shared:
        assert torch.equal(loaded[name], base[name]), name
    assert type(encoder).__name__ == type(saved.base_model).__name__


# ---- every mask site a scope claims ---------------------------------------------------------------------


def _randomise_lora_b(model: TodClassifier) -> None:
    # peft starts B at zero: the adapters' outputs, and so their sites' gradients, would all be zero.
    with torch.no_grad():
        for name, parameter in model.encoder.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0.0, 0.5)


def _expected_sites(model: TodClassifier) -> set[int]:
    sites = {HEAD_SITE}
    if model.scope.kind == "layers":
        sites |= {LAYER_SITE_BASE + index for index in model.masked_layers}
    if model.scope.kind == "ffn":
        sites |= {FFN_SITE_BASE + index for index in model.masked_layers}
    if model.scope.kind == "lora":
        sites |= {LORA_SITE_BASE + index for index in range(len(model.rank_units))}
        assert len(model.rank_units) >= 4 * model.num_layers  # attention and feed-forward linears
    return sites


@pytest.mark.parametrize("arch", WITH_VISION)
@pytest.mark.parametrize("scope", ["head", "layers:1", "layers:2", "ffn:1", "ffn:2", "lora"])
def test_every_mask_site_passes_nothing_from_the_units_an_instance_hides(arch: str, scope: str) -> None:
    """Two rows, two instances (a batch of one would hide masks that do not line up with the rows)."""
    config = TrainConfig(scope=scope, keep_prob=0.4, mask_seed=MASK_SEED, lora_rank=4)
    model = build_classifier(tiny_encoder(arch, dropout=0.0), config, 3)
    _randomise_lora_b(model)
    seen: dict[int, torch.Tensor] = {}
    mask = model.mask

    def record(x: torch.Tensor, site: int) -> torch.Tensor:
        assert site not in seen, f"site {site} masked twice in one pass"
        assert x.shape[0] == len(KEYS), f"site {site} masks {tuple(x.shape)}: not one row per instance"
        x.retain_grad()
        seen[site] = x
        return mask(x, site)

    model.mask = record  # type: ignore[method-assign]
    model.train()  # dropout 0: deterministic
    batch = random_pixels(2) if arch in VISION_ARCHITECTURES else random_batch(2, 9)
    logits = model(batch, KEYS, MaskMode.EXPOSED)
    nn.functional.cross_entropy(logits, torch.tensor([2, 0])).backward()
    assert set(seen) == _expected_sites(model)
    hidden_total = 0
    for site, x in seen.items():
        assert x.grad is not None, site
        units = x.shape[-1]
        grads = x.grad.reshape(len(KEYS), -1, units)
        for row, hidden in enumerate(~instance_masks(MASK_SEED, KEYS, site, units, 0.4)):
            grad = grads[row]
            assert torch.count_nonzero(grad[:, hidden]) == 0, f"site {site}: a hidden unit passed gradient"
            if not hidden.all():  # a 4-unit LoRA site can hide all its units
                assert torch.count_nonzero(grad[:, ~hidden]) > 0, f"site {site} is off the path to the logits"
            hidden_total += int(hidden.sum())
    assert hidden_total > 0


# ---- through the command line ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    return write_rows(folder / "train.jsonl", make_rows(10)), write_rows(
        folder / "val.jsonl", make_rows(4, offset=30)
    )


TRAIN_ARGS = ("--epochs", "1", "--batch-size", "4", "--max-length", "16", "--device", "cpu", "-q")


@pytest.mark.parametrize("arch", ALL)
@pytest.mark.parametrize("scope", ["head", "lora", "layers:1", "ffn:1"])
def test_train_and_score_from_a_task_checkpoint(
    arch: str, scope: str, task_folders: dict, data: tuple[Path, Path], tmp_path: Path
) -> None:
    train, val = data
    run = tmp_path / "run"
    ok(invoke("train", train, "--run", run, "--model", task_folders[arch], "--scope", scope, *TRAIN_ARGS))
    saved = json.loads((run / "config.json").read_text())
    assert saved["encoder"]["model_type"] == tiny_config(arch).model_type
    assert saved["masks"]["scope"] == scope
    ok(invoke("score", "--run", run, "--val", val, "-q"))
    scores = pd.read_parquet(run / "scores.parquet")
    assert len(scores) == 10
    for column in ("influence", "hidden_loss", "exposed_loss", "full_loss"):
        assert scores[column].notna().all() and (scores[column].abs() < 1e6).all(), column
    assert not scores["hidden_loss"].equals(scores["exposed_loss"])


# ---- what is refused --------------------------------------------------------------------------------------


def _folder_of(tmp_path: Path, config: Any, tokenizer: Any) -> Path:
    return save_model_folder(tmp_path / "model", config, tokenizer)


def test_an_unknown_model_type_is_one_error_line(
    tmp_path: Path, tokenizer: Any, data: tuple[Path, Path]
) -> None:
    folder = _folder_of(tmp_path, tiny_config("bert"), tokenizer)
    values = json.loads((folder / "config.json").read_text())
    values["model_type"] = "tinything"
    (folder / "config.json").write_text(json.dumps(values))
    user_error(
        invoke("train", data[0], "--run", tmp_path / "run", "--model", folder, *TRAIN_ARGS), "tinything"
    )
    assert not (tmp_path / "run").exists()


def test_an_encoder_decoder_model_is_refused(tmp_path: Path, tokenizer: Any, data: tuple[Path, Path]) -> None:
    t5 = transformers.T5Config(d_model=32, d_ff=37, num_layers=2, num_heads=4, d_kv=8)
    folder = _folder_of(tmp_path, t5, tokenizer)
    line = user_error(
        invoke("train", data[0], "--run", tmp_path / "run", "--model", folder, *TRAIN_ARGS),
        "'t5'",
        "encoder-decoder",
    )
    assert "bert" in line


def albert_config() -> Any:
    return transformers.AlbertConfig(
        embedding_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37
    )


def test_an_encoder_without_a_layer_list_trains_in_scope_head_only(
    tmp_path: Path, tokenizer: Any, data: tuple[Path, Path]
) -> None:
    """ALBERT shares one layer across its depth: there is no list of 2 layers to hook, and its model type is
    not one the inner scopes are tested on; the head's masks need neither."""
    folder = _folder_of(tmp_path, albert_config(), tokenizer)
    with pytest.raises(ConfigError, match="could not find the 2 transformer layers in AlbertModel"):
        find_layer_list(transformers.AutoModel.from_config(albert_config()))
    for scope in ("lora", "layers:1", "ffn:1"):
        user_error(
            invoke(
                "train",
                data[0],
                "--run",
                tmp_path / "refused",
                "--model",
                folder,
                "--scope",
                scope,
                *TRAIN_ARGS,
            ),
            f"scope {scope}",
            "'albert'",
            "use scope head or none",
        )
    run = tmp_path / "run"
    ok(invoke("train", data[0], "--run", run, "--model", folder, "--scope", "head", *TRAIN_ARGS))
    ok(invoke("score", "--run", run, "--val", data[1], "-q"))
    assert pd.read_parquet(run / "scores.parquet")["influence"].notna().all()


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        ({"num_hidden_layers": 3}, "16 encoder weights are missing"),
        ({"intermediate_size": 40}, "other shapes than its config.json"),
    ],
)
def test_weights_that_do_not_fit_the_config_are_refused(
    tmp_path: Path, tokenizer: Any, data: tuple[Path, Path], edit: dict, needle: str
) -> None:
    """Loading would otherwise start the missing weights from random values, or raise a traceback."""
    folder = _folder_of(tmp_path, tiny_config("bert"), tokenizer)
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, **edit}))
    user_error(invoke("train", data[0], "--run", tmp_path / "run", "--model", folder, *TRAIN_ARGS), needle)


def test_a_layer_list_of_the_wrong_length_is_refused_for_inner_scopes() -> None:
    """A config that says more layers than the model holds: the hooks find no list and say so."""
    encoder = tiny_encoder("bert")
    encoder.config.num_hidden_layers = 5
    for scope in ("layers:1", "lora"):
        with pytest.raises(ConfigError, match="could not find the 5 transformer layers"):
            build_classifier(encoder, TrainConfig(scope=scope, mask_seed=1), 2)
