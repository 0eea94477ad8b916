"""The channels scope (tod_clean/scopes/channels.py) on ResNets: tiny-resnet, the embedded default, and two
tiny configurations that cover what it does not (a stream shared by two blocks; bottleneck blocks with
projection shortcuts). CPU, no downloads; keep probability 0.3, so a swapped 1/p and 1/(1-p) shows.

- every mask site hides the units an instance hides, and is on the path to the logits;
- a masked activation, and the whole network, against a ResNet computed by hand with the masks of the
  documented sites and scales;
- one optimizer step on one instance leaves its hidden sub-network bit-identical, running statistics
  included (a stock batch norm's running statistics leak); in a batch of several rows a row's loss still
  reaches only the units it runs (it would not with the gradient through the batch statistics), while its
  pixels do reach its batch mates' gradients through the statistics: the leak channels.py states;
- ``influence`` and the self scores against the naive per-pair loop; ``auto`` picks the exact path;
- other encoders refused with the scopes that fit; train -> score -> filter through the CLI.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from transformers import AutoModel, ResNetConfig, ResNetModel

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import tiny_encoder
from tests.image_data import image_folder, tiny_convnext, tiny_vit
from tests.influence.test_exact import naive_pairs, naive_self
from tod_clean.config import TrainConfig
from tod_clean.errors import ConfigError
from tod_clean.influence.base import resolve_influence_method
from tod_clean.influence.gather import influence
from tod_clean.influence.self_scores import self_scores
from tod_clean.masks import MaskMode, instance_masks
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.modeling.loading import build_classifier
from tod_clean.modeling.vision import default_image_encoder
from tod_clean.pixels import EncodedImages
from tod_clean.scopes import CHANNEL_SITE_BASE, HEAD_SITE
from tod_clean.scopes.batch_norm import SubNetworkBatchNorm2d
from tod_clean.scopes.channels import conv_sites
from tod_clean.training.optim import log_priors, make_optimizer, set_trainable

NUM_LABELS = 3
KEY = 123456789
MASK_SEED = 11
P = 0.3
KINDS = ("tiny-resnet", "basic", "bottleneck")


def resnet(kind: str) -> nn.Module:
    """``tiny-resnet``; ``basic``: the stem's stream runs through two blocks of stage 0; ``bottleneck``:
    three convolutions a block, every stage starting its stream with a projection."""
    torch.manual_seed(0)
    if kind == "tiny-resnet":
        return default_image_encoder()[0]
    if kind == "basic":
        config = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[2, 1], layer_type="basic")
    else:
        config = ResNetConfig(embedding_size=8, hidden_sizes=[32, 64], depths=[2, 1], layer_type="bottleneck")
    return ResNetModel(config)


def pixels(rows: int, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(rows, 3, 32, 32, generator=generator)}


def trained_model(kind: str, **options: Any) -> tuple[TodClassifier, TrainConfig]:
    """The classifier and config a channels run trains (trainable parameters set, bias at the priors)."""
    options = {"keep_prob": P, **options}
    config = TrainConfig(scope="channels", mask_seed=MASK_SEED, weight_decay=0.0, **options)
    model = build_classifier(resnet(kind), config, NUM_LABELS)
    with torch.no_grad():
        model.classifier.bias.copy_(log_priors(np.array([0, 1, 1, 2]), NUM_LABELS))
    set_trainable(model, config)
    return model, config


def scoring_model(kind: str, keep_prob: float = P) -> TodClassifier:
    """In evaluation mode, with batch norms whose statistics and affine parameters are not the identity
    and a head that separates classes a bit, so that the sub-networks' losses differ."""
    model = build_classifier(
        resnet(kind), TrainConfig(scope="channels", keep_prob=keep_prob, mask_seed=MASK_SEED), NUM_LABELS
    )
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for module in model.encoder.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.3)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.3)
        model.classifier.weight.mul_(4.0)
    return model.eval()


def hidden_units(
    site: int, units: int, keep_prob: float = P, groups: int = 0, key: int = KEY
) -> torch.Tensor:
    return ~instance_masks(MASK_SEED, torch.tensor([key]), site, units, keep_prob, groups=groups)[0]


# ---- the mask sites --------------------------------------------------------------------------------------


