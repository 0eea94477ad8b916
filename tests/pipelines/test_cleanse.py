"""cleanse: train -> score -> filter -> retrain -> evaluate in one command, with a random baseline."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, write_rows
from tod_clean.errors import ConfigError, InputError
from tod_clean.io.inputs import read_table
from tod_clean.pipelines import cleanse as cleanse_module
from tod_clean.pipelines.cleanse import check_test_labels, random_rows_to_keep

TINY = ["--epochs", "1", "--batch-size", "4", "--max-length", "16", "--device", "cpu"]


def test_cleanse_end_to_end(tmp_path: Path, tiny_model_dir: Path) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(14))
    val = write_rows(tmp_path / "val.jsonl", make_rows(6, offset=30))
    test = write_rows(tmp_path / "test.jsonl", make_rows(8, offset=50))
    out = tmp_path / "out"
    args = [
        "cleanse",
        train,
        "--test",
        test,
        "--val",
        val,
        "--out-dir",
        out,
        "--model",
        tiny_model_dir,
        *TINY,
    ]
    result = ok(invoke(*args, "--drop-count", "2", "--random-baseline", "--id-col", "id"))
    assert "filtered" in result.stderr and "random" in result.stderr
    summary = json.loads((out / "metrics.json").read_text())
    arms = {arm["name"]: arm for arm in summary["arms"]}
    assert set(arms) == {"before", "filtered", "random"}
    assert arms["before"]["train_rows"] == 14 and arms["filtered"]["train_rows"] == 12
    assert arms["random"]["removed"] == 2 and all(arm["rows"] == 8 for arm in arms.values())
    assert summary["by"] == "influence" and summary["complete"] is True  # the default with --val
    stderr = " ".join(result.stderr.split())
    assert "ranking by influence on the validation set (the default when it was scored" in stderr
    # each model's progress says which model trains; the table's one-seed caveat
    for name in ("tod-run (turn-over dropout)", "run-before (all rows)", "run-filtered (kept rows)"):
        assert f"{name}: epoch 1/" in stderr, name
    assert "run-random (random rows removed): epoch 1/" in stderr
    assert "each model is one training run (seed 0)" in stderr and "several --seed values" in stderr
    assert [row["rank"] for row in read_table(str(out / "removed.csv")).rows] == ["1", "2"]  # worst first
    kept = read_table(str(out / "train.filtered.jsonl"))
    removed = read_table(str(out / "removed.csv"))
    original = read_table(str(train))
    assert len(kept) == 12 and len(removed) == 2
    assert {r["id"] for r in kept.rows} | {r["id"] for r in removed.rows} == {r["id"] for r in original.rows}
    assert set(kept.raw or []) <= set(original.raw or [])  # kept rows unchanged, byte for byte
    for name in ("tod-run", "run-before", "run-filtered", "run-random"):
        assert json.loads((out / name / "config.json").read_text())["status"] == "complete"
    assert json.loads((out / "run-filtered" / "config.json").read_text())["masks"]["scope"] == "none"
    # a second run into the same folder needs --overwrite
    user_error(invoke(*args), "--overwrite")


def test_cleanse_bad_input(tmp_path: Path, tiny_model_dir: Path) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(10))
    test = write_rows(tmp_path / "test.jsonl", make_rows(6, offset=40))
    out = tmp_path / "out"
    base = ["cleanse", train, "--out-dir", out, "--model", tiny_model_dir, *TINY]
    user_error(invoke(*base, "--test", tmp_path / "missing.jsonl"), "missing.jsonl", "no such file")
    odd_test = write_rows(tmp_path / "odd.jsonl", [{"text": "meh", "label": "neutral"}])
    user_error(invoke(*base, "--test", test, "--label-col", "stars"), "'stars'", "columns found")
    user_error(invoke(*base, "--test", test, "--drop", "1.5"), "--drop", "1.5")
    user_error(invoke(*base, "--test", test, "--scope", "layers:0"), "layers:0")
    user_error(invoke(*base, "--test", test, "--by", "loudness"), "loudness")
    user_error(invoke(*base, "--test", odd_test), "odd.jsonl", "'neutral'")  # refused before any training
    assert not out.exists()


def test_cleanse_refuses_what_the_scope_cannot_score_before_training(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(10))
    val = write_rows(tmp_path / "val.jsonl", make_rows(4, offset=30))
    test = write_rows(tmp_path / "test.jsonl", make_rows(6, offset=40))
    out = tmp_path / "out"
    base = ["cleanse", train, "--test", test, "--out-dir", out, "--model", tiny_model_dir, *TINY]
    line = user_error(
        invoke(*base, "--scope", "none", "--val", val, "--influence", "turn-over"), absent=(out,)
    )
    assert line == (
        "error: --val: a --scope none run is trained with scope 'none' (no instance masks), so --influence "
        "turn-over has no sub-networks to compare; the default (--influence auto: gauss-newton) scores such a run"
    )
    line = user_error(invoke(*base, "--scope", "none", "--by", "hidden_loss"), absent=(out,))
    assert line == (
        "error: --by hidden_loss: a --scope none run scores only full_loss, full_prob; choose one of them, "
        "or a masked scope (head, lora, layers:K, ffn:K, channels)"
    )
    line = user_error(invoke(*base, "--by", "influence"), absent=(out,))
    assert line == "error: --by influence: influence is measured on a validation set; pass --val FILE"


def test_cleanse_writes_what_it_measured_when_a_later_step_fails(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filtered model's evaluation fails: metrics.json keeps the 'before' model's score and names the
    failed step."""
    real = cleanse_module.evaluate_run
    calls = []

    def evaluate_once(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) > 1:
            raise InputError("test.jsonl: the evaluation broke")
        return real(*args, **kwargs)

    monkeypatch.setattr(cleanse_module, "evaluate_run", evaluate_once)
    train = write_rows(tmp_path / "train.jsonl", make_rows(10))
    test = write_rows(tmp_path / "test.jsonl", make_rows(6, offset=40))
    out = tmp_path / "out"
    args = ["cleanse", train, "--test", test, "--out-dir", out, "--model", tiny_model_dir, *TINY, "-q"]
    line = user_error(invoke(*args, "--drop-count", "2"))
    assert line == "error: test.jsonl: the evaluation broke"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["complete"] is False and summary["failed_step"] == "train and evaluate run-filtered"
    assert summary["error"] == "test.jsonl: the evaluation broke"
    assert [arm["name"] for arm in summary["arms"]] == ["before"]
    assert summary["arms"][0]["train_rows"] == 10 and summary["arms"][0]["rows"] == 6
    assert summary["by"] == "full_loss" and summary["removed"] == 2


