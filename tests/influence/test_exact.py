"""Batched scoring (GEMM path for the head, pair batches for layer scopes) against a naive per-pair loop."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from tests.conftest import NEGATIVE, POSITIVE
from tod_clean.encoding import EncodedRows, encode_texts
from tod_clean.filter import worst_first
from tod_clean.influence.gather import influence
from tod_clean.influence.self_scores import SelfScores, self_scores
from tod_clean.masks import MaskMode, key_from_id
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import Scope
from tod_clean.score import scores_frame

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


@pytest.mark.parametrize("scope", ["head", "layers:2", "ffn:1"])
def test_self_scores_equal_per_row_forward(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows], scope: str
) -> None:
    model = make_model(tiny_model_dir, scope)
    train, _ = encoded
    expected = naive_self(model, train, TRAIN_LABELS, TRAIN_KEYS)
    scores = self_scores(model, train, TRAIN_LABELS, TRAIN_KEYS, batch_size=3)
    assert isinstance(scores, SelfScores)
    np.testing.assert_allclose(scores.full_loss, expected[MaskMode.FULL][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.full_probs, expected[MaskMode.FULL][1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.exposed_loss, expected[MaskMode.EXPOSED][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.hidden_loss, expected[MaskMode.HIDDEN][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores.hidden_probs, expected[MaskMode.HIDDEN][1], rtol=1e-5, atol=1e-6)
    assert scores.self_influence is not None
    np.testing.assert_allclose(
        scores.self_influence,
        expected[MaskMode.HIDDEN][0] - expected[MaskMode.EXPOSED][0],
        rtol=1e-5,
        atol=1e-5,
    )
    assert scores.full_loss.dtype == np.float64 and scores.full_probs.dtype == np.float32
    np.testing.assert_allclose(scores.full_probs.sum(1), 1.0, rtol=1e-5)


def test_self_scores_without_masks(tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows]) -> None:
    model = make_model(tiny_model_dir, "none")
    train, _ = encoded
    expected = naive_self(model, train, TRAIN_LABELS, TRAIN_KEYS)
    scores = self_scores(model, train, TRAIN_LABELS, TRAIN_KEYS, batch_size=4)
    assert scores.exposed_loss is None and scores.hidden_loss is None and scores.hidden_probs is None
    assert scores.self_influence is None
    np.testing.assert_allclose(scores.full_loss, expected[MaskMode.FULL][0], rtol=1e-5, atol=1e-6)


def test_scores_frame_columns_and_rank(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows]
) -> None:
    from tod_clean.instances import Instances

    model = make_model(tiny_model_dir, "head")
    train, val = encoded
    scores = self_scores(model, train, TRAIN_LABELS, TRAIN_KEYS)
    values = influence(model, TRAIN_KEYS, val, VAL_LABELS)
    instances = Instances(list(TRAIN_TEXTS), None, TRAIN_LABELS, TRAIN_KEYS, [f"id{i}" for i in range(7)])
    names = ["a", "b", "c"]
    frame = scores_frame(instances, names, scores, values)
    assert list(frame["row"]) == list(range(7))
    assert list(frame["id"]) == [f"id{i}" for i in range(7)]
    assert list(frame["label"]) == [names[i] for i in TRAIN_LABELS]
    np.testing.assert_allclose(frame["influence"], values)
    for column in ("self_influence", "hidden_loss", "exposed_loss", "full_loss"):
        np.testing.assert_allclose(frame[column], getattr(scores, column))
    np.testing.assert_allclose(frame["full_prob"], scores.full_probs[np.arange(7), TRAIN_LABELS], rtol=1e-6)
    # rank 1 = the first row filter drops by default: the highest full_loss within its class
    assert sorted(frame["rank"]) == list(range(1, 8))
    expected = list(worst_first(scores.full_loss, "full_loss", np.asarray(TRAIN_LABELS)))
    assert list(frame.sort_values("rank")["row"]) == expected
    # the same without a validation set
    frame = scores_frame(instances, names, scores, None)
    assert "influence" not in frame.columns
    assert list(frame.sort_values("rank")["row"]) == expected


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


@pytest.mark.parametrize("keep_prob", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("num_labels", [2, 3])
def test_head_blocks_with_several_instances_and_ragged_ends_equal_naive_loop(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows], keep_prob: float, num_labels: int
) -> None:
    """Memory budgets that cut both the training rows (several per block, a ragged last block) and the
    validation rows into blocks give the per-pair loop's matrix."""
    from tod_clean.influence.head_gemm import head_features, head_influence_blocks

    torch.manual_seed(7)
    encoder = transformers.AutoModel.from_pretrained(str(tiny_model_dir))
    model = TodClassifier(encoder, num_labels, scope=Scope.parse("head"), keep_prob=keep_prob, mask_seed=4)
    with torch.no_grad():
        model.classifier.weight.mul_(4.0)
    model.eval()
    _, val = encoded
    labels = VAL_LABELS % num_labels
    expected = naive_pairs(model, TRAIN_KEYS, val, labels)
    features = head_features(model, val, batch_size=3, device=torch.device("cpu"))
    for block_shape in ((3, 3), (2, 5), (7, 8), (1, 1), (10, 20)):
        matrix = np.full(expected.shape, np.nan)
        shapes = []
        for block in head_influence_blocks(
            features,
            torch.as_tensor(labels),
            model.classifier.weight.detach(),
            model.classifier.bias.detach(),
            torch.as_tensor(TRAIN_KEYS),
            keep_prob=keep_prob,
            mask_seed=4,
            block_shape=block_shape,
        ):
            n = block.values.shape[0]
            assert np.isnan(matrix[block.train_start : block.train_start + n, block.val_index]).all()
            matrix[block.train_start : block.train_start + n, block.val_index] = block.values.numpy()
            shapes.append((n, len(block.val_index)))
        np.testing.assert_allclose(matrix, expected, atol=1e-5)  # every pair exactly once, all correct
        assert max(n for n, _ in shapes) == min(block_shape[0], len(TRAIN_KEYS))
        assert max(v for _, v in shapes) == min(block_shape[1], len(VAL_TEXTS))