def test_sites_follow_the_documented_ids() -> None:
    """Stem stream, inner convolutions per block, a new stream where a projection starts one."""
    model = scoring_model("basic")
    base = CHANNEL_SITE_BASE
    assert model.mask_sites() == [
        (HEAD_SITE, 16),
        (base, 8),  # the stem's channels, and stage 0's stream (it keeps the stem's width and stride)
        (base + 1010, 8),  # stage 0, block 0: its first convolution
        (base + 1020, 8),  # stage 0, block 1
        (base + 2000, 16),  # stage 1's stream, started by its projection shortcut
        (base + 2010, 16),
    ]
    writers = [site for _, site, _ in conv_sites(model.encoder)]
    assert writers.count(base) == 3  # the stem and the last convolution of both blocks of stage 0
    assert writers.count(base + 2000) == 2  # the projection and the block's last convolution
    assert model.scope.site_name(base + 2000) == "stage 1's residual channels"
    assert model.scope.site_name(base + 1020) == "the output channels of convolution 1 of block 1 in stage 0"
    bottleneck = scoring_model("bottleneck")
    inner = [site for site, _ in bottleneck.mask_sites() if site % 1000]
    assert inner == [base + 1010, base + 1011, base + 1020, base + 1021, base + 2010, base + 2011]
    assert (base + 1000, 32) in bottleneck.mask_sites()  # stage 0 projects the stem's 8 channels to 32


@pytest.mark.parametrize("kind", KINDS)
def test_every_mask_site_passes_nothing_from_the_units_an_instance_hides(kind: str) -> None:
    """Each time a site masks (a stream site once per module that writes it): the gradient of two
    instances' exposed losses is exactly zero on the channels each hides, and reaches the exposed ones."""
    model = scoring_model(kind)
    keys = torch.tensor([987654321, -5])
    seen: list[tuple[int, torch.Tensor]] = []
    mask = model.mask

    def record(x: torch.Tensor, site: int) -> torch.Tensor:
        assert x.shape[0] == len(keys)
        x.retain_grad()
        seen.append((site, x))
        return mask(x, site)

    model.mask = record  # type: ignore[method-assign]
    model.train()
    logits = model(pixels(2), keys, MaskMode.EXPOSED)
    nn.functional.cross_entropy(logits, torch.tensor([2, 0])).backward()
    assert sorted({site for site, _ in seen}) == [site for site, _ in model.mask_sites()]
    for site, x in seen:
        assert x.grad is not None, site
        grads = x.grad.reshape(len(keys), -1, x.shape[-1])
        for row, hidden in enumerate(~instance_masks(MASK_SEED, keys, site, x.shape[-1], P)):
            assert torch.count_nonzero(grads[row][:, hidden]) == 0, (
                f"site {site}: a hidden unit passed gradient"
            )
            if not hidden.all():  # a bottleneck's 4 inner channels can all be hidden at p = 0.3
                assert torch.count_nonzero(grads[row][:, ~hidden]) > 0, (
                    f"site {site} is off the path to the logits"
                )


# ---- scaling: against a ResNet computed by hand ------------------------------------------------------------


def _factor(model: TodClassifier, site: int, units: int, key: int, mode: MaskMode) -> torch.Tensor:
    """``[1, units]`` multipliers: m/p exposed, (1-m)/(1-p) hidden, 1 for the full network."""
    if mode is MaskMode.FULL:
        return torch.ones(1, units)
    exposed = instance_masks(MASK_SEED, torch.tensor([key]), site, units, model.keep_prob)[0]
    if mode is MaskMode.EXPOSED:
        return exposed.float()[None] / model.keep_prob
    return (~exposed).float()[None] / (1.0 - model.keep_prob)


def _conv_norm(layer: nn.Module, x: torch.Tensor, activation: bool) -> torch.Tensor:
    conv, norm = layer.convolution, layer.normalization
    y = nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride, conv.padding)
    y = nn.functional.batch_norm(
        y, norm.running_mean, norm.running_var, norm.weight, norm.bias, False, 0.0, norm.eps
    )
    return nn.functional.relu(y) if activation else y


