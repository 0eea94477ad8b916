"""cleanse: train -> score -> filter -> retrain -> evaluate in one command, with a random baseline."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import make_rows, write_rows
from tests.test_cli import invoke, ok, user_error
from tod_clean.data import read_table

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
    assert summary["by"] == "influence"
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
