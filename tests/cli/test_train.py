"""``train`` on real files with a tiny random BERT: the run directory it writes, --overwrite and --resume,
a training file from stdin, and every kind of bad input (one clear error line, non-zero exit, no traceback,
no partial output): files, rows, options, --max-length, --model, checkpoints, labels and ids."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import transformers
from safetensors.torch import load_file

from tests.cli.conftest import copy_run, invoke, ok, sha256, truncate, user_error, worst_rows
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


# ---- non-finite numbers -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("option", ["--lr", "--head-lr", "--weight-decay", "--warmup-ratio", "--keep-prob"])
def test_train_refuses_non_finite_numbers(
    data_file: object,
    tmp_path: Path,
    model_args: list[str],
    option: str,
    value: str,
) -> None:
    path = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = tmp_path / "run"
    line = user_error(invoke("train", path, "--run", run, *model_args, option, value), option, value)
    assert "finite" in line
    assert not (run / "config.json").exists()


# ---- --max-length -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("1", "--max-length 1: too short; 2 of the tokens go to special tokens, use at least 8"),
        ("2", "--max-length 2: too short"),
        ("7", "--max-length 7: too short"),
        ("129", "--max-length 129: the model"),
        ("100000", "takes at most 128 tokens per row"),
    ],
)
def test_max_length_outside_the_model_range_is_refused(
    tmp_path: Path,
    model_args: list[str],
    value: str,
    needle: str,
) -> None:
    path = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = tmp_path / "run"
    user_error(invoke("train", path, "--run", run, *model_args, "--max-length", value), needle)
    assert not run.exists()


def test_max_length_at_the_model_limit_trains(tmp_path: Path, model_args: list[str]) -> None:
    long_rows = [dict(row, text=" ".join([row["text"]] * 40)) for row in make_rows(4)]
    path = write_rows(tmp_path / "train.jsonl", long_rows)
    ok(invoke("train", path, "--run", tmp_path / "run", *model_args, "--max-length", "128"))


# ---- --resume with other options, a damaged checkpoint ----------------------------------------------


@pytest.fixture
def interrupted_run(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A run stopped after epoch 1 of 2."""
    from tod_clean.config import TrainConfig
    from tod_clean.io.inputs import read_table
    from tod_clean.run.rundir import RunDir
    from tod_clean.training.loop import train

    train_file = write_rows(tmp_path / "train.jsonl", make_rows(8))
    config = TrainConfig(model=str(tiny_model_dir), epochs=2, batch_size=4, max_length=16, device="cpu")

    def stop(model: object, epoch: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(
            config,
            read_table(str(train_file)),
            RunDir(tmp_path / "run"),
            train_path=str(train_file),
            on_epoch_end=stop,
        )
    return tmp_path / "run"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--epochs", "5"], ["--epochs 5 (the run's: 2)"]),
        (
            ["--lr", "0.1", "--scope", "none"],
            ["--lr 0.1 (the run's: 5e-05)", "--scope none (the run's: head)"],
        ),
        (["--model", "minilm"], ["--model minilm (the run's: "]),
        (["--id-col", "id", "--max-length", "32"], ["--id-col id (the run's: None)", "--max-length 32"]),
    ],
)
def test_resume_refuses_options_that_differ(
    interrupted_run: Path, args: list[str], needles: list[str]
) -> None:
    before = (interrupted_run / "config.json").read_bytes()
    user_error(invoke("train", "--resume", "--run", interrupted_run, *args, "-q"), "differ", *needles)
    assert (interrupted_run / "config.json").read_bytes() == before


def test_resume_accepts_options_equal_to_the_run(interrupted_run: Path) -> None:
    ok(invoke("train", "--resume", "--run", interrupted_run, "--epochs", "2", "--max-length", "16", "-q"))
    assert json.loads((interrupted_run / "config.json").read_text())["status"] == "complete"


def test_resume_and_overwrite_together_are_refused(interrupted_run: Path) -> None:
    user_error(
        invoke("train", "--resume", "--overwrite", "--run", interrupted_run, "-q"), "--resume", "--overwrite"
    )


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda folder: (folder / "optimizer.safetensors").unlink(), "optimizer.safetensors: missing"),
        (lambda folder: truncate(folder / "model.safetensors"), "model.safetensors: damaged"),
        (lambda folder: (folder / "state.json").write_text("{"), "state.json: cannot read the checkpoint"),
        (lambda folder: (folder / "state.json").write_text("{}"), "checkpoint does not fit this run"),
        (lambda folder: shutil.rmtree(folder), "epoch-1: missing"),
    ],
    ids=["no-optimizer", "truncated-weights", "bad-state", "empty-state", "no-folder"],
)
def test_resume_with_a_damaged_checkpoint(interrupted_run: Path, damage: object, needle: str) -> None:
    damage(interrupted_run / "checkpoint" / "epoch-1")  # type: ignore[operator]
    user_error(invoke("train", "--resume", "--run", interrupted_run, "-q"), needle)


