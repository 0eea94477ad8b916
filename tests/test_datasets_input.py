"""Folders written by datasets' save_to_disk as data: train --split, score --val-split, filter to a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.conftest import make_rows
from tod_clean.cli import app
from tod_clean.data import read_table
from tod_clean.errors import InputError
from tod_clean.rundir import RunDir

datasets = pytest.importorskip("datasets")


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    return result


def _dataset(n: int, *, offset: int = 0) -> Any:
    """``n`` rows with a ClassLabel label (0 = negative, 1 = positive)."""
    rows = make_rows(n, offset=offset)
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["negative", "positive"]),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "id": [r["id"] for r in rows],
            "text": [r["text"] for r in rows],
            "label": [1 if r["label"] == "positive" else 0 for r in rows],
        },
        features=features,
    )


@pytest.fixture
def dict_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "ds"
    datasets.DatasetDict({"train": _dataset(12), "validation": _dataset(6, offset=40)}).save_to_disk(
        str(folder)
    )
    return folder


def test_read_dataset_folders(tmp_path: Path, dict_dir: Path) -> None:
    table = read_table(str(dict_dir), split="train")
    assert table.format == "dataset" and table.split == "train" and len(table) == 12
    assert [row["label"] for row in table.rows[:2]] == ["positive", "negative"]  # ClassLabel names
    assert read_table(str(dict_dir), split="train").sha256 == table.sha256
    assert read_table(str(dict_dir), split="validation").sha256 != table.sha256
    with pytest.raises(
        InputError, match=r"a DatasetDict with splits train, validation; choose one with --split"
    ):
        read_table(str(dict_dir))
    with pytest.raises(InputError, match=r"no split 'test'; splits found: train, validation"):
        read_table(str(dict_dir), split="test")
    single = tmp_path / "single"
    _dataset(4).save_to_disk(str(single))
    assert len(read_table(str(single))) == 4
    with pytest.raises(InputError, match=r"holds one Dataset, not a DatasetDict; drop --split train"):
        read_table(str(single), split="train")


def test_cli_train_score_filter_on_a_dataset_dict(
    tmp_path: Path, dict_dir: Path, tiny_model_dir: Path
) -> None:
    run = tmp_path / "run"
    common = ["--model", tiny_model_dir, "--epochs", "1", "--batch-size", "4", "--max-length", "16"]
    ok(invoke("train", dict_dir, "--split", "train", "--id-col", "id", "--run", run, "-q", *common))
    info = RunDir(run).read_info()
    assert info.train_file.split == "train" and info.train_file.format == "dataset"
    assert info.labels == ["negative", "positive"]
    ok(invoke("score", "--run", run, "--val", dict_dir, "--val-split", "validation", "-q"))
    out = tmp_path / "kept"
    ok(invoke("filter", "--run", run, "--drop-count", "3", "--out", out, "-q"))
    kept = datasets.load_from_disk(str(out))
    assert kept.num_rows == 9
    assert kept.features["label"].names == ["negative", "positive"]  # the features are kept
    original = read_table(str(dict_dir), split="train")
    assert set(kept["id"]) < {row["id"] for row in original.rows}
    # refused: stdout for a dataset folder's rows, and a folder that is not a dataset
    result = invoke("filter", "--run", run, "--drop-count", "3")
    assert (
        result.exit_code == 1
        and "a dataset folder's kept rows go to a folder: give --out FOLDER" in result.output
    )
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    result = invoke("filter", "--run", run, "--drop-count", "3", "--out", other)
    assert result.exit_code == 1 and "exists and is not a dataset folder" in result.output
    assert (other / "notes.txt").read_text() == "mine"
