"""``filter`` on runs of a tiny random BERT: the kept rows byte for byte in the training file's format,
--removed, each criterion and signal, scores files, reordered files matched by id, and bad input (one clear
error line, nothing written), among it scores of another run or file."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import pytest

from tests.cli.conftest import copy_run, default_order, invoke, ok, train_run, user_error, worst_rows
from tests.conftest import make_rows, write_rows
from tod_clean.io.inputs import read_table


def jsonl_lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_filter_jsonl_drop_fraction_with_removed(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    out, removed = tmp_path / "kept.jsonl", tmp_path / "removed.csv"
    result = ok(
        invoke("filter", "--run", jsonl_run.run, "--drop", "0.25", "--out", out, "--removed", removed)
    )
    dropped = worst_rows(jsonl_run.scores, "influence", 4)  # the default where the scores have it
    lines = jsonl_lines(jsonl_run.train)
    assert out.read_bytes() == b"".join(line for i, line in enumerate(lines) if i not in dropped)
    report = pd.read_csv(removed)
    worst = default_order(jsonl_run.scores)[:4]  # removed.csv: worst first, ranked by the signal used
    assert report["id"].tolist() == [f"r{i:03d}" for i in worst] and report["rank"].tolist() == [1, 2, 3, 4]
    assert {"text", "label", "influence", "full_loss"} <= set(report.columns)
    assert "score_row" not in report.columns and report["row"].tolist() == worst
    np.testing.assert_allclose(report["full_loss"], jsonl_run.scores["full_loss"].iloc[worst], rtol=1e-6)
    assert "kept 12 of 16 rows; dropped 4" in result.stderr and "lowest influence" in result.stderr
    assert "ranking by influence on the validation set (the default when it was scored" in result.stderr
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
    dropped = worst_rows(jsonl_run.scores, "influence", 2)
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
    dropped = worst_rows(jsonl_run.scores, "influence", 5)
    lines = jsonl_lines(jsonl_run.train)
    assert result.stdout_bytes == b"".join(line for i, line in enumerate(lines) if i not in dropped)


def test_filter_csv_keeps_rows_byte_for_byte(csv_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "kept.csv"
    ok(invoke("filter", "--run", csv_run.run, "--drop-count", "4", "--out", out, "--quiet"))
    dropped = worst_rows(csv_run.scores, "influence" if "influence" in csv_run.scores else "full_loss", 4)
    kept_ids = [r["id"] for i, r in enumerate(csv_run.rows) if i not in dropped]
    expected = write_rows(tmp_path / "expected.csv", [r for r in csv_run.rows if r["id"] in kept_ids])
    assert out.read_bytes() == expected.read_bytes()
    assert out.read_bytes().startswith(csv_run.train.read_bytes().splitlines(keepends=True)[0])


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


def test_filter_nan_scores(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    scores = jsonl_run.scores.copy()
    scores.loc[5, "influence"] = np.nan  # the default signal where it was scored
    path = tmp_path / "scores.csv"
    scores.to_csv(path, index=False)
    out = tmp_path / "kept.jsonl"
    user_error(
        invoke("filter", "--run", jsonl_run.run, "--scores", path, "--out", out, "-q"),
        "scores.csv",
        "row 5",
        "'influence'",
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


# ---- scores of another run or file ------------------------------------------------------------------


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
