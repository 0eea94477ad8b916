"""``tod-clean filter``: the training set minus its worst rows, unchanged, in its own format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, setup
from tod_clean.data import (
    STDIN,
    check_destination,
    check_distinct_outputs,
    check_subset_destination,
    deliver,
    frame_bytes,
    is_dataset_dir,
    output_format,
    read_table,
    write_subset,
)
from tod_clean.filter import SIGNALS, filter_table, read_scores
from tod_clean.rundir import SCORES, RunDir


@app.command("filter")
@handle_errors
def filter_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory holding the scores.")] = Path(
        "tod-run"
    ),
    drop: Annotated[float | None, typer.Option(help="Fraction of rows to drop (default 0.01).")] = None,
    drop_count: Annotated[int | None, typer.Option(help="Number of rows to drop.")] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Drop rows beyond this score (below it for influence, else above).")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(help=f"Score column to rank by: {', '.join(SIGNALS)} (default: influence if scored)."),
    ] = None,
    train: Annotated[
        str | None, typer.Option(help="Training data to filter (default: the run's file), or - for stdin.")
    ] = None,
    scores: Annotated[
        str | None, typer.Option(help="Scores file written by score --out (default: the run's saved scores).")
    ] = None,
    out: Annotated[
        str, typer.Option("--out", "-o", help="Kept rows, in the input's format; - for stdout.")
    ] = STDIN,
    removed: Annotated[
        str | None, typer.Option(help="Also write the dropped rows with their scores here.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Write the training rows that survive: all columns, original order, unchanged."""
    setup(quiet)
    from tod_clean.score import load_scores

    run_dir = RunDir(run)
    if drop is None and drop_count is None and threshold is None:
        drop = 0.01
    info = run_dir.read_info()
    train_path = train or info.train_file.path
    check_distinct_outputs(
        {**run_dir.own_files(), "the training file": train_path, "--scores": scores},
        {"--out": out, "--removed": removed},
    )
    if not is_dataset_dir(train_path):  # a dataset folder's kept rows go to a folder, checked below
        check_destination(out)
    if removed is not None:
        check_destination(removed)
        output_format(removed, "csv")
    frame = read_scores(scores) if scores is not None else load_scores(run_dir)[0]
    table = read_table(train_path, split=info.train_file.split)
    check_subset_destination(table, out)
    result = filter_table(
        table,
        frame,
        info,
        by=by,
        fraction=drop,
        count=drop_count,
        threshold=threshold,
        scores_source=scores or str(run_dir.file(SCORES)),
    )
    removed_payload = frame_bytes(result.removed, output_format(removed, "csv")) if removed else None
    write_subset(table, result.kept, out)  # streamed from the input, a chunk at a time
    if removed is not None and removed_payload is not None:
        deliver(removed, removed_payload)
    if by is None and result.by != "influence":
        # Said even with --quiet: the default ranking silently changing meaning would be worse.
        console.print(
            f"note: ranking by {result.by}, not influence: these scores have no influence column "
            "(scored without --val); pass --by to choose the signal",
            highlight=False,
            soft_wrap=True,
        )
    if not quiet:
        console.print(
            f"kept {len(result.kept)} of {len(table)} rows; dropped {len(result.dropped)} "
            f"({len(result.dropped) / len(table):.2%}) "
            f"with the {result.worse_when} {result.by}" + (f" -> {out}" if out != STDIN else ""),
            highlight=False,
        )
