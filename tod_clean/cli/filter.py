"""``tod-clean filter``: the training set minus its worst rows, unchanged, in its own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from tod_clean.cli import app, console, handle_errors, setup
from tod_clean.data import STDIN, read_table, write_frame, write_subset
from tod_clean.errors import ConfigError
from tod_clean.filter import (
    SIGNALS,
    WORSE_WHEN_LOWER,
    check_scores,
    default_signal,
    match_scores,
    read_scores,
    rows_to_drop,
)
from tod_clean.rundir import RunDir


@app.command("filter")
@handle_errors
def filter_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory holding the scores.")] = Path("tod-run"),
    drop: Annotated[float | None, typer.Option(help="Fraction of rows to drop [default: 0.01].")] = None,
    drop_count: Annotated[int | None, typer.Option(help="Number of rows to drop.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Drop rows beyond this score (below it for influence, else above).")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help=f"Score column to rank by: {', '.join(SIGNALS)} [default: influence if scored]."),
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="Training data to filter (default: the run's file), or - for stdin.")
    ] = None,
    scores: Annotated[
        str | None, typer.Option(help="Scores file written by score --out (default: the run's saved scores).")
    ] = None,
    out: Annotated[str, typer.Option("--out", "-o", help="Kept rows, in the input's format; - for stdout.")] = STDIN,
    removed: Annotated[str | None, typer.Option(help="Also write the dropped rows with their scores here.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Write the training rows that survive: all columns, original order, unchanged."""
    setup(quiet)
    from tod_clean.score import load_scores

    run_dir = RunDir(run)
    if drop is None and drop_count is None and threshold is None:
        drop = 0.01
    info = run_dir.read_info()
    frame = read_scores(scores) if scores is not None else load_scores(run_dir)[0]
    table = read_table(train or info.train_file.path)
    aligned = match_scores(table, frame, info)
    by = by or default_signal(list(aligned.columns))
    if by not in aligned.columns:
        raise ConfigError(f"--by {by}: no such score column; columns found: {', '.join(aligned.columns)}")
    values = aligned[by].to_numpy(dtype=np.float64)
    check_scores(values, by, scores or str(run_dir.path))
    dropped = rows_to_drop(values, by=by, fraction=drop, count=drop_count, threshold=threshold)
    keep = np.setdiff1d(np.arange(len(table)), dropped)
    if removed is not None:
        rows = table.to_frame().iloc[dropped].reset_index(drop=True)
        report = aligned.iloc[dropped].reset_index(drop=True).drop(columns=["id", "label"], errors="ignore")
        report.columns = [f"score_{name}" if name in rows.columns else name for name in report.columns]
        write_frame(rows.join(report), removed)
    write_subset(table, keep.tolist(), out)
    if not quiet:
        direction = "lowest" if by in WORSE_WHEN_LOWER else "highest"
        console.print(
            f"kept {len(keep)} of {len(table)} rows; dropped {len(dropped)} ({len(dropped) / len(table):.2%}) "
            f"with the {direction} {by}" + (f" -> {out}" if out != STDIN else ""),
            highlight=False,
        )
