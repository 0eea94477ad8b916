"""The command line, end to end on real files with a tiny random BERT: train -> score -> filter, and every
kind of bad input (one clear error line, non-zero exit, no traceback, no partial output)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import Result
from safetensors.torch import load_file
from typer.testing import CliRunner

from tests.conftest import make_rows, write_rows
from tod_clean import __version__
from tod_clean.cli import app
from tod_clean.config import TrainConfig
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import RunDir
from tod_clean.selection import rows_to_drop

SCORE_COLUMNS = [
    "row",
    "label",
    "influence",
    "self_influence",
    "hidden_loss",
    "exposed_loss",
    "full_loss",
    "hidden_prob",
    "hidden_pred",
    "full_prob",
    "full_pred",
    "rank",
]


def invoke(*args: Any, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"exit {result.exit_code}: {result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result


def user_error(result: Result, *needles: str, absent: tuple[Path, ...] = ()) -> str:
    """A handled user mistake: exit != 0, one 'error:' line naming ``needles``, no traceback,
    and none of the ``absent`` output files written."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed instead of a clean error: {result.exception!r}"
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in {line!r}"
    assert result.stdout == ""
    for path in absent:
        assert not Path(path).exists(), f"{path} was written"
    return line


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def model_args(tiny_model_dir: Path) -> list[str]:
    return [
        "--model",
        str(tiny_model_dir),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--max-length",
        "16",
        "--device",
        "cpu",
        "--quiet",
    ]


def train_run(folder: Path, train: Path, model_args: list[str], *extra: str) -> Path:
    run = folder / "run"
    ok(invoke("train", train, "--run", run, *model_args, *extra))
    return run


