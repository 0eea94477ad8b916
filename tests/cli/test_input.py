"""Adversarial input that reaches several commands: saved scores swapped between runs, non-finite options of
report and cleanse, damaged runs for every command that loads one, and unusual labels through train -> score
-> filter. Each must give one clear error line (exit 1) or the right answer, never a traceback or a silent
wrong one. Adversarial input for one command is with that command's tests (test_train.py, test_filter.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.cli.conftest import invoke, ok, truncate, user_error
from tests.conftest import make_rows, write_rows


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


# ---- non-finite numbers -----------------------------------------------------------------------------


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


# ---- damaged runs -----------------------------------------------------------------------------------


def damaged_copy(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "damaged"
    shutil.copytree(run, copy)
    return copy


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


# ---- unusual labels ---------------------------------------------------------------------------------


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
