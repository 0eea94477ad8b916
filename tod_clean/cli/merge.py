"""``tod-clean merge``: the parts written by ``score --shard K/N`` put back together as one scores file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, setup
from tod_clean.errors import ConfigError
from tod_clean.io import STDIN
from tod_clean.io.frames import frame_output_format
from tod_clean.io.paths import check_destination, check_distinct_outputs
from tod_clean.pipelines.outputs import check_frame_destination, save_frame
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir


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
    from tod_clean.score import save_scores_frame
    from tod_clean.shard import merge_shards

    if out is None and run is None:
        raise ConfigError("give --out FILE, --run RUN (save as the run's scores) or both")
    run_dir = RunDir(run) if run is not None else None
    info = run_dir.read_complete_info() if run_dir is not None else None
    if out is not None:
        frame_output_format(out)  # refuse an unsupported extension before the work
    run_copy = (
        {}
        if run_dir is None
        else {
            f"the run's {SCORES}": run_dir.file(SCORES),
            f"the run's {SCORES_META}": run_dir.file(SCORES_META),
        }
    )
    own = {} if run_dir is None else run_dir.own_files(exclude=(SCORES, SCORES_META))
    check_distinct_outputs(
        {**own, **{f"the part {part}": part for part in parts}}, {"--out": out, **run_copy}
    )
    if out is not None:
        check_frame_destination(out)
    for dest in run_copy.values():
        check_destination(dest)
    frame, meta = merge_shards(parts, info)
    if out is not None:
        save_frame(frame, out)
    if run_dir is not None:
        save_scores_frame(run_dir, frame, meta)
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
