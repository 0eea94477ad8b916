"""``train`` on real files with a tiny random BERT: the run directory it writes, --overwrite and --resume,
a training file from stdin, and every kind of bad input (one clear error line, non-zero exit, no traceback,
no partial output)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from tests.cli.conftest import copy_run, invoke, ok, sha256, user_error, worst_rows
from tests.conftest import make_rows, write_rows
from tod_clean.config import TrainConfig
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import RunDir


def test_run_directory_layout(jsonl_run: SimpleNamespace, tiny_model_dir: Path) -> None:
    run = jsonl_run.run
    config = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert config["status"] == "complete"
    assert config["labels"] == ["negative", "positive"]
    assert config["train_file"] == {
        "path": str(jsonl_run.train.resolve()),
        "sha256": sha256(jsonl_run.train),
        "rows": 16,
        "format": "jsonl",
    }
    assert config["instance_key"] == "row"
    assert config["masks"]["scope"] == "head"
    assert config["masks"]["keep_prob"] == 0.5
    assert config["masks"]["mask_seed"] == 0
    assert [e["epoch"] for e in config["epochs"]] == [1]
    assert np.isfinite(config["epochs"][0]["train_loss"])
    assert config["train"]["epochs"] == 1 and config["train"]["batch_size"] == 4
    assert config["train"]["max_length"] == 16 and config["train"]["model"] == str(tiny_model_dir)
    weights = load_file(str(run / "model.safetensors"))
    assert weights["head_dense.weight"].shape == (32, 32) and weights["classifier.weight"].shape == (2, 32)
    assert any(name.startswith("encoder.") for name in weights)
    encoder = json.loads((run / "encoder" / "config.json").read_text())
    assert (
        encoder["model_type"] == "bert" and encoder["hidden_size"] == 32 and encoder["num_hidden_layers"] == 2
    )
    assert (run / "tokenizer").is_dir() and any((run / "tokenizer").iterdir())
    assert not (run / "checkpoint").exists()
    assert (run / "scores.parquet").is_file() and (run / "scores.json").is_file()


def test_train_refuses_to_overwrite_a_run(
    jsonl_run: SimpleNamespace, model_args: list[str], tmp_path: Path
) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    before = (run / "model.safetensors").read_bytes()
    line = user_error(invoke("train", jsonl_run.train, "--run", run, *model_args), str(run), "--overwrite")
    assert "--resume" not in line and "its training finished: nothing to resume" in line  # finished run
    assert (run / "model.safetensors").read_bytes() == before
    ok(invoke("train", jsonl_run.train, "--run", run, *model_args, "--overwrite", "--seed", "1"))
    assert (run / "model.safetensors").read_bytes() != before
    assert not (run / "scores.parquet").exists()  # scores of the old model are gone


def test_interrupted_run_resumes_to_the_same_model(
    tmp_path: Path, tiny_model_dir: Path, model_args: list[str]
) -> None:
    from tod_clean.training.loop import train

    train_file = write_rows(tmp_path / "train.jsonl", make_rows(12))
    config = TrainConfig(
        model=str(tiny_model_dir), epochs=2, batch_size=4, max_length=16, device="cpu", scope="layers:1"
    )
    table = read_table(str(train_file))

    def stop_after_first_epoch(model: Any, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(config, table, RunDir(run), train_path=str(train_file), on_epoch_end=stop_after_first_epoch)
    info = json.loads((run / "config.json").read_text())
    assert info["status"] == "training" and len(info["epochs"]) == 1
    assert (run / "checkpoint").is_dir()
    user_error(invoke("score", "--run", run, "--quiet"), "did not finish", "1 of 2 epochs", "--resume")
    user_error(  # an interrupted run with a checkpoint: both ways out are offered
        invoke("train", train_file, "--run", run, *model_args),
        "already holds a run; pass --overwrite to replace it, or --resume to continue it",
    )

    ok(invoke("train", "--resume", "--run", run, "--quiet"))
    info = json.loads((run / "config.json").read_text())
    assert info["status"] == "complete"
    assert [e["epoch"] for e in info["epochs"]] == [1, 2]
    assert not (run / "checkpoint").exists()
    user_error(invoke("train", "--resume", "--run", run, "--quiet"), "already finished")

    # the resumed model is the model an uninterrupted run trains
    reference = tmp_path / "reference"
    train(config, read_table(str(train_file)), RunDir(reference), train_path=str(train_file))
    resumed = load_file(str(run / "model.safetensors"))
    straight = load_file(str(reference / "model.safetensors"))
    assert resumed.keys() == straight.keys()
    for name in straight:
        np.testing.assert_allclose(
            resumed[name].numpy(), straight[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name
        )
    ok(invoke("score", "--run", run, "--quiet"))


def test_resume_refuses_a_changed_file(tmp_path: Path, tiny_model_dir: Path) -> None:
    from tod_clean.training.loop import train

    train_file = write_rows(tmp_path / "train.jsonl", make_rows(8))
    config = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=4, max_length=16, device="cpu")

    def stop(model: Any, epoch: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            config,
            read_table(str(train_file)),
            RunDir(tmp_path / "run"),
            train_path=str(train_file),
            on_epoch_end=stop,
        )
    with train_file.open("a") as handle:
        handle.write(json.dumps({"id": "new", "text": "Another row.", "label": "positive"}) + "\n")
    user_error(invoke("train", "--resume", "--run", tmp_path / "run", "--quiet"), "train.jsonl", "sha256")


def test_train_from_stdin_then_score_and_filter(tmp_path: Path, model_args: list[str]) -> None:
    data = "".join(json.dumps(r) + "\n" for r in make_rows(12)).encode()
    run = tmp_path / "run"
    ok(invoke("train", "-", "--run", run, *model_args, input=data))
    copy = run / "train.jsonl"
    assert copy.read_bytes() == data
    config = json.loads((run / "config.json").read_text())
    assert config["train_file"]["path"] == str(copy.resolve())
    assert config["train_file"]["sha256"] == hashlib.sha256(data).hexdigest()
    ok(invoke("score", "--run", run, "--quiet"))
    scores = pd.read_parquet(run / "scores.parquet")
    assert len(scores) == 12 and "influence" not in scores.columns
    result = ok(invoke("filter", "--run", run, "--drop-count", "2", "--quiet"))
    worst = set(scores.sort_values("rank")["row"].head(2))
    assert worst == set(worst_rows(scores, "full_loss", 2))
    lines = data.splitlines(keepends=True)
    assert result.stdout_bytes == b"".join(line for i, line in enumerate(lines) if i not in worst)


def test_csv_run_records_id_key_and_scope(csv_run: SimpleNamespace) -> None:
    config = json.loads((csv_run.run / "config.json").read_text())
    assert config["instance_key"] == "id:id"
    assert config["masks"]["scope"] == "ffn:1"
    assert config["train_file"]["format"] == "csv"
    assert csv_run.scores["id"].tolist() == [r["id"] for r in csv_run.rows]


# ---- bad input --------------------------------------------------------------------------------------


def test_train_missing_file(tmp_path: Path, model_args: list[str]) -> None:
    missing = tmp_path / "missing.jsonl"
    user_error(
        invoke("train", missing, "--run", tmp_path / "run", *model_args),
        str(missing),
        "no such file",
        absent=(tmp_path / "run",),
    )


def test_train_directory_instead_of_file(tmp_path: Path, model_args: list[str]) -> None:
    folder = tmp_path / "data.csv"
    folder.mkdir()
    user_error(
        invoke("train", folder, "--run", tmp_path / "run", *model_args),
        str(folder),
        "directory",
        absent=(tmp_path / "run",),
    )


def test_train_unreadable_bytes(tmp_path: Path, model_args: list[str]) -> None:
    path = tmp_path / "binary.csv"
    path.write_bytes(b"text,label\n\xff\xfe\x00garbage,x\n")
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args),
        str(path),
        "not UTF-8",
        absent=(tmp_path / "run",),
    )


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.csv", "empty.parquet"])
def test_train_empty_file(tmp_path: Path, model_args: list[str], name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"")
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args), name, absent=(tmp_path / "run",)
    )


def test_train_missing_column_lists_columns(data_file: Any, tmp_path: Path, model_args: list[str]) -> None:
    path = data_file("train.csv")
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args, "--text-col", "sentence"),
        "train.csv",
        "'sentence'",
        "columns found: id, text, label",
    )
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_missing_label_column(data_file: Any, tmp_path: Path, model_args: list[str]) -> None:
    path = data_file("train.jsonl")
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args, "--label-col", "y"),
        "'y'",
        "columns found: id, text, label",
    )


def test_train_empty_text(tmp_path: Path, model_args: list[str]) -> None:
    rows = make_rows(6)
    rows[3]["text"] = "   "
    path = write_rows(tmp_path / "train.csv", rows)
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args),
        "train.csv",
        "row 3 (line 5)",
        "'text'",
        "empty text",
        absent=(tmp_path / "run",),
    )


def test_train_non_string_text(tmp_path: Path, model_args: list[str]) -> None:
    rows: list[dict[str, Any]] = make_rows(6)
    rows[2]["text"] = 42
    path = write_rows(tmp_path / "train.jsonl", rows)
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args),
        "train.jsonl",
        "row 2 (line 3)",
        "'text'",
        "int 42",
    )


def test_train_missing_label(tmp_path: Path, model_args: list[str]) -> None:
    rows: list[dict[str, Any]] = make_rows(6)
    del rows[4]["label"]
    path = write_rows(tmp_path / "train.jsonl", rows)
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args),
        "train.jsonl",
        "row 4 (line 5)",
        "'label'",
        "None",
    )


def test_train_duplicate_ids(tmp_path: Path, model_args: list[str]) -> None:
    rows = make_rows(6)
    rows[5]["id"] = rows[1]["id"]
    path = write_rows(tmp_path / "train.csv", rows)
    user_error(
        invoke("train", path, "--run", tmp_path / "run", *model_args, "--id-col", "id"),
        "row 5",
        "duplicate id 'r001'",
        "row 1",
    )


@pytest.mark.parametrize(
    ("option", "value", "needle"),
    [
        ("--scope", "foo", "'foo'"),
        ("--scope", "layers:9", "layers:9"),
        ("--keep-prob", "1.5", "--keep-prob"),
        ("--keep-prob", "0", "--keep-prob"),
        ("--epochs", "0", "--epochs"),
        ("--pooling", "max", "--pooling"),
        ("--device", "nonsense" if torch.cuda.is_available() else "cuda:7", "--device"),
    ],
)
def test_train_bad_options(
    data_file: Any, tmp_path: Path, model_args: list[str], option: str, value: str, needle: str
) -> None:
    """Options are checked before anything is written: a retry must not find a stale run directory."""
    path = data_file("train.jsonl")
    user_error(invoke("train", path, "--run", tmp_path / "run", *model_args, option, value), needle)
    assert not (tmp_path / "run" / "config.json").exists()


def test_train_bad_model_folder(data_file: Any, tmp_path: Path) -> None:
    empty = tmp_path / "no-model"
    empty.mkdir()
    user_error(
        invoke(
            "train",
            data_file("train.jsonl"),
            "--run",
            tmp_path / "run",
            "--model",
            empty,
            "--epochs",
            "1",
            "--quiet",
        ),
        "--model",
        str(empty),
    )


def test_train_run_path_is_a_file(data_file: Any, tmp_path: Path, model_args: list[str]) -> None:
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    user_error(
        invoke("train", data_file("train.jsonl"), "--run", taken, *model_args), str(taken), "not a folder"
    )


def test_train_without_a_file(tmp_path: Path, model_args: list[str]) -> None:
    user_error(invoke("train", "--run", tmp_path / "run", *model_args), "training file")
