"""predict: per-row probabilities of a run's full network, against a naive per-row forward pass; the
command and Run.predict on real files."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tests.cli.conftest import invoke, model_args, ok, sha256, train_run, user_error  # noqa: F401  (fixture)
from tests.conftest import make_rows, write_rows
from tod_clean.api import Run
from tod_clean.errors import InputError
from tod_clean.run.rundir import RunDir

PROBS = ["prob_negative", "prob_positive"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:  # noqa: F811
    folder = tmp_path_factory.mktemp("predict")
    train = write_rows(folder / "train.jsonl", make_rows(12))
    run = train_run(folder, train, model_args, "--id-col", "id")
    rows = make_rows(7, offset=30, id_prefix="t")
    return SimpleNamespace(folder=folder, train=train, run=run, rows=rows)


def naive_log_probs(run: Path, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
    """log softmax of the full network, one row per forward pass, tokenised here."""
    run_dir = RunDir(run)
    info = run_dir.read_complete_info()
    model = run_dir.load_model(info).eval()
    tokenizer = run_dir.load_tokenizer()
    out = []
    with torch.no_grad():
        for i, text in enumerate(texts):
            batch = tokenizer(
                text,
                None if pairs is None else pairs[i],
                truncation=True,
                max_length=info.train.max_length,
                return_tensors="pt",
            )
            out.append(model(dict(batch)).log_softmax(-1)[0].numpy())
    return np.array(out, dtype=np.float64)


def test_predict_matches_a_naive_forward_pass(trained: SimpleNamespace) -> None:
    frame = Run(trained.run).predict(pd.DataFrame(trained.rows), device="cpu")
    assert list(frame.columns) == ["row", "id", *PROBS, "predicted_label", "label", "loss"]
    assert frame["row"].tolist() == list(range(7))
    assert frame["id"].tolist() == [r["id"] for r in trained.rows]
    probs = frame[PROBS].to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    names = np.array(["negative", "positive"])
    assert frame["predicted_label"].tolist() == names[probs.argmax(1)].tolist()
    assert frame["label"].tolist() == [r["label"] for r in trained.rows]
    expected = naive_log_probs(trained.run, [r["text"] for r in trained.rows])
    np.testing.assert_allclose(probs, np.exp(expected), atol=1e-5)
    picked = expected[np.arange(7), [int(r["label"] == "positive") for r in trained.rows]]
    np.testing.assert_allclose(frame["loss"].to_numpy(), -picked, atol=1e-5)


def test_predict_command_writes_csv_parquet_jsonl_and_stdout(trained: SimpleNamespace) -> None:
    folder = trained.folder
    data = write_rows(folder / "rows.csv", trained.rows)
    expected = Run(trained.run).predict(data, device="cpu")
    for name in ("p.csv", "p.parquet", "p.jsonl"):
        out = folder / name
        result = ok(invoke("predict", data, "--run", trained.run, "-o", out, "--device", "cpu"))
        assert "predicted 7 rows (accuracy" in result.stderr
        read = {
            ".csv": pd.read_csv,
            ".parquet": pd.read_parquet,
            ".jsonl": lambda p: pd.read_json(p, lines=True),
        }[out.suffix](out)
        assert list(read.columns) == list(expected.columns)
        np.testing.assert_allclose(read[PROBS].to_numpy(), expected[PROBS].to_numpy(), rtol=1e-6)
        assert read["predicted_label"].tolist() == expected["predicted_label"].tolist()
    result = ok(invoke("predict", data, "--run", trained.run, "-o", "-", "-q", "--device", "cpu"))
    assert result.stderr == ""
    read = pd.read_csv(io.StringIO(result.stdout))
    assert read["id"].tolist() == expected["id"].tolist()


def test_predict_unlabeled_rows_from_stdin(trained: SimpleNamespace) -> None:
    rows = [{"text": r["text"]} for r in trained.rows[:3]]
    stdin = "".join(json.dumps(r) + "\n" for r in rows)
    result = ok(invoke("predict", "-", "--run", trained.run, "-o", "-", "-q", "--device", "cpu", input=stdin))
    read = pd.read_csv(io.StringIO(result.stdout))
    assert list(read.columns) == ["row", *PROBS, "predicted_label"]  # no labels, no id column
    # --no-labels ignores a label column, even one with a label the training data did not have
    odd = [dict(r, label="neutral") for r in trained.rows[:2]]
    frame = Run(trained.run).predict(pd.DataFrame(odd), labels=False, device="cpu")
    assert list(frame.columns) == ["row", "id", *PROBS, "predicted_label"]


def test_predict_refuses_bad_input_without_writing(trained: SimpleNamespace) -> None:
    folder = trained.folder
    out = folder / "never.csv"
    rows = [dict(r) for r in trained.rows]
    rows[4]["label"] = "neutral"
    odd = write_rows(folder / "odd.jsonl", rows)
    user_error(
        invoke("predict", odd, "--run", trained.run, "-o", out),
        "odd.jsonl: row 4 (line 5), column 'label': label 'neutral' was not in the training data",
        absent=(out,),
    )
    rows = [dict(r) for r in trained.rows]
    rows[2]["text"] = " "
    blank = write_rows(folder / "blank.jsonl", rows)
    user_error(
        invoke("predict", blank, "--run", trained.run, "-o", out),
        "blank.jsonl: row 2 (line 3), column 'text': empty text",
        absent=(out,),
    )
    data = write_rows(folder / "ok.jsonl", trained.rows)
    user_error(
        invoke("predict", data, "--run", trained.run, "-o", out, "--text-col", "body"),
        "column 'body' not found; columns found: id, text, label",
        absent=(out,),
    )
    user_error(
        invoke("predict", data, "--run", trained.run, "-o", out, "--labels", "--label-col", "stars"),
        "column 'stars' not found",
        absent=(out,),
    )
    before = sha256(data)
    user_error(invoke("predict", data, "--run", trained.run, "-o", data), "would overwrite the data file")
    assert sha256(data) == before
    user_error(invoke("predict", data, "--run", trained.run, "-o", folder / "p.txt"), "unsupported file type")
    with pytest.raises(InputError, match=r"row 4 \(line 5\), column 'label': label 'neutral'"):
        Run(trained.run).predict(odd, device="cpu")


def test_predict_sentence_pairs_with_integer_labels(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    rows = [
        dict(r, hypothesis=f"second text {i}", label=int(r["label"] == "positive"))
        for i, r in enumerate(make_rows(8))
    ]
    train = write_rows(tmp_path / "pairs.parquet", rows)
    run = train_run(tmp_path, train, model_args, "--text-pair-col", "hypothesis")
    frame = Run(run).predict(train, device="cpu")
    assert list(frame.columns) == ["row", "prob_0", "prob_1", "predicted_label", "label", "loss"]
    assert frame["label"].dtype == np.int64 and frame["predicted_label"].dtype == np.int64
    expected = naive_log_probs(run, [r["text"] for r in rows], [r["hypothesis"] for r in rows])
    np.testing.assert_allclose(frame[["prob_0", "prob_1"]].to_numpy(), np.exp(expected), atol=1e-5)
    np.testing.assert_allclose(frame["loss"], -expected[np.arange(8), [r["label"] for r in rows]], atol=1e-5)
    # the same rows in CSV (labels as text) give the same frame
    as_csv = Run(run).predict(write_rows(tmp_path / "pairs.csv", rows), device="cpu")
    pd.testing.assert_frame_equal(as_csv, frame)
    user_error(
        invoke("predict", train, "--run", run, "-o", "-", "--text-pair-col", "premise"),
        "column 'premise' not found",
    )


def test_predict_a_dataset_folder_split_into_a_dataset_folder(trained: SimpleNamespace) -> None:
    datasets = pytest.importorskip("datasets")
    from tod_clean.io.frames import read_frame_dataset

    folder = trained.folder / "dsdict"
    splits = {"test": pd.DataFrame(trained.rows[:4]), "other": pd.DataFrame(trained.rows[4:])}
    datasets.DatasetDict(
        {name: datasets.Dataset.from_pandas(frame, preserve_index=False) for name, frame in splits.items()}
    ).save_to_disk(str(folder))
    out = trained.folder / "predicted"
    ok(invoke("predict", folder, "--split", "test", "--run", trained.run, "-o", out, "-q", "--device", "cpu"))
    read = read_frame_dataset(out)
    assert read["id"].tolist() == [r["id"] for r in trained.rows[:4]]
    expected = Run(trained.run).predict(splits["test"], device="cpu")
    np.testing.assert_allclose(read[PROBS].to_numpy(), expected[PROBS].to_numpy())
    assert read["loss"].tolist() == pytest.approx(expected["loss"].tolist())
