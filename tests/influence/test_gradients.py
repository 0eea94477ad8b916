"""Projected per-row gradients and the Gauss-Newton preconditioner, against naive per-row loops."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.cli.conftest import invoke, model_args, ok, train_run  # noqa: F401 (fixture)
from tests.conftest import make_rows, random_batch, tiny_encoder, write_rows
from tod_clean import score as score_module
from tod_clean.encoding import encode_texts
from tod_clean.influence.gradients import (
    DEFAULT_DAMPING,
    TOP_BLOCKS_READ,
    ProjectedGradients,
    _grads_enabled,
    layer_moments,
    linear_layers,
    precondition,
)
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.rundir import RunDir
from tod_clean.scopes import Scope


def _model(arch: str = "bert") -> TodClassifier:
    encoder = tiny_encoder(arch, dropout=0.0)
    # keep_prob 0.3: the full network must not depend on it (no instance mask in these gradients)
    return TodClassifier(encoder, 3, scope=Scope.parse("head"), keep_prob=0.3, mask_seed=4).eval()


def _naive(
    model: TodClassifier, gradients: ProjectedGradients, batch: dict, labels: torch.Tensor
) -> torch.Tensor:
    """One backward pass per row: every layer's full weight gradient, projected as the docstring says."""
    rows = []
    for r in range(len(labels)):
        single = {name: value[r : r + 1] for name, value in batch.items()}
        model.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(single), labels[r : r + 1], reduction="sum")
        weights = [layer.module.weight for layer in gradients.layers]
        grads = torch.autograd.grad(loss, weights)
        parts = []
        for layer, grad in zip(gradients.layers, grads, strict=True):
            full = grad.double()  # [out, in]
            if layer.project_out is not None:
                full = layer.project_out.double().T @ full
            if layer.project_in is not None:
                full = full @ layer.project_in.double()
            parts.append(full.reshape(-1))
        rows.append(torch.cat(parts))
    return torch.stack(rows)


def test_projected_gradients_match_a_per_row_loop() -> None:
    model = _model()
    batch = random_batch(4, 9, seed=3)
    labels = torch.tensor([0, 2, 1, 2])
    gradients = ProjectedGradients(model, model, batch, labels, k=5)
    # every linear layer on the path (the tiny BERT's pooler is unused by the classifier)
    assert len(gradients.layers) == 2 * 6 + 2
    assert all(
        "pooler" not in name
        for name, m in model.named_modules()
        for layer in gradients.layers
        if m is layer.module
    )
    batched = gradients(batch, labels).double()
    naive = _naive(model, gradients, batch, labels)
    assert batched.shape == naive.shape == (4, gradients.width)
    torch.testing.assert_close(batched, naive, rtol=1e-4, atol=1e-6)


def test_top_blocks_read_the_top_half_and_the_head_with_the_rest_frozen() -> None:
    """The estimators read the top half of the blocks (here 1 of 2) and the head; with only those layers'
    parameters requiring gradients (the forward records no graph below them) the batched gradients still
    match the per-row loop run with every parameter requiring them."""
    model = _model()
    names = {m: name for name, m in model.named_modules()}
    read = [names[m] for m in linear_layers(model, TOP_BLOCKS_READ)]
    assert read == [
        n for n in names.values() if ".layer.1." in n and isinstance(model.get_submodule(n), torch.nn.Linear)
    ] + [
        "head_dense",
        "classifier",
    ]
    assert len(linear_layers(model, 0.3)) == len(read)  # rounded up: 1 block of 2
    # all blocks: each block's layers and the head's, not the encoder's others (the unused pooler)
    assert len(linear_layers(model, 1.0)) == 2 * 6 + 2
    assert len(linear_layers(model)) == 2 * 6 + 1 + 2
    batch = random_batch(4, 9, seed=3)
    labels = torch.tensor([0, 2, 1, 2])
    flags = _grads_enabled(model, linear_layers(model, TOP_BLOCKS_READ))
    try:
        assert not model.encoder.embeddings.word_embeddings.weight.requires_grad
        gradients = ProjectedGradients(model, model, batch, labels, k=5, top_blocks=TOP_BLOCKS_READ)
        assert len(gradients.layers) == 6 + 2
        batched = gradients(batch, labels).double()
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    naive = _naive(model, gradients, batch, labels)
    torch.testing.assert_close(batched, naive, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["deberta-v2", "deberta-v3"])
