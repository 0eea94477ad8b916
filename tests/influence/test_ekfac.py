"""``--influence ekfac`` (kronfluence): its plumbing against a naive per-pair loop, end to end, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from tests.cli.conftest import invoke, model_args, ok, train_run  # noqa: F401 (fixture)
from tests.conftest import make_rows, tiny_encoder, write_rows
from tod_clean.encoding import EncodedRows
from tod_clean.influence.base import InfluenceTask
from tod_clean.influence.ekfac import EkfacInfluence, tracked_modules
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import Scope

pytest.importorskip("kronfluence")


class _Identity(EkfacInfluence):
    """The same plumbing with kronfluence's identity preconditioner: influence = g_z . g_i / N exactly
    (not registered: no ``name`` of its own)."""

    strategy = "identity"


def _rows(count: int, seed: int) -> EncodedRows:
    """Rows of ragged lengths (2..7 tokens), so batches pad and the length order differs from row order."""
    rng = np.random.default_rng(seed)
    ids = [list(rng.integers(3, 100, size=int(rng.integers(2, 8)))) for _ in range(count)]
    return EncodedRows.from_lists(ids, None, pad_id=0)


def _naive_influence(model: TodClassifier, train: EncodedRows, train_labels, val: EncodedRows, val_labels):
    """One backward pass per row (a batch of one: no padding), the gradients of every tracked layer's
    weight and bias flattened; influence = g_z . g_i / N."""
    probe = train.batch(np.arange(4))
    names = tracked_modules(model, probe, torch.as_tensor(train_labels[:4]))
    modules = dict(model.named_modules())
    parameters = [p for name in names for p in (modules[name].weight, modules[name].bias) if p is not None]
    for parameter in model.parameters():
        parameter.requires_grad_(True)

    def gradient(rows: EncodedRows, labels: np.ndarray, index: int) -> torch.Tensor:
        logits = model(rows.batch([index]))
        loss = torch.nn.functional.cross_entropy(
            logits, torch.as_tensor(labels[index : index + 1]), reduction="sum"
        )
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, parameters)]).double()

    g_train = torch.stack([gradient(train, train_labels, i) for i in range(len(train))])
    g_val = torch.stack([gradient(val, val_labels, v) for v in range(len(val))])
    return names, (g_train @ g_val.T / len(train)).numpy()


@pytest.mark.parametrize("chunk_mib", [64.0, 0.00002])  # one block; several blocks and rank-32 queries
def test_ekfac_plumbing_matches_a_naive_loop(chunk_mib: float) -> None:
    encoder = tiny_encoder("bert", dropout=0.0)
    # keep_prob 0.3: the full network must not depend on it (these gradients carry no instance mask)
    model = TodClassifier(encoder, 3, scope=Scope.parse("head"), keep_prob=0.3, mask_seed=4).eval()
    train, val = _rows(11, seed=1), _rows(5, seed=2)
    train_labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1])
    val_labels = np.array([2, 0, 1, 1, 0])
    task = InfluenceTask(
        model,
        np.arange(len(train)),
        val,
        val_labels,
        torch.device("cpu"),
        batch_size=3,
        chunk_mib=chunk_mib,
        train_rows=lambda: train,
        train_labels=train_labels,
    )
    blocks = list(_Identity().blocks(task))
    if chunk_mib < 1:
        assert len(blocks) > 1
    matrix = np.zeros((len(train), len(val)))
    for block in blocks:
        matrix[block.train_start : block.train_start + len(block.values)][:, block.val_index] = (
            block.values.numpy()
        )
    names, expected = _naive_influence(model, train, train_labels, val, val_labels)
    assert len(names) == 2 * 6 + 2  # every linear layer on the path (the tiny BERT's pooler is unused)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(matrix / scale, expected / scale, rtol=0, atol=1e-4)
    # the run's model is untouched: kronfluence wrapped a copy
    assert all(type(m).__module__.startswith(("torch", "transformers", "tod_clean")) for m in model.modules())


def test_score_with_ekfac_writes_influence_and_matrix(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
) -> None:
    train_rows, val_rows = make_rows(9), make_rows(4, offset=20)
    train = write_rows(tmp_path / "train.jsonl", train_rows)
    val = write_rows(tmp_path / "val.jsonl", val_rows)
    run = train_run(tmp_path, train, model_args, "--scope", "head", "--keep-prob", "0.3")
    matrix_path = tmp_path / "matrix.npy"
    ok(
        invoke(
            "score", "--run", run, "--val", val, "--influence", "ekfac", "--matrix", matrix_path, "--quiet"
        )
    )
    assert json.loads((run / "scores.json").read_text())["influence_method"] == "ekfac"
    matrix = np.load(matrix_path)
    assert matrix.shape == (9, 4) and np.isfinite(matrix).all() and np.abs(matrix).max() > 0
    influence = pd.read_parquet(run / "scores.parquet")["influence"].to_numpy()
    np.testing.assert_allclose(influence, matrix.mean(1), rtol=1e-5, atol=1e-9)
    # a row's influence on itself as a validation row is its own (positive) squared-gradient term
    ok(
        invoke(
            "score",
            "--run",
            run,
            "--val",
            train,
            "--influence",
            "ekfac",
            "--matrix",
            matrix_path,
            "--quiet",
            "--overwrite",
        )
    )
    own = np.load(matrix_path)
    assert (np.diag(own) > 0).all()


def test_ekfac_is_refused_with_a_shard_and_without_kronfluence(
    tmp_path: Path,
    model_args: list[str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    train = write_rows(tmp_path / "train.jsonl", make_rows(6))
    val = write_rows(tmp_path / "val.jsonl", make_rows(3, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "head")
    out = tmp_path / "part.parquet"
    result = invoke("score", "--run", run, "--val", val, "--influence", "ekfac", "--shard", "1/2", "-o", out)
    assert result.exit_code != 0
    assert "--influence ekfac fits its preconditioner on every training row" in result.output
    assert not out.exists()
    import builtins

    real_import = builtins.__import__

    def no_kronfluence(name: str, *args, **kwargs):
        if name.startswith("kronfluence"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kronfluence)
    out = tmp_path / "scores.csv"
    result = invoke("score", "--run", run, "--val", val, "--influence", "ekfac", "-o", out)
    assert result.exit_code != 0
    assert (
        "influence method 'ekfac' needs kronfluence, which is not installed (pip install 'tod-clean[ekfac]')"
        in result.output
    )
    assert not out.exists()


def test_ekfac_scores_repeat_whatever_ran_before(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    """The factors are fitted on labels sampled from the model, from a generator of their own: scoring
    twice gives the same matrix even when the global random state differs."""
    train = write_rows(tmp_path / "train.jsonl", make_rows(8))
    val = write_rows(tmp_path / "val.jsonl", make_rows(3, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "head")
    matrices = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        path = tmp_path / f"m{seed}.npy"
        ok(
            invoke(
                "score",
                "--run",
                run,
                "--val",
                val,
                "--influence",
                "ekfac",
                "--matrix",
                path,
                "-q",
                "--overwrite",
            )
        )
        matrices.append(np.load(path))
    np.testing.assert_array_equal(matrices[0], matrices[1])
    assert np.abs(matrices[0]).max() > 0
