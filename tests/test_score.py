"""The scores table of ``score_run``: its columns and rank."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.influence.test_exact import TRAIN_KEYS, TRAIN_LABELS, TRAIN_TEXTS, VAL_LABELS, encoded, make_model  # noqa: F401 (fixture)
from tod_clean.encoding import EncodedRows
from tod_clean.influence.gather import influence
from tod_clean.influence.self_scores import self_scores
from tod_clean.score import scores_frame
from tod_clean.selection import worst_first


def test_scores_frame_columns_and_rank(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
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
    # rank 1 = the first row filter drops by default: with a validation set scored, the most negative
    # influence (no class normalisation), ties in row order
    assert sorted(frame["rank"]) == list(range(1, 8))
    assert list(frame.sort_values("rank")["row"]) == list(np.argsort(values, kind="stable"))
    # without one: the highest full_loss within its class
    frame = scores_frame(instances, names, scores, None)
    assert "influence" not in frame.columns
    expected = list(worst_first(scores.full_loss, "full_loss", np.asarray(TRAIN_LABELS)))
    assert list(frame.sort_values("rank")["row"]) == expected
