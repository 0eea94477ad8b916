"""``tod-clean train``: fine-tune with turn-over dropout and write a run directory."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tod_clean import workflow
from tod_clean.cli import (
    StdinFormatOption,
    app,
    console,
    handle_errors,
    progress_for,
    setup,
    stdin_format_for,
)
from tod_clean.config import TrainConfig
from tod_clean.errors import ConfigError, OptionError
from tod_clean.io import STDIN
from tod_clean.processes import launched_count
from tod_clean.rundir import RunDir, RunInfo

_D = TrainConfig.__dataclass_fields__
F = TypeVar("F", bound=Callable[..., Any])


def _default(name: str) -> object:
    return _D[name].default


# Options of `train` and where the run's config.json keeps them: (section, field); section "columns" is
# TrainConfig.columns, None is TrainConfig itself.
_SAVED_AS = {
    "text_col": ("columns", "text_col"),
    "text_pair_col": ("columns", "text_pair_col"),
    "label_col": ("columns", "label_col"),
    "id_col": ("columns", "id_col"),
    "model": (None, "model"),
    "scope": (None, "scope"),
    "keep_prob": (None, "keep_prob"),
    "epochs": (None, "epochs"),
    "batch_size": (None, "batch_size"),
    "lr": (None, "learning_rate"),
    "head_lr": (None, "head_learning_rate"),
    "weight_decay": (None, "weight_decay"),
    "warmup_ratio": (None, "warmup_ratio"),
    "max_length": (None, "max_length"),
    "grad_accum": (None, "grad_accum"),
    "seed": (None, "seed"),
    "mask_seed": (None, "mask_seed"),
    "pooling": (None, "pooling"),
    "head_dim": (None, "head_dim"),
    "freeze": (None, "freeze"),
    "mask_groups": (None, "mask_groups"),
    "lora_rank": (None, "lora_rank"),
    "lora_alpha": (None, "lora_alpha"),
    "lora_targets": (None, "lora_targets"),
    "lora_lr": (None, "lora_learning_rate"),
    "device": (None, "device"),
    "precision": (None, "precision"),
}


def _cli_spelling(context: typer.Context) -> Callable[[str], str]:
    """A TrainConfig field's name as this command line spells it (learning_rate -> --lr)."""
    params = {field: name for name, (_, field) in _SAVED_AS.items()}

    def spell(field: str) -> str:
        name = params.get(field, field)
        options = [p.opts[0] for p in context.command.params if p.name == name]
        return options[0] if options else f"--{field.replace('_', '-')}"

    return spell


