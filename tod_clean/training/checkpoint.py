"""The resumable state of a run at the end of an epoch, for ``--resume``: weights, optimizer, scheduler and
RNG state in the run's ``checkpoint/epoch-N/``, as safetensors and JSON (nothing is pickled)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from tod_clean.errors import RunDirError, first_line
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.rundir import (
    CHECKPOINT_DIR,
    WEIGHTS,
    RunDir,
    load_tensor_file,
    save_tensors,
    write_json,
)


def epoch_folder(run: RunDir, epoch: int) -> Path:
    """The checkpoint folder of the end of ``epoch``."""
    return run.file(CHECKPOINT_DIR) / f"epoch-{epoch}"


def save_checkpoint(
    run: RunDir, model: TodClassifier, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> None:
    """Weights, optimizer, scheduler and RNG state of the end of ``epoch``, in a folder of its own.

    config.json names an epoch only after its folder is complete, and older folders are removed only
    after that: an interruption at any moment leaves a consistent checkpoint to resume from.
    """
    folder = epoch_folder(run, epoch)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / WEIGHTS, dict(model.state_dict()), metadata={"format": "pt"})
    state = optimizer.state_dict()
    tensors = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    for index, values in state["state"].items():
        for name, value in values.items():
            tensors[f"state.{index}.{name}"] = torch.as_tensor(value)
    save_tensors(folder / "optimizer.safetensors", tensors)
    write_json(
        folder / "state.json",
        {"epoch": epoch, "param_groups": state["param_groups"], "scheduler": scheduler.state_dict()},
    )


def remove_checkpoints(run: RunDir, *, keep: int | None = None) -> None:
    """Remove every checkpoint but epoch ``keep``'s (all of them, the folder too, when ``keep`` is None)."""
    folder = run.file(CHECKPOINT_DIR)
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for old in folder.glob("epoch-*"):
        if old.name != f"epoch-{keep}":
            shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    run: RunDir, model: TodClassifier, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> None:
    """Restore the state ``save_checkpoint`` saved at the end of ``epoch`` into the model, optimizer and
    scheduler (built as for a new run) and the RNGs; one RunDirError when it is missing or does not fit."""
    folder = epoch_folder(run, epoch)
    if not folder.is_dir():
        raise RunDirError(f"{folder}: missing; the checkpoint to resume from is gone (train a new run)")
    state_file = folder / "state.json"
    try:
        meta = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RunDirError(f"{state_file}: cannot read the checkpoint to resume from ({error})") from None
    tensors = load_tensor_file(folder / "optimizer.safetensors")
    weights = load_tensor_file(folder / WEIGHTS)
    # A checkpoint that parses but does not fit this run (edited, or from another run) must not crash.
    try:
        if int(meta["epoch"]) != epoch:
            raise RunDirError(f"{state_file}: holds epoch {meta['epoch']}, expected {epoch}")
        model.load_state_dict(weights)
        per_param: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in tensors.items():
            if key.startswith("state."):
                _, index, name = key.split(".", 2)
                per_param.setdefault(int(index), {})[name] = value
        optimizer.load_state_dict({"state": per_param, "param_groups": meta["param_groups"]})
        scheduler.load_state_dict(meta["scheduler"])
        torch.set_rng_state(tensors["rng.cpu"])
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise RunDirError(f"{folder}: checkpoint does not fit this run ({first_line(error)})") from None
    if "rng.cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["rng.cuda"])