def naive_logits(
    model: TodClassifier, batch: dict[str, torch.Tensor], key: int, mode: MaskMode
) -> torch.Tensor:
    """Logits ``[1, C]`` of a ResNet computed by hand in evaluation mode, every masked output multiplied
    by the factors of its site (ids as channels.py documents them), the residual sums left unmasked."""
    base, encoder = CHANNEL_SITE_BASE, model.encoder

    def masked(x: torch.Tensor, site: int) -> torch.Tensor:
        return x * _factor(model, site, x.shape[1], key, mode)[:, :, None, None]

    x = masked(_conv_norm(encoder.embedder.embedder, batch["pixel_values"], True), base)
    x = nn.functional.max_pool2d(x, 3, 2, 1)
    stream = base
    for s, stage in enumerate(encoder.encoder.stages):
        for b, block in enumerate(stage.layers):
            if isinstance(block.shortcut, nn.Identity):
                residual = x
            else:
                stream = base + 1000 * (s + 1)
                residual = masked(_conv_norm(block.shortcut, x, False), stream)
            convs = list(block.layer)
            h = x
            for j, conv in enumerate(convs[:-1]):
                h = masked(_conv_norm(conv, h, True), base + 1000 * (s + 1) + 10 * (b + 1) + j)
            x = nn.functional.relu(masked(_conv_norm(convs[-1], h, False), stream) + residual)
    features = torch.tanh(model.head_dense(x.mean((2, 3))))
    head = _factor(model, HEAD_SITE, features.shape[1], key, mode)
    return model.classifier(features * head)


@pytest.mark.parametrize("kind", KINDS)
def test_the_masked_network_is_the_resnet_computed_by_hand(kind: str) -> None:
    model = scoring_model(kind)
    batch = pixels(1)
    with torch.no_grad():
        for key in (KEY, -3, 2**40 + 1):
            for mode in MaskMode:
                expected = naive_logits(model, batch, key, mode)
                torch.testing.assert_close(
                    model(batch, torch.tensor([key]), mode), expected, rtol=1e-5, atol=1e-5
                )
        assert not torch.allclose(
            model(batch, torch.tensor([KEY]), MaskMode.EXPOSED),
            model(batch, torch.tensor([KEY]), MaskMode.HIDDEN),
        )


def test_a_masked_activation_is_scaled_by_1_over_p_or_1_minus_p() -> None:
    """The stem's output as the first stage reads it: exposed channels times 1/p, hidden ones times
    1/(1-p), the others exactly zero."""
    model = scoring_model("tiny-resnet")
    captured: list[torch.Tensor] = []
    stem = model.encoder.embedder.embedder
    stem.register_forward_hook(lambda module, args, output: captured.append(output))  # after the mask's hook
    batch = pixels(1)
    with torch.no_grad():
        plain = _conv_norm(stem, batch["pixel_values"], True)
        exposed = ~hidden_units(CHANNEL_SITE_BASE, 32)
        model(batch, torch.tensor([KEY]), MaskMode.EXPOSED)
        model(batch, torch.tensor([KEY]), MaskMode.HIDDEN)
    exposed_out, hidden_out = captured
    assert 0 < int(exposed.sum()) < 32
    torch.testing.assert_close(exposed_out[0, exposed], plain[0, exposed] / P)
    torch.testing.assert_close(hidden_out[0, ~exposed], plain[0, ~exposed] / (1 - P))
    assert (
        torch.count_nonzero(exposed_out[0, ~exposed]) == 0
        and torch.count_nonzero(hidden_out[0, exposed]) == 0
    )


# ---- separation: one step on one instance ------------------------------------------------------------------


def _hidden_entries(
    model: TodClassifier, groups: int = 0, key: int = KEY
) -> list[tuple[str, nn.Parameter, torch.Tensor]]:
    """(name, parameter, bool mask of its entries that belong to units ``key`` hides) for every separated
    parameter: the head's, and each convolution's output rows and its norm's affine parameters."""
    p = model.keep_prob
    head = hidden_units(HEAD_SITE, model.classifier.in_features, p, groups, key)
    entries = [
        ("head_dense.weight", model.head_dense.weight, head[:, None].expand_as(model.head_dense.weight)),
        ("head_dense.bias", model.head_dense.bias, head),
        ("classifier.weight", model.classifier.weight, head[None, :].expand_as(model.classifier.weight)),
    ]
    for index, (conv, site, channels) in enumerate(conv_sites(model.encoder)):
        hidden = hidden_units(site, channels, p, groups, key)
        weight = conv.convolution.weight
        entries += [
            (f"conv {index} weight", weight, hidden[:, None, None, None].expand_as(weight)),
            (f"conv {index} norm weight", conv.normalization.weight, hidden),
            (f"conv {index} norm bias", conv.normalization.bias, hidden),
        ]
    return entries