def _options_as_typed(command: F) -> F:
    """Name an option of a range error as typed on the command line (--lr), not by its keyword
    (learning_rate), which the Python API's messages use. The command takes the Typer ``context``."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OptionError as error:
            raise error.spelled(_cli_spelling(kwargs["context"])) from None

    return wrapper  # type: ignore[return-value]


def _refuse_changed_options(context: typer.Context, info: RunInfo, given: dict[str, Any]) -> None:
    """--resume continues with the run's saved options; refuse options given with other values.

    Only options typed on the command line count (defaults do not), and a value equal to the saved one is
    accepted. Applying a change instead would not be coherent: even --epochs reshapes the LR schedule.
    """
    changed = []
    for name, (section, field) in _SAVED_AS.items():
        source = context.get_parameter_source(name)
        if source is None or source.name == "DEFAULT":  # typer vendors click: compare by name
            continue
        saved = getattr(info.train.columns if section == "columns" else info.train, field)
        value = given[name]
        if name == "lora_targets":  # typed comma-separated, saved as a list
            value = [target.strip() for target in value.split(",") if target.strip()]
        if value != saved:
            option = next(p.opts[0] for p in context.command.params if p.name == name)
            changed.append(f"{option} {given[name]} (the run's: {saved})")
    if changed:
        raise ConfigError(
            f"--resume continues {info.train_file.path} with the run's own options; these differ: "
            f"{'; '.join(changed)}. Drop them, or train a new run"
        )


@app.command("train")
@handle_errors
@_options_as_typed
def train_command(
    context: typer.Context,
    train_file: Annotated[
        str | None,
        typer.Argument(
            help="Training data (.jsonl .json .csv .tsv .parquet, a datasets save_to_disk folder, or "
            "hf:NAME[/CONFIG] from the local Hugging Face cache), or - for stdin (see --stdin-format)."
        ),
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="Split to train on, of a DatasetDict folder (save_to_disk) or an hf: dataset."),
    ] = None,
    stdin_format: StdinFormatOption = None,
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory to write.")] = Path("tod-run"),
    text_col: Annotated[str, typer.Option(help="Column holding the text.")] = "text",
    text_pair_col: Annotated[str | None, typer.Option(help="Optional second text column (pairs).")] = None,
    label_col: Annotated[str, typer.Option(help="Column holding the label (text or integer).")] = "label",
    id_col: Annotated[
        str | None, typer.Option(help="Unique id column: instance keys hash it, so masks survive reordering.")
    ] = None,
    model: Annotated[
        str, typer.Option(help="Local model folder or hub name; 'minilm' = the embedded MiniLM-L6.")
    ] = str(_default("model")),
    scope: Annotated[
        str,
        typer.Option(
            help="Where instance masks sit: head, lora (frozen encoder, masked LoRA rank units), layers:K, "
            "ffn:K; or no masks: none (plain fine-tune), lora-plain (plain LoRA fine-tune)."
        ),
    ] = str(_default("scope")),
    keep_prob: Annotated[
        float | None,
        typer.Option(
            help="Fraction of units each instance's exposed sub-network keeps (default 0.5; 1/K with "
            "--mask-groups K)."
        ),
    ] = None,
    mask_groups: Annotated[
        int,
        typer.Option(
            help="0: independent random masks; K >= 2: K disjoint unit groups, each row trains one "
            "(exact out-of-fold hidden sub-networks; sets --keep-prob to 1/K)."
        ),
    ] = 0,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = _default("epochs"),  # type: ignore[assignment]
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = _default("batch_size"),  # type: ignore[assignment]
    lr: Annotated[float, typer.Option("--lr", help="Encoder learning rate (AdamW).")] = (
        _default("learning_rate")  # type: ignore[assignment]
    ),
    head_lr: Annotated[float, typer.Option(help="Head learning rate (AdamW).")] = (
        _default("head_learning_rate")  # type: ignore[assignment]
    ),
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = (
        _default("weight_decay")  # type: ignore[assignment]
    ),
    warmup_ratio: Annotated[float, typer.Option(help="Fraction of steps of linear warm-up.")] = (
        _default("warmup_ratio")  # type: ignore[assignment]
    ),
    max_length: Annotated[int, typer.Option(help="Tokens per row; longer rows are truncated.")] = (
        _default("max_length")  # type: ignore[assignment]
    ),
    grad_accum: Annotated[int, typer.Option(help="Batches accumulated per optimizer step.")] = (
        _default("grad_accum")  # type: ignore[assignment]
    ),
    seed: Annotated[int, typer.Option(help="Seed of initialisation, data order and dropout.")] = 0,
    mask_seed: Annotated[
        int | None, typer.Option(help="Seed of the instance-mask hash (default: --seed).")
    ] = None,
    pooling: Annotated[str, typer.Option(help="Pooling of token states: mean or cls.")] = "mean",
    head_dim: Annotated[
        int | None, typer.Option(help="Hidden units of the head (default: encoder width).")
    ] = None,
    freeze: Annotated[
        str,
        typer.Option(
            help="none; below: embeddings and layers under the first masked one; unmasked: train only "
            "parameters that belong to one mask unit (head; feed-forward units of ffn:K)."
        ),
    ] = "none",
    lora_rank: Annotated[int, typer.Option(help="Rank (masked units) of each LoRA adapter (scope lora).")] = (
        _default("lora_rank")  # type: ignore[assignment]
    ),
    lora_alpha: Annotated[
        float, typer.Option(help="LoRA scaling numerator (adapters add B A x * alpha/rank).")
    ] = (
        _default("lora_alpha")  # type: ignore[assignment]
    ),
    lora_targets: Annotated[
        str,
        typer.Option(
            help="Comma-separated names of the linear layers in each encoder layer that get adapters, e.g. "
            "query,value (default: all of them)."
        ),
    ] = "",
    lora_lr: Annotated[float, typer.Option(help="LoRA adapters' learning rate (AdamW).")] = (
        _default("lora_learning_rate")  # type: ignore[assignment]
    ),
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, bf16 or auto (bf16 on CUDA).")] = "auto",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last epoch.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Fine-tune a classifier with turn-over dropout; write weights, config and metrics to --run."""
    quiet = setup(quiet)
    run_dir = RunDir(run)
    from_stdin_as = stdin_format_for(stdin_format, train_file)
    if train_file == STDIN and launched_count() > 1:
        raise ConfigError(
            "training data from standard input under accelerate launch: every process reads the data; "
            "give a file"
        )
    if resume:
        if overwrite:
            raise ConfigError("--resume continues a run and --overwrite replaces it: give one of them")
        _refuse_changed_options(context, run_dir.read_info(), locals())
        result = workflow.resume(
            run_dir, train_file, stdin_format=from_stdin_as, progress=progress_for(quiet)
        )
    else:
        if train_file is None:
            raise ConfigError("give the training file (or - for standard input)")
        config = workflow.train_config(
            text_col=text_col,
            text_pair_col=text_pair_col,
            label_col=label_col,
            id_col=id_col,
            model=model,
            scope=scope,
            keep_prob=keep_prob,
            mask_groups=mask_groups,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            head_learning_rate=head_lr,
            weight_decay=weight_decay,
            warmup_ratio=warmup_ratio,
            max_length=max_length,
            grad_accum=grad_accum,
            seed=seed,
            mask_seed=mask_seed,
            pooling=pooling,
            head_dim=head_dim,
            freeze=freeze,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            lora_targets=lora_targets,
            lora_learning_rate=lora_lr,
            device=device,
            precision=precision,
        )
        result = workflow.train(
            config,
            train_file,
            run_dir,
            split=split,
            stdin_format=from_stdin_as,
            overwrite=overwrite,
            progress=progress_for(quiet),
        )
    last = result.info.epochs[-1]
    if not quiet:
        console.print(
            f"trained {result.info.train_file.rows} rows for {len(result.info.epochs)} epochs "
            f"(scope {result.info.scope}, keep_prob {result.info.train.keep_prob}); "
            f"last epoch loss {last['train_loss']:.4f}, {last['rows_per_second']:.1f} rows/s -> {run}",
            highlight=False,
            markup=False,  # the run's path is shown as written
        )
