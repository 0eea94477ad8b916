"""Ranking and dropping rows: Hypothesis properties of the core and of the kept set the CLI writes."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tod_clean.cli import app
from tod_clean.config import TrainConfig
from tod_clean.data import read_table, sha256_of_file
from tod_clean.errors import ConfigError, InputError
from tod_clean.filter import (
    SIGNALS,
    WORSE_WHEN_HIGHER,
    WORSE_WHEN_LOWER,
    check_scores,
    drop_count_for,
    rows_to_drop,
    worst_first,
)
from tod_clean.rundir import RunDir, RunInfo, TrainFile

# Few distinct values, so ties are common.
score_values = st.one_of(
    st.sampled_from([-1.0, 0.0, 0.5, 2.0]),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
)
score_arrays = st.lists(score_values, min_size=1, max_size=40).map(lambda v: np.array(v, dtype=np.float64))
signals = st.sampled_from(SIGNALS)


def badness(scores: np.ndarray, by: str) -> np.ndarray:
    """Higher = worse, whatever the column."""
    return -scores if by in WORSE_WHEN_LOWER else scores


def check_drop_set(scores: np.ndarray, by: str, dropped: np.ndarray, count: int) -> None:
    n = len(scores)
    assert dropped.dtype.kind == "i"
    assert list(dropped) == sorted(set(dropped.tolist()))  # sorted, no repeats
    assert set(dropped.tolist()) <= set(range(n))
    assert len(dropped) == count
    kept = np.setdiff1d(np.arange(n), dropped)
    assert sorted(kept.tolist() + dropped.tolist()) == list(range(n))
    bad = badness(scores, by)
    if len(dropped) and len(kept):
        # every dropped row is at least as bad as every kept row ...
        assert bad[dropped].min() >= bad[kept].max()
        # ... and among equally bad rows, the earlier ones go first
        boundary = bad[dropped].min()
        tied_kept = kept[bad[kept] == boundary]
        tied_dropped = dropped[bad[dropped] == boundary]
        if len(tied_kept):
            assert tied_dropped.max() < tied_kept.min()


@settings(max_examples=150, deadline=None)
@given(scores=score_arrays, by=signals, data=st.data())
def test_drop_count_drops_exactly_the_worst(scores: np.ndarray, by: str, data: st.DataObject) -> None:
    count = data.draw(st.integers(min_value=0, max_value=len(scores)))
    dropped = rows_to_drop(scores, by=by, count=count)
    check_drop_set(scores, by, dropped, count)


@settings(max_examples=150, deadline=None)
@given(scores=score_arrays, by=signals, fraction=st.floats(min_value=1e-6, max_value=1 - 1e-6))
def test_drop_fraction_drops_the_rounded_count(scores: np.ndarray, by: str, fraction: float) -> None:
    dropped = rows_to_drop(scores, by=by, fraction=fraction)
    expected = drop_count_for(len(scores), fraction)
    assert abs(expected - fraction * len(scores)) <= 0.5 + 1e-9
    check_drop_set(scores, by, dropped, expected)


@settings(max_examples=100, deadline=None)
@given(
    rows=st.integers(min_value=1, max_value=5000),
    numerator=st.integers(min_value=1, max_value=1023),
    bits=st.integers(min_value=1, max_value=10),
)
def test_drop_count_for_rounds_half_up_exactly_for_binary_fractions(
    rows: int, numerator: int, bits: int
) -> None:
    fraction = Fraction(numerator, 2**bits)
    assume(0 < fraction < 1)
    # k/2^m is exact in binary, so the float computation has no excuse
    assert drop_count_for(rows, float(fraction)) == math.floor(fraction * rows + Fraction(1, 2))


@pytest.mark.parametrize(
    ("fraction", "rows", "expected"),
    [
        (0.01, 250, 3),
        (0.5, 3, 2),
        (0.1, 5, 1),
        (0.25, 2, 1),
        (0.01, 49, 0),
        (0.01, 50, 1),
        # decimal fractions whose product is an exact half: 29% of 50 rows is 14.5 -> 15
        (0.29, 50, 15),
        (0.58, 25, 15),
        (0.35, 90, 32),
    ],
)
def test_drop_count_for_rounds_decimal_halves_up(fraction: float, rows: int, expected: int) -> None:
    assert drop_count_for(rows, fraction) == expected


@settings(max_examples=150, deadline=None)
@given(scores=score_arrays, by=signals, threshold=score_values)
def test_threshold_direction(scores: np.ndarray, by: str, threshold: float) -> None:
    dropped = rows_to_drop(scores, by=by, threshold=threshold)
    if by in WORSE_WHEN_LOWER:
        expected = np.flatnonzero(scores < threshold)
    else:
        expected = np.flatnonzero(scores > threshold)
    assert dropped.tolist() == expected.tolist()


def test_threshold_direction_per_column() -> None:
    scores = np.array([-2.0, 0.0, 1.0, 3.0])
    assert rows_to_drop(scores, by="influence", threshold=0.0).tolist() == [0]
    for by in ("self_influence", "hidden_loss", "full_loss"):
        assert rows_to_drop(scores, by=by, threshold=0.0).tolist() == [2, 3]
    assert rows_to_drop(scores, by="influence", count=1).tolist() == [0]
    assert rows_to_drop(scores, by="full_loss", count=1).tolist() == [3]
    assert set(WORSE_WHEN_LOWER) >= {"influence"}
    assert set(WORSE_WHEN_HIGHER) >= {"self_influence", "hidden_loss", "full_loss"}


@settings(max_examples=100, deadline=None)
@given(scores=score_arrays, by=signals)
def test_worst_first_is_a_stable_ranking(scores: np.ndarray, by: str) -> None:
    order = worst_first(scores, by)
    assert sorted(order.tolist()) == list(range(len(scores)))
    bad = badness(scores, by)[order]
    assert np.all(np.diff(bad) <= 0)  # worst first
    for a, b in zip(order[:-1], order[1:], strict=True):  # ties keep row order
        if badness(scores, by)[a] == badness(scores, by)[b]:
            assert a < b


def test_ties_keep_row_order() -> None:
    scores = np.array([1.0, 5.0, 5.0, 0.0, 5.0])
    assert worst_first(scores, "full_loss").tolist() == [1, 2, 4, 0, 3]
    assert rows_to_drop(scores, by="full_loss", count=2).tolist() == [1, 2]
    assert worst_first(-scores, "influence").tolist() == [1, 2, 4, 0, 3]


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1.5, -0.1])
def test_fraction_outside_open_interval(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"between 0 and 1.*got " + str(fraction).replace(".", r"\.")):
        rows_to_drop(np.zeros(5), by="influence", fraction=fraction)


@pytest.mark.parametrize(
    "options",
    [
        {"fraction": 0.1, "count": 1},
        {"fraction": 0.1, "threshold": 0.0},
        {"count": 1, "threshold": 0.0},
        {"fraction": 0.1, "count": 1, "threshold": 0.0},
        {},
    ],
)
def test_exactly_one_criterion(options: dict[str, float]) -> None:
    with pytest.raises(ConfigError, match="exactly one of"):
        rows_to_drop(np.zeros(5), by="influence", **options)


@pytest.mark.parametrize("count", [-1, 6])
def test_count_out_of_range(count: int) -> None:
    with pytest.raises(ConfigError, match=f"got {count}"):
        rows_to_drop(np.zeros(5), by="influence", count=count)


def test_unknown_column() -> None:
    with pytest.raises(ConfigError, match="cannot rank by 'foo'"):
        worst_first(np.zeros(3), "foo")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_scores_names_the_bad_row(bad: float) -> None:
    scores = np.array([0.1, 0.2, bad, 0.4, bad])
    with pytest.raises(InputError, match=r"scores\.csv: row 2, column 'influence'"):
        check_scores(scores, "influence", "scores.csv")
    check_scores(np.array([0.0, -1e300, 1e300]), "influence", "ok.csv")  # finite values pass


# ---- the kept set the CLI writes -----------------------------------------------------------------


def fake_run(folder: Path, train_file: Path) -> Path:
    """A run directory with just the config that `filter` reads (no model needed)."""
    run = folder / "run"
    run.mkdir()
    table = read_table(str(train_file))
    info = RunInfo(
        train=TrainConfig(model="unused"),
        labels=["negative", "positive"],
        train_file=TrainFile(str(train_file), sha256_of_file(train_file), len(table), table.format),
        instance_key="row",
        encoder={},
        status="complete",
    )
    RunDir(run).write_info(info)
    return run


@pytest.fixture(scope="module")
def filter_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[bytes]]:
    folder = tmp_path_factory.mktemp("filter")
    lines = [
        json.dumps({"text": f"row number {i}", "label": ["negative", "positive"][i % 2], "n": i}) + "\n"
        for i in range(40)
    ]
    train = folder / "train.jsonl"
    train.write_text("".join(lines), encoding="utf-8")
    return folder, fake_run(folder, train), [line.encode() for line in lines]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    values=st.lists(st.sampled_from([0.0, 1.0, 2.5, -3.0]), min_size=40, max_size=40),
    by=st.sampled_from(["influence", "full_loss", "self_influence"]),
    count=st.integers(min_value=0, max_value=40),
)
def test_cli_kept_rows_are_the_complement_in_order(
    filter_setup: tuple[Path, Path, list[bytes]], values: list[float], by: str, count: int
) -> None:
    folder, run, lines = filter_setup
    n = len(lines)
    scores = pd.DataFrame({"row": range(n), by: values})
    scores_path = folder / "scores.csv"
    scores.to_csv(scores_path, index=False)
    result = CliRunner().invoke(
        app,
        [
            "filter",
            "--run",
            str(run),
            "--scores",
            str(scores_path),
            "--by",
            by,
            "--drop-count",
            str(count),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    kept_lines = result.stdout_bytes.splitlines(keepends=True)
    kept = [lines.index(line) for line in kept_lines]
    assert kept == sorted(kept)  # original order
    dropped = sorted(set(range(n)) - set(kept))
    assert len(kept) == n - count and len(dropped) == count
    assert dropped == rows_to_drop(np.array(values), by=by, count=count).tolist()
    check_drop_set(np.array(values), by, np.array(dropped, dtype=np.int64), count)


def test_cli_threshold_and_fraction(filter_setup: tuple[Path, Path, list[bytes]]) -> None:
    folder, run, lines = filter_setup
    values = np.linspace(-1.0, 1.0, len(lines))
    scores_path = folder / "threshold_scores.csv"
    pd.DataFrame({"row": range(len(lines)), "influence": values, "full_loss": values}).to_csv(
        scores_path, index=False
    )
    runner = CliRunner()
    base = ["filter", "--run", str(run), "--scores", str(scores_path), "--quiet"]
    result = runner.invoke(app, [*base, "--threshold", "0"])  # by influence (default when present)
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"".join(line for line, v in zip(lines, values, strict=True) if not v < 0)
    result = runner.invoke(app, [*base, "--threshold", "0", "--by", "full_loss"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"".join(line for line, v in zip(lines, values, strict=True) if not v > 0)
    result = runner.invoke(app, [*base, "--drop", "0.1", "--by", "full_loss"])  # 4 of 40, highest loss
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"".join(lines[:36])
    result = runner.invoke(app, base)  # default: drop 1% = round(0.4) = 0 rows
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"".join(lines)
