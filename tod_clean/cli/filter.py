"""``tod-clean filter``: the training set minus its worst rows, unchanged, in its own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, setup
from tod_clean.cli.options import StdinFormatOption, stdin_format_for
from tod_clean.io import STDIN
from tod_clean.pipelines import filter as pipeline
from tod_clean.run.rundir import RunDir
from tod_clean.signals import SIGNALS

BY_HELP = (
    f"Score column to rank by: {', '.join(SIGNALS)} (default: influence, harm to the validation set, when "
    "the scores have it; else full_loss, the signal measured best at finding label errors)."
)


@app.command("filter")
@handle_errors
def filter_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory holding the scores.")] = Path(
        "tod-run"
    ),
    drop: Annotated[float | None, typer.Option(help="Fraction of rows to drop (default 0.01).")] = None,
    drop_count: Annotated[int | None, typer.Option(help="Number of rows to drop.")] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            help="Drop rows beyond this value of the --by score itself (below it for influence, else above)."
        ),
    ] = None,
    by: Annotated[str | None, typer.Option(help=BY_HELP)] = None,
    allow_empty_class: Annotated[
        bool, typer.Option(help="Allow dropping every row of a class (by default each class keeps one).")
    ] = False,
    train: Annotated[
        str | None,
        typer.Option(
            help="Training data to filter (default: the run's data): a data file, a save_to_disk folder, "
            "hf:NAME[/CONFIG], or - for stdin."
        ),
    ] = None,
    stdin_format: StdinFormatOption = None,
    scores: Annotated[
        str | None,
        typer.Option(
            help="Scores written by score --out, a file or a dataset folder (default: the run's saved scores)."
        ),
    ] = None,
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Kept rows, in the input's format (a save_to_disk folder for a dataset folder or an hf: "
            "dataset); - for stdout.",
        ),
    ] = STDIN,
    removed: Annotated[
        str | None, typer.Option(help="Also write the dropped rows with their scores here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Write the training rows that survive: all columns, original order, unchanged.

    Rows are ranked by --by. Label-error signals (every one but influence) are ranked within each class:
    a row's value minus its class's median, over the larger of its class's median absolute deviation and
    that of all rows, so that a rare class, whose losses are high by nature, is not dropped first.
    Influence, a harm to the validation set, is ranked as it is. --threshold compares the score itself.
    Whatever the criterion, every class keeps at least one row (its best) unless --allow-empty-class; a
    class that loses more than 3 times the overall share (and at least 2 rows) is named in a warning.
    Dropping every row is refused.
    """
    setup(quiet)
    filtered = pipeline.filter(
        RunDir(run),
        train,
        scores=scores,
        by=by,
        drop=drop,
        drop_count=drop_count,
        threshold=threshold,
        allow_empty_class=allow_empty_class,
        out=out,
        removed=removed,
        stdin_format=stdin_format_for(stdin_format, train),
    )
    result, table = filtered.result, filtered.table
    if result.note is not None:
        # Said even with --quiet: which signal chose the rows matters more than a quiet stderr.
        console.print(result.note, highlight=False, markup=False, soft_wrap=True)
    for warning in result.warnings:
        console.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if not quiet:
        console.print(
            f"kept {len(result.kept)} of {len(table)} rows; dropped {len(result.dropped)} "
            f"({len(result.dropped) / len(table):.2%}) "
            f"with the {result.worse_when} {result.by}" + (f" -> {out}" if out != STDIN else ""),
            highlight=False,
            markup=False,
        )