def test_layers_called_on_shared_positions_are_left_out(arch: str) -> None:
    """DeBERTa projects its relative-position embeddings (shared by the batch) with position projections
    (v2) or with the query and key layers themselves (v3, share_att_key): no per-row gradient at those
    outputs, so those layers are left out, and the others match the per-row loop."""
    model = _model(arch)
    batch = random_batch(4, 9, seed=3)
    labels = torch.tensor([0, 2, 1, 2])
    gradients = ProjectedGradients(model, model, batch, labels, k=5)
    names = {m: name for name, m in model.named_modules()}
    kept = [names[layer.module] for layer in gradients.layers]
    shared = ("pos_key_proj", "pos_query_proj") if arch == "deberta-v2" else ("query_proj", "key_proj")
    assert any(name.endswith(shared) for name in names.values())  # the model has them
    assert not [name for name in kept if name.endswith(shared)]
    assert any(name.endswith("value_proj") for name in kept)
    batched = gradients(batch, labels).double()
    naive = _naive(model, gradients, batch, labels)
    torch.testing.assert_close(batched, naive, rtol=1e-4, atol=1e-6)


def test_a_side_narrower_than_k_is_kept_whole() -> None:
    model = _model()
    batch = random_batch(2, 7, seed=5)
    labels = torch.tensor([1, 0])
    gradients = ProjectedGradients(model, model, batch, labels, k=8)
    classifier = next(layer for layer in gradients.layers if layer.module is model.classifier)
    assert classifier.project_out is None  # 3 classes < k
    assert classifier.stop - classifier.start == 3 * 8


def test_precondition_solves_each_layer_block_against_a_naive_inverse() -> None:
    model = _model()
    batch = random_batch(6, 9, seed=7)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    gradients = ProjectedGradients(model, model, batch, labels, k=3)
    train = gradients(batch, labels)
    moments, count = layer_moments(iter([train[:4], train[4:]]), gradients.layers)
    assert count == 6
    values = torch.randn(2, gradients.width, generator=torch.Generator().manual_seed(0))
    damping = 0.37
    out = precondition(values, moments, count, gradients.layers, damping).double()
    for layer in gradients.layers:
        block = train[:, layer.start : layer.stop].double()
        mean = sum(torch.outer(row, row) for row in block) / 6
        lam = damping * torch.trace(mean) / len(mean)
        expected = values[:, layer.start : layer.stop].double() @ torch.linalg.inv(
            mean + lam * torch.eye(len(mean), dtype=torch.float64)
        )
        torch.testing.assert_close(out[:, layer.start : layer.stop], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("scope", "method", "kept"),
    [
        ("head", "gauss-newton", True),
        ("head", "gauss-newton", False),  # the training rows' gradients recomputed for the scoring
        ("none", "gauss-newton", True),
        ("head", "gradient", False),
    ],
)
def test_gradient_estimators_score_a_run_as_a_naive_loop_does(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    scope: str,
    method: str,
    kept: bool,
) -> None:
    if not kept:
        monkeypatch.setattr("tod_clean.influence.gradients.CACHE_BUDGETS", 0)
    train_rows, val_rows = make_rows(9), make_rows(4, offset=20)
    train = write_rows(tmp_path / "train.jsonl", train_rows)
    val = write_rows(tmp_path / "val.jsonl", val_rows)
    masks = ["--keep-prob", "0.3"] if scope != "none" else []  # the full network must not depend on it
    run = train_run(tmp_path, train, model_args, "--scope", scope, *masks)
    matrix_path = tmp_path / "matrix.npy"
    ok(
        invoke(
            "score",
            "--run",
            run,
            "--val",
            val,
            "--influence",
            method,
            "--matrix",
            matrix_path,
            "--quiet",
        )
    )
    assert json.loads((run / "scores.json").read_text())["influence_method"] == method

    folder = RunDir(run)
    info = folder.read_complete_info()
    model = folder.load_model(info).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    tokenizer = folder.load_tokenizer()

    def encoded(rows: list[dict[str, str]]) -> tuple[dict, torch.Tensor]:
        batch = encode_texts(tokenizer, [row["text"] for row in rows], None, info.train.max_length)
        labels = torch.tensor([info.labels.index(row["label"]) for row in rows])
        return batch.batch(np.arange(len(rows))), labels

    train_batch, train_labels = encoded(train_rows)
    val_batch, val_labels = encoded(val_rows)
    probe = {name: value[:4] for name, value in train_batch.items()}
    gradients = ProjectedGradients(model, model, probe, train_labels[:4], top_blocks=TOP_BLOCKS_READ)
    g_train = _naive(model, gradients, train_batch, train_labels)
    g_val = _naive(model, gradients, val_batch, val_labels)
    expected = torch.zeros(len(train_rows), len(val_rows), dtype=torch.float64)
    for layer in gradients.layers:
        a, b = g_train[:, layer.start : layer.stop], g_val[:, layer.start : layer.stop]
        if method == "gradient":
            expected += a @ b.T
            continue
        mean = a.T @ a / len(a)
        lam = DEFAULT_DAMPING * torch.trace(mean) / len(mean)
        expected += a @ torch.linalg.inv(mean + lam * torch.eye(len(mean), dtype=torch.float64)) @ b.T
    if method == "gauss-newton":
        expected /= len(train_rows)
    matrix = torch.from_numpy(np.load(matrix_path)).double()
    scale = expected.abs().max()
    torch.testing.assert_close(matrix / scale, expected / scale, rtol=0, atol=2e-4)
    influence = pd.read_parquet(run / "scores.parquet")["influence"].to_numpy()
    np.testing.assert_allclose(influence, expected.mean(1).numpy(), rtol=0, atol=2e-4 * float(scale))


