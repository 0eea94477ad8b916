"""``tod-clean predict``: per-row class probabilities of a run's full network on any data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import (
    INFERENCE_BATCH_SIZE,
    BatchSizeOption,
    DeviceOption,
    QuietOption,
    StdinFormatOption,
    stdin_format_for,
)
from tod_clean.config import ColumnChoice
from tod_clean.io import STDIN
from tod_clean.run.rundir import RunDir


@app.command("predict")
@handle_errors
def predict_command(
    data_file: Annotated[
        str,
        typer.Argument(
            help="Rows to predict (any supported format, a save_to_disk folder, hf:NAME[/CONFIG], or - for "
            "stdin: see --stdin-format)."
        ),
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            help="Write the predictions here (.csv .parquet .jsonl), to a datasets save_to_disk folder (a "
            "name with no extension, or ending in /), or - for CSV on stdout.",
        ),
    ],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory written by train.")] = Path(
        "tod-run"
    ),
    split: Annotated[
        str | None, typer.Option(help="Split of DATA_FILE (a DatasetDict folder or an hf: dataset).")
    ] = None,
    stdin_format: StdinFormatOption = None,
    text_col: Annotated[str | None, typer.Option(help="Text column (default: training's).")] = None,
    text_pair_col: Annotated[
        str | None, typer.Option(help="Second text column (default: training's).")
    ] = None,
    label_col: Annotated[
        str | None,
        typer.Option(help="Label column: adds label and loss (default: training's, when the file has it)."),
    ] = None,
    id_col: Annotated[
        str | None, typer.Option(help="Id column, copied as id (default: training's, when the file has it).")
    ] = None,
    labels: Annotated[
        bool | None,
        typer.Option(
            "--labels/--no-labels",
            help="Read the label column (--labels: it must be there) or ignore it; default: when present.",
            show_default=False,
        ),
    ] = None,
    batch_size: BatchSizeOption = INFERENCE_BATCH_SIZE,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Predict every row with the run's full network (no instance mask): prob_LABEL per class,
    predicted_label, and label and loss for labeled rows."""
    quiet = setup(quiet)
    from_stdin_as = stdin_format_for(stdin_format, data_file)
    from tod_clean.pipelines import predict as pipeline

    frame = pipeline.predict(
        RunDir(run),
        data_file,
        split=split,
        stdin_format=from_stdin_as,
        columns=ColumnChoice(text_col, text_pair_col, label_col, id_col),
        labels=labels,
        out=out,
        batch_size=batch_size,
        device=device,
        progress=progress_for(quiet),
    )
    if not quiet:
        summary = f"predicted {len(frame)} rows"
        if "loss" in frame:
            accuracy = float((frame["predicted_label"] == frame["label"]).mean())
            summary += f" (accuracy {accuracy:.4f}, mean loss {frame['loss'].mean():.4f})"
        console.print(summary + (f" -> {out}" if out != STDIN else ""), highlight=False, markup=False)
