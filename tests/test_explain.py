"""explain: the top harmful and helpful training rows per validation row, against a brute-force ranking of
the full influence matrix; and the command on real files."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import transformers

from tests.cli.conftest import invoke, model_args, ok, train_run, user_error  # noqa: F401  (fixture)
from tests.conftest import make_rows, write_rows
from tod_clean.config import ScoreConfig
from tod_clean.encoding import encode_texts
from tod_clean.explain import top_influences
from tod_clean.influence.gather import influence
from tod_clean.masks import key_from_id
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import Scope

TRAIN = [f"training text number {i} is {'good' if i % 3 else 'bad'}" for i in range(11)]
VAL = ["fine film", "awful plot and acting", "it was okay I guess", "best one", "so dull"]
TRAIN_LABELS = np.array([i % 3 for i in range(11)])
VAL_LABELS = np.array([0, 1, 2, 2, 1])


@pytest.mark.parametrize("scope", ["head", "ffn:1"])
@pytest.mark.parametrize("hurt_from", ["wrong", "any"])
def test_top_influences_match_brute_force(
    tiny_model_dir: Path, tokenizer: Any, tmp_path: Path, scope: str, hurt_from: str
) -> None:
    torch.manual_seed(1)
    encoder = transformers.AutoModel.from_pretrained(str(tiny_model_dir))
    model = TodClassifier(encoder, 3, scope=Scope.parse(scope), keep_prob=0.5, mask_seed=9).eval()
    with torch.no_grad():
        model.classifier.weight.mul_(4.0)
    keys = np.array([key_from_id(f"t{i}") for i in range(len(TRAIN))], dtype=np.int64)
    val = encode_texts(tokenizer, VAL, None, 16)
    predicted = np.array([1, 1, 0, 2, 1])  # rows 0, 2 wrong; rows 1, 3, 4 right
    k = 3
    hurt, helped = top_influences(
        model,
        keys,
        TRAIN_LABELS,
        val,
        VAL_LABELS,
        predicted,
        k=k,
        hurt_from=hurt_from,
        device="cpu",
        config=ScoreConfig(influence_method="turn-over"),
    )
    influence(model, keys, val, VAL_LABELS, matrix_path=tmp_path / "m.npy")
    matrix = np.load(tmp_path / "m.npy")  # [N, V]
    for v in range(len(VAL)):
        column = matrix[:, v]
        if hurt_from == "any":
            allowed = np.ones(len(TRAIN), dtype=bool)
        elif predicted[v] != VAL_LABELS[v]:
            allowed = predicted[v] == TRAIN_LABELS
        else:
            allowed = VAL_LABELS[v] != TRAIN_LABELS
        candidates = np.flatnonzero(allowed)
        expected_hurt = candidates[np.argsort(column[candidates], kind="stable")][:k]
        expected_help = np.argsort(-column, kind="stable")[:k]
        assert set(hurt.rows[v][hurt.rows[v] >= 0]) == set(expected_hurt)
        np.testing.assert_allclose(
            hurt.values[v][: len(expected_hurt)], np.sort(column[expected_hurt]), atol=1e-6
        )
        assert set(helped.rows[v]) == set(expected_help)
        np.testing.assert_allclose(helped.values[v], -np.sort(-column[expected_help]), atol=1e-6)
        assert np.all(np.diff(helped.values[v]) <= 0)  # most helpful first


@pytest.fixture(scope="module")
def explained_run(tmp_path_factory: pytest.TempPathFactory, model_args: list[str]) -> SimpleNamespace:  # noqa: F811
    folder = tmp_path_factory.mktemp("explain")
    train = write_rows(folder / "train.jsonl", make_rows(14))
    rows = make_rows(6, offset=30, id_prefix="v")
    rows += [
        dict(r, id=r["id"] + "x", label="negative" if r["label"] == "positive" else "positive") for r in rows
    ]
    val = write_rows(folder / "val.jsonl", rows)  # each text twice, with both labels: some rows are wrong
    run = train_run(folder, train, model_args, "--id-col", "id")
    return SimpleNamespace(folder=folder, train=train, val=val, run=run, val_rows=rows)


def test_explain_writes_hurt_and_helped_per_row(explained_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "explained.jsonl"
    result = ok(
        invoke("explain", "--run", explained_run.run, "--val", explained_run.val, "-k", "2", "--out", out)
    )
    assert "accuracy" in result.stderr
    frame = pd.read_json(out, lines=True)
    assert set(frame.val_row) == set(range(len(explained_run.val_rows)))
    assert frame.groupby(["val_row", "kind"]).size().eq(2).all()
    train_ids = {r["id"] for r in make_rows(14)}
    assert set(frame.train_id) <= train_ids
    for (_, kind), group in frame.groupby(["val_row", "kind"]):
        values = group.sort_values("rank").influence.to_numpy()
        assert np.all(np.diff(values) >= 0) if kind == "hurt" else np.all(np.diff(values) <= 0)
    hurt = frame[frame.kind == "hurt"]
    wrong = hurt[hurt.val_label != hurt.val_pred]
    assert (wrong.train_label == wrong.val_pred).all()  # harmful rows carry the wrong prediction's label
    right = hurt[hurt.val_label == hurt.val_pred]
    assert (right.train_label != right.val_label).all()


def test_explain_errors_only_index_and_id(explained_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "errors.csv"
    ok(
        invoke(
            "explain",
            "--run",
            explained_run.run,
            "--val",
            explained_run.val,
            "--errors-only",
            "-o",
            out,
            "-q",
        )
    )
    errors = pd.read_csv(out)
    assert len(errors) > 0 and (errors.val_label != errors.val_pred).all()
    one = tmp_path / "one.csv"
    ok(
        invoke(
            "explain", "--run", explained_run.run, "--val", explained_run.val, "--index", "3", "-o", one, "-q"
        )
    )
    assert set(pd.read_csv(one).val_row) == {3}
    by_id = tmp_path / "by_id.parquet"
    ok(
        invoke(
            "explain",
            "--run",
            explained_run.run,
            "--val",
            explained_run.val,
            "--id",
            "v032",
            "-o",
            by_id,
            "-q",
        )
    )
    frame = pd.read_parquet(by_id)
    assert set(frame.val_id) == {"v032"} and set(frame.val_row) == {2}


def test_explain_bad_input(explained_run: SimpleNamespace, tmp_path: Path) -> None:
    out = tmp_path / "x.csv"
    run, val = explained_run.run, explained_run.val
    user_error(
        invoke("explain", "--run", run, "--val", val, "--index", "99", "-o", out), "--index 99", absent=(out,)
    )
    user_error(
        invoke("explain", "--run", run, "--val", val, "--id", "nope", "-o", out), "'nope'", absent=(out,)
    )
    odd = write_rows(tmp_path / "odd.jsonl", [{"id": "q1", "text": "meh", "label": "neutral"}])
    user_error(invoke("explain", "--run", run, "--val", odd, "-o", out), "'neutral'", "row 0", absent=(out,))
    user_error(invoke("explain", "--run", run, "--val", val, "-k", "0", "-o", out), "--top", absent=(out,))
    user_error(
        invoke("explain", "--run", tmp_path, "--val", val, "-o", out), "not a tod-clean run", absent=(out,)
    )


def test_explain_html_page_of_text_rows(explained_run: SimpleNamespace, tmp_path: Path) -> None:
    """--html: one self-contained page, a card per explained row with its training rows as a table (no
    pictures for texts), the terminal and --out as without it."""
    from tests.report.test_render import TagCollector

    run, val = explained_run.run, explained_run.val
    page, out = tmp_path / "explained.html", tmp_path / "explained.csv"
    plain = ok(invoke("explain", "--run", run, "--val", val, "-k", "2", "--out", tmp_path / "plain.csv"))
    result = ok(invoke("explain", "--run", run, "--val", val, "-k", "2", "--out", out, "--html", page))
    assert result.stderr.replace(str(out), "") == plain.stderr.replace(str(tmp_path / "plain.csv"), "")
    assert out.read_bytes() == (tmp_path / "plain.csv").read_bytes()
    html = page.read_text(encoding="utf-8")
    parser = TagCollector()
    parser.feed(html)
    assert parser.sources == [] and not {"script", "link", "img"} & set(parser.tags)
    assert "http://" not in html and "https://" not in html
    frame = pd.read_csv(out)
    assert html.count('<section class="card">') == frame.val_row.nunique() == len(explained_run.val_rows)
    assert html.count('<table class="explained">') == len(explained_run.val_rows)
    first = frame[frame.val_row == 0]
    assert f"validation id {first.val_id.iloc[0]}: label {first.val_label.iloc[0]}" in html
    assert all(f">{text}<" in html for text in first.train_text)
    accuracy = float(result.stderr.split("accuracy ")[1].split()[0])
    assert f"Full network: accuracy {accuracy:.3f} on {len(explained_run.val_rows)} validation rows" in html


def test_explain_html_refused_before_any_work(explained_run: SimpleNamespace, tmp_path: Path) -> None:
    run, val = explained_run.run, explained_run.val
    text = tmp_path / "page.txt"
    user_error(invoke("explain", "--run", run, "--val", val, "--html", text), "HTML page", absent=(text,))
    user_error(
        invoke("explain", "--run", run, "--val", val, "--html", tmp_path / "no" / "p.html"), "does not exist"
    )
    before = val.read_bytes()
    user_error(invoke("explain", "--run", run, "--val", val, "--html", val), "--html")
    assert val.read_bytes() == before
    same = tmp_path / "same.html"
    user_error(
        invoke("explain", "--run", run, "--val", val, "--html", same, "--out", same), "--out", absent=(same,)
    )


def test_explain_of_a_run_without_masks_needs_an_estimator_without_them(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
) -> None:
    """turn-over dropout's estimate needs masks: refused on a none run; the default (gauss-newton) explains."""
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    run = train_run(tmp_path, train, model_args, "--scope", "none")
    out = tmp_path / "x.csv"
    refused = invoke("explain", "--run", run, "--val", train, "--influence", "turn-over", "-o", out)
    user_error(refused, "scope 'none'", "--influence turn-over", absent=(out,))
    ok(invoke("explain", "--run", run, "--val", train, "-o", out, "-q"))
    assert len(pd.read_csv(out)) > 0
    config = json.loads((run / "config.json").read_text())
    assert config["masks"]["scope"] == "none"


