"""Options that are wrong must be refused, never silently changed or ignored, and every message names the
option as its caller spelled it: the flag on the command line (``--lr``), the keyword in Python
(``learning_rate``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, tiny_encoder, write_rows
from tod_clean.config import TrainConfig
from tod_clean.errors import ConfigError
from tod_clean.modeling.loading import build_classifier


@pytest.fixture
def train_file(tmp_path: Path) -> Path:
    return write_rows(tmp_path / "train.jsonl", make_rows(8))


def _train(tmp_path: Path, train_file: Path, model: Path, *options: str):  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    args = ["--model", model, "--epochs", "1", "--batch-size", "4", "--max-length", "16", "--device", "cpu"]
    return run, invoke("train", train_file, "--run", run, *args, "-q", *options)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--lr", "-1"), "error: --lr must be positive, got -1.0"),
        (("--head-lr", "0"), "error: --head-lr must be positive, got 0.0"),
        (("--lora-lr", "-0.5"), "error: --lora-lr must be positive, got -0.5"),
        (("--batch-size", "0"), "error: --batch-size must be a positive integer, got 0"),
        (("--grad-accum", "0"), "error: --grad-accum must be a positive integer, got 0"),
        (("--mask-seed", "-1"), "error: --mask-seed must be in [0, 2**32), got -1"),
        (("--warmup-ratio", "1"), "error: --warmup-ratio must be in [0, 1), got 1.0"),
        (("--weight-decay", "-1"), "error: --weight-decay must be >= 0, got -1.0"),
        (("--keep-prob", "1.5"), "error: --keep-prob must be between 0 and 1 (exclusive), got 1.5"),
        (("--keep-prob", "nan"), "error: --keep-prob must be a finite number, got nan"),
        (("--lora-rank", "0"), "error: --lora-rank must be a positive integer, got 0"),
        (("--head-dim", "0"), "error: --head-dim must be a positive integer, got 0"),
        (("--pooling", "max"), "error: --pooling must be 'mean' or 'cls', got 'max'"),
        (("--mask-groups", "1"), "error: --mask-groups must be 0 or at least 2, got 1"),
        (("--freeze", "below"), "error: --freeze below needs a layers:K or ffn:K scope"),
    ],
)
def test_range_errors_name_the_option_as_typed(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path, options: tuple[str, ...], message: str
) -> None:
    run, result = _train(tmp_path, train_file, tiny_model_dir, *options)
    assert user_error(result, absent=(run,)) == message


def test_range_errors_name_the_keyword_in_python() -> None:
    with pytest.raises(ConfigError, match=r"^learning_rate must be positive, got -1$"):
        TrainConfig(learning_rate=-1)
    with pytest.raises(ConfigError, match=r"^mask_groups must be 0 or at least 2, got 1$"):
        TrainConfig(mask_groups=1)


def test_mask_groups_set_keep_prob_and_refuse_another_one(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path
) -> None:
    assert TrainConfig(mask_groups=4).keep_prob == 0.25
    assert TrainConfig(mask_groups=3, keep_prob=1 / 3).keep_prob == 1 / 3
    assert TrainConfig().keep_prob == 0.5
    with pytest.raises(
        ConfigError,
        match=r"^keep_prob 0.3 contradicts mask_groups 4: each row trains one of 4 groups, so keeps "
        r"1/4 = 0.25 of the units; drop keep_prob$",
    ):
        TrainConfig(mask_groups=4, keep_prob=0.3)
    # an explicit 0.5 (the default without groups) is refused too: it used to become 0.25 silently
    run, result = _train(tmp_path, train_file, tiny_model_dir, "--mask-groups", "4", "--keep-prob", "0.5")
    assert user_error(result, absent=(run,)) == (
        "error: --keep-prob 0.5 contradicts --mask-groups 4: each row trains one of 4 groups, so keeps "
        "1/4 = 0.25 of the units; drop --keep-prob"
    )


@pytest.mark.parametrize("scope", ["none", "lora-plain"])
def test_mask_groups_need_a_masked_scope(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path, scope: str
) -> None:
    run, result = _train(tmp_path, train_file, tiny_model_dir, "--scope", scope, "--mask-groups", "2")
    assert user_error(result, absent=(run,)) == (
        f"error: --mask-groups 2: scope {scope} has no instance masks to deal into groups; use a masked "
        "scope (head, lora, layers:K, ffn:K, channels) or drop --mask-groups"
    )
    with pytest.raises(ConfigError, match=rf"^mask_groups 2: scope {scope} has no instance masks"):
        TrainConfig(scope=scope, mask_groups=2)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ("--mask-groups", "33"),
            "error: --mask-groups 33: more groups than the 32 units of the head (--head-dim), so some groups "
            "would have no unit there and their rows no exposed sub-network; use at most 32 groups",
        ),
        (
            ("--mask-groups", "8", "--head-dim", "6"),
            "error: --mask-groups 8: more groups than the 6 units of the head (--head-dim)",
        ),
        (
            ("--scope", "lora", "--lora-rank", "4", "--mask-groups", "8"),
            "error: --mask-groups 8: more groups than the 4 units of each LoRA adapter (--lora-rank)",
        ),
    ],
)
def test_more_mask_groups_than_units_are_refused(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path, options: tuple[str, ...], message: str
) -> None:
    run, result = _train(tmp_path, train_file, tiny_model_dir, *options)
    assert user_error(result, absent=(run,)).startswith(message)


def test_more_mask_groups_than_units_in_python() -> None:
    encoder = tiny_encoder("bert")  # hidden 32, intermediate 37
    with pytest.raises(
        ConfigError,
        match=r"^mask_groups 38: more groups than the 37 units of layer 1's feed-forward block \(the "
        r"encoder's intermediate size\)",
    ):
        build_classifier(encoder, TrainConfig(scope="ffn:1", mask_groups=38, head_dim=64), 2)
    model = build_classifier(encoder, TrainConfig(scope="ffn:1", mask_groups=32), 2)  # one unit per group
    assert model.mask_groups == 32 and torch.isclose(torch.tensor(model.keep_prob), torch.tensor(1 / 32))


def test_paths_in_messages_are_shown_as_written(
    tmp_path: Path, train_file: Path, tiny_model_dir: Path
) -> None:
    """Rich turned ':name:' into an emoji (hf:x: -> hf plus a cross) and '[...]' into markup."""
    line = user_error(invoke("score", "--run", "hf:x", "-q"))
    assert line == "error: hf:x: no such run directory; create one with 'tod-clean train'"
    line = user_error(invoke("filter", "--run", tmp_path / ":smile:[/b]"))
    assert ":smile:[/b]: no such run directory" in line
    run = tmp_path / "a:cross_mark:[bold]b[/bold]"
    args = ["--model", tiny_model_dir, "--epochs", "1", "--batch-size", "4", "--max-length", "16"]
    result = ok(invoke("train", train_file, "--run", run, *args, "--device", "cpu"))
    assert result.stderr.replace("\n", "").endswith(f"-> {run}")  # rich wraps long lines
