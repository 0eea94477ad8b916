"""Fine-tuning with turn-over dropout: every row trains only its instance's exposed sub-network."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import get_scheduler

from tod_clean.config import TrainConfig, resolve_model
from tod_clean.encoding import (
    TOKENIZER_FILES,
    EncodedRows,
    empty_vocabulary,
    encode_texts,
    length_grouped_batches,
)
from tod_clean.errors import ConfigError, RunDirError, TodCleanError
from tod_clean.instances import Instances, instances_from_table, training_labels
from tod_clean.io import STDIN
from tod_clean.io.formats.hub import is_hub_ref
from tod_clean.io.paths import atomic_output, stream_kind, write_failure
from tod_clean.io.table import Table
from tod_clean.masks import MaskMode
from tod_clean.modeling.classifier import TodClassifier
from tod_clean.run.rundir import (
    CHECKPOINT_DIR,
    TOKENS_DIR,
    WEIGHTS,
    RunDir,
    RunInfo,
    TrainFile,
    build_classifier,
    first_line,
    load_tensor_file,
    save_tensors,
    stdin_copy_name,
    write_json,
)
from tod_clean.runtime.device import autocast_dtype, pick_device
from tod_clean.runtime.processes import Processes, current_processes
from tod_clean.runtime.progress import NullProgress, Progress
from tod_clean.scopes.adapters import lora_parameters
from tod_clean.scopes.architecture import hidden_size_of

log = logging.getLogger(__name__)

EpochCallback = Callable[[TodClassifier, int], None]


def load_pretrained(model_name: str) -> tuple[nn.Module, Any]:
    """The encoder and tokenizer of a local folder or hub name, with one clear error if either fails.

    Any checkpoint ``AutoModel`` reads gives its encoder: a base model, or a task model (say
    ``BertForSequenceClassification``), whose head weights are left out; tod-clean adds its own head.
    """
    from transformers import AutoModel, AutoTokenizer

    path = resolve_model(model_name)
    local = check_model_folder(model_name, path)

    def load(local_files_only: bool) -> tuple[nn.Module, Any, dict[str, Any]]:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_files_only)
        # safetensors only: pickle weights (pytorch_model.bin) can run code when loaded
        encoder, loading = AutoModel.from_pretrained(
            path,
            local_files_only=local_files_only,
            use_safetensors=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below as one line, not raised as a RuntimeError
        )
        return encoder, tokenizer, loading

    try:
        try:
            # a hub name is looked for in the local cache first: no network, no retries, when it is there
            encoder, tokenizer, loading = load(local_files_only=True)
        except OSError:
            if local:
                raise
            check_hub_reachable(model_name)
            with _quiet_hub():
                encoder, tokenizer, loading = load(local_files_only=False)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"--model {model_name}: cannot load an encoder and tokenizer ({first_line(error)})"
        ) from None
    check_encoder_weights(model_name, loading)
    size = empty_vocabulary(tokenizer)
    if size is not None:
        where = f"the folder {path}" if local else "the hub repository"
        raise ConfigError(
            f"--model {model_name}: no tokenizer files in {where} (none of {TOKENIZER_FILES}); the "
            f"tokenizer would know only its {size} special tokens, so every word would be unknown: save the "
            "model's tokenizer there too (tokenizer.save_pretrained)"
        )
    embedded = getattr(getattr(encoder, "config", None), "vocab_size", None)
    if isinstance(embedded, int) and len(tokenizer) > embedded:
        raise ConfigError(
            f"--model {model_name}: its tokenizer has {len(tokenizer)} tokens, but the encoder embeds only "
            f"{embedded} (vocab_size in its config.json): the tokenizer belongs to another model"
        )
    return encoder, tokenizer


HUB_TIMEOUT_S = 10


def check_hub_reachable(model_name: str) -> None:
    """Refuse a hub name that is not in the local cache when the hub cannot be reached (offline mode, no
    network): one request, instead of huggingface_hub's retries, which print a warning each and take a
    minute before the same failure."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    not_cached = f"--model {model_name}: neither a local folder nor in the local Hugging Face cache"
    if constants.is_offline_mode():
        raise ConfigError(
            f"{not_cached}, and HF_HUB_OFFLINE is set; give a local model folder, or download the model "
            "while online"
        )
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
    except Exception as error:  # the HTTP client's connection errors (no network, DNS, proxy, timeout)
        raise ConfigError(
            f"{not_cached}, and the hub ({constants.ENDPOINT}) cannot be reached ({first_line(error)}); give "
            "a local model folder, or connect to download it"
        ) from None


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub logs each retry of a download as a warning: errors only, so a failure is one line."""
    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_log.setLevel(level)


def check_encoder_weights(model_name: str, loading: dict[str, Any]) -> None:
    """Refuse a checkpoint that leaves encoder weights at their random start (weights that do not fit the
    config, or a checkpoint of another model): training would quietly start from noise. The pooler is
    never used (tod-clean pools the last hidden states itself), and task checkpoints often lack it."""
    mismatched = sorted(
        str(item[0] if isinstance(item, tuple) else item) for item in loading["mismatched_keys"]
    )
    missing = sorted(name for name in loading["missing_keys"] if not name.startswith("pooler."))
    if mismatched:
        raise ConfigError(
            f"--model {model_name}: {len(mismatched)} weights have other shapes than its config.json says "
            f"(first: {mismatched[0]})"
        )
    if missing:
        raise ConfigError(
            f"--model {model_name}: {len(missing)} encoder weights are missing from the checkpoint "
            f"(first: {missing[0]}); it does not match its config.json"
        )


PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


def check_model_folder(model_name: str, path: str) -> bool:
    """Whether ``path`` is a local model folder; refuse one that is missing, incomplete or pickled.

    A path that does not exist is taken for a hub name only if it looks like one (``name`` or
    ``org/name``); anything else that names no folder is an error, not a hub lookup.
    """
    folder = Path(path).expanduser()
    if not folder.exists():
        looks_like_hub_name = (
            path.count("/") <= 1 and not path.startswith((".", "/", "~")) and "\\" not in path
        )
        if looks_like_hub_name:
            return False
        raise ConfigError(f"--model {model_name}: no such folder")
    if not folder.is_dir():
        raise ConfigError(f"--model {model_name}: not a folder; give a model folder or a hub name")
    if not (folder / "config.json").is_file():
        raise ConfigError(f"--model {model_name}: not a model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        pickled = [name for name in PICKLE_WEIGHTS if (folder / name).is_file()]
        if pickled:
            raise ConfigError(
                f"--model {model_name}: holds only pickle weights ({pickled[0]}), which tod-clean does not "
                "load; convert them to model.safetensors (model.save_pretrained(folder) does)"
            )
        raise ConfigError(f"--model {model_name}: no model weights (model.safetensors) in the folder")
    return True


# Fewer tokens than this leave a row a word or two after the special tokens: a classifier of nothing.
MIN_MAX_LENGTH = 8


def position_limit(encoder: nn.Module, tokenizer: Any) -> int | None:
    """The most tokens per row the encoder can embed (None when neither the model nor tokenizer says)."""
    limits = []
    positions = getattr(getattr(encoder, "config", None), "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style embeddings number positions from padding_idx + 1
        padding_idx = getattr(getattr(encoder, "embeddings", None), "padding_idx", None)
        limits.append(positions - (padding_idx + 1 if isinstance(padding_idx, int) else 0))
    model_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(model_max, int) and 0 < model_max < 1_000_000:  # unset is a huge sentinel value
        limits.append(model_max)
    return min(limits) if limits else None


def check_max_length(config: TrainConfig, encoder: nn.Module, tokenizer: Any) -> None:
    """Refuse a --max-length that leaves no room for text, or that the model cannot embed."""
    pair = config.columns.text_pair_col is not None
    special = tokenizer.num_special_tokens_to_add(pair=pair)
    floor = max(MIN_MAX_LENGTH, special + (2 if pair else 1))
    if config.max_length < floor:
        raise ConfigError(
            f"--max-length {config.max_length}: too short; {special} of the tokens go to special tokens, "
            f"use at least {floor}"
        )
    limit = position_limit(encoder, tokenizer)
    if limit is not None and config.max_length > limit:
        raise ConfigError(
            f"--max-length {config.max_length}: the model {config.model} takes at most {limit} tokens per row"
        )


def encode_instances(
    tokenizer: Any,
    instances: Instances,
    max_length: int,
    *,
    cache_dir: Path | None = None,
    write_cache: bool = True,
) -> EncodedRows:
    """Token ids of the instances; kept in ``cache_dir`` (a run's tokens/) for score to reuse (read from
    there only, without ``write_cache``)."""
    return encode_texts(
        tokenizer,
        instances.texts,
        instances.text_pairs,
        max_length,
        cache_dir=cache_dir,
        write_cache=write_cache,
    )


def make_optimizer(model: TodClassifier, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the encoder, LoRA adapters and head at their own learning rates; no decay on biases
    and norms."""
    head = [model.head_dense, model.classifier]
    head_ids = {id(p) for module in head for p in module.parameters()}
    adapter_ids = {id(p) for p in lora_parameters(model.encoder)}
    rates = {
        "encoder": config.learning_rate,
        "head": config.head_learning_rate,
        "lora": config.lora_learning_rate,
    }
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        part = "head" if id(parameter) in head_ids else "lora" if id(parameter) in adapter_ids else "encoder"
        groups.setdefault((part, parameter.ndim >= 2), []).append(parameter)
    param_groups = [
        {"params": params, "lr": rates[part], "weight_decay": config.weight_decay if decay else 0.0}
        for (part, decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups)


def set_trainable(model: TodClassifier, config: TrainConfig) -> None:
    """Freeze what ``config`` says: layers below the masks (``below``), or everything but the parameters
    that belong to one mask unit (``unmasked``, and always in the lora scope)."""
    if config.freeze == "below":
        for parameter in model.lower_parameters():
            parameter.requires_grad_(False)
    elif config.separated:
        separated = {id(p) for p in model.separated_parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in separated)


def log_priors(labels: np.ndarray, num_labels: int) -> torch.Tensor:
    """Log class frequencies ``[C]`` float32 of int64 ``labels`` (a class with no row counts as half a row)."""
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    counts[counts == 0] = 0.5
    return torch.as_tensor(np.log(counts / counts.sum()), dtype=torch.float32)


# ---- optimizer state as safetensors + JSON (no pickle) ------------------------------------------


def _epoch_folder(run: RunDir, epoch: int) -> Path:
    return run.file(CHECKPOINT_DIR) / f"epoch-{epoch}"


def _save_checkpoint(
    run: RunDir, model: TodClassifier, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> None:
    """Weights, optimizer, scheduler and RNG state of the end of ``epoch``, in a folder of its own.

    config.json names an epoch only after its folder is complete, and older folders are removed only
    after that: an interruption at any moment leaves a consistent checkpoint to resume from.
    """
    folder = _epoch_folder(run, epoch)
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


def _remove_checkpoints(run: RunDir, *, keep: int | None = None) -> None:
    folder = run.file(CHECKPOINT_DIR)
    if keep is None:
        shutil.rmtree(folder, ignore_errors=True)
        return
    for old in folder.glob("epoch-*"):
        if old.name != f"epoch-{keep}":
            shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(
    run: RunDir, model: TodClassifier, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int
) -> None:
    import json

    folder = _epoch_folder(run, epoch)
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
    torch.manual_seed(config.seed)
    labels = training_labels(table, config.columns.label_col)
    instances = instances_from_table(table, config.columns, labels, mask_scheme=config.mask_scheme)
    from_stdin = train_path == STDIN
    stdin_copy = stdin_copy_name(table.format) if from_stdin else None  # kept in the format it came in
    if not from_stdin and stream_kind(train_path) is not None:
        log.warning(
            "%s is %s: score, filter and --resume cannot read it again and will need the rows as a file "
            "(--train FILE)",
            train_path,
            stream_kind(train_path),
        )

    def check_run_folder() -> None:
        run.check_target(overwrite=overwrite, stdin_copy=stdin_copy)
        run.check_outputs({"the training file": train_path})

    processes.main_first(check_run_folder)
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
    tokenizer = run.load_tokenizer()
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

    batches_per_epoch = math.ceil(len(instances) / config.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    optimizer = make_optimizer(model, config)
    scheduler = get_scheduler(
        "linear",
        optimizer,
        num_warmup_steps=int(config.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    if start_epoch > 1:
        _load_checkpoint(run, model, optimizer, scheduler, start_epoch - 1)
        log.info("resuming %s at epoch %d", run.path, start_epoch)

    for epoch in range(start_epoch, config.epochs + 1):
        model.train()
        if processes.several:  # each process its own standard-dropout noise (instance masks are hashed)
            torch.manual_seed(_dropout_seed(config.seed, epoch, processes.index))
        batches = length_grouped_batches(lengths, config.batch_size, config.seed, epoch)
        progress.start(f"epoch {epoch}/{config.epochs}", len(instances))
        started = time.perf_counter()
        loss_sum, rows_seen = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        for number, global_batch in enumerate(batches, start=1):
            indices, rows = processes.take(global_batch)
            step = number % config.grad_accum == 0 or number == len(batches)
            batch = encoded.batch(indices, device)
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
            loss_sum, rows_seen = processes.sum([loss_sum, float(rows_seen)])
            rows_seen = int(round(rows_seen))
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
                _save_checkpoint(run, model, optimizer, scheduler, epoch)
            run.save_weights(model)  # the latest weights, for users; --resume reads the checkpoint folder
            record_epoch()
            run.write_info(info)
            _remove_checkpoints(run, keep=None if epoch == config.epochs else epoch)

        processes.main_first(save_epoch)  # only the main process writes the run directory
        if not processes.is_main:
            record_epoch()
        if on_epoch_end is not None:
            model.eval()
            on_epoch_end(model, epoch)
    model.eval()
    processes.wait()  # every process returns once the run is complete
    return TrainResult(info, model)
