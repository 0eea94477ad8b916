"""Training options that decide which parameters learn: --freeze below / unmasked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from tests.conftest import make_rows, write_rows
from tod_clean.config import TrainConfig
from tod_clean.errors import ConfigError
from tod_clean.io.inputs import read_table
from tod_clean.run.rundir import RunDir
from tod_clean.training.loop import train


def _initial_state(model_dir: Path) -> dict[str, torch.Tensor]:
    encoder = transformers.AutoModel.from_pretrained(str(model_dir))
    return {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}


@pytest.mark.parametrize(
    ("scope", "freeze"),
    [("ffn:1", "unmasked"), ("head", "unmasked"), ("ffn:1", "below"), ("layers:1", "below")],
)
def test_frozen_parameters_do_not_move(tmp_path: Path, tiny_model_dir: Path, scope: str, freeze: str) -> None:
    data = write_rows(tmp_path / "train.jsonl", make_rows(12))
    config = TrainConfig(
        model=str(tiny_model_dir),
        scope=scope,
        freeze=freeze,
        epochs=1,
        batch_size=4,
        max_length=16,
        device="cpu",
    )
    before = _initial_state(tiny_model_dir)
    result = train(config, read_table(str(data)), RunDir(tmp_path / "run"), train_path=str(data))
    model = result.model
    trainable = (
        {id(p) for p in model.separated_parameters()}
        if freeze == "unmasked"
        else {id(p) for p in model.parameters()} - {id(p) for p in model.lower_parameters()}
    )
    after = dict(model.named_parameters())
    moved = {
        name for name, p in after.items() if name in before and not torch.equal(p.detach(), before[name])
    }
    frozen = {name for name, p in after.items() if id(p) not in trainable}
    encoder_trainable = {name for name, p in after.items() if id(p) in trainable and name in before}
    assert frozen and not (moved & frozen), sorted(moved & frozen)[:5]
    assert moved == encoder_trainable  # every trainable encoder parameter learned something
    if freeze == "unmasked" and scope == "ffn:1":
        layer = model.masked_layers[0]
        assert moved == {
            f"encoder.encoder.layer.{layer}.intermediate.dense.weight",
            f"encoder.encoder.layer.{layer}.intermediate.dense.bias",
            f"encoder.encoder.layer.{layer}.output.dense.weight",
        }
    if freeze == "unmasked" and scope == "head":
        assert moved == set()  # the whole encoder is frozen; only the head learns


@pytest.mark.parametrize(
    ("scope", "freeze", "message"),
    [
        ("head", "below", "layers:K or ffn:K"),
        ("layers:1", "unmasked", "head or an ffn:K"),
        ("head", "all", "one of"),
    ],
)
def test_freeze_options_are_checked(scope: str, freeze: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(scope=scope, freeze=freeze)


def test_resume_ignores_a_half_written_later_checkpoint(tmp_path: Path, tiny_model_dir: Path) -> None:
    """An interruption while epoch 2's checkpoint was being written leaves epoch 1's intact and named."""
    from tod_clean.training.loop import resume

    data = write_rows(tmp_path / "train.jsonl", make_rows(12))
    config = TrainConfig(model=str(tiny_model_dir), epochs=3, batch_size=4, max_length=16, device="cpu")

    def stop(model: object, epoch: int) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, read_table(str(data)), run, train_path=str(data), on_epoch_end=stop)
    assert sorted(p.name for p in (run.path / "checkpoint").iterdir()) == ["epoch-1"]
    partial = run.path / "checkpoint" / "epoch-2"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"torn")
    (run.path / "model.safetensors").write_bytes((run.path / "model.safetensors").read_bytes())
    result = resume(read_table(str(data)), run)
    assert result.info.status == "complete" and [e["epoch"] for e in result.info.epochs] == [1, 2, 3]
    assert not (run.path / "checkpoint").exists()


def test_a_run_without_a_recorded_mask_scheme_scores_with_scheme_1(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """Runs trained before mask schemes were recorded hashed with scheme 1: they must keep their masks."""
    from tod_clean.encoding import encode_texts
    from tod_clean.masks import MaskMode, key_from_id
    from tod_clean.score import score_run

    rows = make_rows(10)
    for row in rows:  # integral float ids: hashed apart from their integer by scheme 1 only
        row["id"] = float(int(row["id"][1:]))
    data = write_rows(tmp_path / "train.jsonl", rows)
    config = TrainConfig(
        model=str(tiny_model_dir), epochs=1, batch_size=4, max_length=16, device="cpu", keep_prob=0.3
    )
    config.columns.id_col = "id"
    run = RunDir(tmp_path / "run")
    train(config, read_table(str(data)), run, train_path=str(data))
    current = score_run(run, read_table(str(data))).frame
    saved = json.loads((run.path / "config.json").read_text())
    assert saved["train"]["mask_scheme"] == 2 and saved["masks"]["scheme"] == 2
    del saved["train"]["mask_scheme"], saved["masks"]["scheme"]
    (run.path / "config.json").write_text(json.dumps(saved))
    old = score_run(run, read_table(str(data))).frame
    assert not np.allclose(old["hidden_loss"], current["hidden_loss"])
    model = run.load_model(run.read_info())
    assert model.mask_scheme == 1
    encoded = encode_texts(run.load_tokenizer(), [r["text"] for r in rows], None, 16)
    with torch.no_grad():
        for index in (0, 7):
            key = torch.tensor([key_from_id(rows[index]["id"], scheme=1)])
            logits = model(encoded.batch([index]), key, MaskMode.HIDDEN)
            label = 0 if rows[index]["label"] == "negative" else 1
            expected = torch.nn.functional.cross_entropy(logits, torch.tensor([label])).item()
            assert abs(old["hidden_loss"][index] - expected) < 1e-5


def test_learning_rate_schedule_warms_up_then_decays_and_is_checkpointed(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    """transformers' "linear" schedule: lr * s / w for the w warm-up steps, then lr * (T - s) / (T - w).
    The checkpoint keeps its state as JSON, and --resume continues it."""
    from tod_clean.training.loop import resume

    data = write_rows(tmp_path / "train.jsonl", make_rows(12))
    config = TrainConfig(
        model=str(tiny_model_dir), epochs=2, batch_size=4, max_length=16, device="cpu", warmup_ratio=0.34
    )  # 3 steps per epoch, T = 6, w = int(0.34 * 6) = 2

    def stop(model: object, epoch: int) -> None:
        raise KeyboardInterrupt

    run = RunDir(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(config, read_table(str(data)), run, train_path=str(data), on_epoch_end=stop)
    state = json.loads((run.path / "checkpoint" / "epoch-1" / "state.json").read_text())
    scheduler = state["scheduler"]
    assert scheduler["last_epoch"] == 3
    rates = sorted({group["lr"] for group in state["param_groups"]})
    assert rates == pytest.approx(sorted({config.learning_rate * 3 / 4, config.head_learning_rate * 3 / 4}))
    assert sorted(scheduler["base_lrs"]) == pytest.approx(
        sorted(group["initial_lr"] for group in state["param_groups"])
    )
    result = resume(read_table(str(data)), run)
    assert result.info.status == "complete" and [e["epoch"] for e in result.info.epochs] == [1, 2]
