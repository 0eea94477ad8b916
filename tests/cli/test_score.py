"""``score`` on runs of a tiny random BERT: its output in every format and the influence matrix, scoring
without a validation set beside saved influence scores, --pred-probs in the layout cleanlab expects, and bad
input (one clear error line, nothing written)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
from cleanlab.filter import find_label_issues
from click.testing import Result

from tests.cli.conftest import copy_run, default_order, invoke, ok, sha256, train_run, user_error
from tests.conftest import make_rows, write_rows

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
    # rank: the default ranking of filter (influence where it was scored, else full_loss within each class)
    assert frame.sort_values("rank")["row"].tolist() == default_order(frame)
    meta = json.loads((run / "scores.json").read_text())
    assert meta["rank_by"] == "influence" and meta["val_rows"] == 8 and meta["scope"] == "head"
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


# ---- --pred-probs -----------------------------------------------------------------------------------


def test_pred_probs_feed_cleanlab(tmp_path: Path, model_args: list[str]) -> None:
    rows = make_rows(24)
    train = write_rows(tmp_path / "train.jsonl", rows)
    run = train_run(tmp_path, train, model_args)
    probs_path = tmp_path / "probs.npy"
    scores_path = tmp_path / "scores.csv"
    ok(invoke("score", "--run", run, "--pred-probs", probs_path, "--out", scores_path, "-q"))
    pred_probs = np.load(probs_path, allow_pickle=False)
    assert pred_probs.shape == (24, 2) and pred_probs.dtype == np.float32
    np.testing.assert_allclose(pred_probs.sum(1), 1.0, atol=1e-5)
    scores = pd.read_csv(scores_path)
    labels = (scores.label == "positive").to_numpy().astype(int)  # run labels sorted: negative, positive
    np.testing.assert_allclose(pred_probs[np.arange(24), labels], scores.hidden_prob, atol=1e-6)
    issues = find_label_issues(labels, pred_probs, return_indices_ranked_by="self_confidence")
    assert issues.ndim == 1 and set(issues.tolist()) <= set(range(24))
    # a ranked issue list orders by the hidden sub-network's confidence in the given label
    confidence = pred_probs[issues, labels[issues]]
    assert np.all(np.diff(confidence) >= -1e-7)


def test_pred_probs_need_masks(tmp_path: Path, model_args: list[str]) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    out = tmp_path / "p.npy"
    user_error(invoke("score", "--run", run, "--pred-probs", out), "scope 'none'", absent=(out,))


def test_readme_cleanlab_examples_run(
    tmp_path: Path,
    model_args: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Both README snippets under 'score --pred-probs', verbatim: find_label_issues and Datalab."""
    rows = make_rows(24)
    train = write_rows(tmp_path / "train.jsonl", rows)
    run = train_run(tmp_path, train, model_args)
    monkeypatch.chdir(tmp_path)
    ok(invoke("score", "--run", run, "--pred-probs", "probs.npy", "--out", "scores.csv", "-q"))
    readme = (Path(__file__).resolve().parents[2] / "docs" / "guide.md").read_text(encoding="utf-8")
    section = readme.split("### `tod-clean score --pred-probs FILE.npy`\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict[str, Any] = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    pred_probs, label_issues = namespace["pred_probs"], namespace["label_issues"]
    assert len(label_issues) == 24
    assert list(label_issues["given_label"]) == [row["label"] for row in rows]
    # Datalab's class order is the run's: its predicted labels are the argmax columns of pred_probs
    names = np.array(["negative", "positive"])
    assert list(label_issues["predicted_label"]) == list(names[pred_probs.argmax(1)])


# ---- bad input --------------------------------------------------------------------------------------


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


def test_corrupt_run_config(jsonl_run: SimpleNamespace, tmp_path: Path) -> None:
    run = copy_run(jsonl_run.run, tmp_path)
    (run / "config.json").write_text("{ not json")
    user_error(invoke("score", "--run", run, "-q"), "config.json", "not a valid tod-clean run config")


def test_scope_none_run_has_no_turn_over_influence(tmp_path: Path, model_args: list[str]) -> None:
    """A run without instance masks has no sub-networks: turn-over dropout's own estimate is refused, the
    default (gauss-newton, of the trained network) scores it."""
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    val = write_rows(tmp_path / "val.jsonl", make_rows(4, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    out = tmp_path / "scores.csv"
    for method in ("turn-over", "exact", "linear"):
        refused = invoke("score", "--run", run, "--val", val, "--influence", method, "--out", out, "-q")
        user_error(refused, "scope 'none'", absent=(out,))
    ok(invoke("score", "--run", run, "--val", val, "--out", out, "-q"))
    assert json.loads((run / "scores.json").read_text())["influence_method"] == "gauss-newton"
    assert np.isfinite(pd.read_csv(out)["influence"]).all()
    out.unlink()
    ok(invoke("score", "--run", run, "--out", out, "--overwrite", "-q"))
    frame = pd.read_csv(out)
    assert list(frame.columns) == ["row", "label", "full_loss", "full_prob", "full_pred", "rank"]
    user_error(
        invoke("filter", "--run", run, "--by", "self_influence", "-q"), "self_influence", "columns found"
    )
