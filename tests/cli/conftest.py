"""Shared by the command-line tests, and imported by the other tests that run the CLI: invoking the app,
a clean result or one clean error line, and small runs trained once per session."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import Result
from typer.testing import CliRunner

from tests.conftest import make_rows, write_rows
from tod_clean.cli import app
from tod_clean.selection import rows_to_drop


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


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def jsonl_run(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """A JSONL training file (16 rows, instance key = row number), scope head, scored on 8 validation rows."""
    folder = tmp_path_factory.mktemp("jsonl")
    train = write_rows(folder / "train.jsonl", make_rows(16))
    val = write_rows(folder / "val.jsonl", make_rows(8, offset=20))
    run = train_run(folder, train, model_args)
    ok(invoke("score", "--run", run, "--val", val, "--quiet"))
    scores = pd.read_parquet(run / "scores.parquet")
    return SimpleNamespace(folder=folder, train=train, val=val, run=run, scores=scores)


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
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


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def classes_of(scores: pd.DataFrame) -> np.ndarray:
    return pd.factorize(scores["label"].astype(str))[0]


def worst_rows(scores: pd.DataFrame, by: str, count: int) -> list[int]:
    """The rows filter drops by ``by``: label-error signals within each class, influence across them
    (the class floor does not bite at these counts)."""
    values = scores[by].to_numpy(float)
    return rows_to_drop(values, by=by, count=count, classes=classes_of(scores)).tolist()


def default_order(frame: pd.DataFrame) -> list[int]:
    """Rows in filter's default ranking: influence, lowest first, where the scores have it (ties in row
    order); else full_loss within each class (a plain loop: each row's loss minus its class's median, over
    the larger of its class's MAD and all rows' MAD)."""
    if "influence" in frame.columns:
        influence = frame["influence"].to_numpy(float)
        return sorted(range(len(influence)), key=lambda row: (influence[row], row))
    loss = frame["full_loss"].to_numpy(float)
    labels = frame["label"].astype(str).to_numpy()
    overall = np.median(np.abs(loss - np.median(loss)))
    keys = []
    for row in range(len(loss)):
        members = loss[labels == labels[row]]
        scale = max(np.median(np.abs(members - np.median(members))), overall) or 1.0
        keys.append(((loss[row] - np.median(members)) / scale, loss[row], -row))
    return sorted(range(len(loss)), key=lambda row: keys[row], reverse=True)
