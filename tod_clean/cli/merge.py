"""``tod-clean merge``: the parts written by ``score --shard K/N`` put back together as one scores file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, setup
from tod_clean.io import STDIN
from tod_clean.run.rundir import SCORES, RunDir


@app.command("merge")
@handle_errors
def merge_command(
    parts: Annotated[
        list[str], typer.Argument(help="Part files written by 'score --shard K/N --out PART.parquet'.")
    ],
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the merged scores here (.csv .parquet .jsonl, a save_to_disk folder for a name with "
            "no extension), or - for CSV on stdout.",
        ),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            "-r",
            help="Check the parts against this run (its training rows, its fingerprint) and save the merged "
            "scores as the run's scores, where filter and report find them.",
        ),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line.")] = False,
) -> None:
    """Merge score shards: refuses missing, repeated or foreign parts; rank is computed over all rows."""
    setup(quiet)
    from tod_clean.pipelines import merge as pipeline

    run_dir = RunDir(run) if run is not None else None
    frame, meta = pipeline.merge(parts, out=out, run=run_dir)
    if not quiet:
        where = [str(out)] if out not in (None, STDIN) else []
        if run_dir is not None:
            where.append(str(run_dir.file(SCORES)))
        console.print(
            f"merged {len(parts)} parts: {len(frame)} training rows; ranked by {meta.get('rank_by')}"
            + (f" -> {', '.join(where)}" if where else ""),
            highlight=False,
            markup=False,
        )
