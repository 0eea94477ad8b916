"""Batched scoring (GEMM path for the head, pair batches for layer scopes) against a naive per-pair loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from tests.conftest import NEGATIVE, POSITIVE
from tod_clean.encoding import EncodedRows, encode_texts
from tod_clean.influence.gather import influence
from tod_clean.influence.self_scores import self_scores
from tod_clean.masks import MaskMode, key_from_id
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import Scope

NUM_LABELS = 3
TRAIN_TEXTS = POSITIVE[:4] + NEGATIVE[:3]  # 7 training rows
VAL_TEXTS = POSITIVE[10:14] + NEGATIVE[10:13] + ["Odd."]  # 8 validation rows of varied lengths
TRAIN_KEYS = np.array([0, 1, -1, 2**33 + 7, key_from_id("a"), key_from_id("b"), 17], dtype=np.int64)
TRAIN_LABELS = np.array([0, 1, 2, 0, 1, 2, 0], dtype=np.int64)
VAL_LABELS = np.array([2, 1, 0, 0, 1, 2, 2, 1], dtype=np.int64)


@pytest.fixture(scope="module")
def encoded(tokenizer: Any) -> tuple[EncodedRows, EncodedRows]:
    train = encode_texts(tokenizer, TRAIN_TEXTS, None, 16)
    val = encode_texts(tokenizer, VAL_TEXTS, None, 16)
    assert len(set(val.lengths.tolist())) > 1  # batches need padding
    return train, val


# Influence computed in other blocks, shards or thread counts agrees within this stated tolerance (docs/guide.md,
# "Scaling out"): BLAS may pick other kernels for other shapes, thread counts or load, and they round
# differently (differences of about 5e-9 measured on one CPU type; bit for bit on others).
ROUNDING_TOLERANCE = 1e-6


def assert_within_rounding(actual: Any, expected: Any) -> None:
    """``actual`` equals ``expected`` to within ``ROUNDING_TOLERANCE`` times the largest value (at least 1)."""
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    difference = float(np.abs(actual - expected).max(initial=0.0))
    assert difference <= ROUNDING_TOLERANCE * scale, f"max difference {difference:.3g} at scale {scale:.3g}"


def make_model(model_dir: Path, scope: str, keep_prob: float = 0.3, pooling: str = "mean") -> TodClassifier:
    """A classifier on the tiny BERT; keep_prob 0.3 by default, so a swapped 1/p and 1/(1-p) shows."""
    torch.manual_seed(3)
    encoder = transformers.AutoModel.from_pretrained(str(model_dir))
    model = TodClassifier(
        encoder, NUM_LABELS, scope=Scope.parse(scope), keep_prob=keep_prob, mask_seed=21, pooling=pooling
    )
    with torch.no_grad():  # a head that separates classes a bit, so losses vary between sub-networks
        model.classifier.weight.mul_(4.0)
    return model.eval()


def ce(logits: torch.Tensor, label: int) -> float:
    return nn.functional.cross_entropy(logits.double(), torch.tensor([label])).item()


def naive_pairs(model: TodClassifier, keys: np.ndarray, val: EncodedRows, labels: np.ndarray) -> np.ndarray:
    """L(hidden_i, v) - L(exposed_i, v) for every training key i and validation row v, one forward each."""
    matrix = np.zeros((len(keys), len(val)))
    with torch.no_grad():
        for v in range(len(val)):
            batch = val.batch([v])
            for i, key in enumerate(keys):
                key_t = torch.tensor([int(key)])
                hidden = ce(model(batch, key_t, MaskMode.HIDDEN), int(labels[v]))
                exposed = ce(model(batch, key_t, MaskMode.EXPOSED), int(labels[v]))
                matrix[i, v] = hidden - exposed
    return matrix


@pytest.fixture(scope="module")
def naive_cache() -> dict[str, np.ndarray]:
    return {}


def naive_for(scope: str, model: TodClassifier, val: EncodedRows, cache: dict[str, np.ndarray]) -> np.ndarray:
    if scope not in cache:
        cache[scope] = naive_pairs(model, TRAIN_KEYS, val, VAL_LABELS)
    return cache[scope]


SCORE_SCOPES = ["head", "layers:1", "layers:2", "ffn:1", "ffn:2"]


def head_chunk_mib(chunk: float) -> float:
    """The chunk_mib at which the head path handles ``chunk`` training instances per block."""
    return chunk * NUM_LABELS * len(VAL_TEXTS) * 4 * 6 / 2**20


@pytest.mark.parametrize("scope", SCORE_SCOPES)
@pytest.mark.parametrize(
    "options",
    [
        {},  # defaults: one block
        {"batch_size": 3, "pair_batch": 7, "chunk_mib": head_chunk_mib(2.5)},  # several blocks, ragged ends
        {"batch_size": 2, "pair_batch": 1, "chunk_mib": head_chunk_mib(1)},  # one pair / instance at a time
    ],
    ids=["one-block", "chunks", "single"],
)
def test_influence_equals_naive_loop(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],
    naive_cache: dict[str, np.ndarray],
    scope: str,
    options: dict[str, Any],
    tmp_path: Path,
) -> None:
    model = make_model(tiny_model_dir, scope)
    _, val = encoded
    expected = naive_for(scope, model, val, naive_cache)
    matrix_path = tmp_path / "pairs.npy"
    result = influence(model, TRAIN_KEYS, val, VAL_LABELS, matrix_path=matrix_path, **options)
    assert result.shape == (len(TRAIN_KEYS),) and result.dtype == np.float64
    np.testing.assert_allclose(result, expected.mean(1), rtol=1e-5, atol=1e-5)
    matrix = np.load(matrix_path)
    assert matrix.shape == (len(TRAIN_KEYS), len(VAL_TEXTS)) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, expected, rtol=1e-5, atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.npy"]  # no temporary file left
    # the values are not trivially zero: sub-networks really differ
    assert np.abs(expected).max() > 1e-3


def test_influence_without_matrix_and_for_one_key(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows], naive_cache: dict[str, np.ndarray]
) -> None:
    model = make_model(tiny_model_dir, "layers:1")
    _, val = encoded
    expected = naive_for("layers:1", model, val, naive_cache)
    one = influence(model, TRAIN_KEYS[3:4], val, VAL_LABELS, pair_batch=5, batch_size=4)
    np.testing.assert_allclose(one, expected[3:4].mean(1), rtol=1e-5, atol=1e-5)


def test_influence_needs_masks(tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows]) -> None:
    model = make_model(tiny_model_dir, "none")
    with pytest.raises(ValueError, match="instance masks"):
        influence(model, TRAIN_KEYS, encoded[1], VAL_LABELS)


def naive_self(
    model: TodClassifier, train: EncodedRows, labels: np.ndarray, keys: np.ndarray
) -> dict[MaskMode, tuple[np.ndarray, np.ndarray]]:
    out = {}
    with torch.no_grad():
        for mode in MaskMode:
            losses, probs = [], []
            for row in range(len(train)):
                logits = model(train.batch([row]), torch.tensor([int(keys[row])]), mode)
                losses.append(ce(logits, int(labels[row])))
                probs.append(logits.softmax(-1)[0].numpy())
            out[mode] = (np.array(losses), np.array(probs))
    return out


def test_two_class_head_path_equals_naive_loop(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows], tmp_path: Path
) -> None:
    """Two classes take the margin shortcut in the head path; it must match the per-pair loop too."""
    torch.manual_seed(5)
    encoder = transformers.AutoModel.from_pretrained(str(tiny_model_dir))
    model = TodClassifier(encoder, 2, scope=Scope.parse("head"), keep_prob=0.7, mask_seed=3)
    with torch.no_grad():
        model.classifier.weight.mul_(4.0)
    model.eval()
    _, val = encoded
    labels = VAL_LABELS % 2
    expected = naive_pairs(model, TRAIN_KEYS, val, labels)
    matrix_path = tmp_path / "pairs.npy"
    chunk = 2.5 * len(VAL_TEXTS) * 4 * 6 / 2**20  # 2.5 training instances per block
    values = influence(model, TRAIN_KEYS, val, labels, chunk_mib=chunk, matrix_path=matrix_path)  # type: ignore[arg-type]
    np.testing.assert_allclose(np.load(matrix_path), expected, atol=1e-5)
    np.testing.assert_allclose(values, expected.mean(1), atol=1e-5)


@pytest.mark.parametrize("scope", ["head", "layers:1", "ffn:1"])
def test_cls_pooling_scores_equal_naive_loop(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows], scope: str
) -> None:
    model = make_model(tiny_model_dir, scope, keep_prob=0.7, pooling="cls")
    train, val = encoded
    expected = naive_pairs(model, TRAIN_KEYS, val, VAL_LABELS)
    np.testing.assert_allclose(influence(model, TRAIN_KEYS, val, VAL_LABELS), expected.mean(1), atol=1e-5)
    mean_pooled = make_model(tiny_model_dir, scope, keep_prob=0.7)
    assert not np.allclose(influence(mean_pooled, TRAIN_KEYS, val, VAL_LABELS), expected.mean(1), atol=1e-5)
    naive = naive_self(model, train, TRAIN_LABELS, TRAIN_KEYS)
    scores = self_scores(model, train, TRAIN_LABELS, TRAIN_KEYS, batch_size=3)
    np.testing.assert_allclose(scores.hidden_loss, naive[MaskMode.HIDDEN][0], rtol=1e-5, atol=1e-6)


def _prenorm_encoder() -> nn.Module:
    config = transformers.RobertaPreLayerNormConfig(
        vocab_size=30522,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=70,
        pad_token_id=1,
    )
    torch.manual_seed(2)
    return transformers.AutoModel.from_config(config)


def test_layers_1_under_a_final_norm_uses_the_exact_path(encoded: tuple[EncodedRows, EncodedRows]) -> None:
    """Pre-LayerNorm encoders normalise after the layer list: a mask on the last layer's output does not
    commute with that norm, so the pooled shortcut would be wrong."""
    model = TodClassifier(
        _prenorm_encoder(), NUM_LABELS, scope=Scope.parse("layers:1"), keep_prob=0.3, mask_seed=21
    )
    with torch.no_grad():
        model.classifier.weight.mul_(4.0)
    model.eval()
    assert not model.last_layer_is_output
    assert model.split_layer == model.num_layers - 1
    _, val = encoded
    expected = naive_pairs(model, TRAIN_KEYS, val, VAL_LABELS)
    np.testing.assert_allclose(influence(model, TRAIN_KEYS, val, VAL_LABELS), expected.mean(1), atol=1e-5)
    bert = make_model  # the post-norm BERT keeps the shortcut
    assert bert.__name__ == "make_model"


def test_post_norm_encoders_keep_the_pooled_shortcut(tiny_model_dir: Path) -> None:
    model = make_model(tiny_model_dir, "layers:1")
    assert model.last_layer_is_output
    assert model.split_layer == model.num_layers
