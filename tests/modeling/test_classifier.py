"""The classifier and its mask hooks, on tiny random encoders of every supported architecture."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tests.conftest import ARCHITECTURES, random_batch, tiny_encoder
from tod_clean.errors import ConfigError
from tod_clean.masks import MaskMode, instance_masks
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.scopes import FFN_SITE_BASE, HEAD_SITE, LAYER_SITE_BASE, Scope

HIDDEN = 32
INTERMEDIATE = 37
SCOPES = ("none", "head", "layers:1", "layers:2", "ffn:1", "ffn:2")
KEEP_PROB = 0.5
PRE_NORM = ("modernbert",)  # a LayerNorm before each sub-block and after the last layer
MASK_SEED = 13


def build(
    arch: str,
    scope: str,
    *,
    dropout: float | None = None,
    head_dim: int | None = None,
    num_labels: int = 3,
    keep_prob: float = KEEP_PROB,
) -> TodClassifier:
    encoder = tiny_encoder(arch, dropout=dropout)
    torch.manual_seed(1)
    return TodClassifier(
        encoder,
        num_labels,
        scope=Scope.parse(scope),
        keep_prob=keep_prob,
        mask_seed=MASK_SEED,
        head_dim=head_dim,
    )


def layers_of(model: TodClassifier) -> nn.ModuleList:
    """The encoder's transformer blocks, found independently of tod_clean's own search."""
    for name in ("encoder.layer", "transformer.layer", "layers"):
        try:
            return model.encoder.get_submodule(name)  # type: ignore[return-value]
        except AttributeError:
            continue
    raise AssertionError("no layer list")


def linear_by_shape(module: nn.Module, in_features: int, out_features: int) -> nn.Linear:
    found = [
        m
        for m in module.modules()
        if isinstance(m, nn.Linear) and (m.in_features, m.out_features) == (in_features, out_features)
    ]
    assert len(found) == 1, found
    return found[0]


QKV_NAMES = ("query", "key", "value", "q_lin", "k_lin", "v_lin", "query_proj", "key_proj", "value_proj")


def qkv_of(layer: nn.Module) -> list[nn.Linear]:
    """The query, key and value projections (ModernBERT: its one fused ``Wqkv``)."""
    found = [
        m
        for name, m in layer.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in QKV_NAMES + ("Wqkv",)
    ]
    assert len(found) == 3 or (len(found) == 1 and found[0].out_features == 3 * HIDDEN), found
    return found


def ffn_input_rows(layer: nn.Module) -> tuple[nn.Linear, int]:
    """The feed-forward input projection and how many of its rows feed each unit (2 in a gated block)."""
    for rows_per_unit in (1, 2):
        found = [
            m
            for m in layer.modules()
            if isinstance(m, nn.Linear)
            and (m.in_features, m.out_features) == (HIDDEN, rows_per_unit * INTERMEDIATE)
        ]
        if found:
            assert len(found) == 1, found
            return found[0], rows_per_unit
    raise AssertionError("no feed-forward input projection")


# ---- scope depth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["layers:9", "ffn:3"])
def test_scope_deeper_than_the_encoder_is_refused(scope: str) -> None:
    with pytest.raises(ConfigError, match="encoder has 2"):
        build("bert", scope)


# ---- masking state ----------------------------------------------------------------------------------


def test_instance_mask_depends_on_key_only_not_on_batch_neighbours() -> None:
    model = build("bert", "ffn:2").eval()
    batch = random_batch(4, 8)
    keys = torch.tensor([1, 2, 3, 4])
    with torch.no_grad():
        together = model(batch, keys, MaskMode.EXPOSED)
        for row in range(4):
            alone = model(
                {k: v[row : row + 1] for k, v in batch.items()}, keys[row : row + 1], MaskMode.EXPOSED
            )
            torch.testing.assert_close(alone[0], together[row], rtol=1e-5, atol=1e-6)


def test_masking_state_is_restored_after_an_error() -> None:
    model = build("bert", "head").eval()
    batch = random_batch(2, 5)
    with torch.no_grad():
        before = model(batch)
        with pytest.raises(RuntimeError), model.masking(torch.tensor([1, 2]), MaskMode.EXPOSED):
            raise RuntimeError("boom")
        assert torch.equal(model(batch), before)


# ---- lower parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "lower_layers"),
    [("head", [0, 1]), ("layers:1", [0]), ("layers:2", []), ("ffn:1", [0]), ("ffn:2", [])],
)
def test_lower_parameters(scope: str, lower_layers: list[int]) -> None:
    model = build("bert", scope)
    lower = {id(p) for p in model.lower_parameters()}
    embeddings = list(model.encoder.embeddings.parameters())
    assert embeddings and all(id(p) in lower for p in embeddings)
    for index, layer in enumerate(layers_of(model)):
        inside = [id(p) in lower for p in layer.parameters()]
        assert all(inside) if index in lower_layers else not any(inside), (scope, index)
    head = list(model.head_dense.parameters()) + list(model.classifier.parameters())
    assert not any(id(p) in lower for p in head)


# ---- the defining property: hidden units get exactly zero gradient from their instance ---------------


def hidden_units(key: int, site: int, num_units: int) -> torch.Tensor:
    return ~instance_masks(MASK_SEED, torch.tensor([key]), site, num_units, KEEP_PROB)[0]


def assert_zero_and_nonzero(grad: torch.Tensor, hidden: torch.Tensor, what: str) -> None:
    """``grad`` is indexed by unit along dim 0: hidden units exactly zero, some exposed unit non-zero."""
    assert hidden.any() and (~hidden).any(), what
    assert torch.equal(grad[hidden], torch.zeros_like(grad[hidden])), f"{what}: hidden units got gradient"
    assert grad[~hidden].abs().sum() > 0, f"{what}: exposed units got no gradient"


def exposed_step(model: TodClassifier, key: int, label: int = 1) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    batch = random_batch(1, 9, seed=key % 1000 + 3)
    logits = model(batch, torch.tensor([key]), MaskMode.EXPOSED)
    nn.functional.cross_entropy(logits, torch.tensor([label])).backward()


INSTANCE_KEYS = [5, -(2**35) - 9]


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("scope", ["head", "layers:1", "layers:2", "ffn:1", "ffn:2"])
def test_hidden_units_get_exactly_zero_gradient(arch: str, scope: str) -> None:
    head_dim = 24  # differs from the encoder width, so a site using the wrong width would show
    model = build(arch, scope, dropout=0.0, head_dim=head_dim)
    layers = layers_of(model)
    for key in INSTANCE_KEYS:
        exposed_step(model, key)
        # head: rows of head_dense, entries of its bias, columns of the classifier
        hidden = hidden_units(key, HEAD_SITE, head_dim)
        assert_zero_and_nonzero(model.head_dense.weight.grad, hidden, "head_dense.weight rows")
        assert_zero_and_nonzero(model.head_dense.bias.grad, hidden, "head_dense.bias")
        assert_zero_and_nonzero(model.classifier.weight.grad.T, hidden, "classifier.weight columns")
        kind, _, depth = scope.partition(":")
        masked = list(range(len(layers) - int(depth or 0), len(layers)))
        assert model.masked_layers == masked
        for index in masked:
            layer = layers[index]
            if kind == "ffn":
                hidden = hidden_units(key, FFN_SITE_BASE + index, INTERMEDIATE)
                intermediate, rows_per_unit = ffn_input_rows(layer)
                output = linear_by_shape(layer, INTERMEDIATE, HIDDEN)
                feeds = hidden.repeat(rows_per_unit)  # a gated block: rows j and I + j feed unit j
                assert_zero_and_nonzero(intermediate.weight.grad, feeds, f"layer {index} intermediate rows")
                if intermediate.bias is not None:
                    assert_zero_and_nonzero(intermediate.bias.grad, feeds, f"layer {index} intermediate bias")
                assert_zero_and_nonzero(output.weight.grad.T, hidden, f"layer {index} ffn output columns")
            elif kind == "layers" and arch in PRE_NORM:
                # A LayerNorm reads the masked layer output (the next layer's, or the final norm) and
                # re-centres every dimension, so the weights after it are not separated by unit; the
                # masked output itself passes nothing on (tests/scopes/test_architecture.py checks the site).
                assert not model.last_layer_is_output
            elif kind == "layers":
                hidden = hidden_units(key, LAYER_SITE_BASE + index, HIDDEN)
                if index + 1 < len(layers):
                    for linear in qkv_of(layers[index + 1]):
                        assert_zero_and_nonzero(
                            linear.weight.grad.T, hidden, f"layer {index + 1} q/k/v columns"
                        )
                else:
                    assert_zero_and_nonzero(
                        model.head_dense.weight.grad.T, hidden, "head_dense.weight columns"
                    )


@pytest.mark.parametrize("arch", ["bert", "distilbert"])
def test_units_hidden_for_every_instance_of_a_batch_get_zero_gradient(arch: str) -> None:
    """A batch trains the union of its instances' exposed units, and nothing else."""
    model = build(arch, "ffn:1", dropout=0.0)
    model.train()
    keys = torch.tensor([3, 4, 9])
    batch = random_batch(3, 8, seed=2)
    loss = nn.functional.cross_entropy(model(batch, keys, MaskMode.EXPOSED), torch.tensor([0, 1, 2]))
    loss.backward()
    hidden_for_all = (~instance_masks(MASK_SEED, keys, FFN_SITE_BASE + 1, INTERMEDIATE, KEEP_PROB)).all(0)
    output = linear_by_shape(layers_of(model)[1], INTERMEDIATE, HIDDEN)
    assert_zero_and_nonzero(output.weight.grad.T, hidden_for_all, "ffn output columns hidden for all rows")


def test_scope_none_trains_everything() -> None:
    model = build("bert", "none", dropout=0.0)
    exposed_step(model, 5)
    assert (model.head_dense.weight.grad != 0).all(dim=1).any()
    assert torch.count_nonzero(model.head_dense.bias.grad) == model.head_dense.bias.numel()
