"""Data on standard input in any format (--stdin-format): train -> score -> filter on CSV and TSV from a
pipe, the run's copy kept in that format and read back in it, evaluate and predict from a pipe, bad rows
named by <stdin>, the option refused for files, and runs with the older train.jsonl copy."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, write_rows
from tod_clean.io.inputs import read_table


def stdin_rows(n: int) -> list[dict[str, str]]:
    rows = make_rows(n)
    rows[3]["text"] = (
        'Quoted "words", and a comma'  # CSV quotes it: the copy and the kept rows keep the quotes
    )
    return rows


@pytest.fixture(scope="module")
def csv_stdin_run(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:
    """A run trained on 12 CSV rows from standard input, scored on 6 CSV validation rows from stdin too."""
    folder = tmp_path_factory.mktemp("csv-stdin")
    data = write_rows(folder / "data.csv", stdin_rows(12)).read_bytes()
    val = write_rows(folder / "val.csv", make_rows(6, offset=20)).read_bytes()
    run = folder / "run"
    ok(invoke("train", "-", "--stdin-format", "csv", "--run", run, *model_args, input=data))
    ok(invoke("score", "--run", run, "--val", "-", "--stdin-format", "csv", "--quiet", input=val))
    scores = pd.read_parquet(run / "scores.parquet")
    return SimpleNamespace(folder=folder, data=data, val=val, run=run, scores=scores)


def kept_lines(data: bytes, scores: pd.DataFrame, count: int) -> bytes:
    """The header and every row but the ``count`` worst by influence, as lines of ``data`` (one per row)."""
    worst = set(scores.sort_values("rank")["row"].head(count))
    header, *rows = data.splitlines(keepends=True)
    return header + b"".join(line for i, line in enumerate(rows) if i not in worst)


def test_csv_from_stdin_is_kept_as_train_csv(csv_stdin_run: SimpleNamespace) -> None:
    run = csv_stdin_run.run
    copy = run / "train.csv"
    assert copy.read_bytes() == csv_stdin_run.data
    assert not (run / "train.jsonl").exists()
    recorded = json.loads((run / "config.json").read_text())["train_file"]
    assert recorded["path"] == str(copy.resolve()) and recorded["format"] == "csv"
    assert len(csv_stdin_run.scores) == 12 and csv_stdin_run.scores["influence"].notna().all()
    meta = json.loads((run / "scores.json").read_text())
    assert meta["val_rows"] == 6


def test_filter_a_csv_stdin_run_writes_csv_bytes(csv_stdin_run: SimpleNamespace, tmp_path: Path) -> None:
    expected = kept_lines(csv_stdin_run.data, csv_stdin_run.scores, 3)
    result = ok(invoke("filter", "--run", csv_stdin_run.run, "--drop-count", "3", "--quiet"))
    assert result.stdout_bytes == expected
    out = tmp_path / "kept.csv"
    ok(invoke("filter", "--run", csv_stdin_run.run, "--drop-count", "3", "--out", out, "--quiet"))
    assert out.read_bytes() == expected
    piped = ok(
        invoke(
            "filter",
            "--run",
            csv_stdin_run.run,
            "--train",
            "-",
            "--stdin-format",
            "csv",
            "--drop-count",
            "3",
            "--quiet",
            input=csv_stdin_run.data,
        )
    )
    assert piped.stdout_bytes == expected


def test_filter_refuses_another_format_for_a_csv_stdin_run(
    csv_stdin_run: SimpleNamespace, tmp_path: Path
) -> None:
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", csv_stdin_run.run, "--out", out, "--quiet"),
        f"{out}: write the kept rows in the input's format (csv), not jsonl",
        absent=(out,),
    )


def test_evaluate_and_predict_from_stdin_csv(csv_stdin_run: SimpleNamespace, tmp_path: Path) -> None:
    run, val = csv_stdin_run.run, csv_stdin_run.val
    from_file = tmp_path / "val.csv"
    from_file.write_bytes(val)
    evaluated = ok(invoke("evaluate", "-", "--stdin-format", "csv", "--run", run, "-o", "-", "-q", input=val))
    metrics = json.loads(evaluated.stdout)
    assert metrics["rows"] == 6 and metrics["file"] == "-"
    expected = json.loads(ok(invoke("evaluate", from_file, "--run", run, "-o", "-", "-q")).stdout)
    assert metrics["accuracy"] == expected["accuracy"] and metrics["loss"] == pytest.approx(expected["loss"])
    predicted = ok(
        invoke(
            "predict",
            "-",
            "--stdin-format",
            "csv",
            "--run",
            run,
            "--id-col",
            "id",
            "-o",
            "-",
            "-q",
            input=val,
        )
    )
    frame = pd.read_csv(io.BytesIO(predicted.stdout_bytes))
    reference = pd.read_csv(
        io.BytesIO(
            ok(invoke("predict", from_file, "--run", run, "--id-col", "id", "-o", "-", "-q")).stdout_bytes
        )
    )
    assert len(frame) == 6 and list(frame["id"]) == [f"r{i:03d}" for i in range(20, 26)]
    pd.testing.assert_frame_equal(frame, reference)


def test_predict_from_stdin_parquet(csv_stdin_run: SimpleNamespace, tmp_path: Path) -> None:
    rows = make_rows(6, offset=20)
    parquet = write_rows(tmp_path / "val.parquet", rows).read_bytes()
    run = csv_stdin_run.run
    piped = ok(
        invoke("predict", "-", "--stdin-format", "parquet", "--run", run, "-o", "-", "-q", input=parquet)
    )
    from_file = ok(invoke("predict", tmp_path / "val.parquet", "--run", run, "-o", "-", "-q"))
    assert piped.stdout_bytes == from_file.stdout_bytes
    assert len(pd.read_csv(io.BytesIO(piped.stdout_bytes))) == 6


def test_tsv_from_stdin_through_train_score_filter(tmp_path: Path, model_args: list[str]) -> None:
    data = write_rows(tmp_path / "data.tsv", make_rows(10)).read_bytes()
    run = tmp_path / "run"
    ok(invoke("train", "-", "--stdin-format", "tsv", "--run", run, *model_args, input=data))
    assert (run / "train.tsv").read_bytes() == data
    assert json.loads((run / "config.json").read_text())["train_file"]["format"] == "tsv"
    ok(invoke("score", "--run", run, "--quiet"))
    scores = pd.read_parquet(run / "scores.parquet")
    assert len(scores) == 10
    worst = set(np.argsort(-scores["full_loss"].to_numpy(), kind="stable")[:2].tolist())
    result = ok(invoke("filter", "--run", run, "--drop-count", "2", "--quiet"))
    header, *rows = data.splitlines(keepends=True)
    assert result.stdout_bytes == header + b"".join(line for i, line in enumerate(rows) if i not in worst)


def test_a_bad_csv_row_on_stdin(tmp_path: Path, model_args: list[str]) -> None:
    data = b"id,text,label\nr0,A fine row.,positive\nr1,Another one.,negative\nr2,No label here.,\n"
    run = tmp_path / "run"
    user_error(
        invoke("train", "-", "--stdin-format", "csv", "--run", run, *model_args, input=data),
        "<stdin>: row 2 (line 4), column 'label': expected a class label (text or integer), found ''",
        absent=(run,),
    )
    user_error(
        invoke(
            "train", "-", "--stdin-format", "csv", "--run", run, *model_args, input=b"text,label\na,b,c\n"
        ),
        "<stdin>: line 2: 3 fields, but the header has 2",
        absent=(run,),
    )


def test_stdin_format_is_refused_without_a_stdin_input(tmp_path: Path) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(4))
    run = tmp_path / "run"
    user_error(
        invoke("train", train, "--stdin-format", "csv", "--run", run, "-q"),
        f"--stdin-format applies to - (standard input) only, not to {train}",
        absent=(run,),
    )
    user_error(
        invoke("filter", "--run", run, "--stdin-format", "csv", "-q"),
        "--stdin-format applies to - (standard input) only, and no input here is -",
    )
    user_error(
        invoke("predict", train, "--stdin-format", "tsv", "--run", run, "-o", "-", "-q"),
        f"--stdin-format applies to - (standard input) only, not to {train}",
    )


def test_an_unknown_stdin_format_is_refused(tmp_path: Path) -> None:
    result = invoke("train", "-", "--stdin-format", "xlsx", "--run", tmp_path / "run", "-q", input=b"")
    assert (
        result.exit_code == 2
        and "'xlsx' is not one of 'jsonl', 'csv', 'tsv', 'json', 'parquet'" in result.output
    )


def test_a_json_array_on_stdin() -> None:
    rows = make_rows(3)
    table = read_table("-", stdin=io.BytesIO(json.dumps(rows).encode()), stdin_format="json")
    assert table.format == "json" and table.json_array and list(table.rows) == rows


def test_a_jsonl_copy_still_scores_and_is_replaced_by_a_csv_copy(
    tmp_path: Path, model_args: list[str]
) -> None:
    """A run whose copy of stdin is train.jsonl (the default, and every run before --stdin-format) scores and
    filters as before; retraining it with --overwrite from CSV on stdin replaces that copy with train.csv."""
    jsonl = write_rows(tmp_path / "data.jsonl", make_rows(8)).read_bytes()
    run = tmp_path / "run"
    ok(invoke("train", "-", "--run", run, *model_args, input=jsonl))
    assert (run / "train.jsonl").read_bytes() == jsonl
    ok(invoke("score", "--run", run, "--quiet"))
    assert len(pd.read_parquet(run / "scores.parquet")) == 8
    kept = ok(invoke("filter", "--run", run, "--drop-count", "1", "--quiet")).stdout_bytes
    assert len(kept.splitlines()) == 7 and set(kept.splitlines()) < set(jsonl.splitlines())
    csv = write_rows(tmp_path / "data.csv", make_rows(8)).read_bytes()
    ok(invoke("train", "-", "--stdin-format", "csv", "--overwrite", "--run", run, *model_args, input=csv))
    assert not (run / "train.jsonl").exists() and (run / "train.csv").read_bytes() == csv


def test_a_foreign_train_csv_in_a_run_is_not_replaced(tmp_path: Path, model_args: list[str]) -> None:
    jsonl = write_rows(tmp_path / "data.jsonl", make_rows(8)).read_bytes()
    run = tmp_path / "run"
    ok(invoke("train", "-", "--run", run, *model_args, input=jsonl))
    foreign = run / "train.csv"
    foreign.write_text("someone else's file\n")
    csv = write_rows(tmp_path / "data.csv", make_rows(8)).read_bytes()
    user_error(
        invoke("train", "-", "--stdin-format", "csv", "--overwrite", "--run", run, *model_args, input=csv),
        f"{foreign}: was not written by tod-clean, and the copy of standard input would replace it",
    )
    assert foreign.read_text() == "someone else's file\n" and (run / "train.jsonl").read_bytes() == jsonl


def test_explain_a_validation_csv_from_stdin(csv_stdin_run: SimpleNamespace, tmp_path: Path) -> None:
    run, val = csv_stdin_run.run, csv_stdin_run.val
    from_file = tmp_path / "val.csv"
    from_file.write_bytes(val)
    piped = ok(
        invoke("explain", "--val", "-", "--stdin-format", "csv", "--run", run, "-o", "-", "-q", input=val)
    )
    reference = ok(invoke("explain", "--val", from_file, "--run", run, "-o", "-", "-q"))
    assert piped.stdout_bytes == reference.stdout_bytes
    assert len(pd.read_csv(io.BytesIO(piped.stdout_bytes))) > 0


def test_cleanse_csv_from_stdin(tmp_path: Path, model_args: list[str]) -> None:
    data = write_rows(tmp_path / "data.csv", make_rows(10)).read_bytes()
    test = write_rows(tmp_path / "test.csv", make_rows(4, offset=30))
    out_dir = tmp_path / "cleansed"
    args = (
        "cleanse",
        "-",
        "--stdin-format",
        "csv",
        "--test",
        test,
        "--drop-count",
        "2",
        "--out-dir",
        out_dir,
    )
    ok(invoke(*args, *model_args, input=data))
    assert (out_dir / "tod-run" / "train.csv").read_bytes() == data
    kept = (out_dir / "train.filtered.csv").read_bytes().splitlines(keepends=True)
    header, *rows = data.splitlines(keepends=True)
    assert kept[0] == header and len(kept) == 9 and set(kept[1:]) < set(rows)


def test_report_explains_a_validation_csv_from_stdin(csv_stdin_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    args = ("report", "--run", csv_stdin_run.run, "-o", out, "--device", "cpu", "-q")
    ok(invoke(*args, "--val", "-", "--stdin-format", "csv", input=csv_stdin_run.val))
    page = out.read_text()
    assert "was not found" not in page and "pass --val" not in page
    without = (
        tmp_path / "without.html"
    )  # scored on <stdin>: the run alone cannot read its validation rows again
    ok(invoke("report", "--run", csv_stdin_run.run, "-o", without, "--device", "cpu", "-q"))
    assert "was not found; pass --val" in without.read_text()
