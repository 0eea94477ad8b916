"""Self-scores (full, exposed and hidden losses and probabilities of each training row) against a
per-row forward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.influence.test_exact import TRAIN_KEYS, TRAIN_LABELS, encoded, make_model, naive_self  # noqa: F401 (fixture)
from tod_clean.encoding import EncodedRows
from tod_clean.influence.self_scores import SelfScores, self_scores
from tod_clean.masks import MaskMode


@pytest.mark.parametrize("scope", ["head", "layers:2", "ffn:1"])
def test_self_scores_equal_per_row_forward(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
    scope: str,
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


def test_self_scores_without_masks(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
) -> None:
    model = make_model(tiny_model_dir, "none")
    train, _ = encoded
    expected = naive_self(model, train, TRAIN_LABELS, TRAIN_KEYS)
    scores = self_scores(model, train, TRAIN_LABELS, TRAIN_KEYS, batch_size=4)
    assert scores.exposed_loss is None and scores.hidden_loss is None and scores.hidden_probs is None
    assert scores.self_influence is None
    np.testing.assert_allclose(scores.full_loss, expected[MaskMode.FULL][0], rtol=1e-5, atol=1e-6)


def test_head_runs_in_float32_under_bf16_autocast(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
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
