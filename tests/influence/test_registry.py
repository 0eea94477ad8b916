"""A new influence estimator is one class: registered from this file, it is chosen by ``--influence NAME``,
reads the run's trained network and the encoded training and validation rows, and its blocks become the
``influence`` column and the matrix file."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.cli.conftest import invoke, model_args, ok, train_run  # noqa: F401 (fixture)
from tests.conftest import make_rows, write_rows
from tod_clean.config import ScoreConfig
from tod_clean.encoding import EncodedRows, encode_texts
from tod_clean.influence.base import ESTIMATORS, InfluenceBlock, InfluenceEstimator, InfluenceTask
from tod_clean.influence.head_gemm import head_features
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.rundir import RunDir
from tod_clean.scopes import Scope


@pytest.fixture
def head_dot() -> Iterator[str]:
    """A test-only estimator: the dot product of the training and validation rows' head features, in
    blocks of at most 3 x 2 pairs; unregistered afterwards."""

    class HeadDot(InfluenceEstimator):
        name = "head_dot"

        def applies_to(self, scope: Scope) -> bool:
            return scope.kind == "head"

        def blocks(self, task: InfluenceTask) -> Iterator[InfluenceBlock]:
            def features(rows: EncodedRows) -> torch.Tensor:
                return head_features(task.model, rows, batch_size=task.batch_size, device=task.device)

            train, val = features(task.train_encoded()), features(task.val_encoded)
            for start in range(0, len(train), 3):
                for val_start in range(0, len(val), 2):
                    val_index = np.arange(val_start, min(val_start + 2, len(val)))
                    values = train[start : start + 3] @ val[val_index].T
                    yield InfluenceBlock(start, val_index, values)

    try:
        yield HeadDot.name
    finally:
        ESTIMATORS.pop(HeadDot.name, None)


def naive_features(model: TodClassifier, rows: EncodedRows) -> np.ndarray:
    """Head features ``[N, D]`` float64, one row per forward pass."""
    out = []
    with torch.no_grad():
        for index in range(len(rows)):
            batch = rows.batch([index])
            pooled = model.pool(model.encode_lower(batch), batch["attention_mask"])
            out.append(model.head_features(pooled)[0].double().numpy())
    return np.stack(out)


def test_a_registered_estimator_scores_a_run(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
    head_dot: str,
) -> None:
    assert ScoreConfig(influence_method=head_dot).influence_method == head_dot
    train_rows, val_rows = make_rows(10), make_rows(5, offset=20)
    train = write_rows(tmp_path / "train.jsonl", train_rows)
    val = write_rows(tmp_path / "val.jsonl", val_rows)
    run = train_run(tmp_path, train, model_args, "--scope", "head")
    matrix_path = tmp_path / "matrix.npy"
    options = ["--influence", head_dot, "--matrix", matrix_path, "--quiet"]
    ok(invoke("score", "--run", run, "--val", val, *options))
    assert json.loads((run / "scores.json").read_text())["influence_method"] == head_dot

    folder = RunDir(run)
    info = folder.read_complete_info()
    model = folder.load_model(info).eval()
    tokenizer = folder.load_tokenizer()

    def encoded(rows: list[dict[str, str]]) -> EncodedRows:
        return encode_texts(tokenizer, [row["text"] for row in rows], None, info.train.max_length)

    expected = naive_features(model, encoded(train_rows)) @ naive_features(model, encoded(val_rows)).T
    matrix = np.load(matrix_path)
    np.testing.assert_allclose(matrix, expected, rtol=1e-4, atol=1e-5)
    influence = pd.read_parquet(run / "scores.parquet")["influence"].to_numpy()
    np.testing.assert_allclose(influence, expected.mean(1), rtol=1e-4, atol=1e-5)
