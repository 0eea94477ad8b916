"""evaluate: metrics against scikit-learn, and the command on real files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from tests.cli.conftest import invoke, model_args, ok, train_run, user_error  # noqa: F401  (fixture)
from tests.conftest import make_rows, write_rows
from tod_clean.evaluate import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3), size=40)
    labels = rng.integers(0, 3, size=40)
    result = metrics(probs, labels, ["a", "b", "c"])
    predicted = probs.argmax(1)
    assert result.accuracy == pytest.approx(accuracy_score(labels, predicted))
    assert result.macro_f1 == pytest.approx(f1_score(labels, predicted, average="macro", labels=[0, 1, 2]))
    assert result.loss == pytest.approx(log_loss(labels, probs, labels=[0, 1, 2]), rel=1e-5)
    np.testing.assert_array_equal(result.confusion, confusion_matrix(labels, predicted, labels=[0, 1, 2]))


def test_evaluate_command(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    train = write_rows(tmp_path / "train.jsonl", make_rows(10))
    test = write_rows(tmp_path / "test.csv", make_rows(9, offset=40))
    run = train_run(tmp_path, train, model_args)
    out = tmp_path / "metrics.json"
    result = ok(invoke("evaluate", test, "--run", run, "--out", out))
    assert "accuracy" in result.stderr and "confusion" in result.stderr
    summary = json.loads(out.read_text())
    assert summary["rows"] == 9 and summary["labels"] == ["negative", "positive"]
    assert np.array(summary["confusion"]).sum() == 9
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["loss"] > 0
    # bad input: a label the training data did not have, a missing column, a missing file
    odd = write_rows(tmp_path / "odd.jsonl", [{"text": "meh", "label": "neutral"}])
    user_error(
        invoke("evaluate", odd, "--run", run, "--out", out.with_name("a.json")),
        "neutral",
        absent=(out.with_name("a.json"),),
    )
    user_error(invoke("evaluate", test, "--run", run, "--label-col", "stars"), "'stars'", "columns found")
    user_error(invoke("evaluate", tmp_path / "missing.jsonl", "--run", run), "no such file")


def test_macro_f1_counts_only_classes_present_in_labels_or_predictions() -> None:
    """A class no row has and no row is predicted as (here c) does not pull macro-F1 down."""
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1]])
    result = metrics(probs, np.array([0, 1, 1, 1]), ["a", "b", "c"])
    # a: precision 1/2, recall 1 -> 2/3; b: precision 1, recall 2/3 -> 4/5
    assert result.macro_f1 == pytest.approx((2 / 3 + 4 / 5) / 2)
    assert result.confusion.tolist() == [[1, 0, 0], [1, 2, 0], [0, 0, 0]]
    assert result.accuracy == 0.75


def test_per_class_metrics_equal_sklearn() -> None:
    """Known predictions: a 0 0 | b 1 1 0 | c never labeled, predicted once."""
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7]])
    labels = np.array([0, 1, 1, 1, 0])
    result = metrics(probs, labels, ["a", "b", "c"])
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, probs.argmax(1), labels=[0, 1, 2], zero_division=0.0
    )
    assert [row.label for row in result.per_class] == ["a", "b", "c"]
    np.testing.assert_allclose([row.precision for row in result.per_class], precision)
    np.testing.assert_allclose([row.recall for row in result.per_class], recall)
    np.testing.assert_allclose([row.f1 for row in result.per_class], f1)
    assert [row.support for row in result.per_class] == support.tolist() == [2, 3, 0]
    # by hand: a precision 1/2 recall 1/2; b precision 1 recall 2/3; c precision 0 (1 wrong) recall 0
    assert result.per_class[0].f1 == pytest.approx(0.5)
    assert result.per_class[1].f1 == pytest.approx(0.8)
    assert result.to_dict()["per_class"][1] == {
        "label": "b",
        "precision": 1.0,
        "recall": pytest.approx(2 / 3),
        "f1": pytest.approx(0.8),
        "support": 3,
    }


def test_evaluate_command_writes_per_class_metrics(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    train = write_rows(tmp_path / "train.jsonl", make_rows(10))
    test = write_rows(tmp_path / "test.jsonl", make_rows(9, offset=40))
    run = train_run(tmp_path, train, model_args)
    out = tmp_path / "metrics.json"
    result = ok(invoke("evaluate", test, "--run", run, "--out", out))
    assert "per class" in result.stderr and "precision" in result.stderr
    summary = json.loads(out.read_text())
    assert {"rows", "accuracy", "macro_f1", "loss", "labels", "confusion"} <= set(summary)  # kept
    confusion = np.array(summary["confusion"])
    per_class = summary["per_class"]
    assert [row["label"] for row in per_class] == ["negative", "positive"]
    assert [row["support"] for row in per_class] == confusion.sum(1).tolist() == [4, 5]
    for index, row in enumerate(per_class):
        predicted = confusion[:, index].sum()
        expected = confusion[index, index] / predicted if predicted else 0.0
        assert row["precision"] == pytest.approx(expected)
        assert row["recall"] == pytest.approx(confusion[index, index] / confusion[index].sum())
