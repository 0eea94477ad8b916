"""``tod-clean evaluate``: accuracy, macro-F1, loss, per-class metrics and confusion matrix of a run's
full network."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import (
    INFERENCE_BATCH_SIZE,
    BatchSizeOption,
    DeviceOption,
    StdinFormatOption,
    stdin_format_for,
)
from tod_clean.config import ColumnChoice
from tod_clean.run.rundir import RunDir


@app.command("evaluate")
@handle_errors
def evaluate_command(
    data_file: Annotated[
        str,
        typer.Argument(
            help="Labeled data to evaluate on (any supported format, a save_to_disk folder, "
            "hf:NAME[/CONFIG], or -)."
        ),
    ],
    split: Annotated[
        str | None, typer.Option(help="Split of DATA_FILE (a DatasetDict folder or an hf: dataset).")
    ] = None,
    stdin_format: StdinFormatOption = None,
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory written by train.")] = Path(
        "tod-run"
    ),
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Write the metrics as JSON here (- for stdout).")
    ] = None,
    text_col: Annotated[str | None, typer.Option(help="Text column (default: training's).")] = None,
    text_pair_col: Annotated[
        str | None, typer.Option(help="Second text column (default: training's).")
    ] = None,
    label_col: Annotated[str | None, typer.Option(help="Label column (default: training's).")] = None,
    batch_size: BatchSizeOption = INFERENCE_BATCH_SIZE,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table.")] = False,
) -> None:
    """Evaluate the run's full network (no instance mask) on a labeled file."""
    setup(quiet)
    from_stdin_as = stdin_format_for(stdin_format, data_file)
    from tod_clean.pipelines import evaluate as pipeline

    result = pipeline.evaluate(
        RunDir(run),
        data_file,
        split=split,
        stdin_format=from_stdin_as,
        columns=ColumnChoice(text_col, text_pair_col, label_col),
        out=out,
        batch_size=batch_size,
        device=device,
        progress=progress_for(quiet),
    )
    if not quiet:
        metrics = RichTable(title=f"{escape(str(data_file))}: {result.rows} rows", show_header=False)
        metrics.add_row("accuracy", f"{result.accuracy:.4f}")
        metrics.add_row("macro-F1", f"{result.macro_f1:.4f}")
        metrics.add_row("loss", f"{result.loss:.4f}")
        console.print(metrics)
        per_class = RichTable(title="per class")
        for column in ("label", "precision", "recall", "F1", "support"):
            per_class.add_column(column, justify="left" if column == "label" else "right")
        for row in result.per_class:
            per_class.add_row(
                escape(str(row.label)),
                f"{row.precision:.4f}",
                f"{row.recall:.4f}",
                f"{row.f1:.4f}",
                str(row.support),
            )
        console.print(per_class)
        confusion = RichTable(title="confusion (rows: true, columns: predicted)")
        confusion.add_column("")
        for name in result.labels:
            confusion.add_column(escape(str(name)), justify="right")
        for name, counts in zip(result.labels, result.confusion, strict=True):
            confusion.add_row(escape(str(name)), *(str(c) for c in counts))
        console.print(confusion)
