"""The method's premise, checked directly: in the modes that promise it, training on instance i alone
changes nothing in i's hidden sub-network.

Modes that promise it (``TrainConfig.separated``): the ``lora`` scope, and ``head`` / ``ffn:K`` with
``--freeze unmasked``. For each, with a fresh optimizer and one step on i alone:
- the gradient of i's loss is exactly zero on every trainable entry that belongs to a unit i hides, and
  frozen parameters get no gradient at all;
- i's hidden logits are bit-identical after the step, while its exposed logits moved.
Keep probabilities other than 0.5 make a swapped 1/p and 1/(1-p) show.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from tests.conftest import (
    ARCHITECTURES,
    VISION_ARCHITECTURES,
    make_rows,
    random_batch,
    random_pixels,
    tiny_encoder,
    write_rows,
)
from tod_clean.config import TrainConfig
from tod_clean.io.inputs import read_table
from tod_clean.masks import MaskMode, instance_masks
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.modeling.loading import build_classifier
from tod_clean.run.rundir import RunDir
from tod_clean.scopes import FFN_SITE_BASE, HEAD_SITE, LORA_SITE_BASE
from tod_clean.training.loop import train
from tod_clean.training.optim import log_priors, make_optimizer, set_trainable

NUM_LABELS = 3
KEY = 123456789


def _model(arch: str, **options: object) -> tuple[TodClassifier, TrainConfig]:
    config = TrainConfig(mask_seed=11, weight_decay=0.0, lora_rank=4, **options)  # type: ignore[arg-type]
    model = build_classifier(tiny_encoder(arch, dropout=0.0), config, NUM_LABELS)
    with torch.no_grad():
        model.classifier.bias.copy_(log_priors(torch.tensor([0, 1, 1, 2]).numpy(), NUM_LABELS))
        # peft starts B at zero, which would make every A gradient zero and the test vacuous.
        for name, parameter in model.encoder.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0.0, 0.5)
    set_trainable(model, config)
    return model, config


def _hidden_units(site: int, num_units: int, keep_prob: float, groups: int = 0) -> torch.Tensor:
    return ~instance_masks(11, torch.tensor([KEY]), site, num_units, keep_prob, groups=groups)[0]


def _hidden_entries(
    model: TodClassifier, config: TrainConfig
) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, gradient, bool mask of the entries that belong to units KEY hides) for every separated
    parameter."""
    p, groups = config.keep_prob, config.mask_groups
    head = _hidden_units(HEAD_SITE, model.classifier.in_features, p, groups)
    entries = [
        ("head_dense.weight", model.head_dense.weight.grad, head[:, None].expand_as(model.head_dense.weight)),
        ("head_dense.bias", model.head_dense.bias.grad, head),
        ("classifier.weight", model.classifier.weight.grad, head[None, :].expand_as(model.classifier.weight)),
    ]
    if model.scope.kind == "lora":
        for index, rank_units in enumerate(model.rank_units):
            hidden = _hidden_units(LORA_SITE_BASE + index, rank_units.out_features, p, groups)
            entries.append(
                (f"lora_A[{index}]", rank_units.weight.grad, hidden[:, None].expand_as(rank_units.weight))
            )
        lora_b = [m for n, m in model.encoder.named_modules() if n.endswith("lora_B.default")]
        for index, module in enumerate(lora_b):
            hidden = _hidden_units(LORA_SITE_BASE + index, module.in_features, p, groups)
            entries.append((f"lora_B[{index}]", module.weight.grad, hidden[None, :].expand_as(module.weight)))
    if model.scope.kind == "ffn":
        for index in model.masked_layers:
            linears = [m for m in model.layers[index].modules() if isinstance(m, nn.Linear)]
            # the feed is hidden -> 37, or hidden -> 2 x 37 in a gated block (rows j and 37 + j feed unit j)
            feed = next(m for m in linears if m.out_features in (37, 74) and m.in_features == 32)
            read = next(m for m in linears if m.in_features == 37)
            hidden = _hidden_units(FFN_SITE_BASE + index, 37, p)
            feeds = hidden.repeat(feed.out_features // 37)
            entries += [
                (f"ffn feed {index}", feed.weight.grad, feeds[:, None].expand_as(feed.weight)),
                (f"ffn read {index}", read.weight.grad, hidden[None, :].expand_as(read.weight)),
            ]
            if feed.bias is not None:
                entries.append((f"ffn feed bias {index}", feed.bias.grad, feeds))
    return entries


SEPARATED = [
    ("bert", {"scope": "lora", "keep_prob": 0.3}),
    ("bert", {"scope": "lora", "keep_prob": 0.7, "lora_targets": ["query", "value"]}),
    ("bert", {"scope": "lora", "mask_groups": 2}),
    ("bert", {"scope": "lora", "mask_groups": 3}),
    ("roberta", {"scope": "lora", "keep_prob": 0.7}),
    ("distilbert", {"scope": "lora", "keep_prob": 0.3}),
    ("electra", {"scope": "lora", "keep_prob": 0.3}),
    ("deberta-v2", {"scope": "lora", "keep_prob": 0.7}),
    ("deberta-v3", {"scope": "lora", "keep_prob": 0.3}),
    *([("modernbert", {"scope": "lora", "keep_prob": 0.3})] if "modernbert" in ARCHITECTURES else []),
    ("bert", {"scope": "head", "freeze": "unmasked", "keep_prob": 0.3}),
    *[(arch, {"scope": "ffn:2", "freeze": "unmasked", "keep_prob": 0.7}) for arch in ARCHITECTURES],
    # vision transformers, on one random image
    ("vit", {"scope": "lora", "keep_prob": 0.3}),
    ("deit", {"scope": "lora", "keep_prob": 0.7}),
    *[(arch, {"scope": "ffn:2", "freeze": "unmasked", "keep_prob": 0.3}) for arch in VISION_ARCHITECTURES],
]


@pytest.mark.parametrize(("arch", "options"), SEPARATED)
def test_one_step_on_an_instance_leaves_its_hidden_sub_network_unchanged(arch: str, options: dict) -> None:
    model, config = _model(arch, **options)
    assert config.separated
    batch = random_pixels(1) if arch in VISION_ARCHITECTURES else random_batch(1, 7)
    keys = torch.tensor([KEY])
    model.train()  # the encoders have dropout 0, so train mode is deterministic
    hidden_before = model(batch, keys, MaskMode.HIDDEN).detach().clone()
    exposed_before = model(batch, keys, MaskMode.EXPOSED).detach().clone()

    optimizer = make_optimizer(model, config)
    loss = nn.functional.cross_entropy(model(batch, keys, MaskMode.EXPOSED), torch.tensor([2]))
    loss.backward()
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            assert parameter.grad is None, name
    entries = _hidden_entries(model, config)
    assert entries
    moved = 0
    for name, grad, hidden in entries:
        assert grad is not None, name
        assert torch.count_nonzero(grad[hidden]) == 0, f"{name}: a hidden unit learned the instance"
        moved += int(torch.count_nonzero(grad[~hidden]))
    assert moved > 0  # the exposed units did learn
    optimizer.step()

    hidden_after = model(batch, keys, MaskMode.HIDDEN).detach()
    exposed_after = model(batch, keys, MaskMode.EXPOSED).detach()
    assert torch.equal(hidden_after, hidden_before)
    assert not torch.allclose(exposed_after, exposed_before)


@pytest.mark.parametrize(
    "options",
    [{"scope": "head"}, {"scope": "layers:1"}, {"scope": "ffn:2"}, {"scope": "ffn:2", "freeze": "below"}],
)
def test_modes_that_do_not_promise_it_do_leak(options: dict) -> None:
    """The same step in the other modes moves the hidden logits (a shared parameter learns the row):
    the README says so, and this keeps the test above able to fail."""
    model, config = _model("bert", keep_prob=0.3, **options)
    assert not config.separated
    batch = random_batch(1, 7)
    keys = torch.tensor([KEY])
    model.train()
    hidden_before = model(batch, keys, MaskMode.HIDDEN).detach().clone()
    optimizer = make_optimizer(model, config)
    nn.functional.cross_entropy(model(batch, keys, MaskMode.EXPOSED), torch.tensor([2])).backward()
    optimizer.step()
    assert not torch.equal(model(batch, keys, MaskMode.HIDDEN).detach(), hidden_before)


def test_separated_modes_freeze_the_shared_classifier_bias_at_the_log_priors() -> None:
    model, config = _model("bert", scope="lora")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "classifier.bias" not in trainable
    assert all(".lora_" in name or name.startswith(("head_dense.", "classifier.")) for name in trainable)
    assert torch.allclose(model.classifier.bias.exp().sum(), torch.tensor(1.0))


def _group_of(key: int, groups: int) -> int:
    exposed = instance_masks(0, torch.tensor([key]), HEAD_SITE, groups, 1 / groups, groups=groups)[0]
    return int(exposed.nonzero()[0, 0])


def _hidden_logits_after_training(
    tmp_path: Path, model_dir: Path, rows: list[dict], name: str, **options: object
) -> torch.Tensor:
    data = write_rows(tmp_path / f"{name}.jsonl", rows)
    config = TrainConfig(
        model=str(model_dir),
        epochs=2,
        batch_size=4,
        max_length=16,
        device="cpu",
        lora_rank=4,
        **options,  # type: ignore[arg-type]
    )
    result = train(config, read_table(str(data)), RunDir(tmp_path / name), train_path=str(data))
    model = result.model.eval()
    from tod_clean.encoding import encode_texts

    encoded = encode_texts(RunDir(tmp_path / name).load_tokenizer(), [r["text"] for r in rows], None, 16)
    keys = torch.arange(len(rows))
    with torch.no_grad():
        return torch.cat(
            [model(encoded.batch([i]), keys[i : i + 1], MaskMode.HIDDEN) for i in range(len(rows))]
        )


def test_mask_groups_make_hidden_sub_networks_exactly_out_of_fold(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Swap the labels of two rows of one group (class counts, and so the classifier's prior bias, stay
    the same) and train again: with --mask-groups their hidden sub-networks give bit-identical logits,
    because those units never computed anything from them. With independent masks (first-order
    separation only) the swap reaches them through the shared units' neighbours."""
    rows = make_rows(16)
    by_group: dict[int, list[int]] = {}
    for index in range(len(rows)):
        by_group.setdefault(_group_of(index, 2), []).append(index)
    first, second = next(
        (a, b)
        for members in by_group.values()
        for a in members
        for b in members
        if rows[a]["label"] != rows[b]["label"]
    )
    swapped = [dict(row) for row in rows]
    swapped[first]["label"], swapped[second]["label"] = rows[second]["label"], rows[first]["label"]
    for groups, exact in ((2, True), (0, False)):
        before = _hidden_logits_after_training(
            tmp_path, tiny_model_dir, rows, f"a{groups}", scope="lora", mask_groups=groups
        )
        after = _hidden_logits_after_training(
            tmp_path, tiny_model_dir, swapped, f"b{groups}", scope="lora", mask_groups=groups
        )
        pair = [first, second]
        assert torch.equal(before[pair], after[pair]) == exact, groups
