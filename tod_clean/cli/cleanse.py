"""``tod-clean cleanse``: train, score, filter, retrain and compare before/after in one command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import (
    StdinFormatOption,
    config_option,
    stdin_format_for,
    train_options,
    train_spelling,
    with_options,
)
from tod_clean.config import ScoreConfig
from tod_clean.errors import OptionError
from tod_clean.io.inputs import read_table
from tod_clean.pipelines.train import train_config

# cleanse's options of its training runs: TrainConfig's, with help texts that say what they do here.
_TRAIN_OPTIONS = (
    "text_col",
    "text_pair_col",
    "label_col",
    "id_col",
    "image_col",
    "model",
    "scope",
    "keep_prob",
    "epochs",
    "batch_size",
    "learning_rate",
    "head_learning_rate",
    "max_length",
    "augment",
)
_HELP_HERE = {
    "text_pair_col": "Optional second text column.",
    "label_col": "Column holding the label.",
    "id_col": "Unique id column (instance keys hash it).",
    "model": "Local model folder or hub name; 'minilm' = embedded.",
    "scope": "Mask placement of the scoring run.",
    "keep_prob": "Keep probability of the instance masks.",
    "epochs": "Epochs of every training run.",
    "learning_rate": "Encoder learning rate.",
    "head_learning_rate": "Head learning rate.",
    "max_length": "Tokens per row.",
    "seed": "Seed of every run.",
}


@app.command("cleanse")
@handle_errors
@with_options(
    *train_options(*_TRAIN_OPTIONS, help=_HELP_HERE),
    config_option(ScoreConfig, "influence_method"),
    *train_options("seed", "device", help=_HELP_HERE),
    after="random_baseline",
)
def cleanse_command(
    train_file: Annotated[
        str,
        typer.Argument(
            help="Training data to cleanse (any supported format, a save_to_disk folder, hf:NAME[/CONFIG], "
            "or -)."
        ),
    ],
    test: Annotated[str, typer.Option(help="Labeled test data both models are evaluated on.")],
    split: Annotated[
        str | None, typer.Option(help="Split of TRAIN_FILE (a DatasetDict folder or an hf: dataset).")
    ] = None,
    test_split: Annotated[str | None, typer.Option(help="Split of --test.")] = None,
    stdin_format: StdinFormatOption = None,
    val_split: Annotated[str | None, typer.Option(help="Split of --val.")] = None,
    out_dir: Annotated[Path, typer.Option("--out-dir", "-o", help="Folder for every artifact.")] = Path(
        "tod-cleanse"
    ),
    val: Annotated[str | None, typer.Option(help="Validation data: cleanse by influence on it.")] = None,
    drop: Annotated[float | None, typer.Option(help="Fraction of rows to drop (default 0.01).")] = None,
    drop_count: Annotated[int | None, typer.Option(help="Number of rows to drop.")] = None,
    threshold: Annotated[float | None, typer.Option(help="Drop rows beyond this score.")] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help="Score column to rank by, as in filter (default: influence, harm to the validation set, "
            "with --val; else full_loss, the signal measured best at finding label errors)."
        ),
    ] = None,
    allow_empty_class: Annotated[
        bool, typer.Option(help="Allow dropping every row of a class (by default each class keeps one).")
    ] = False,
    random_baseline: Annotated[
        bool, typer.Option(help="Also retrain after removing as many random rows.")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace the contents of --out-dir.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table.")] = False,
    **options: Any,
) -> None:
    """Train with turn-over dropout, drop the worst rows, retrain, and compare on --test.

    Rows are chosen as 'tod-clean filter' chooses them (ranked within each class; every class keeps a
    row unless --allow-empty-class). Options the scope cannot serve are refused before any training;
    metrics.json keeps what was measured when a later step fails.
    """
    setup(quiet)
    from_stdin_as = stdin_format_for(stdin_format, train_file, test, val)
    from tod_clean.pipelines.cleanse import cleanse

    if drop is None and drop_count is None and threshold is None:
        drop = 0.01
    influence = options.pop("influence_method")
    try:
        config = train_config(**options)
    except OptionError as error:  # named as typed here (--lr), not by the keyword (learning_rate)
        raise error.spelled(train_spelling) from None
    result = cleanse(
        config,
        read_table(train_file, split=split, stdin_format=from_stdin_as),
        train_file,
        read_table(test, split=test_split, stdin_format=from_stdin_as),
        out_dir,
        val_table=read_table(val, split=val_split, stdin_format=from_stdin_as) if val is not None else None,
        by=by,
        fraction=drop,
        count=drop_count,
        threshold=threshold,
        allow_empty_class=allow_empty_class,
        random_baseline=random_baseline,
        overwrite=overwrite,
        score_config=ScoreConfig(influence_method=influence),
        progress=progress_for(quiet),
    )
    if result.note is not None:  # said even with --quiet, as filter does
        console.print(result.note, highlight=False, markup=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if quiet:
        return
    table = RichTable(title=f"test set {escape(str(test))}: cleansing by {result.by}")
    for column in ("model", "train rows", "removed", "accuracy", "macro-F1", "loss"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for arm in result.arms:
        e = arm.evaluation
        table.add_row(
            arm.name,
            str(arm.train_rows),
            str(arm.removed),
            f"{e.accuracy:.4f}",
            f"{e.macro_f1:.4f}",
            f"{e.loss:.4f}",
        )
    console.print(table)
    console.print(
        f"each model is one training run (seed {config.seed}); in BENCHMARKS.md section 2 retrained models of "
        "other seeds differed by about 2 points of test accuracy, so a smaller difference may be noise: "
        "compare over several --seed values before trusting it",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(f"artifacts in {result.out_dir}", highlight=False, markup=False)
