"""``tod-clean train``: fine-tune with turn-over dropout and write a run directory."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import (
    QuietOption,
    StdinFormatOption,
    stdin_format_for,
    train_options,
    train_spelling,
    with_options,
)
from tod_clean.errors import ConfigError, OptionError
from tod_clean.io import STDIN
from tod_clean.pipelines import train as pipeline
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.processes import launched_count

F = TypeVar("F", bound=Callable[..., Any])


def _options_as_typed(command: F) -> F:
    """Name an option of a range error as typed on the command line (--lr), not by its keyword
    (learning_rate), which the Python API's messages use."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except OptionError as error:
            raise error.spelled(train_spelling) from None

    return wrapper  # type: ignore[return-value]


def _typed(context: typer.Context, options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` typed on the command line (not left at their defaults)."""
    typed = {}
    for name, value in options.items():
        source = context.get_parameter_source(name)
        if source is not None and source.name != "DEFAULT":  # typer vendors click: compare by name
            typed[name] = value
    return typed


@app.command("train")
@handle_errors
@_options_as_typed
@with_options(*train_options(), after="run")
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
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its last epoch.")] = False,
    quiet: QuietOption = False,
    **options: Any,
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
        result = pipeline.resume(
            run_dir,
            train_file,
            options=_typed(context, options),
            spell=train_spelling,
            stdin_format=from_stdin_as,
            progress=progress_for(quiet),
        )
    else:
        if train_file is None:
            raise ConfigError("give the training file (or - for standard input)")
        config = pipeline.train_config(**options)
        result = pipeline.train(
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
