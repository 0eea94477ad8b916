"""Fine-tuning with turn-over dropout: every row trains only its instance's exposed sub-network.

``train`` starts a run (checks, model, run folder) and ``resume`` continues one; both hand over to the
epoch loop, ``_fit``: length-grouped batches, the forward and backward pass, gradient accumulation, the
per-epoch metrics, the weights and checkpoint saved after each epoch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tod_clean.config import TrainConfig
from tod_clean.encoding import length_grouped_batches
from tod_clean.errors import RunDirError, TodCleanError, spelled
from tod_clean.instances import Instances, for_table, instances_from_table, training_labels
from tod_clean.io import STDIN
from tod_clean.io.formats.hub import is_hub_ref
from tod_clean.io.paths import atomic_output, stream_kind, write_failure
from tod_clean.io.table import Table
from tod_clean.masks import MaskMode
from tod_clean.model_inputs import Encoded
from tod_clean.model_inputs import encode_instances as encode_inputs
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.modeling.loading import build_classifier, check_max_length, load_pretrained
from tod_clean.pixels import PIXELS, augment
from tod_clean.run.rundir import TOKENS_DIR, RunDir, RunInfo, TrainFile, stdin_copy_name
from tod_clean.runtime.device import autocast_dtype, pick_device
from tod_clean.runtime.processes import Processes, current_processes
from tod_clean.runtime.progress import NullProgress, Progress
from tod_clean.scopes.architecture import hidden_size_of
from tod_clean.training.checkpoint import load_checkpoint, remove_checkpoints, save_checkpoint
from tod_clean.training.optim import log_priors, make_optimizer, make_scheduler, set_trainable

log = logging.getLogger(__name__)

EpochCallback = Callable[[TodClassifier, int], None]


def encode_instances(
    tokenizer: Any,
    instances: Instances,
    max_length: int,
    *,
    cache_dir: Path | None = None,
    write_cache: bool = True,
) -> Encoded:
    """Token ids of the instances (pixel values for images, with an image processor as ``tokenizer``);
    token ids are kept in ``cache_dir`` (a run's tokens/) for score to reuse (read from there only,
    without ``write_cache``)."""
    return encode_inputs(tokenizer, instances, max_length, cache_dir=cache_dir, write_cache=write_cache)


@dataclass
class TrainResult:
    info: RunInfo
    model: TodClassifier


def train(
    config: TrainConfig,
    table: Table,
    run: RunDir,
    *,
    train_path: str,
    overwrite: bool = False,
    progress: Progress | None = None,
    on_epoch_end: EpochCallback | None = None,
    processes: Processes | None = None,
) -> TrainResult:
    """Fine-tune a classifier with turn-over dropout on ``table`` and write the run directory.

    Everything that can fail on the user's input (device, data, model, scope, the run folder, outputs
    that are inputs) is checked before the run folder is touched. A run that fails before its first epoch
    is finished, and so cannot be resumed, is removed again.

    Under ``accelerate launch`` (``processes``, by default read from the launcher's environment) every
    process trains its share of each global batch and only the main process writes the run directory.
    ``on_epoch_end`` runs in every process.
    """
    processes = processes or current_processes(config.device)
    progress = (progress or NullProgress()) if processes.is_main else NullProgress()
    pick_device(config.device)  # refuse a missing device before writing anything
    config = for_table(config, table)  # an image column found by itself, the default image model
    torch.manual_seed(config.seed)
    labels = training_labels(table, config.columns.label_col)
    instances = instances_from_table(table, config.columns, labels, mask_scheme=config.mask_scheme)
    from_stdin = train_path == STDIN
    stdin_copy = stdin_copy_name(table.format) if from_stdin else None  # kept in the format it came in
    if not from_stdin and stream_kind(train_path) is not None:
        log.warning(
            "%s is %s: score, filter and %s cannot read it again and will need the rows as a file (%s)",
            train_path,
            stream_kind(train_path),
            spelled("resume"),
            spelled("train", "FILE"),
        )

    def check_run_folder() -> None:
        run.check_target(overwrite=overwrite, stdin_copy=stdin_copy)
        run.check_outputs({"the training file": train_path})

    processes.main_first(check_run_folder)
    if config.columns.images:
        from tod_clean.modeling.vision import load_vision

        encoder, tokenizer = load_vision(config.model)  # the image processor stands where a tokenizer does
    else:
        encoder, tokenizer = load_pretrained(config.model)
        check_max_length(config, encoder, tokenizer)
    model = build_classifier(encoder, config, len(labels))
    if config.separated:
        # The classifier bias is shared by every sub-network, so it cannot train without leaking each row
        # into its hidden sub-network; it starts (and stays) at the log class priors instead.
        with torch.no_grad():
            model.classifier.bias.copy_(log_priors(instances.labels, len(labels)))
    if stdin_copy is not None:
        recorded_path = str(run.file(stdin_copy).resolve())
    else:
        # an hf: dataset is recorded as the configuration read (hf:REPO/CONFIG), a file by absolute path
        recorded_path = table.ref if is_hub_ref(train_path) and table.ref else str(Path(train_path).resolve())
    info = RunInfo(
        train=config,
        labels=labels,
        train_file=TrainFile(recorded_path, table.sha256, len(table), table.format, table.split),
        instance_key=f"id:{config.columns.id_col}" if config.columns.id_col else "row",
        encoder={
            "source": config.model,
            "model_type": getattr(encoder.config, "model_type", "?"),
            "hidden_size": hidden_size_of(encoder),
            "num_layers": model.num_layers,
        },
        world_size=processes.count,
    )
    created = False
    written = False

    def create_run() -> None:
        nonlocal created, written
        created = run.create(overwrite=overwrite, stdin_copy=stdin_copy)
        written = True
        if stdin_copy is not None:
            with atomic_output(run.file(stdin_copy)) as tmp:
                tmp.write_bytes(table.data)
        run.save_model(model, tokenizer)
        run.write_info(info)

    try:
        processes.main_first(create_run)
        return _fit(
            model,
            tokenizer,
            instances,
            info,
            run,
            start_epoch=1,
            progress=progress,
            on_epoch_end=on_epoch_end,
            processes=processes,
        )
    except BaseException as error:
        if written and info.status != "complete" and not run.can_resume(info):
            run.discard(created=created)
        _reword_write_failure(error, run)
        raise


def _reword_write_failure(error: BaseException, run: RunDir) -> None:
    """Raise a full disk (or quota, or read-only file system) met while writing the run as one
    RunDirError; the tokenizer's and safetensors' Rust writers report it only in their message."""
    reason = None if isinstance(error, TodCleanError) else write_failure(error)
    if reason is not None:
        raise RunDirError(f"{run.path}: cannot write the run ({reason})") from None


def resume(
    table: Table,
    run: RunDir,
    *,
    progress: Progress | None = None,
    on_epoch_end: EpochCallback | None = None,
    processes: Processes | None = None,
) -> TrainResult:
    """Continue an interrupted run from its last completed epoch, with its saved options.

    The number of processes may differ from the run's start: batches, schedule and data order do not
    depend on it.
    """
    info = run.read_info()
    processes = processes or current_processes(info.train.device)
    if info.status == "complete":
        raise RunDirError(
            f"{run.path}: training already finished ({len(info.epochs)} epochs); nothing to resume"
        )
    if table.sha256 != info.train_file.sha256:
        raise RunDirError(
            f"{table.source}: differs from the file this run started on ({info.train_file.path}, sha256 "
            f"{info.train_file.sha256[:12]}..., now {table.sha256[:12]}...); resume with the same data"
        )
    run.check_writable()  # before the model loads and an epoch trains, not when the epoch is saved
    instances = instances_from_table(
        table, info.train.columns, info.labels, mask_scheme=info.train.mask_scheme
    )
    model = run.load_model(info)
    tokenizer = run.load_preprocessor(info)
    info.world_size = processes.count
    try:
        return _fit(
            model,
            tokenizer,
            instances,
            info,
            run,
            start_epoch=len(info.epochs) + 1,
            progress=(progress or NullProgress()) if processes.is_main else NullProgress(),
            on_epoch_end=on_epoch_end,
            processes=processes,
        )
    except Exception as error:  # the run stays resumable from its last saved epoch
        _reword_write_failure(error, run)
        raise


def share_of_loss(
    loss: torch.Tensor, rows: int, processes: int, batch_size: int, grad_accum: int
) -> torch.Tensor:
    """What one process backpropagates for its ``rows`` rows of a global batch, ``loss`` being their mean
    cross-entropy: ``loss * rows * processes / (batch_size * grad_accum)``.

    Summed over the processes and divided by their number (DDP's all-reduce), the gradients are those of
    one process's ``loss * len(batch) / (batch_size * grad_accum)`` on the whole global batch: the sum of
    its rows' losses over the rows of a full optimizer step, so a short last batch weighs by its rows.
    """
    return loss * (rows * processes) / (batch_size * grad_accum)


def _dropout_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of process ``index``'s standard-dropout noise in ``epoch`` (several processes only)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


def _augment_seed(seed: int, epoch: int) -> int:
    """The seed of ``epoch``'s image augmentation (crops and flips; ``--augment``)."""
    return int(np.random.SeedSequence([seed, epoch, 0xA06]).generate_state(1)[0])


def _fit(
    model: TodClassifier,
    tokenizer: Any,
    instances: Instances,
    info: RunInfo,
    run: RunDir,
    *,
    start_epoch: int,
    progress: Progress,
    on_epoch_end: EpochCallback | None,
    processes: Processes,
) -> TrainResult:
    """The training loop. With several processes each takes rows ``[index::count]`` of every global batch
    and scales its loss so that DDP's mean of the processes' gradients is the one-process gradient of the
    global batch; global batches, steps and the LR schedule are those of one process."""
    config = info.train
    device = processes.device or pick_device(config.device)
    amp_dtype = autocast_dtype(config.precision, device)
    set_trainable(model, config)
    model.to(device)
    forward = processes.prepare_model(model)  # DDP when several processes, else the model itself
    # The main process tokenises into the run's tokens/ (kept for score); the others then map its files.
    cache = run.file(TOKENS_DIR)
    encoded = processes.main_first(
        lambda: encode_instances(tokenizer, instances, config.max_length, cache_dir=cache)
    )
    if not processes.is_main:
        encoded = encode_instances(
            tokenizer, instances, config.max_length, cache_dir=cache, write_cache=False
        )
    lengths = encoded.lengths
    labels = torch.as_tensor(instances.labels)
    keys = torch.as_tensor(instances.instance_keys)
    mode = MaskMode.EXPOSED if model.scope.masked else MaskMode.FULL

    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(instances))
    if start_epoch > 1:
        load_checkpoint(run, model, optimizer, scheduler, start_epoch - 1)
        log.info("resuming %s at epoch %d", run.path, start_epoch)

    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        if processes.several:  # each process its own standard-dropout noise (instance masks are hashed)
            torch.manual_seed(_dropout_seed(config.seed, epoch, processes.index))
        batches = length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
        # augmentation draws from its own generator, seeded per epoch: a resumed run sees the same crops
        augmenting = (
            torch.Generator().manual_seed(_augment_seed(config.seed, epoch)) if config.augment else None
        )
        progress.start(f"epoch {epoch}/{config.epochs}", len(instances))
        started = time.perf_counter()
        loss_sum, rows_seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for number, global_batch in enumerate(batches, start=1):
            indices, rows = processes.take(global_batch)
            step = number % config.grad_accum == 0 or number == len(batches)
            batch = encoded.batch(indices, device)
            if augmenting is not None:
                batch[PIXELS] = augment(batch[PIXELS].cpu(), augmenting).to(device)
            with contextlib.nullcontext() if step else processes.no_sync(forward):
                with torch.autocast(
                    device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
                ):
                    logits = forward(batch, keys[indices].to(device), mode)
                loss = nn.functional.cross_entropy(logits.float(), labels[indices].to(device))
                share_of_loss(loss, rows, processes.count, config.batch_size, config.grad_accum).backward()
            if step:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item() * rows
            rows_seen += rows
            elapsed = time.perf_counter() - started
            progress.advance(
                len(global_batch),
                loss=loss_sum / max(rows_seen, 1),
                rows_per_s=rows_seen * processes.count / max(elapsed, 1e-9),
            )
        progress.finish()
        seconds = time.perf_counter() - started
        if processes.several:  # the epoch's loss over every row, as one process would report it
            loss_sum, total_rows = processes.sum([loss_sum, float(rows_seen)])
            rows_seen = int(round(total_rows))
        metrics = {
            "epoch": epoch,
            "train_loss": loss_sum / rows_seen,
            "seconds": round(seconds, 3),
            "rows_per_second": round(rows_seen / seconds, 2),
            "world_size": processes.count,
        }
        log.info("epoch %d: loss %.4f, %.1f rows/s", epoch, metrics["train_loss"], metrics["rows_per_second"])

        def record_epoch(metrics: dict[str, Any] = metrics, epoch: int = epoch) -> None:
            info.epochs.append(metrics)
            info.status = "complete" if epoch == config.epochs else "training"

        def save_epoch(epoch: int = epoch) -> None:
            if epoch < config.epochs:
                save_checkpoint(run, model, optimizer, scheduler, epoch)
            run.save_weights(model)  # the latest weights, for users; --resume reads the checkpoint folder
            record_epoch()
            run.write_info(info)
            remove_checkpoints(run, keep=None if epoch == config.epochs else epoch)

        processes.main_first(save_epoch)  # only the main process writes the run directory
        if not processes.is_main:
            record_epoch()
        if on_epoch_end is not None:
            model.eval()
            on_epoch_end(model, epoch)
    model.eval()
    processes.wait()  # every process returns once the run is complete
    return TrainResult(info, model)
