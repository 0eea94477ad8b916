"""``tod-clean check``: which influence ranking to trust on this data, measured by retraining (LDS)."""

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
    MovedTrainOption,
    QuietOption,
    StdinFormatOption,
    ValLabelColOption,
    ValSplitOption,
    ValTextColOption,
    ValTextPairColOption,
    stdin_format_for,
)
from tod_clean.config import ColumnChoice, ScoreConfig
from tod_clean.run.rundir import RunDir


@app.command("check")
@handle_errors
def check_command(
    val: Annotated[
        str,
        typer.Option(
            help="Validation data (a data file, a save_to_disk folder or hf:NAME[/CONFIG]): the rows whose "
            "losses the retrained models are measured on."
        ),
    ],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory written by train.")] = Path(
        "tod-run"
    ),
    halves: Annotated[
        int,
        typer.Option(
            help="Ordinary models retrained, each on a random half of the training rows (at least 5; 20 or "
            "more for a useful interval). Costs about halves/2 trainings of the run."
        ),
    ] = 20,
    influence: Annotated[
        list[str] | None,
        typer.Option(
            help="An estimator to check (repeat the option for several; default: every one that applies to "
            "the run, and random)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="The check's folder: its plan, each half's measured losses (a rerun resumes from them) and "
            "check.json (default: RUN/check).",
        ),
    ] = None,
    train: MovedTrainOption = None,
    stdin_format: StdinFormatOption = None,
    val_split: ValSplitOption = None,
    val_text_col: ValTextColOption = None,
    val_text_pair_col: ValTextPairColOption = None,
    val_label_col: ValLabelColOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the random halves.")] = 0,
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: train only the halves m with m % N == K (counted from 0), into the same folder; run "
            "once more without --shard to compute the result."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a check folder that holds a check of other data or another recipe.")
    ] = False,
    batch_size: BatchSizeOption = INFERENCE_BATCH_SIZE,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Measure how well each influence estimator predicts retraining on this data (LDS)."""
    quiet = setup(quiet)
    from tod_clean.pipelines import check as pipeline

    result = pipeline.check(
        RunDir(run),
        val=val,
        train=train,
        val_split=val_split,
        val_columns=ColumnChoice(val_text_col, val_text_pair_col, val_label_col),
        out=out,
        halves=halves,
        seed=seed,
        methods=influence,
        config=ScoreConfig(batch_size=batch_size),
        shard=shard,
        overwrite=overwrite,
        stdin_format=stdin_format_for(stdin_format, train, val),
        device=device,
        progress=progress_for(quiet),
    )
    if quiet:
        return
    if shard is not None or result.pending:
        still = (
            f"still to train: {', '.join(str(m) for m in result.pending[:10])}"
            f"{' ...' if len(result.pending) > 10 else ''}; run check again"
            if result.pending
            else "every half is measured; run check again"
        )
        console.print(
            f"measured {result.measured} of {result.halves} halves; {still} without --shard for the result",
            highlight=False,
            markup=False,
        )
        return
    table = RichTable(
        title=f"LDS on {result.val_rows} validation rows, {result.halves} retrained halves "
        f"({result.truth_scope} fine-tunes of {result.train_rows // 2} rows)"
    )
    for column in ("estimator", "LDS", "95% interval", "vs highest (paired 95%)", "beats random", "seconds"):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for e in result.estimators:
        versus = (
            "highest"
            if e is result.estimators[0]
            else f"{e.difference:+.3f} [{e.difference_low:+.2f}, {e.difference_high:+.2f}]"
        )
        table.add_row(
            escape(e.name),
            f"{e.lds:.3f}",
            f"[{e.low:.2f}, {e.high:.2f}]",
            versus,
            "-" if e.name == "random" else ("yes" if e.beats_random else "no"),
            f"{e.seconds:.0f}",
        )
    console.print(table)
    best = result.best
    if best is None:
        console.print(
            "no estimator beats a random matrix on this data (paired 95% interval): do not filter by "
            "influence here; rank by a label-error signal (filter's default) or check with more --halves",
            highlight=False,
            markup=False,
        )
        return
    console.print(
        f"best measured here: --influence {best.name} (score --val VAL --influence {best.name}, then filter "
        f"--by influence); results in {result.folder}",
        highlight=False,
        markup=False,
    )