def _buffers(model: TodClassifier) -> dict[str, torch.Tensor]:
    return {name: buffer.clone() for name, buffer in model.named_buffers()}


@pytest.mark.parametrize(
    ("kind", "options"),
    [(kind, {}) for kind in KINDS] + [("tiny-resnet", {"mask_groups": 2, "keep_prob": None})],
)
def test_one_step_on_an_instance_leaves_its_hidden_sub_network_unchanged(kind: str, options: dict) -> None:
    """With one row in the batch (the training loop's batch norm then normalises over that row's
    positions alone): exactly zero gradient on every entry of a unit the instance hides, and its hidden
    logits bit-identical afterwards, in training mode and in evaluation mode, whose running statistics
    of the hidden channels did not move."""
    model, config = trained_model(kind, **options)
    assert config.separated
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model.separated_parameters()}
    assert {name for name, p in model.named_parameters() if not p.requires_grad} == {"classifier.bias"}
    batch, keys = pixels(1), torch.tensor([KEY])
    model.eval()
    with torch.no_grad():
        hidden_eval = model(batch, keys, MaskMode.HIDDEN)
        exposed_eval = model(batch, keys, MaskMode.EXPOSED)
    model.train()
    stats = _buffers(model)
    with torch.no_grad():
        hidden_train = model(batch, keys, MaskMode.HIDDEN)
    for name, buffer in model.named_buffers():  # a hidden pass in training mode moves them: put back
        buffer.copy_(stats[name])

    optimizer = make_optimizer(model, config)
    loss = nn.functional.cross_entropy(model(batch, keys, MaskMode.EXPOSED), torch.tensor([2]))
    loss.backward()
    moved = 0
    for name, parameter, hidden in _hidden_entries(model, config.mask_groups):
        assert parameter.grad is not None, name
        assert torch.count_nonzero(parameter.grad[hidden]) == 0, f"{name}: a hidden unit learned the instance"
        moved += int(torch.count_nonzero(parameter.grad[~hidden]))
    assert moved > 0
    moved_statistics = 0
    for conv, site, channels in conv_sites(model.encoder):
        norm = conv.normalization
        assert isinstance(norm, SubNetworkBatchNorm2d)
        hidden = hidden_units(site, channels, config.keep_prob, config.mask_groups)
        prefix = next(name for name, module in model.named_modules() if module is norm)
        before_mean, before_var = stats[f"{prefix}.running_mean"], stats[f"{prefix}.running_var"]
        assert torch.equal(norm.running_mean[hidden], before_mean[hidden]), prefix
        assert torch.equal(norm.running_var[hidden], before_var[hidden]), prefix
        moved_statistics += int(torch.count_nonzero(norm.running_mean[~hidden] != before_mean[~hidden]))
    assert moved_statistics > 0
    optimizer.step()

    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch, keys, MaskMode.HIDDEN), hidden_eval)
        assert not torch.allclose(model(batch, keys, MaskMode.EXPOSED), exposed_eval)
        model.train()
        assert torch.equal(model(batch, keys, MaskMode.HIDDEN), hidden_train)


def test_a_stock_batch_norm_would_leak_through_its_running_statistics() -> None:
    """The same step with the encoder's own BatchNorm2d (statistics of every row and channel): the hidden
    channels' running statistics move, and so do the hidden logits in evaluation mode. Keeps the test
    above able to fail."""
    model, config = trained_model("tiny-resnet")
    for conv, _, _ in conv_sites(model.encoder):
        norm = conv.normalization
        stock = nn.BatchNorm2d(norm.num_features, norm.eps, norm.momentum)
        stock.weight, stock.bias = norm.weight, norm.bias
        stock.running_mean, stock.running_var = norm.running_mean, norm.running_var
        conv.normalization = stock
    batch, keys = pixels(1), torch.tensor([KEY])
    model.eval()
    with torch.no_grad():
        hidden_eval = model(batch, keys, MaskMode.HIDDEN)
    model.train()
    optimizer = make_optimizer(model, config)
    nn.functional.cross_entropy(model(batch, keys, MaskMode.EXPOSED), torch.tensor([2])).backward()
    for name, parameter, hidden in _hidden_entries(model):
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad[hidden]) == 0, name
    optimizer.step()
    model.eval()
    with torch.no_grad():
        assert not torch.equal(model(batch, keys, MaskMode.HIDDEN), hidden_eval)


