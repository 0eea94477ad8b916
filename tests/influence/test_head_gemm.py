"""The head-scope GEMM path: blocks, memory budget, threads, shards and numerically hard logits against
the per-pair loop and the float64 definition."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from tests.influence.test_exact import (  # noqa: F401 (fixture)
    TRAIN_KEYS,
    VAL_LABELS,
    VAL_TEXTS,
    assert_within_rounding,
    encoded,
    naive_pairs,
)
from tod_clean.encoding import EncodedRows
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import Scope


@pytest.mark.parametrize("keep_prob", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("num_labels", [2, 3])
def test_head_blocks_with_several_instances_and_ragged_ends_equal_naive_loop(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
    keep_prob: float,
    num_labels: int,
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


@pytest.mark.slow
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