# ---- --model ----------------------------------------------------------------------------------------


def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(tiny_model_dir, copy)
    return copy


def small_vocabulary(folder: Path) -> str:
    """The model folder's encoder replaced by one that embeds 100 tokens (its tokenizer has 30522)."""
    config = transformers.BertConfig.from_pretrained(str(folder))
    config.vocab_size = 100
    transformers.BertModel(config).save_pretrained(str(folder))
    return str(folder)


def pickle_only(folder: Path) -> None:
    import torch
    from safetensors.torch import load_file

    torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda model, tmp: str(tmp / "no" / "such" / "model"), "no such folder"),
        (lambda model, tmp: "./missing-model", "no such folder"),
        (lambda model, tmp: str(write_rows(tmp / "t.jsonl", make_rows(2))), "not a folder"),
        (
            lambda model, tmp: ((model / "config.json").unlink(), str(model))[1],
            "not a model folder (no config.json)",
        ),
        (lambda model, tmp: ((model / "model.safetensors").unlink(), str(model))[1], "no model weights"),
        (lambda model, tmp: (pickle_only(model), str(model))[1], "only pickle weights (pytorch_model.bin)"),
        (
            lambda model, tmp: (
                (model / "config.json").write_text(json.dumps({"model_type": "nonsense"})),
                str(model),
            )[1],
            "cannot load an encoder and tokenizer",
        ),
        (
            lambda model, tmp: ((model / "config.json").write_text("{broken"), str(model))[1],
            "cannot load an encoder and tokenizer",
        ),
        (  # transformers quietly builds a tokenizer of 5 special tokens: every word [UNK]
            lambda model, tmp: (
                [(model / name).unlink() for name in ("tokenizer.json", "tokenizer_config.json")],
                str(model),
            )[1],
            "no tokenizer files in the folder",
        ),
        (
            lambda model, tmp: ((model / "tokenizer.json").unlink(), str(model))[1],
            "(none of tokenizer.json, vocab.txt, vocab.json with merges.txt, or a SentencePiece *.model); "
            "the tokenizer would know only its 5 special tokens",
        ),
        (
            lambda model, tmp: small_vocabulary(model),
            "its tokenizer has 30522 tokens, but the encoder embeds only 100 (vocab_size in its config.json)",
        ),
    ],
    ids=[
        "absent-path",
        "absent-relative",
        "a-file",
        "no-config",
        "no-weights",
        "pickle",
        "unknown-type",
        "bad-json",
        "no-tokenizer",
        "tokenizer-config-only",
        "tokenizer-of-another-model",
    ],
)
def test_bad_model_option(tmp_path: Path, tiny_model_dir: Path, make: object, needle: str) -> None:
    model = make(model_copy(tiny_model_dir, tmp_path), tmp_path)  # type: ignore[operator]
    data = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = tmp_path / "run"
    user_error(
        invoke("train", data, "--run", run, "--model", model, "--device", "cpu", "-q"),
        f"--model {model}",
        needle,
    )
    assert not run.exists()


# ---- unusual labels and ids -------------------------------------------------------------------------


def test_two_spellings_of_one_label_are_refused_before_training(
    tmp_path: Path, model_args: list[str]
) -> None:
    rows = make_rows(8)
    rows[3]["label"] = "negative "  # one class with "negative" once stripped
    data = write_rows(tmp_path / "train.csv", rows)
    run = tmp_path / "run"
    user_error(
        invoke("train", data, "--run", run, *model_args),
        f"{data}: row 3 (line 5), column 'label': label 'negative ' and label 'negative' ({data}: row 1 "
        "(line 3)) differ only in surrounding white space",
        absent=(run,),
    )


@pytest.mark.parametrize("value", [[1, 2], {"a": 1}, True])
def test_id_column_with_non_scalar_values_is_refused(
    tmp_path: Path, model_args: list[str], value: object
) -> None:
    rows = make_rows(6)
    rows[4]["id"] = value
    train = write_rows(tmp_path / "train.jsonl", rows)
    user_error(
        invoke("train", train, "--run", tmp_path / "run", *model_args, "--id-col", "id"),
        "train.jsonl: row 4 (line 5), column 'id': expected an id (text or a number)",
        repr(value),
    )


def test_a_model_folder_under_the_home_folder_loads_by_its_tilde_path(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``~/m`` names the folder the CLI and the API check, and the one they load (not a folder named ``~``)."""
    import tod_clean

    home = tmp_path / "home"
    shutil.copytree(tiny_model_dir, home / "m")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    small = ["--epochs", "1", "--batch-size", "4", "--max-length", "16", "--device", "cpu", "-q"]
    ok(invoke("train", train, "--model", "~/m", "--run", tmp_path / "cli-run", *small))
    tod_clean.train(train, run=tmp_path / "api-run", model="~/m", epochs=1, batch_size=4, max_length=16)
    assert (tmp_path / "api-run" / "model.safetensors").is_file() and not (tmp_path / "~").exists()
