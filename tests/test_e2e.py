"""One end-to-end run with the real embedded MiniLM-L6 (model 'minilm', the default):
train -> score -> filter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from tests.conftest import make_rows, write_rows
from tod_clean.cli import app

pytestmark = pytest.mark.e2e


def test_minilm_train_score_filter(tmp_path: Path) -> None:
    rows = make_rows(12)
    train = write_rows(tmp_path / "train.jsonl", rows)
    val = write_rows(tmp_path / "val.jsonl", make_rows(6, offset=20))
    run, scores, kept, removed = (
        tmp_path / "run",
        tmp_path / "scores.csv",
        tmp_path / "kept.jsonl",
        tmp_path / "removed.jsonl",
    )
    runner = CliRunner()

    result = runner.invoke(
        app,
        [
            "train",
            str(train),
            "--run",
            str(run),
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--max-length",
            "32",
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["model"] == "minilm"
    assert config["encoder"]["model_type"] == "bert" and config["encoder"]["hidden_size"] == 384
    assert config["encoder"]["num_layers"] == 6
    assert config["status"] == "complete" and len(config["epochs"]) == 1

    result = runner.invoke(
        app, ["score", "--run", str(run), "--val", str(val), "--out", str(scores), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(scores)
    assert len(frame) == 12 and frame["row"].tolist() == list(range(12))
    for column in ("influence", "self_influence", "hidden_loss", "exposed_loss", "full_loss"):
        assert np.isfinite(frame[column]).all(), column
    assert (frame[["hidden_loss", "exposed_loss", "full_loss"]] > 0).all().all()
    assert sorted(frame["rank"]) == list(range(1, 13))
    # rank 1: the most negative influence (the default ranking when a validation set was scored)
    first = frame.loc[frame["rank"] == 1].iloc[0]
    assert first["influence"] == frame["influence"].min()

    result = runner.invoke(
        app, ["filter", "--run", str(run), "--drop-count", "3", "--out", str(kept), "--removed", str(removed)]
    )
    assert result.exit_code == 0, result.output
    assert "kept 9 of 12 rows; dropped 3" in result.stderr
    lines = train.read_bytes().splitlines(keepends=True)
    worst = frame.sort_values("rank")["row"].head(3).tolist()
    assert kept.read_bytes() == b"".join(line for i, line in enumerate(lines) if i not in worst)
    dropped = pd.read_json(removed, lines=True)  # worst first
    assert dropped["id"].tolist() == [rows[i]["id"] for i in worst]


SAMPLE = Path(__file__).resolve().parent.parent / "sample_data"


@pytest.mark.slow
def test_minilm_finds_the_planted_label_errors_of_the_sample_data(tmp_path: Path) -> None:
    """The demo's 320 reviews hold 10 deliberately wrong labels: after the default 2-epoch run, most of
    them must be among the 16 rows (5%) that ``hidden_loss`` and ``full_loss`` rank worst, and filtering
    by ``hidden_loss`` must remove them."""
    planted = set((SAMPLE / "planted_errors.txt").read_text().split())
    assert len(planted) == 10
    run, kept = tmp_path / "run", tmp_path / "kept.jsonl"
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "train",
            str(SAMPLE / "train.jsonl"),
            "--id-col",
            "id",
            "--run",
            str(run),
            "--max-length",
            "64",
            "-q",
        ],
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["score", "--run", str(run), "--out", str(tmp_path / "scores.csv"), "-q"])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(tmp_path / "scores.csv")
    for signal in ("hidden_loss", "full_loss"):
        top = set(frame.sort_values(signal, ascending=False)["id"].head(16))
        assert len(top & planted) >= 6, (signal, sorted(top & planted))
    result = runner.invoke(
        app, ["filter", "--run", str(run), "--by", "hidden_loss", "--drop-count", "16", "-o", str(kept), "-q"]
    )
    assert result.exit_code == 0, result.output
    kept_ids = {json.loads(line)["id"] for line in kept.read_text().splitlines()}
    assert len(kept_ids) == 304 and len(planted - kept_ids) >= 6