def test_head_block_sizes_follow_the_memory_budget() -> None:
    """A smaller budget cuts the validation rows as well as the training rows into blocks."""
    from tod_clean.influence.head_gemm import head_influence_blocks

    generator = torch.Generator().manual_seed(0)
    features = torch.rand((300, 64), generator=generator)
    labels = torch.randint(0, 5, (300,), generator=generator)
    weight, bias = torch.randn((5, 64), generator=generator), torch.zeros(5)
    keys = torch.arange(400)
    shapes = {
        mib: [
            (b.values.shape[0], len(b.val_index))
            for b in head_influence_blocks(
                features,
                labels,
                weight,
                bias,
                keys,
                keep_prob=0.3,
                mask_seed=1,
                chunk_mib=mib,  # type: ignore[arg-type]
            )
        ]
        for mib in (0.25, 64)
    }
    assert shapes[64] == [(400, 300)]  # everything fits in one block
    small = shapes[0.25]
    assert max(v for _, v in small) < 300 and max(n for n, _ in small) < 400
    # the largest block's float32 temporaries (6 per pair and class) and weighted features stay in budget
    n, v = max(small, key=lambda shape: shape[0] * shape[1])
    assert 6 * n * v * 5 * 4 + v * 5 * 64 * 4 <= 0.25 * 2**20


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


def test_head_runs_in_float32_under_bf16_autocast(
    tiny_model_dir: Path, encoded: tuple[EncodedRows, EncodedRows]
) -> None:
    """Self-scores under bf16 autocast compute the head (and the loss) in float32 from the encoder's
    output, like the float32 influence product does."""
    model = make_model(tiny_model_dir, "head")
    train, _ = encoded
    batch = train.batch([0, 1, 2])
    keys = torch.as_tensor(TRAIN_KEYS[:3])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pooled = model.pool(model.encode_lower(batch), batch["attention_mask"])
        logits = model.forward_pooled(pooled, keys, MaskMode.HIDDEN)
    assert logits.dtype == torch.float32
    with torch.no_grad():
        reference = model.forward_pooled(pooled.float(), keys, MaskMode.HIDDEN)
    torch.testing.assert_close(logits, reference, rtol=0, atol=0)