def test_ekfac_is_refused_with_a_shard(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
) -> None:
    """EK-FAC's factors are fitted by kronfluence in one process: a shard is refused before any work."""
    train = write_rows(tmp_path / "train.jsonl", make_rows(6))
    val = write_rows(tmp_path / "val.jsonl", make_rows(3, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "head")
    out = tmp_path / "part.parquet"
    result = invoke("score", "--run", run, "--val", val, "--influence", "ekfac", "--shard", "1/2", "-o", out)
    assert result.exit_code != 0
    assert "--influence ekfac fits its preconditioner on every training row" in result.output
    assert not out.exists()


@pytest.mark.parametrize("method", ["gradient", "gauss-newton", "ekfac"])
def test_explain_ranks_by_the_influence_score_writes(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
    method: str,
) -> None:
    """explain's most hurtful and most helpful training rows of each validation row are the extremes of
    the matrix ``score --matrix`` writes with the same estimator."""
    if method == "ekfac":
        pytest.importorskip("kronfluence")
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    val = write_rows(tmp_path / "val.jsonl", make_rows(3, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "head")
    matrix_path = tmp_path / "pairs.npy"
    ok(invoke("score", "--run", run, "--val", val, "--influence", method, "--matrix", matrix_path, "-q"))
    matrix = np.load(matrix_path)
    explained = tmp_path / "explained.csv"
    options = ["--influence", method, "--hurt-from", "any", "-k", "2", "-o", explained, "-q"]
    ok(invoke("explain", "--run", run, "--val", val, *options))
    frame = pd.read_csv(explained)
    for val_row in range(3):
        column = matrix[:, val_row]
        for kind, order in (
            ("hurt", np.argsort(column, kind="stable")),
            ("helped", np.argsort(-column, kind="stable")),
        ):
            rows = frame[(frame["val_row"] == val_row) & (frame["kind"] == kind)].sort_values("rank")
            assert rows["train_row"].tolist() == order[:2].tolist(), (method, val_row, kind)
            np.testing.assert_allclose(rows["influence"], column[order[:2]], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["gradient", "gauss-newton", "auto"])
def test_each_shard_scores_its_rows_as_the_whole_run_does(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
    method: str,
) -> None:
    """A shard's rows get the values they get when all rows are scored in one process: ``gradient`` needs
    no other row; ``gauss-newton`` (and ``auto``, which is it) fits its preconditioner on the other
    shards' rows too. Three shards, so the middle one has rows on both sides."""
    train = write_rows(tmp_path / "train.jsonl", make_rows(12))
    val = write_rows(tmp_path / "val.jsonl", make_rows(3, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "head", "--keep-prob", "0.7")
    whole = tmp_path / "whole.parquet"
    ok(invoke("score", "--run", run, "--val", val, "--influence", method, "-o", whole, "--quiet"))
    expected = pd.read_parquet(whole).set_index("row")["influence"]
    parts = []
    for shard in ("0/3", "1/3", "2/3"):
        part = tmp_path / f"part-{shard[0]}.parquet"
        ok(
            invoke(
                "score",
                "--run",
                run,
                "--val",
                val,
                "--influence",
                method,
                "--shard",
                shard,
                "-o",
                part,
                "--quiet",
            )
        )
        parts.append(pd.read_parquet(part).set_index("row")["influence"])
    merged = pd.concat(parts)
    assert sorted(merged.index) == sorted(expected.index)
    scale = float(expected.abs().max())
    assert scale > 0
    np.testing.assert_allclose(merged.loc[expected.index], expected, rtol=0, atol=1e-5 * scale)
    if method != "gradient":
        # not vacuous: the middle shard with a preconditioner of its own rows only scores them otherwise
        own_only = tmp_path / "own-only.parquet"
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(score_module, "_other_rows", lambda *args: [])
            ok(
                invoke(
                    "score",
                    "--run",
                    run,
                    "--val",
                    val,
                    "--influence",
                    method,
                    "--shard",
                    "1/3",
                    "-o",
                    own_only,
                    "-q",
                )
            )
        alone = pd.read_parquet(own_only).set_index("row")["influence"]
        assert np.abs(alone - expected.loc[alone.index]).max() > 1e-3 * scale
