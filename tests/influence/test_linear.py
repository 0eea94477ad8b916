"""The linearized influence path (``method="linear"``) against references computed another way.

- a naive first-order estimate per (training key, validation row) pair: the directional derivative
  d/dt L(1 + t * delta_i) at t = 0, with the multipliers placed by this test's own hooks on the modules
  (layer outputs, feed-forward inputs, LoRA ``A`` outputs, the classifier's input) and delta_i read off
  ``apply_mask`` as (hidden multipliers - exposed multipliers), one forward and backward per pair;
- the exact pair path (``naive_pairs``) on models where the masked units barely move the loss, so the
  first-order estimate must approach the exact value as the perturbation shrinks;
- block bounds and coverage, and the CLI option with the method recorded in scores.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import transformers
from torch import nn

from tests.cli.conftest import invoke, model_args, ok, train_run, user_error  # noqa: F401 (fixture)
from tests.conftest import make_rows, write_rows
from tests.influence.test_exact import NUM_LABELS, TRAIN_KEYS, VAL_LABELS, encoded, naive_pairs  # noqa: F401
from tod_clean.config import ScoreConfig, TrainConfig
from tod_clean.encoding import EncodedRows
from tod_clean.errors import ConfigError
from tod_clean.influence.base import resolve_influence_method
from tod_clean.influence.gather import influence
from tod_clean.influence.linear import linear_influence_blocks
from tod_clean.masks import MaskMode, apply_mask, instance_masks
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.modeling.loading import build_classifier

SCOPES = ["head", "layers:1", "layers:2", "ffn:1", "ffn:2", "lora"]
AUTO_LINEAR = [
    "ffn:1",
    "ffn:2",
    "lora",
]  # scopes ``turn-over`` computes linearly at keep probability 0.5 (BENCHMARKS.md section 6)


def make_model(model_dir: Path, scope: str, keep_prob: float, *, scale: float = 1.0) -> TodClassifier:
    """A classifier on the tiny BERT. ``scale`` < 1 shrinks what the masked units add to the loss (the
    classifier, the feed-forward output projections and the LoRA ``B`` weights), making the network
    nearly linear in the unit multipliers."""
    torch.manual_seed(5)
    encoder = transformers.AutoModel.from_pretrained(str(model_dir))
    config = TrainConfig(scope=scope, keep_prob=keep_prob, mask_seed=21, lora_rank=4)
    model = build_classifier(encoder, config, NUM_LABELS)
    with torch.no_grad():
        model.classifier.weight.mul_(4.0 * scale)
        for name, parameter in model.encoder.named_parameters():
            if ".lora_B." in name:  # peft starts B at zero: adapters (and their masks) would do nothing
                parameter.normal_(0.0, 0.5).mul_(scale)
            if scope.startswith("ffn") and ".output.dense.weight" in name and "attention" not in name:
                parameter.mul_(scale)
    return model.eval()


def _site_modules(model: TodClassifier) -> list[tuple[nn.Module, int, str]]:
    """(module, mask site, "output" | "input") where this test puts each site's multipliers."""
    layers = model.encoder.encoder.layer
    kind = model.scope.kind
    found: list[tuple[nn.Module, int, str]] = [(model.classifier, 0, "input")]
    if kind == "layers":
        found += [(layers[i], 1000 + i, "output") for i in model.masked_layers]
    elif kind == "ffn":
        found += [(layers[i].output.dense, 2000 + i, "input") for i in model.masked_layers]
    elif kind == "lora":
        adapters = [m for name, m in model.encoder.named_modules() if name.endswith("lora_A.default")]
        found += [(module, 3000 + index, "output") for index, module in enumerate(adapters)]
    return found


def naive_first_order(
    model: TodClassifier, keys: np.ndarray, val: EncodedRows, labels: np.ndarray
) -> np.ndarray:
    """d/dt L(full network with multipliers 1 + t * delta_i, z_v) at t = 0 for every key i and row v."""
    p = model.keep_prob
    sites = _site_modules(model)
    matrix = np.zeros((len(keys), len(val)))
    for i, key in enumerate(keys):
        deltas = {}
        for module, site, where in sites:
            if where == "input":  # the classifier's head units, a feed-forward projection's inputs
                units = module.in_features
            elif isinstance(module, nn.Linear):  # a LoRA A: its rank units
                units = module.out_features
            else:  # a transformer layer: its hidden dimensions
                units = model.encoder.config.hidden_size
            exposed = instance_masks(21, torch.tensor([int(key)]), site, units, p)
            ones = torch.ones(1, units)
            hidden = apply_mask(ones, exposed, MaskMode.HIDDEN, p)
            deltas[site] = (hidden - apply_mask(ones, exposed, MaskMode.EXPOSED, p))[0]
        for v in range(len(val)):
            t = torch.zeros((), requires_grad=True)
            handles = []
            for module, site, where in sites:
                factor = 1.0 + t * deltas[site]
                if where == "input":
                    handles.append(module.register_forward_pre_hook(lambda m, a, f=factor: (a[0] * f,)))
                else:
                    handles.append(module.register_forward_hook(lambda m, a, out, f=factor: _scaled(out, f)))
            try:
                logits = model(val.batch([v]))
                loss = nn.functional.cross_entropy(logits, torch.tensor([int(labels[v])]))
                (grad,) = torch.autograd.grad(loss, t)
            finally:
                for handle in handles:
                    handle.remove()
            matrix[i, v] = grad.item()
    return matrix


