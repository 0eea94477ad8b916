"""The lora scope's command-line options: adapters, rank, targets, mask groups, and what is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tests.cli.conftest import invoke, ok, user_error
from tests.conftest import make_rows, write_rows


def _train(tmp_path: Path, model: Path, *options: str) -> tuple[Path, object]:
    data = write_rows(tmp_path / "train.jsonl", make_rows(12))
    run = tmp_path / "run"
    result = invoke(
        "train",
        data,
        "--run",
        run,
        "--model",
        model,
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--max-length",
        "16",
        "--device",
        "cpu",
        "-q",
        *options,
    )
    return run, result


def test_lora_options_reach_the_run_and_score_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    run, result = _train(
        tmp_path,
        tiny_model_dir,
        "--scope",
        "lora",
        "--lora-rank",
        "4",
        "--lora-alpha",
        "8",
        "--lora-targets",
        "query,value",
        "--mask-groups",
        "2",
    )
    ok(result)
    config = json.loads((run / "config.json").read_text())
    train = config["train"]
    assert (train["scope"], train["lora_rank"], train["lora_alpha"]) == ("lora", 4, 8.0)
    assert train["lora_targets"] == ["query", "value"]
    assert train["mask_groups"] == 2 and train["keep_prob"] == 0.5  # groups set keep_prob to 1/K
    assert config["masks"]["groups"] == 2
    from safetensors import safe_open

    with safe_open(str(run / "model.safetensors"), "pt") as weights:
        adapters = [name for name in weights.keys() if ".lora_A." in name]  # noqa: SIM118 (not a dict)
    assert adapters and all(".query." in name or ".value." in name for name in adapters)
    assert len(adapters) == 2 * 2  # two targets in each of the tiny model's two layers
    ok(invoke("score", "--run", run, "--out", tmp_path / "scores.csv", "-q"))
    frame = pd.read_csv(tmp_path / "scores.csv")
    assert len(frame) == 12 and frame["hidden_loss"].notna().all()


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (("--scope", "lora", "--mask-groups", "1"), "--mask-groups"),
        (("--scope", "lora", "--lora-rank", "0"), "--lora-rank"),
        (("--scope", "lora", "--freeze", "unmasked"), "--freeze unmasked"),
        (("--scope", "lora", "--lora-targets", "nonexistent"), "nonexistent"),
        (
            (
                "--scope",
                "lora:2",
            ),
            "takes no layer count",
        ),
    ],
)
def test_bad_lora_options_are_one_line(
    tmp_path: Path, tiny_model_dir: Path, options: tuple[str, ...], needle: str
) -> None:
    run, result = _train(tmp_path, tiny_model_dir, *options)
    user_error(result, needle)
    assert not run.exists()


def test_lora_plain_is_an_ordinary_lora_fine_tune(tmp_path: Path, tiny_model_dir: Path) -> None:
    run, result = _train(tmp_path, tiny_model_dir, "--scope", "lora-plain", "--lora-rank", "2")
    ok(result)
    ok(invoke("score", "--run", run, "--out", tmp_path / "scores.csv", "-q"))
    frame = pd.read_csv(tmp_path / "scores.csv")
    assert "hidden_loss" not in frame.columns and frame["full_loss"].notna().all()
    user_error(
        invoke("score", "--run", run, "--pred-probs", tmp_path / "p.npy", "-q"), "no hidden sub-networks"
    )