class _GradientThroughStatistics(SubNetworkBatchNorm2d):
    """The same statistics with the gradient flowing through them (as ``BatchNorm2d``'s does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = self.units() if self.training else None
        if units is None:
            return super().forward(x)
        mean, var, _ = self.batch_statistics(x, units.float())
        scale = (torch.rsqrt(var + self.eps) * self.weight).view(1, -1, 1, 1)
        return (x - mean.view(1, -1, 1, 1)) * scale + self.bias.view(1, -1, 1, 1)


def _gradients_on_units(
    model: TodClassifier, batch: dict[str, torch.Tensor], keys: torch.Tensor, row: int, hidden_by: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradient of row ``row``'s loss (exposed pass of the whole batch of ``keys``) on the entries of
    the units that row ``hidden_by``'s instance hides, and on those it exposes, flattened."""
    logits = model(batch, keys, MaskMode.EXPOSED)
    entries = _hidden_entries(model, key=int(keys[hidden_by]))
    loss = nn.functional.cross_entropy(logits[row : row + 1], torch.tensor([2]))
    grads = torch.autograd.grad(loss, [parameter for _, parameter, _ in entries])
    hidden = torch.cat([g[h].flatten() for g, (_, _, h) in zip(grads, entries, strict=True)])
    exposed = torch.cat([g[~h].flatten() for g, (_, _, h) in zip(grads, entries, strict=True)])
    return hidden, exposed


KEYS_8 = torch.tensor([KEY, 7, 8, 9, 10, 11, 12, 13])


def test_in_a_batch_a_rows_loss_reaches_only_the_units_it_runs() -> None:
    """The batch norms' statistics are constants to the backward pass, so in a training batch of several
    instances the gradient of one row's loss is exactly zero on every unit that row hides. With the
    gradient flowing through the statistics (as a stock batch norm's does) it would reach them through
    the other rows that share a channel's statistics."""
    model, _ = trained_model("tiny-resnet")
    model.train()
    hidden, exposed = _gradients_on_units(model, pixels(8), KEYS_8, 0, 0)
    assert torch.count_nonzero(hidden) == 0 and torch.count_nonzero(exposed) > 0
    for conv, _, _ in conv_sites(model.encoder):
        norm = conv.normalization
        conv.normalization = _GradientThroughStatistics.replacing(norm, norm.units)
    hidden, exposed = _gradients_on_units(model, pixels(8), KEYS_8, 0, 0)
    assert 0 < float(hidden.norm()) < float(exposed.norm())


def test_batch_statistics_still_carry_a_rows_pixels_to_its_batch_mates() -> None:
    """What is left of the coupling, and stated in channels.py: rows that run a channel share its batch
    statistics in the forward pass, so the gradient of another row's loss on the units row 0 hides
    depends on row 0's pixels (never on its label, whose loss does not reach them). Alone in a batch, or
    in evaluation mode, it does not."""
    model, _ = trained_model("tiny-resnet")
    batch, other = pixels(8), pixels(8, seed=2)
    changed = {"pixel_values": torch.cat([other["pixel_values"][:1], batch["pixel_values"][1:]])}
    model.train()
    before, _ = _gradients_on_units(model, batch, KEYS_8, 1, 0)
    after, _ = _gradients_on_units(model, changed, KEYS_8, 1, 0)
    assert not torch.allclose(before, after)
    model.eval()
    before, _ = _gradients_on_units(model, batch, KEYS_8, 1, 0)
    after, _ = _gradients_on_units(model, changed, KEYS_8, 1, 0)
    assert torch.equal(before, after)


def _group_of(key: int, groups: int) -> int:
    exposed = instance_masks(0, torch.tensor([key]), HEAD_SITE, groups, 1 / groups, groups=groups)[0]
    return int(exposed.nonzero()[0, 0])