@pytest.fixture(scope="module")
def jsonl_run(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """A JSONL training file (16 rows, instance key = row number), scope head, scored on 8 validation rows."""
    folder = tmp_path_factory.mktemp("jsonl")
    train = write_rows(folder / "train.jsonl", make_rows(16))
    val = write_rows(folder / "val.jsonl", make_rows(8, offset=20))
    run = train_run(folder, train, model_args)
    ok(invoke("score", "--run", run, "--val", val, "--quiet"))
    scores = pd.read_parquet(run / "scores.parquet")
    return SimpleNamespace(folder=folder, train=train, val=val, run=run, scores=scores)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """A CSV training file keyed by its id column, scope ffn:1 (the pair-batch scoring path)."""
    folder = tmp_path_factory.mktemp("csv")
    rows = make_rows(16)
    rows[3]["text"] = 'Quoted "words", a comma,\nand a new line.'
    train = write_rows(folder / "train.csv", rows)
    val = write_rows(folder / "val.csv", make_rows(8, offset=20))
    run = train_run(folder, train, model_args, "--id-col", "id", "--scope", "ffn:1")
    ok(invoke("score", "--run", run, "--val", val, "--quiet"))
    scores = pd.read_parquet(run / "scores.parquet")
    return SimpleNamespace(folder=folder, train=train, val=val, run=run, scores=scores, rows=rows)


def copy_run(run: Path, dest: Path) -> Path:
    return Path(shutil.copytree(run, dest / "run-copy"))


def jsonl_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


# ---- train ------------------------------------------------------------------------------------------


def test_version() -> None:
    assert ok(invoke("--version")).stdout.strip() == f"tod-clean {__version__}"


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


# ---- score ------------------------------------------------------------------------------------------


def read_scores_output(path: Path | None, result: Result) -> pd.DataFrame:
    if path is None:
        return pd.read_csv(io.BytesIO(result.stdout_bytes))
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    return pd.read_json(path, lines=True)


@pytest.mark.parametrize("out", ["scores.csv", "scores.parquet", "scores.jsonl", "-"])
def test_score_outputs(jsonl_run: SimpleNamespace, tmp_path: Path, out: str) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    path = None if out == "-" else tmp_path / out
    result = ok(invoke("score", "--run", run, "--val", jsonl_run.val, "--out", path or "-", "--quiet"))
    frame = read_scores_output(path, result)
    assert list(frame.columns) == SCORE_COLUMNS
    assert len(frame) == 16 and frame["row"].tolist() == list(range(16))
    assert frame["label"].tolist() == [r["label"] for r in make_rows(16)]
    # the same values as the scores saved in the run (and as the first scoring: scoring is deterministic)
    saved = jsonl_run.scores
    for column in ("influence", "self_influence", "hidden_loss", "exposed_loss", "full_loss", "full_prob"):
        np.testing.assert_allclose(
            frame[column].to_numpy(float), saved[column].to_numpy(float), rtol=1e-5, atol=1e-7, err_msg=column
        )
    np.testing.assert_allclose(
        frame["self_influence"], frame["hidden_loss"] - frame["exposed_loss"], atol=1e-6
    )
    np.testing.assert_allclose(frame["full_loss"], -np.log(frame["full_prob"]), rtol=1e-4)
    # rank: the default ranking of filter (full_loss within each class), with or without --val
    assert frame.sort_values("rank")["row"].tolist() == default_order(frame)
    meta = json.loads((run / "scores.json").read_text())
    assert meta["rank_by"] == "full_loss" and meta["val_rows"] == 8 and meta["scope"] == "head"
    if out == "-":
        assert result.stderr == ""  # --quiet: stdout is pure CSV, nothing on stderr


def test_score_writes_the_matrix(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    matrix_path = tmp_path / "pairs.npy"
    ok(invoke("score", "--run", run, "--val", jsonl_run.val, "--matrix", matrix_path, "--quiet"))
    matrix = np.load(matrix_path)
    assert matrix.shape == (16, 8)
    np.testing.assert_allclose(matrix.mean(1), jsonl_run.scores["influence"], rtol=1e-4, atol=1e-6)


def test_score_without_validation_ranks_by_full_loss(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    out = tmp_path / "self.csv"
    ok(invoke("score", "--run", run, "--out", out, "--overwrite", "--quiet"))  # replaces scores with --val
    frame = pd.read_csv(out)
    assert "influence" not in frame.columns
    assert frame.sort_values("rank")["row"].tolist() == default_order(frame)


def test_a_look_without_validation_keeps_the_saved_influence(
    jsonl_run: SimpleNamespace, tmp_path: Path
) -> None:
    """``score -o - | head`` on a run scored with --val must not replace its influence scores (filter and
    report would then rank by something else): refused, saved scores untouched; --overwrite replaces."""
    run = copy_run(jsonl_run.run, tmp_path)
    before = {name: sha256(run / name) for name in ("scores.parquet", "scores.json")}
    line = user_error(
        invoke("score", "--run", run, "-o", "-", "--quiet"),
        "scores.parquet: holds the influence of every training row on",
        "scoring without a validation set would replace it: pass --overwrite",
    )
    assert str(jsonl_run.val) in line
    other_val = write_rows(tmp_path / "other.jsonl", make_rows(5, offset=40))
    user_error(invoke("score", "--run", run, "--val", other_val, "--quiet"), f"scoring on {other_val}")
    assert {name: sha256(run / name) for name in before} == before
    ok(invoke("score", "--run", run, "--val", jsonl_run.val, "--quiet"))  # the same validation set: fine
    ok(invoke("score", "--run", run, "--val", other_val, "--overwrite", "--quiet"))
    assert json.loads((run / "scores.json").read_text())["val_rows"] == 5


def test_score_progress_goes_to_stderr(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    result = ok(invoke("score", "--run", run, "--val", jsonl_run.val, "--out", "-"))
    assert "scored 16 training rows on 8 validation rows" in result.stderr
    assert len(pd.read_csv(io.BytesIO(result.stdout_bytes))) == 16


# ---- filter -----------------------------------------------------------------------------------------


def classes_of(scores: pd.DataFrame) -> np.ndarray:
    return pd.factorize(scores["label"].astype(str))[0]


def worst_rows(scores: pd.DataFrame, by: str, count: int) -> list[int]:
    """The rows filter drops by ``by``: label-error signals within each class, influence across them
    (the class floor does not bite at these counts)."""
    values = scores[by].to_numpy(float)
    return rows_to_drop(values, by=by, count=count, classes=classes_of(scores)).tolist()


def default_order(frame: pd.DataFrame) -> list[int]:
    """Rows in filter's default ranking: full_loss within each class (a plain loop: each row's loss
    minus its class's median, over the larger of its class's MAD and all rows' MAD)."""
    loss = frame["full_loss"].to_numpy(float)
    labels = frame["label"].astype(str).to_numpy()
    overall = np.median(np.abs(loss - np.median(loss)))
    keys = []
    for row in range(len(loss)):
        members = loss[labels == labels[row]]
        scale = max(np.median(np.abs(members - np.median(members))), overall) or 1.0
        keys.append(((loss[row] - np.median(members)) / scale, loss[row], -row))
    return sorted(range(len(loss)), key=lambda row: keys[row], reverse=True)


def test_filter_jsonl_drop_fraction_with_removed(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out, removed = tmp_path / "kept.jsonl", tmp_path / "removed.csv"
    result = ok(
        invoke("filter", "--run", jsonl_run.run, "--drop", "0.25", "--out", out, "--removed", removed)
    )
    dropped = worst_rows(jsonl_run.scores, "full_loss", 4)
    lines = jsonl_lines(jsonl_run.train)
    assert out.read_bytes() == b"".join(line for i, line in enumerate(lines) if i not in dropped)
    report = pd.read_csv(removed)
    worst = default_order(jsonl_run.scores)[:4]  # removed.csv: worst first, ranked by the signal used
    assert report["id"].tolist() == [f"r{i:03d}" for i in worst] and report["rank"].tolist() == [1, 2, 3, 4]
    assert {"text", "label", "influence", "full_loss"} <= set(report.columns)
    assert "score_row" not in report.columns and report["row"].tolist() == worst
    np.testing.assert_allclose(report["full_loss"], jsonl_run.scores["full_loss"].iloc[worst], rtol=1e-6)
    assert "kept 12 of 16 rows; dropped 4" in result.stderr and "highest full_loss" in result.stderr
    assert "ranking by full_loss within each class (the default" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("by", ["full_loss", "self_influence", "hidden_loss", "influence"])
def test_filter_drop_count_to_stdout(jsonl_run: SimpleNamespace, by: str) -> None:
    result = ok(invoke("filter", "--run", jsonl_run.run, "--drop-count", "3", "--by", by, "--quiet"))
    dropped = worst_rows(jsonl_run.scores, by, 3)
    lines = jsonl_lines(jsonl_run.train)
    assert result.stdout_bytes == b"".join(line for i, line in enumerate(lines) if i not in dropped)


def test_filter_threshold(jsonl_run: SimpleNamespace) -> None:
    threshold = float(np.median(jsonl_run.scores["influence"]))
    result = ok(
        invoke("filter", "--run", jsonl_run.run, "--threshold", threshold, "--by", "influence", "--quiet")
    )
    keep = jsonl_run.scores["influence"].to_numpy() >= threshold
    lines = jsonl_lines(jsonl_run.train)
    assert 0 < keep.sum() < 16
    assert result.stdout_bytes == b"".join(line for line, k in zip(lines, keep, strict=True) if k)


def test_filter_training_rows_from_stdin(jsonl_run: SimpleNamespace) -> None:
    data = jsonl_run.train.read_bytes()
    result = ok(
        invoke("filter", "--run", jsonl_run.run, "--train", "-", "--drop-count", "2", "--quiet", input=data)
    )
    dropped = worst_rows(jsonl_run.scores, "full_loss", 2)
    lines = data.splitlines(keepends=True)
    assert result.stdout_bytes == b"".join(line for i, line in enumerate(lines) if i not in dropped)


def test_filter_with_a_scores_file(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    scores = tmp_path / "scores.csv"
    ok(
        invoke(
            "score", "--run", copy_run(jsonl_run.run, tmp_path), "--val", jsonl_run.val, "--out", scores, "-q"
        )
    )
    result = ok(invoke("filter", "--run", jsonl_run.run, "--scores", scores, "--drop-count", "5", "--quiet"))
    dropped = worst_rows(jsonl_run.scores, "full_loss", 5)
    lines = jsonl_lines(jsonl_run.train)
    assert result.stdout_bytes == b"".join(line for i, line in enumerate(lines) if i not in dropped)


def test_filter_csv_keeps_rows_byte_for_byte(csv_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "kept.csv"
    ok(invoke("filter", "--run", csv_run.run, "--drop-count", "4", "--out", out, "--quiet"))
    dropped = worst_rows(csv_run.scores, "full_loss", 4)
    kept_ids = [r["id"] for i, r in enumerate(csv_run.rows) if i not in dropped]
    expected = write_rows(tmp_path / "expected.csv", [r for r in csv_run.rows if r["id"] in kept_ids])
    assert out.read_bytes() == expected.read_bytes()
    assert out.read_bytes().startswith(csv_run.train.read_bytes().splitlines(keepends=True)[0])


def test_csv_run_records_id_key_and_scope(csv_run: SimpleNamespace) -> None:
    config = json.loads((csv_run.run / "config.json").read_text())
    assert config["instance_key"] == "id:id"
    assert config["masks"]["scope"] == "ffn:1"
    assert config["train_file"]["format"] == "csv"
    assert csv_run.scores["id"].tolist() == [r["id"] for r in csv_run.rows]


def test_id_column_matches_rows_of_a_reordered_file(csv_run: SimpleNamespace, tmp_path: Path) -> None:
    reordered_rows = csv_run.rows[::-1][:12] + csv_run.rows[::-1][12:][::-1]
    reordered = write_rows(tmp_path / "reordered.csv", reordered_rows)
    out = tmp_path / "kept.csv"
    ok(
        invoke(
            "filter",
            "--run",
            csv_run.run,
            "--train",
            reordered,
            "--drop-count",
            "3",
            "--by",
            "full_loss",
            "--out",
            out,
            "--quiet",
        )
    )
    worst_ids = {csv_run.rows[i]["id"] for i in worst_rows(csv_run.scores, "full_loss", 3)}
    expected = write_rows(tmp_path / "expected.csv", [r for r in reordered_rows if r["id"] not in worst_ids])
    assert out.read_bytes() == expected.read_bytes()


def test_reordered_file_without_ids_is_refused(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    reordered = write_rows(tmp_path / "reordered.jsonl", make_rows(16)[::-1])
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", jsonl_run.run, "--train", reordered, "--out", out, "-q"),
        "reordered.jsonl",
        "differs from the file the run was trained on",
        "--id-col",
        absent=(out,),
    )


def test_numeric_looking_ids_match_through_a_scores_csv(tmp_path: Path, model_args: list[str]) -> None:
    """Zero-padded ids ("0007") in a scores CSV written by `score --out` still match the
    training file's ids."""
    rows = make_rows(10)
    for i, row in enumerate(rows):
        row["id"] = f"{i:04d}"
    train = write_rows(tmp_path / "train.csv", rows)
    run = train_run(tmp_path, train, model_args, "--id-col", "id")
    scores = tmp_path / "scores.csv"
    ok(invoke("score", "--run", run, "--out", scores, "--quiet"))
    reordered = write_rows(tmp_path / "reordered.csv", rows[::-1])
    out = tmp_path / "kept.csv"
    ok(
        invoke(
            "filter",
            "--run",
            run,
            "--train",
            reordered,
            "--scores",
            scores,
            "--drop-count",
            "2",
            "--out",
            out,
            "--quiet",
        )
    )
    assert len(read_table(str(out))) == 8


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


def test_score_unknown_validation_label(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    rows = make_rows(6, offset=30)
    rows[4]["label"] = "neutral"
    val = write_rows(tmp_path / "val.csv", rows)
    out = tmp_path / "scores.csv"
    user_error(
        invoke("score", "--run", copy_run(jsonl_run.run, tmp_path), "--val", val, "--out", out, "-q"),
        "val.csv",
        "row 4 (line 6)",
        "'label'",
        "'neutral'",
        "negative, positive",
        absent=(out,),
    )


def test_score_validation_missing_column(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    val = write_rows(
        tmp_path / "val.jsonl", [{"sentence": r["text"], "label": r["label"]} for r in make_rows(4)]
    )
    out = tmp_path / "scores.parquet"
    user_error(
        invoke("score", "--run", copy_run(jsonl_run.run, tmp_path), "--val", val, "--out", out, "-q"),
        "val.jsonl",
        "'text'",
        "columns found: sentence, label",
        absent=(out,),
    )


def test_score_missing_validation_file(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "scores.csv"
    user_error(
        invoke(
            "score",
            "--run",
            copy_run(jsonl_run.run, tmp_path),
            "--val",
            tmp_path / "nope.csv",
            "--out",
            out,
            "-q",
        ),
        "nope.csv",
        "no such file",
        absent=(out,),
    )


def test_score_unsupported_output_type(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "scores.txt"
    user_error(
        invoke("score", "--run", copy_run(jsonl_run.run, tmp_path), "--out", out, "-q"),
        "scores.txt",
        "unsupported",
        absent=(out,),
    )


def test_score_changed_training_file(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = train_run(tmp_path, train, model_args)
    rows = make_rows(8)
    rows[2]["label"] = "negative"  # someone fixes a label after training
    write_rows(train, rows)
    out = tmp_path / "scores.csv"
    user_error(invoke("score", "--run", run, "--out", out, "-q"), "train.jsonl", "sha256", absent=(out,))
    assert not (run / "scores.parquet").exists()


def test_score_matrix_into_missing_folder(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    matrix = tmp_path / "no-such-folder" / "pairs.npy"
    user_error(
        invoke(
            "score",
            "--run",
            copy_run(jsonl_run.run, tmp_path),
            "--val",
            jsonl_run.val,
            "--matrix",
            matrix,
            "-q",
        ),
        "no-such-folder",
        absent=(matrix,),
    )


def test_score_matrix_needs_validation(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    matrix = tmp_path / "pairs.npy"
    user_error(
        invoke("score", "--run", copy_run(jsonl_run.run, tmp_path), "--matrix", matrix, "-q"),
        "--matrix",
        "--val",
        absent=(matrix,),
    )


@pytest.mark.parametrize("command", ["score", "filter"])
def test_not_a_run_directory(tmp_path: Path, command: str) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "out.csv"
    user_error(
        invoke(command, "--run", empty, "--out", out, "-q"),
        str(empty),
        "not a tod-clean run directory",
        absent=(out,),
    )
    missing = tmp_path / "missing"
    user_error(
        invoke(command, "--run", missing, "--out", out, "-q"),
        str(missing),
        "no such run directory",
        absent=(out,),
    )


def test_corrupt_run_config(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    (run / "config.json").write_text("{ not json")
    user_error(invoke("score", "--run", run, "-q"), "config.json", "not a valid tod-clean run config")


def test_filter_nan_scores(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    scores = jsonl_run.scores.copy()
    scores.loc[5, "full_loss"] = np.nan  # the default signal
    path = tmp_path / "scores.csv"
    scores.to_csv(path, index=False)
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", jsonl_run.run, "--scores", path, "--out", out, "-q"),
        "scores.csv",
        "row 5",
        "'full_loss'",
        "nan",
        absent=(out,),
    )


@pytest.mark.parametrize("fraction", ["1.5", "0", "1", "-0.2"])
def test_filter_drop_outside_open_interval(jsonl_run: SimpleNamespace, tmp_path: Path, fraction: str) -> None:
    out, removed = tmp_path / "kept.jsonl", tmp_path / "removed.csv"
    user_error(
        invoke(
            "filter", "--run", jsonl_run.run, "--drop", fraction, "--out", out, "--removed", removed, "-q"
        ),
        "--drop",
        "between 0 and 1",
        absent=(out, removed),
    )


def test_filter_two_criteria(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", jsonl_run.run, "--drop", "0.1", "--drop-count", "2", "--out", out, "-q"),
        "exactly one of",
        absent=(out,),
    )


def test_filter_unknown_score_column(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", jsonl_run.run, "--by", "loudness", "--out", out, "-q"),
        "loudness",
        "choose one of: influence",
        absent=(out,),
    )


def test_filter_missing_scores_file(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", jsonl_run.run, "--scores", tmp_path / "none.csv", "--out", out, "-q"),
        "none.csv",
        "no such file",
        absent=(out,),
    )


def test_filter_run_without_scores(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(6))
    run = train_run(tmp_path, train, model_args)
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", run, "--out", out, "-q"), "no scores yet", "tod-clean score", absent=(out,)
    )


def test_filter_failure_leaves_no_removed_file(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    """--out in the wrong format fails the command: the --removed report must not be left behind either."""
    out, removed = tmp_path / "kept.csv", tmp_path / "removed.csv"
    user_error(
        invoke(
            "filter", "--run", jsonl_run.run, "--drop-count", "2", "--out", out, "--removed", removed, "-q"
        ),
        "kept.csv",
        "jsonl",
        absent=(out, removed),
    )


def test_error_messages_keep_square_brackets(data_file: Any, tmp_path: Path, model_args: list[str]) -> None:
    """User text in a message is shown as is, not read as rich markup ('[en]' must not vanish)."""
    user_error(
        invoke(
            "train", data_file("train.csv"), "--run", tmp_path / "run", *model_args, "--text-col", "text[en]"
        ),
        "'text[en]'",
    )


def test_error_message_with_markup_closing_tag_is_clean(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    rows = make_rows(4, offset=30)
    rows[1]["label"] = "[/x]"
    val = write_rows(tmp_path / "val.jsonl", rows)
    user_error(invoke("score", "--run", copy_run(jsonl_run.run, tmp_path), "--val", val, "-q"), "'[/x]'")


def test_scope_none_run_has_no_influence(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    val = write_rows(tmp_path / "val.jsonl", make_rows(4, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    out = tmp_path / "scores.csv"
    user_error(invoke("score", "--run", run, "--val", val, "--out", out, "-q"), "scope 'none'", absent=(out,))
    ok(invoke("score", "--run", run, "--out", out, "-q"))
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["row", "label", "full_loss", "full_prob", "full_pred", "rank"]
    user_error(
        invoke("filter", "--run", run, "--by", "self_influence", "-q"), "self_influence", "columns found"
    )


def test_paths_that_look_like_markup_print_as_written(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    """Summary lines show paths as written: a name with [bold] or [red] is no Rich markup (the brackets
    were lost, and a closing tag crashed the summary), and :x: is no emoji code."""
    out = tmp_path / "kept [bold] [red]:x:.jsonl"
    result = ok(invoke("filter", "--run", jsonl_run.run, "--drop-count", "1", "-o", out))
    assert f"-> {out}" in result.stderr and out.is_file()
    metrics = tmp_path / "m [bold].json"
    result = ok(invoke("evaluate", jsonl_run.val, "--run", jsonl_run.run, "--out", metrics))
    assert metrics.is_file() and "Traceback" not in result.output