def test_explain_shows_both_texts_of_sentence_pairs(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    """The second text of each pair is in the -o file, in the terminal and in the report's explanations."""
    from tod_clean.report.render import explained_views

    train_rows = [dict(r, second=f"zebra{i}") for i, r in enumerate(make_rows(10))]
    train = write_rows(tmp_path / "train.jsonl", train_rows)
    val_rows = [dict(r, second=f"walrus{i}") for i, r in enumerate(make_rows(3, offset=30, id_prefix="v"))]
    val = write_rows(tmp_path / "val.jsonl", val_rows)
    run = train_run(tmp_path, train, model_args, "--text-pair-col", "second", "--id-col", "id")
    out = tmp_path / "explained.jsonl"
    result = ok(invoke("explain", "--run", run, "--val", val, "-k", "2", "--out", out, "--show", "3"))
    frame = pd.read_json(out, lines=True)
    columns = list(frame.columns)
    assert columns.index("train_text_pair") == columns.index("train_text") + 1
    assert columns.index("val_text_pair") == columns.index("val_text") + 1
    assert (frame.train_text_pair == [train_rows[i]["second"] for i in frame.train_row]).all()
    assert (frame.val_text_pair == [val_rows[i]["second"] for i in frame.val_row]).all()
    terminal = result.stderr
    assert all(f"walrus{i}" in terminal for i in range(3))
    assert all(f"zebra{i}" in terminal for i in set(frame.train_row))
    views = explained_views(frame)
    assert views[0].text == f"{val_rows[0]['text']} ‖ walrus0"
    row = frame.iloc[0]
    assert views[0].neighbours[0].text == f"{row.train_text} ‖ {row.train_text_pair}"
    # without pairs the frame has no pair columns
    plain = explained_views(frame.drop(columns=["train_text_pair", "val_text_pair"]))
    assert plain[0].text == val_rows[0]["text"]