def _hidden_logits_after_training(tmp_path: Path, lines: list[str], name: str, groups: int) -> torch.Tensor:
    from tod_clean.io.images import ImageColumn
    from tod_clean.io.inputs import read_table
    from tod_clean.pixels import encode_images
    from tod_clean.run.rundir import RunDir
    from tod_clean.training.loop import train

    data = tmp_path / f"{name}.csv"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    table = read_table(str(data))
    config = TrainConfig(
        scope="channels", mask_groups=groups, epochs=2, batch_size=4, learning_rate=1e-3, device="cpu"
    )
    run = RunDir(tmp_path / name)
    result = train(config, table, run, train_path=str(data))
    encoded = encode_images(run.load_preprocessor(result.info), ImageColumn(table, "path"))
    model, keys = result.model.eval(), torch.arange(len(table))
    with torch.no_grad():
        return torch.cat(
            [model(encoded.batch([i]), keys[i : i + 1], MaskMode.HIDDEN) for i in range(len(table))]
        )


@pytest.mark.slow
def test_mask_groups_make_hidden_sub_networks_exactly_out_of_fold(tmp_path: Path) -> None:
    """The premise, measured through the training loop (batches of 4, batch norm in training mode):
    swap the labels of two images of one group and train again. With --mask-groups 2 their hidden
    sub-networks give bit-identical logits: no row of a group enters another group's gradients or
    batch-norm statistics. With independent masks the swap reaches them (through the units the rows'
    exposed sub-networks share with their hidden ones' neighbours, and through batch statistics)."""
    photos = image_folder(tmp_path / "photos", per_class=4)
    paths = sorted(photos.glob("*/*.png"))
    rows = [(path.as_posix(), path.parent.name) for path in paths]
    by_group: dict[int, list[int]] = {}
    for index in range(len(rows)):
        by_group.setdefault(_group_of(index, 2), []).append(index)
    first, second = next(
        (a, b) for members in by_group.values() for a in members for b in members if rows[a][1] != rows[b][1]
    )
    swapped = list(rows)
    swapped[first], swapped[second] = (rows[first][0], rows[second][1]), (rows[second][0], rows[first][1])
    for groups, exact in ((2, True), (0, False)):
        before = _hidden_logits_after_training(
            tmp_path, ["path,label"] + [f"{p},{label}" for p, label in rows], f"a{groups}", groups
        )
        after = _hidden_logits_after_training(
            tmp_path, ["path,label"] + [f"{p},{label}" for p, label in swapped], f"b{groups}", groups
        )
        pair = [first, second]
        assert torch.equal(before[pair], after[pair]) == exact, groups


# ---- scoring ---------------------------------------------------------------------------------------------

TRAIN_KEYS = np.array([0, 1, -1, 2**33 + 7, 17, 123456789, 5], dtype=np.int64)
VAL_LABELS = np.array([2, 1, 0, 0, 1], dtype=np.int64)


@pytest.mark.parametrize("kind", ["tiny-resnet", "bottleneck"])
@pytest.mark.parametrize(
    "options",
    [{}, {"batch_size": 3, "pair_batch": 7}, {"batch_size": 2, "pair_batch": 1}],
    ids=["one-block", "chunks", "single"],
)
def test_influence_equals_the_naive_loop(kind: str, options: dict, tmp_path: Path) -> None:
    model = scoring_model(kind)
    generator = torch.Generator().manual_seed(4)
    val = EncodedImages(torch.randn(len(VAL_LABELS), 3, 32, 32, generator=generator).numpy())
    expected = naive_pairs(model, TRAIN_KEYS, val, VAL_LABELS)  # type: ignore[arg-type]
    assert np.abs(expected).max() > 1e-3
    matrix_path = tmp_path / "pairs.npy"
    result = influence(model, TRAIN_KEYS, val, VAL_LABELS, matrix_path=matrix_path, **options)  # type: ignore[arg-type]
    np.testing.assert_allclose(np.load(matrix_path), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result, expected.mean(1), rtol=1e-5, atol=1e-5)


def test_self_scores_equal_the_naive_loop_and_turn_over_is_exact() -> None:
    model = scoring_model("tiny-resnet", keep_prob=0.5)
    assert resolve_influence_method(model.scope, 0.5, "turn-over") == "exact"
    generator = torch.Generator().manual_seed(6)
    train = EncodedImages(torch.randn(len(TRAIN_KEYS), 3, 32, 32, generator=generator).numpy())
    labels = np.arange(len(TRAIN_KEYS)) % NUM_LABELS
    naive = naive_self(model, train, labels, TRAIN_KEYS)  # type: ignore[arg-type]
    scores = self_scores(model, train, labels, TRAIN_KEYS, batch_size=3)  # type: ignore[arg-type]
    for mode, losses in ((MaskMode.HIDDEN, scores.hidden_loss), (MaskMode.EXPOSED, scores.exposed_loss)):
        np.testing.assert_allclose(losses, naive[mode][0], rtol=1e-5, atol=1e-6)
    linear = influence(model, TRAIN_KEYS, train, labels, method="linear")  # type: ignore[arg-type]
    assert linear.shape == (len(TRAIN_KEYS),) and np.isfinite(linear).all()