def test_check_test_labels_names_a_test_label_left_without_training_rows(tmp_path: Path) -> None:
    rows = make_rows(6)
    rows[5]["label"] = "neutral"
    train = read_table(str(write_rows(tmp_path / "train.jsonl", rows)))
    test = read_table(str(write_rows(tmp_path / "test.jsonl", rows[3:])))
    check_test_labels(test, train, np.arange(6), "label")
    with pytest.raises(ConfigError) as caught:
        check_test_labels(test, train, np.arange(5), "label")
    assert str(caught.value) == (
        f"{test.source}: label 'neutral' has no training row left after filtering (1 test label in all): the "
        "filtered model could not be evaluated; drop fewer rows, or leave out --allow-empty-class"
    )


def test_random_baseline_keeps_a_row_of_each_class(tmp_path: Path) -> None:
    rows = make_rows(8)
    rows[7]["label"] = "neutral"
    train = read_table(str(write_rows(tmp_path / "train.jsonl", rows)))
    for seed in range(20):
        kept = random_rows_to_keep(train, "label", 5, seed, allow_empty_class=False)
        assert len(kept) == 3 and 7 in kept.tolist()  # the one 'neutral' row is never drawn
        assert {rows[i]["label"] for i in kept} == {"positive", "negative", "neutral"}
