"""Adversarial input on the command line: scores of another run or file, non-finite options, --max-length
out of the model's range, --resume with changed options, damaged runs and models, unusual labels and ids.
Each must give one clear error line (exit 1) or the right answer, never a traceback or a silent wrong one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest
import transformers

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, write_rows


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """Runs ``a`` and ``b`` on the same 16-row file (seeds 0 and 1), ``c`` on another 16-row file whose
    labels start the other way round, ``ids`` keyed by id and ``other_ids`` on the same labels with other
    ids; each scored without a validation set."""
    folder = tmp_path_factory.mktemp("runs")
    train = write_rows(folder / "train.jsonl", make_rows(16))
    other = write_rows(folder / "other.jsonl", make_rows(16, offset=1))
    same_labels = write_rows(folder / "same_labels.jsonl", make_rows(16, id_prefix="x"))
    runs = {}
    for name, data, extra in (
        ("a", train, []),
        ("b", train, ["--seed", "1"]),
        ("c", other, []),
        ("ids", train, ["--id-col", "id"]),
        ("other_ids", same_labels, ["--id-col", "id"]),
    ):
        runs[name] = folder / name
        ok(invoke("train", data, "--run", runs[name], *model_args, *extra))
        ok(invoke("score", "--run", runs[name], "--quiet"))
    return SimpleNamespace(folder=folder, train=train, **runs)


def test_scores_of_another_run_of_the_same_file_are_refused(
    two_runs: SimpleNamespace, tmp_path: Path
) -> None:
    scores = tmp_path / "b.parquet"
    ok(invoke("score", "--run", two_runs.b, "--out", scores, "--quiet"))
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", two_runs.a, "--scores", scores, "--drop-count", "2", "-o", out, "-q"),
        str(scores),
        "another run",
        absent=(out,),
    )
    ok(invoke("filter", "--run", two_runs.b, "--scores", scores, "--drop-count", "2", "-o", out, "-q"))
    assert len(out.read_text().splitlines()) == 14


def test_saved_scores_swapped_between_runs_are_refused(two_runs: SimpleNamespace, tmp_path: Path) -> None:
    run = tmp_path / "a"
    shutil.copytree(two_runs.a, run)
    shutil.copy(two_runs.b / "scores.parquet", run / "scores.parquet")
    user_error(invoke("filter", "--run", run, "--drop-count", "2", "-q"), "scores.parquet", "another run")
    report = tmp_path / "report.html"
    user_error(
        invoke("report", "--run", run, "--out", report, "--quiet"),
        "scores.parquet",
        "another run",
        absent=(report,),
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_scores_of_another_file_with_as_many_rows_are_refused(
    two_runs: SimpleNamespace, tmp_path: Path, fmt: str
) -> None:
    scores = tmp_path / f"c.{fmt}"
    ok(invoke("score", "--run", two_runs.c, "--out", scores, "--quiet"))
    if fmt == "parquet":  # parquet names its training file
        needles: tuple[str, ...] = ("another training file",)
    else:  # CSV and JSON Lines are compared row by row: row 0 is labeled the other way
        needles = ("row 0", "column 'label'", "'negative'", "'positive'")
    user_error(
        invoke("filter", "--run", two_runs.a, "--scores", scores, "--drop-count", "2", "-q"),
        str(scores),
        *needles,
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_scores_with_other_ids_are_refused(two_runs: SimpleNamespace, tmp_path: Path, fmt: str) -> None:
    scores = tmp_path / f"other.{fmt}"
    ok(invoke("score", "--run", two_runs.other_ids, "--out", scores, "--quiet"))
    user_error(
        invoke("filter", "--run", two_runs.ids, "--scores", scores, "--drop-count", "2", "-q"),
        str(scores),
        "row 0",
        "column 'id'",
        "'x000'",
        "'r000'",
    )


def test_scores_with_missing_rows_are_refused(two_runs: SimpleNamespace, tmp_path: Path) -> None:
    scores = tmp_path / "a.csv"
    ok(invoke("score", "--run", two_runs.a, "--out", scores, "--quiet"))
    frame = pd.read_csv(scores)
    frame.iloc[:15].to_csv(scores, index=False)
    user_error(
        invoke("filter", "--run", two_runs.a, "--scores", scores, "--drop-count", "2", "-q"),
        str(scores),
        "15 score rows",
        "16 rows",
    )


@pytest.mark.parametrize("fmt", ["csv", "tsv", "parquet"])
def test_scores_with_a_repeated_column_are_refused(
    two_runs: SimpleNamespace, tmp_path: Path, fmt: str
) -> None:
    """pandas renames a repeated CSV column (hidden_loss.1) and the first copy would win unseen."""
    scores = tmp_path / f"a.{fmt}"
    ok(invoke("score", "--run", two_runs.a, "--out", scores, "--quiet"))
    if fmt == "parquet":
        table = pq.read_table(scores)
        pq.write_table(table.append_column("hidden_loss", pa.compute.negate(table["full_loss"])), scores)
    else:
        sep = "\t" if fmt == "tsv" else ","
        frame = pd.read_csv(scores, sep=sep)
        extra = (-frame[["full_loss"]]).rename(columns={"full_loss": "hidden_loss"})
        pd.concat([frame, extra], axis=1).to_csv(scores, index=False, sep=sep)
    line = "" if fmt == "parquet" else ": line 1"
    user_error(
        invoke(
            "filter",
            "--run",
            two_runs.a,
            "--scores",
            scores,
            "--by",
            "hidden_loss",
            "--drop-count",
            "2",
            "-q",
        ),
        f"{scores}{line}: column name 'hidden_loss' appears more than once in the header",
    )


# ---- non-finite numbers ---------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--threshold", "nan"], "--threshold must be a finite number, got nan"),
        (["--threshold", "inf"], "--threshold must be a finite number, got inf"),
        (["--threshold", "-inf"], "--threshold must be a finite number, got -inf"),
        (["--drop", "nan"], "--drop must be a fraction between 0 and 1 (exclusive), got nan"),
        (["--drop", "inf"], "--drop must be a fraction between 0 and 1 (exclusive), got inf"),
    ],
)
def test_filter_refuses_non_finite_numbers(two_runs: SimpleNamespace, args: list[str], needle: str) -> None:
    user_error(invoke("filter", "--run", two_runs.a, *args, "-q"), needle)


@pytest.mark.parametrize(
    ("command", "args", "needle"),
    [
        ("report", ["--drop", "nan"], "--drop"),
        ("cleanse", ["--keep-prob", "nan"], "--keep-prob"),
        ("cleanse", ["--lr", "inf"], "--lr"),
        ("cleanse", ["--threshold", "nan"], "--threshold"),
    ],
)
def test_other_commands_refuse_non_finite_numbers(
    two_runs: SimpleNamespace, tmp_path: Path, command: str, args: list[str], needle: str
) -> None:
    if command == "report":
        full = ["report", "--run", two_runs.a, "--out", tmp_path / "r.html", *args, "-q"]
    else:
        full = ["cleanse", two_runs.train, "--test", two_runs.train, "--out-dir", tmp_path / "c", *args, "-q"]
    user_error(invoke(*full), needle)


# ---- --max-length ------------------------------------------------------------------------------------


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


# ---- --resume with other options ------------------------------------------------------------------------


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


# ---- damaged runs ---------------------------------------------------------------------------------------


def damaged_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    return copy


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(
    ("damage", "needles"),
    [
        (lambda run: truncate(run / "model.safetensors"), ["model.safetensors", "damaged"]),
        (lambda run: (run / "model.safetensors").write_text("not tensors"), ["model.safetensors", "damaged"]),
        (lambda run: shutil.rmtree(run / "tokenizer"), ["tokenizer", "missing"]),
        (lambda run: (run / "tokenizer" / "tokenizer.json").write_text("{"), ["tokenizer", "cannot load"]),
        (
            lambda run: (run / "tokenizer" / "tokenizer.json").unlink(),
            ["tokenizer: the tokenizer's files are missing (none of tokenizer.json,", "only its 5 special"],
        ),
        (lambda run: (run / "encoder" / "config.json").unlink(), ["encoder/config.json", "missing"]),
        (
            lambda run: (run / "encoder" / "config.json").write_text(json.dumps({"model_type": "nonsense"})),
            ["encoder/config.json", "cannot rebuild the encoder"],
        ),
    ],
    ids=[
        "truncated-weights",
        "garbage-weights",
        "no-tokenizer",
        "bad-tokenizer",
        "tokenizer-config-only",
        "no-encoder",
        "unknown-type",
    ],
)
@pytest.mark.parametrize("command", ["score", "evaluate"])
def test_damaged_run_files(
    two_runs: SimpleNamespace, tmp_path: Path, damage: object, needles: list[str], command: str
) -> None:
    run = damaged_copy(two_runs.a, tmp_path)
    damage(run)  # type: ignore[operator]
    args = ["score", "--run", run] if command == "score" else ["evaluate", two_runs.train, "--run", run]
    user_error(invoke(*args, "--device", "cpu", "-q"), str(run), *needles)


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda config: "{not json", "Expecting property name"),
        (lambda config: json.dumps([config]), "holds a JSON list"),
        (lambda config: json.dumps({k: v for k, v in config.items() if k != "labels"}), "no key 'labels'"),
        (lambda config: json.dumps({**config, "train": []}), "'train' is list, expected dict"),
        (lambda config: json.dumps({**config, "labels": "ab"}), "'labels' is str"),
        (lambda config: json.dumps({**config, "instance_key": 3}), "'instance_key' is int"),
        (lambda config: json.dumps({**config, "epochs": 2}), "'epochs' must be a list"),
        (lambda config: json.dumps({**config, "train": {**config["train"], "epochs": "two"}}), "epochs"),
        (
            lambda config: json.dumps({**config, "train": {**config["train"], "keep_prob": "half"}}),
            "keep_prob",
        ),
        (lambda config: json.dumps({**config, "train_file": {"path": "x"}}), "sha256"),
    ],
)
def test_damaged_run_config(two_runs: SimpleNamespace, tmp_path: Path, edit: object, needle: str) -> None:
    run = damaged_copy(two_runs.a, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(edit(config))  # type: ignore[operator]
    for args in (["score", "--run", run], ["filter", "--run", run], ["train", "--resume", "--run", run]):
        user_error(invoke(*args, "-q"), str(run / "config.json"), "not a valid tod-clean run config", needle)


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


# ---- --model --------------------------------------------------------------------------------------------


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


# ---- unusual labels and ids --------------------------------------------------------------------------


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


ODD_LABELS = ["line\nbreak", " spaced ", "nan", "ünïcødé ✓", "L" * 300, "NA", "2²"]


@pytest.mark.parametrize("train_format", ["csv", "jsonl", "parquet"])
def test_unusual_labels_round_trip_through_score_and_filter(
    tmp_path: Path,
    model_args: list[str],
    train_format: str,
) -> None:
    rows = [dict(row, label=ODD_LABELS[i % len(ODD_LABELS)]) for i, row in enumerate(make_rows(14))]
    train = write_rows(tmp_path / f"train.{train_format}", rows)
    run = tmp_path / "run"
    ok(invoke("train", train, "--run", run, *model_args, "--id-col", "id"))
    assert sorted(json.loads((run / "config.json").read_text())["labels"]) == sorted(ODD_LABELS)
    for fmt in ("csv", "jsonl", "parquet"):
        scores = tmp_path / f"scores.{fmt}"
        ok(invoke("score", "--run", run, "--out", scores, "-q"))
        from tod_clean.selection import read_scores

        assert read_scores(str(scores))["label"].tolist() == [row["label"] for row in rows]
        kept = tmp_path / f"kept.{train_format}"
        removed = tmp_path / f"removed.{fmt}"
        ok(
            invoke(
                "filter",
                "--run",
                run,
                "--scores",
                scores,
                "--drop-count",
                "3",
                "-o",
                kept,
                "--removed",
                removed,
                "-q",
            )
        )
        from tod_clean.io.inputs import read_table

        kept_rows = read_table(str(kept)).rows
        assert len(kept_rows) == 11
        assert all(row["label"] in ODD_LABELS for row in kept_rows)
        assert [row["id"] for row in kept_rows] == [
            r["id"] for r in rows if r["id"] in {k["id"] for k in kept_rows}
        ]


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
