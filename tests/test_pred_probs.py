"""score --pred-probs: out-of-sample class probabilities in the layout cleanlab expects."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues

from tests.cli.conftest import invoke, model_args, ok, train_run, user_error  # noqa: F401  (fixture)
from tests.conftest import make_rows, write_rows


def test_pred_probs_feed_cleanlab(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    rows = make_rows(24)
    train = write_rows(tmp_path / "train.jsonl", rows)
    run = train_run(tmp_path, train, model_args)
    probs_path = tmp_path / "probs.npy"
    scores_path = tmp_path / "scores.csv"
    ok(invoke("score", "--run", run, "--pred-probs", probs_path, "--out", scores_path, "-q"))
    pred_probs = np.load(probs_path, allow_pickle=False)
    assert pred_probs.shape == (24, 2) and pred_probs.dtype == np.float32
    np.testing.assert_allclose(pred_probs.sum(1), 1.0, atol=1e-5)
    scores = pd.read_csv(scores_path)
    labels = (scores.label == "positive").to_numpy().astype(int)  # run labels sorted: negative, positive
    np.testing.assert_allclose(pred_probs[np.arange(24), labels], scores.hidden_prob, atol=1e-6)
    issues = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    assert issues.ndim == 1 and set(issues.tolist()) <= set(range(24))
    # a ranked issue list orders by the hidden sub-network's confidence in the given label
    confidence = pred_probs[issues, labels[issues]]
    assert np.all(np.diff(confidence) >= -1e-7)


def test_pred_probs_need_masks(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    out = tmp_path / "p.npy"
    user_error(invoke("score", "--run", run, "--pred-probs", out), "scope 'none'", absent=(out,))


def test_readme_cleanlab_examples_run(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both README snippets under 'score --pred-probs', verbatim: find_label_issues and Datalab."""
    rows = make_rows(24)
    train = write_rows(tmp_path / "train.jsonl", rows)
    run = train_run(tmp_path, train, model_args)
    monkeypatch.chdir(tmp_path)
    ok(invoke("score", "--run", run, "--pred-probs", "probs.npy", "--out", "scores.csv", "-q"))
    readme = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text(encoding="utf-8")
    section = readme.split("### `tod-clean score --pred-probs FILE.npy`\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    pred_probs, label_issues = namespace["pred_probs"], namespace["label_issues"]
    assert len(label_issues) == 24
    assert list(label_issues["given_label"]) == [row["label"] for row in rows]
    # Datalab's class order is the run's: its predicted labels are the argmax columns of pred_probs
    names = np.array(["negative", "positive"])
    assert list(label_issues["predicted_label"]) == list(names[pred_probs.argmax(1)])
