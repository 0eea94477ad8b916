"""``check``: the LDS maths against plain loops and planted truth, and the command end to end (resume,
shards, refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

import tod_clean
from tests.cli.conftest import invoke, model_args, ok, train_run, user_error  # noqa: F401 (fixture)
from tests.conftest import make_rows, write_rows
from tod_clean.errors import ConfigError
from tod_clean.influence.base import ESTIMATORS
from tod_clean.lds import bootstrap_lds, interval, lds, lds_per_row, random_halves


def test_random_halves_are_seeded_halves_that_more_halves_extend() -> None:
    halves = random_halves(11, 6, seed=3)
    assert halves.shape == (6, 11) and halves.dtype == bool
    assert (halves.sum(1) == 5).all()
    np.testing.assert_array_equal(random_halves(11, 4, seed=3), halves[:4])
    assert not np.array_equal(random_halves(11, 6, seed=4), halves)


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_lds_per_row_is_spearman_of_predicted_and_measured_loss() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((9, 5))
    halves = random_halves(9, 12, seed=1)
    losses = rng.integers(0, 4, (12, 5)).astype(float)  # ties, as scipy ranks them
    losses[:, 2] = 1.0  # a row whose loss does not vary counts 0
    expected = []
    for v in range(5):
        predicted = [-matrix[halves[m], v].sum() for m in range(12)]
        rho = spearmanr(predicted, losses[:, v]).statistic
        expected.append(0.0 if np.isnan(rho) else rho)
    np.testing.assert_allclose(lds_per_row(matrix, halves, losses), expected, rtol=0, atol=1e-12)


def test_lds_finds_a_planted_linear_datamodel_and_not_noise() -> None:
    """Losses made from a known influence matrix: that matrix scores near 1, an unrelated one near 0."""
    rng = np.random.default_rng(5)
    truth = rng.standard_normal((200, 30))
    halves = random_halves(200, 40, seed=0)
    losses = -(halves @ truth) + 0.5 * rng.standard_normal((40, 30))
    planted, _ = lds(truth, halves, losses)
    unrelated, _ = lds(rng.standard_normal((200, 30)), halves, losses)
    assert planted > 0.9
    assert abs(unrelated) < 0.15
    samples = bootstrap_lds({"truth": truth, "copy": truth.copy()}, halves, losses, samples=50)
    np.testing.assert_array_equal(samples["truth"], samples["copy"])  # the same resampled halves
    low, high = interval(samples["truth"])
    assert 0.85 < low < high <= 1


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> dict:  # noqa: F811
    """A head run on 16 rows, checked on 6 validation rows with 5 halves; and the same check in shards."""
    folder = tmp_path_factory.mktemp("check")
    train = write_rows(folder / "train.jsonl", make_rows(16))
    val = write_rows(folder / "val.jsonl", make_rows(6, offset=30))
    run = train_run(folder, train, model_args, "--keep-prob", "0.3")
    whole = ok(invoke("check", "--run", run, "--val", val, "--halves", "5"))
    sharded = folder / "sharded"
    parts = [
        ok(invoke("check", "--run", run, "--val", val, "--halves", "5", "--shard", shard, "-o", sharded))
        for shard in ("0/2", "1/2")
    ]
    finished = ok(invoke("check", "--run", run, "--val", val, "--halves", "5", "-o", sharded, "--quiet"))
    return {
        "folder": folder,
        "run": run,
        "val": val,
        "train": train,
        "whole": whole,
        "parts": parts,
        "finished": finished,
        "sharded": sharded,
    }


def test_check_reports_every_estimator_that_applies_and_keeps_only_measurements(checked: dict) -> None:
    folder = checked["run"] / "check"
    result = json.loads((folder / "check.json").read_text())
    names = [e["name"] for e in result["estimators"]]
    # ekfac joins when its optional dependency (kronfluence) is installed, as in CI
    optional = ["ekfac"] if ESTIMATORS["ekfac"].available() else []
    assert sorted(names) == sorted(["exact", "gauss-newton", "gradient", "linear", "random", *optional])
    ldss = [e["lds"] for e in result["estimators"]]
    assert ldss == sorted(ldss, reverse=True)
    for e in result["estimators"]:
        assert -1 <= e["low"] <= e["high"] <= 1
        assert e["difference"] <= 0 and e["difference_low"] <= e["difference_high"]
    assert result["halves"] == result["measured"] == 5 and result["pending"] == []
    # what is kept: the plan, one measurement per half, the result (no half's model or rows)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["plan.json", "check.json", *(f"half-{m:03d}.json" for m in range(5))]
    )
    half = json.loads((folder / "half-002.json").read_text())
    assert len(half["rows"]) == 8 and len(half["losses"]) == 6
    assert all(loss > 0 for loss in half["losses"])
    assert "LDS on 6 validation rows, 5 retrained halves" in checked["whole"].output


def test_shards_measure_the_halves_the_whole_check_measures(checked: dict) -> None:
    first, second = checked["parts"]
    assert "measured 3 of 5 halves; still to train: 1, 3; run check again without --shard" in first.output
    assert "measured 5 of 5 halves; every half is measured; run check again without --shard" in second.output
    assert not (checked["parts"][0].output + second.output).count("LDS on")
    for m in range(5):
        whole = json.loads((checked["run"] / "check" / f"half-{m:03d}.json").read_text())
        part = json.loads((checked["sharded"] / f"half-{m:03d}.json").read_text())
        assert part["rows"] == whole["rows"]
        np.testing.assert_allclose(part["losses"], whole["losses"], rtol=1e-5)
    assert (checked["sharded"] / "check.json").is_file()


def test_a_rerun_resumes_from_the_measured_halves(checked: dict) -> None:
    folder = checked["run"] / "check"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("half-*.json")}
    (folder / "half-004.json").unlink()  # as if interrupted before the last half
    del before["half-004.json"]
    result = ok(invoke("check", "--run", checked["run"], "--val", checked["val"], "--halves", "5"))
    assert "check: retraining halves: started (1 steps)" in result.output
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("half-*.json")}
    assert {name: after[name] for name in before} == before
    assert "half-004.json" in after


def test_check_refuses_bad_options_and_foreign_folders(checked: dict, tmp_path: Path) -> None:
    run, val = checked["run"], checked["val"]
    user_error(invoke("check", "--run", run, "--val", val, "--halves", "3"), "--halves 3", "at least 5")
    user_error(
        invoke("check", "--run", run, "--val", val, "--influence", "nope"), "--influence nope: choose from"
    )
    other_val = write_rows(tmp_path / "other.jsonl", make_rows(5, offset=60))
    user_error(
        invoke("check", "--run", run, "--val", other_val, "--halves", "5"),
        "holds a check of other data or another recipe; pass --overwrite",
    )
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    user_error(invoke("check", "--run", run, "--val", val, "-o", foreign), "exists and is not a check folder")
    assert (foreign / "notes.txt").read_text() == "keep me" and len(list(foreign.iterdir())) == 1


def test_the_api_checks_a_run_and_names_keywords(checked: dict) -> None:
    run = tod_clean.Run(checked["run"])
    result = run.check(checked["val"], halves=5, methods=["gradient"])  # resumes: every half is measured
    assert sorted(e.name for e in result.estimators) == ["gradient", "random"]
    assert result.best is None or result.best.name == "gradient"
    with pytest.raises(ConfigError, match=r"^halves=2: the LDS needs at least 5"):
        run.check(checked["val"], halves=2)
    with pytest.raises(ConfigError, match=r"^methods=nope: choose from"):
        run.check(checked["val"], halves=5, methods=["nope"])


def test_the_report_shows_the_check(checked: dict) -> None:
    run = checked["run"]
    ok(invoke("score", "--run", run, "--val", checked["val"], "--quiet"))
    page = checked["folder"] / "report.html"
    ok(invoke("report", "--run", run, "-o", page, "--quiet"))
    html = page.read_text()
    assert '<h2 id="check">Which influence to trust here</h2>' in html
    saved = json.loads((run / "check" / "check.json").read_text())
    for estimator in saved["estimators"]:
        assert f"<td>{estimator['name']}</td>" in html
    assert "Measured by retraining (5 none fine-tunes on random halves, 6 validation rows)" in html
