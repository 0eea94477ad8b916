"""Folders written by datasets' save_to_disk as data (train --split, score --val-split, filter to a folder,
evaluate, explain, cleanse) and as the output of score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.conftest import make_rows
from tod_clean.cli import app
from tod_clean.errors import InputError
from tod_clean.io.formats.dataset_dir import is_dataset_dir
from tod_clean.io.frames import FRAME_MARKER, frame_output_format
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import RunDir
from tod_clean.run.scores import SCORES_ORIGIN
from tod_clean.selection import read_scores

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


COMMON = ["--epochs", "1", "--batch-size", "4", "--max-length", "16", "--device", "cpu"]


@pytest.fixture
def dict_run(tmp_path: Path, dict_dir: Path, tiny_model_dir: Path) -> Path:
    run = tmp_path / "run"
    ok(
        invoke(
            "train",
            dict_dir,
            "--split",
            "train",
            "--id-col",
            "id",
            "--run",
            run,
            "--model",
            tiny_model_dir,
            "-q",
            *COMMON,
        )
    )
    return run


def test_evaluate_and_explain_read_dataset_folders(tmp_path: Path, dict_dir: Path, dict_run: Path) -> None:
    metrics = tmp_path / "metrics.json"
    ok(invoke("evaluate", dict_dir, "--split", "validation", "--run", dict_run, "--out", metrics, "-q"))
    summary = json.loads(metrics.read_text())
    assert summary["rows"] == 6 and sum(map(sum, summary["confusion"])) == 6
    result = invoke("evaluate", dict_dir, "--run", dict_run, "-q")
    assert result.exit_code == 1 and "choose one with --split" in result.output
    # explain reads the run's training split again (a DatasetDict with two splits) and the --val split
    explained = tmp_path / "explained.jsonl"
    ok(
        invoke(
            "explain",
            "--val",
            dict_dir,
            "--val-split",
            "validation",
            "--run",
            dict_run,
            "-k",
            "2",
            "-o",
            explained,
            "-q",
        )
    )
    rows = read_table(str(explained)).rows
    assert {row["val_id"] for row in rows} == {r["id"] for r in make_rows(6, offset=40)}
    assert {row["train_id"] for row in rows} <= {r["id"] for r in make_rows(12)}


@pytest.mark.slow
def test_cleanse_on_a_dataset_folder(tmp_path: Path, dict_dir: Path, tiny_model_dir: Path) -> None:
    out = tmp_path / "out"
    args = ["cleanse", dict_dir, "--split", "train", "--test", dict_dir, "--test-split", "validation"]
    args += ["--val", dict_dir, "--val-split", "validation", "--out-dir", out, "--model", tiny_model_dir]
    ok(invoke(*args, *COMMON, "--drop-count", "3", "--id-col", "id", "-q"))
    summary = json.loads((out / "metrics.json").read_text())
    assert {arm["name"]: arm["train_rows"] for arm in summary["arms"]} == {"before": 12, "filtered": 9}
    assert summary["by"] == "influence"  # the default when a validation set is scored
    kept = datasets.load_from_disk(str(out / "train.filtered"))
    removed = read_table(str(out / "removed.csv"))
    assert kept.num_rows == 9 and kept.features["label"].names == ["negative", "positive"]
    assert set(kept["id"]) | {row["id"] for row in removed.rows} == {r["id"] for r in make_rows(12)}
    # again, with --overwrite: the kept rows' folder is replaced; a foreign folder in its place is refused
    ok(invoke(*args, *COMMON, "--drop-count", "2", "--id-col", "id", "--overwrite", "-q"))
    assert datasets.load_from_disk(str(out / "train.filtered")).num_rows == 10
    shutil.rmtree(out / "train.filtered")
    (out / "train.filtered").mkdir()
    (out / "train.filtered" / "mine.txt").write_text("mine")
    result = invoke(*args, *COMMON, "--drop-count", "2", "--overwrite", "-q")
    assert result.exit_code == 1 and "train.filtered: exists and is not a dataset folder" in result.output
    assert (out / "train.filtered" / "mine.txt").read_text() == "mine"


def test_score_out_as_a_dataset_folder(
    tmp_path: Path, dict_dir: Path, dict_run: Path, tiny_model_dir: Path
) -> None:
    scores = tmp_path / "scores"  # no extension: a save_to_disk folder
    ok(
        invoke(
            "score", "--run", dict_run, "--val", dict_dir, "--val-split", "validation", "--out", scores, "-q"
        )
    )
    assert is_dataset_dir(scores) and (scores / FRAME_MARKER).is_file()
    frame = read_scores(str(scores))
    saved = pd.read_parquet(dict_run / "scores.parquet")
    pd.testing.assert_frame_equal(frame, saved, check_dtype=False)
    assert frame.attrs[SCORES_ORIGIN]["train_sha256"] == RunDir(dict_run).read_info().train_file.sha256
    # filter takes the folder back, and refuses it for another run of other rows
    ok(
        invoke(
            "filter",
            "--run",
            dict_run,
            "--scores",
            scores,
            "--drop-count",
            "2",
            "--out",
            tmp_path / "kept",
            "-q",
        )
    )
    assert datasets.load_from_disk(str(tmp_path / "kept")).num_rows == 10
    other = tmp_path / "other-run"
    ok(
        invoke(
            "train",
            dict_dir,
            "--split",
            "validation",
            "--run",
            other,
            "--model",
            tiny_model_dir,
            "-q",
            *COMMON,
        )
    )
    result = invoke("filter", "--run", other, "--scores", scores, "--out", tmp_path / "kept2")
    assert result.exit_code == 1 and "scores of another training file" in result.output
    # written again: tod-clean's own folder is replaced; a trailing / names a folder too
    ok(invoke("score", "--run", dict_run, "--out", f"{scores}/", "--overwrite", "-q"))
    assert "influence" not in read_scores(str(scores)).columns
    # refused before the work: a folder tod-clean did not write, and one whose parent is missing
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    before = (dict_run / "scores.parquet").read_bytes()
    result = invoke("score", "--run", dict_run, "--out", mine)
    assert result.exit_code == 1 and "mine: exists and was not written by tod-clean" in result.output
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (dict_run / "scores.parquet").read_bytes() == before
    result = invoke("score", "--run", dict_run, "--out", tmp_path / "missing" / "scores")
    assert result.exit_code == 1 and "does not exist" in result.output
    # an empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    ok(invoke("score", "--run", dict_run, "--out", empty, "-q"))
    assert len(read_scores(str(empty))) == 12


def test_frame_folder_names() -> None:
    assert frame_output_format("scores") == "dataset" and frame_output_format("out/scores/") == "dataset"
    assert frame_output_format("scores.parquet") == "parquet" and frame_output_format("-") == "csv"
    assert frame_output_format("/dev/stdout") == "csv"  # a device is a file, written through
    with pytest.raises(InputError, match="unsupported file type '.v2'"):
        frame_output_format("scores.v2")