def reference_head_influence(
    features: torch.Tensor,
    labels: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    keys: torch.Tensor,
    keep_prob: float,
    mask_seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The head-scope pair matrix ``[N, V]`` in float64, straight from the definition (logits of each
    masked sub-network, then cross-entropy), and the largest logit size of each pair (float32 rounding of
    logits that size is the precision any float32 computation can reach)."""
    from tod_clean.masks import instance_masks
    from tod_clean.scopes import HEAD_SITE

    masks = instance_masks(mask_seed, keys, HEAD_SITE, weight.shape[1], keep_prob).double()  # [N, D]
    f, w, b = features.double(), weight.double(), bias.double()
    exposed = torch.einsum("vd,nd,cd->nvc", f, masks, w) / keep_prob + b
    hidden = torch.einsum("vd,nd,cd->nvc", f, 1 - masks, w) / (1 - keep_prob) + b
    target = labels[None, :, None].expand(len(keys), -1, 1)

    def loss(logits: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(logits, -1) - logits.gather(-1, target).squeeze(-1)

    size = torch.maximum(exposed.abs().amax(-1), hidden.abs().amax(-1))
    return (loss(hidden) - loss(exposed)).numpy(), size.numpy()


@pytest.mark.parametrize("keep_prob", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("num_classes", [2, 4])
def test_head_blocks_with_huge_logits_equal_the_float64_definition(
    keep_prob: float, num_classes: int
) -> None:
    """Validation rows whose logit differences could overflow exp() take the shifted formula, the others
    the plain one (for two classes at p = 1/2 the half one, unless a large bias gap would overflow its
    constant), in the same block; all equal the float64 definition."""
    from tod_clean.influence.head_gemm import _head_targets, head_influence_blocks

    generator = torch.Generator().manual_seed(2)
    features = torch.rand((12, 40), generator=generator) * 2 - 1
    features *= torch.tensor([0.01, 3.0, 30.0, 300.0]).repeat(3)[:, None]  # logits from tiny to huge
    labels = torch.randint(0, num_classes, (12,), generator=generator)
    weight = torch.randn((num_classes, 40), generator=generator)
    bias = torch.randn(num_classes, generator=generator)
    keys = torch.arange(-5, 20)
    cases = [(bias, ["plain", "shifted"])]
    if (keep_prob, num_classes) == (0.5, 2):
        gap = torch.tensor([0.0, 45.0])  # |h + e| = 2 |full difference + bias gap| > 80: plain, not half
        cases = [(bias, ["half", "shifted"]), (bias + gap, ["plain", "shifted"])]
    for case_bias, formulas in cases:
        parts = _head_targets(features, labels, weight, case_bias, keep_prob)
        assert [targets.formula for _, targets in parts] == formulas  # both formulas in play
        expected, size = reference_head_influence(features, labels, weight, case_bias, keys, keep_prob, 9)
        assert np.abs(expected).max() > 100  # far past where a float32 exp overflows
        for block_shape in ((25, 12), (4, 5)):
            matrix = np.full(expected.shape, np.nan)
            for block in head_influence_blocks(
                features,
                labels,
                weight,
                case_bias,
                keys,
                keep_prob=keep_prob,
                mask_seed=9,
                block_shape=block_shape,
            ):
                matrix[block.train_start : block.train_start + block.values.shape[0], block.val_index] = (
                    block.values.numpy()
                )
            assert (np.abs(matrix - expected) <= 1e-5 + 1e-6 * size).all()  # float32 rounding, no more


def test_head_blocks_split_across_threads_equal_one_thread() -> None:
    """On a CPU a block is split by training rows across torch's threads (one worker thread each): the
    values and row sums equal one thread's within float32 rounding (``assert_within_rounding``), for each
    loss formula, and the row sums computed in the workers are the values' row sums."""
    from tod_clean.influence.head_gemm import _head_targets, head_influence_blocks

    generator = torch.Generator().manual_seed(5)
    for keep_prob, num_classes in ((0.5, 2), (0.3, 2), (0.7, 3)):
        features = torch.rand((97, 48), generator=generator) * 2 - 1
        features[::3] *= 200.0  # some rows take the shifted formula
        labels = torch.randint(0, num_classes, (97,), generator=generator)
        weight, bias = torch.randn((num_classes, 48), generator=generator), torch.randn(num_classes)
        assert len(_head_targets(features, labels, weight, bias, keep_prob)) >= 2
        keys = torch.arange(-40, 410)  # 450 rows: blocks of 200, 200 and 50 rows
        runs = {}
        threads = torch.get_num_threads()
        try:
            for count in (1, 3):
                torch.set_num_threads(count)
                runs[count] = [
                    (block.train_start, block.values.clone(), block.row_sums.clone())
                    for block in head_influence_blocks(
                        features,
                        labels,
                        weight,
                        bias,
                        keys,
                        keep_prob=keep_prob,
                        mask_seed=3,
                        block_shape=(200, 50),
                    )
                ]
        finally:
            torch.set_num_threads(threads)
        assert len(runs[1]) == len(runs[3]) == 6  # 3 training blocks x 2 validation blocks
        for (start, values, sums), (start3, values3, sums3) in zip(runs[1], runs[3], strict=True):
            assert start == start3 and values.abs().max() > 100  # large values: a wrong one shows
            assert_within_rounding(values3, values)
            assert_within_rounding(sums3, sums)
            torch.testing.assert_close(sums, values.sum(1), rtol=1e-6, atol=1e-4)


def test_head_influence_of_shards_equals_the_whole() -> None:
    """Scored in shards (whose blocks start at the shard's first row and may end in a block of one row),
    every training row's influence equals the unsharded value within float32 rounding: no value depends
    on how many rows share its block beyond BLAS's rounding."""
    from tod_clean.influence.head_gemm import head_influence

    generator = torch.Generator().manual_seed(11)
    features = torch.rand((300, 96), generator=generator) * 2 - 1
    labels = torch.randint(0, 2, (300,), generator=generator)
    weight, bias = torch.randn((2, 96), generator=generator) * 0.2, torch.randn(2)
    keys = torch.arange(1000)
    options = {"keep_prob": 0.5, "mask_seed": 2, "block_shape": (333, 128)}
    whole = head_influence(features, labels, weight, bias, keys, **options)  # last block: 1 row
    bounds = [0, 333, 667, 1000]
    shards = [
        head_influence(features, labels, weight, bias, keys[a:b], **options) for a, b in pairwise(bounds)
    ]
    assert_within_rounding(np.concatenate(shards), whole)
    one_training_block = head_influence(
        features, labels, weight, bias, keys, keep_prob=0.5, mask_seed=2, block_shape=(1000, 128)
    )
    assert_within_rounding(one_training_block, whole)


def test_head_influence_of_small_shards_equals_the_whole() -> None:
    """Shards with few training rows, scored with other thread counts than the whole (as on the mixed
    nodes of a SLURM array), equal the whole within float32 rounding: the blocks depend on the budget and
    the shapes, never on the thread count or on how many training rows a shard holds."""
    from tod_clean.influence.head_gemm import head_influence

    generator = torch.Generator().manual_seed(3)
    features = torch.rand((700, 96), generator=generator) * 2 - 1
    labels = torch.randint(0, 2, (700,), generator=generator)
    weight, bias = torch.randn((2, 96), generator=generator) * 0.2, torch.randn(2)
    keys = torch.arange(1000)
    options = {"keep_prob": 0.5, "mask_seed": 2, "chunk_mib": 1}  # ~39 training rows a block
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        whole = head_influence(features, labels, weight, bias, keys, **options)
        for count, bounds in ((2, [0, 60, 1000]), (5, [0, 100, 1000]), (1, [0, 333, 1000])):
            torch.set_num_threads(count)
            shards = [
                head_influence(features, labels, weight, bias, keys[a:b], **options)
                for a, b in pairwise(bounds)
            ]
            assert_within_rounding(np.concatenate(shards), whole)
    finally:
        torch.set_num_threads(threads)