def _scaled(output: Any, factor: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (output[0] * factor,) + tuple(output[1:])
    return output * factor


@pytest.mark.parametrize("keep_prob", [0.3, 0.7])
@pytest.mark.parametrize("scope", SCOPES)
def test_linear_equals_naive_first_order(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
    scope: str,
    keep_prob: float,
    tmp_path: Path,
) -> None:
    model = make_model(tiny_model_dir, scope, keep_prob)
    _, val = encoded
    expected = naive_first_order(model, TRAIN_KEYS, val, VAL_LABELS)
    matrix_path = tmp_path / "pairs.npy"
    mean = influence(
        model, TRAIN_KEYS, val, VAL_LABELS, method="linear", matrix_path=matrix_path, batch_size=3
    )
    matrix = np.load(matrix_path)
    assert np.abs(expected).max() > 1e-2  # not vacuous: the units matter
    np.testing.assert_allclose(matrix, expected, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(mean, expected.mean(1), rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("scope", ["head", "ffn:2", "lora"])
def test_linear_approaches_exact_when_units_barely_matter(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
    scope: str,
) -> None:
    _, val = encoded
    errors = []
    for scale in (0.1, 0.01):
        model = make_model(tiny_model_dir, scope, 0.3, scale=scale)
        exact = naive_pairs(model, TRAIN_KEYS, val, VAL_LABELS)
        linear = np.zeros_like(exact)
        for block in linear_influence_blocks(model, TRAIN_KEYS, val, VAL_LABELS):
            linear[block.train_start : block.train_start + block.values.shape[0]][:, block.val_index] = (
                block.values.numpy()
            )
        assert np.abs(exact).max() > 1e-4
        errors.append(np.abs(linear - exact).max() / np.abs(exact).max())
    # The second-order remainder shrinks faster than the influence itself.
    assert errors[1] < 0.05, errors
    assert errors[1] < errors[0] / 3, errors


def test_linear_is_not_exact_on_an_ordinary_model(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
) -> None:
    """The estimate is an approximation: with units that matter it differs from the exact path."""
    model = make_model(tiny_model_dir, "ffn:2", 0.3)
    _, val = encoded
    exact = naive_pairs(model, TRAIN_KEYS, val, VAL_LABELS)
    linear = influence(model, TRAIN_KEYS, val, VAL_LABELS, method="linear")
    assert np.abs(linear - exact.mean(1)).max() > 1e-3


@pytest.mark.parametrize("block_shape", [None, (3, 5), (1, 1), (7, 8)])
def test_blocks_are_bounded_and_cover_every_pair_once(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
    block_shape: tuple[int, int] | None,
) -> None:
    model = make_model(tiny_model_dir, "lora", 0.3)
    _, val = encoded
    reference = influence(model, TRAIN_KEYS, val, VAL_LABELS, method="linear")
    seen = np.zeros((len(TRAIN_KEYS), len(val)), dtype=np.int64)
    totals = np.zeros(len(TRAIN_KEYS))
    for block in linear_influence_blocks(
        model, TRAIN_KEYS, val, VAL_LABELS, batch_size=2, block_shape=block_shape
    ):
        n, v = block.values.shape
        assert v == len(block.val_index) and block.values.dtype == torch.float32
        if block_shape is not None:
            assert n <= block_shape[0] and v <= block_shape[1]
        seen[block.train_start : block.train_start + n][:, block.val_index] += 1
        totals[block.train_start : block.train_start + n] += block.values.double().sum(1).numpy()
    assert (seen == 1).all()
    np.testing.assert_allclose(totals / len(val), reference, rtol=1e-5, atol=1e-6)


def test_chunk_budget_sizes_the_blocks(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
) -> None:
    model = make_model(tiny_model_dir, "ffn:2", 0.3)
    units = sum(count for _, count in model.mask_sites())  # 32 head + 2 x 37 feed-forward units
    assert units == 32 + 2 * 37
    _, val = encoded
    # A budget for two validation rows of gradients (half the budget) leaves room for few training rows.
    budget_mib = 2 * 2 * units * 4 / 2**20
    blocks = list(linear_influence_blocks(model, TRAIN_KEYS, val, VAL_LABELS, chunk_mib=budget_mib))
    assert max(len(b.val_index) for b in blocks) == 2
    assert max(b.values.shape[0] for b in blocks) < len(TRAIN_KEYS)


def test_gates_leave_the_network_unchanged(
    tiny_model_dir: Path,
    encoded: tuple[EncodedRows, EncodedRows],  # noqa: F811
) -> None:
    model = make_model(tiny_model_dir, "layers:2", 0.3)
    _, val = encoded
    batch = val.batch(list(range(len(val))))
    with torch.no_grad():
        plain = model(batch)
    with model.gating() as gates:
        gated = model(batch)
    torch.testing.assert_close(gated, plain)
    assert sorted((site, tuple(g.shape)) for site, g in gates.items()) == [
        (0, (len(val), 32)),
        (1000, (len(val), 32)),
        (1001, (len(val), 32)),
    ]
    assert all(g.requires_grad and torch.equal(g, torch.ones_like(g)) for g in gates.values())
    with torch.no_grad():  # and after the block, no gate is left behind
        assert model._state.gates is None and torch.equal(model(batch), plain)


def test_turn_over_and_auto_methods() -> None:
    from tod_clean.scopes import Scope

    assert resolve_influence_method(Scope.parse("head"), 0.5, "turn-over") == "exact"
    assert resolve_influence_method(Scope.parse("layers:2"), 0.5, "turn-over") == "exact"  # measured: < 0.9
    assert resolve_influence_method(Scope.parse("ffn:6"), 0.5, "turn-over") == "exact"  # measured: 0.27
    assert resolve_influence_method(Scope.parse("ffn:3"), 0.5, "turn-over") == "exact"  # deeper than measured
    for scope in AUTO_LINEAR:
        assert resolve_influence_method(Scope.parse(scope), 0.5, "turn-over") == "linear"
        assert resolve_influence_method(Scope.parse(scope), 0.3, "turn-over") == "exact"  # not measured
    for scope in ("head", "lora", "ffn:2", "layers:2", "none"):  # auto: the estimator measured best
        assert resolve_influence_method(Scope.parse(scope), 0.5, "auto") == "gauss-newton"
    assert ScoreConfig().influence_method == "auto"
    assert resolve_influence_method(Scope.parse("ffn:2"), 0.3, "linear") == "linear"
    assert resolve_influence_method(Scope.parse("head"), 0.5, "linear") == "linear"
    assert resolve_influence_method(Scope.parse("lora"), 0.5, "exact") == "exact"
    with pytest.raises(ConfigError, match="auto, exact, linear, turn-over, gradient, gauss-newton"):
        ScoreConfig(influence_method="fast")


def test_cli_score_records_the_method(tmp_path: Path, model_args: list[str]) -> None:  # noqa: F811
    train = write_rows(tmp_path / "train.jsonl", make_rows(12))
    val = write_rows(tmp_path / "val.jsonl", make_rows(6, offset=20))
    run = train_run(tmp_path, train, model_args, "--scope", "ffn:1")
    matrix = tmp_path / "pairs.npy"
    result = ok(invoke("score", "--run", run, "--val", val, "--influence", "linear", "--matrix", matrix))
    assert "linear influence" in result.stderr
    meta = json.loads((run / "scores.json").read_text())
    assert meta["influence_method"] == "linear"
    import pandas as pd

    linear = pd.read_parquet(run / "scores.parquet")["influence"].to_numpy()
    np.testing.assert_allclose(np.load(matrix).mean(1), linear, rtol=1e-4, atol=1e-7)
    ok(invoke("score", "--run", run, "--val", val, "--influence", "exact", "--quiet"))
    assert json.loads((run / "scores.json").read_text())["influence_method"] == "exact"
    exact = pd.read_parquet(run / "scores.parquet")["influence"].to_numpy()
    assert not np.allclose(exact, linear, rtol=1e-6, atol=0)  # two methods, two answers
    ok(invoke("score", "--run", run, "--val", val, "--influence", "turn-over", "--quiet"))  # ffn at 0.5
    assert json.loads((run / "scores.json").read_text())["influence_method"] == "linear"
    ok(invoke("score", "--run", run, "--val", val, "--quiet"))  # the default, auto: gauss-newton
    assert json.loads((run / "scores.json").read_text())["influence_method"] == "gauss-newton"
    explained = ok(invoke("explain", "--run", run, "--val", val, "--influence", "linear", "-k", "2"))
    assert "(linear influence)" in explained.stderr
    user_error(invoke("score", "--run", run, "--val", val, "--influence", "fast"), "fast", "exact")