# ---- what is refused ------------------------------------------------------------------------------------


def _refusal(model_type: str, fitting: str, scope: str = "channels", types: str = "resnet") -> str:
    return re.escape(
        f"scope {scope} places masks inside the encoder, which tod-clean does for model types {types}; "
        f"this model is {model_type!r}: use scope {fitting} with it"
    )


def test_other_encoders_are_refused_with_the_scopes_that_fit(tmp_path: Path) -> None:
    config = TrainConfig(scope="channels", mask_seed=1)
    text_scopes = "head, layers:K, ffn:K, lora, lora-plain or none"
    with pytest.raises(ConfigError, match=_refusal("bert", text_scopes)):
        build_classifier(tiny_encoder("bert"), config, 2)
    # a ViT takes the transformer scopes (since session 5), a ConvNeXt only those outside the encoder
    for make, model_type, fitting in (
        (tiny_vit, "vit", text_scopes),
        (tiny_convnext, "convnext", "head or none"),
    ):
        encoder = AutoModel.from_pretrained(str(make(tmp_path / model_type)))
        with pytest.raises(ConfigError, match=_refusal(model_type, fitting)):
            build_classifier(encoder, config, 2)
    transformer_types = (
        "bert, roberta, roberta-prelayernorm, distilbert, electra, deberta-v2, modernbert, vit, deit"
    )
    with pytest.raises(
        ConfigError, match=_refusal("resnet", "head, channels or none", "layers:1", transformer_types)
    ):
        build_classifier(resnet("tiny-resnet"), TrainConfig(scope="layers:1", mask_seed=1), 2)


def test_a_resnet_whose_activation_does_not_keep_zero_is_refused() -> None:
    """A hidden stream channel is zero only while the block's activation maps 0 to 0."""
    torch.manual_seed(0)
    encoder = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8], depths=[1], hidden_act="sigmoid"))
    with pytest.raises(
        ConfigError, match=r"^scope channels: block 0 of stage 0's activation does not map 0 to 0"
    ):
        build_classifier(encoder, TrainConfig(scope="channels", mask_seed=1), 2)


# ---- through the command line --------------------------------------------------------------------------


@pytest.mark.slow
def test_train_score_and_filter_an_image_folder(tmp_path: Path) -> None:
    photos = image_folder(tmp_path / "photos", per_class=4)
    val = image_folder(tmp_path / "val", per_class=2, seed=1)
    run = tmp_path / "run"
    args = ("--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--keep-prob", "0.3", "-q")
    ok(invoke("train", photos, "--run", run, "--scope", "channels", *args))
    info = json.loads((run / "config.json").read_text(encoding="utf-8"))
    assert info["train"]["scope"] == "channels" and info["encoder"]["model_type"] == "resnet"
    scored = pd.read_csv(io.StringIO(ok(invoke("score", "--run", run, "--val", val, "-o", "-", "-q")).output))
    assert len(scored) == 12
    for column in ("influence", "self_influence", "hidden_loss", "exposed_loss", "full_loss"):
        assert np.isfinite(scored[column]).all(), column
    assert not np.allclose(scored["hidden_loss"], scored["exposed_loss"])
    kept = tmp_path / "kept.csv"
    ok(invoke("filter", "--run", run, "--drop-count", "2", "--out", kept, "-q"))
    assert len(kept.read_text(encoding="utf-8").splitlines()) == 1 + 10
    # the shared classifier bias stayed at the log class priors (4 images of each of 3 classes)
    from safetensors.torch import load_file

    weights = load_file(str(next(run.glob("*.safetensors"))))
    torch.testing.assert_close(weights["classifier.bias"], torch.full((3,), float(np.log(1 / 3))))
    user_error(
        invoke("train", photos, "--run", tmp_path / "again", "--scope", "channels", "--freeze", "unmasked"),
        "the lora and channels scopes always train only their masked units",
        absent=(tmp_path / "again",),
    )
