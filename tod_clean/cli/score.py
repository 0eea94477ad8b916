"""``tod-clean score``: per-instance influence and label-error signals of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import (
    INFERENCE_BATCH_SIZE,
    BatchSizeOption,
    DeviceOption,
    InfluenceOption,
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
from tod_clean.io import STDIN
from tod_clean.pipelines import score as pipeline
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.processes import is_main_process
from tod_clean.runtime.shard import Shard


@app.command("score")
@handle_errors
def score_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory written by train.")] = Path(
        "tod-run"
    ),
    val: Annotated[
        str | None,
        typer.Option(
            help="Validation data (a data file, a save_to_disk folder or hf:NAME[/CONFIG]): adds the "
            "influence of each training row on it."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            "-o",
            help="Write scores here (.csv .parquet .jsonl), to a datasets save_to_disk folder (a name with no "
            "extension, or ending in /), or - for CSV on stdout.",
        ),
    ] = None,
    train: MovedTrainOption = None,
    stdin_format: StdinFormatOption = None,
    matrix: Annotated[
        Path | None, typer.Option(help="Also write the train x validation influence matrix (float32 .npy).")
    ] = None,
    pred_probs: Annotated[
        Path | None,
        typer.Option(
            help="Write the hidden sub-networks' class probabilities (N x K float32 .npy, the layout of "
            "cleanlab's find_label_issues(labels, pred_probs)): each row from the sub-network that hides it "
            "(exactly out-of-fold with --mask-groups; not out-of-sample otherwise: partly in-sample in "
            "head/layers/ffn, whose shared encoder learns every row, and anti-learned in lora: see README)."
        ),
    ] = None,
    val_split: ValSplitOption = None,
    val_text_col: ValTextColOption = None,
    val_text_pair_col: ValTextPairColOption = None,
    val_label_col: ValLabelColOption = None,
    influence: InfluenceOption = "auto",
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: score only shard K of N (counted from 0) of the training rows, into --out PART.parquet, "
            "not into the run; put the parts together with 'tod-clean merge'."
        ),
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option(
            help="Replace the run's saved scores even when they hold influence on another validation set "
            "(or on one, when this scoring has no --val)."
        ),
    ] = False,
    batch_size: BatchSizeOption = INFERENCE_BATCH_SIZE,
    device: DeviceOption = "auto",
    quiet: QuietOption = False,
) -> None:
    """Score every training row; save the scores in the run directory (and to --out)."""
    quiet = setup(quiet)
    run_dir = RunDir(run)
    result = pipeline.score(
        run_dir,
        train=train,
        val=val,
        val_split=val_split,
        val_columns=ColumnChoice(val_text_col, val_text_pair_col, val_label_col),
        config=ScoreConfig(batch_size=batch_size, influence_method=influence),
        device=device,
        out=out,
        matrix=matrix,
        pred_probs=pred_probs,
        shard=shard,
        stdin_format=stdin_format_for(stdin_format, train, val),
        overwrite=overwrite,
        progress=progress_for(quiet),
    )
    if not is_main_process():
        return  # under accelerate launch every process holds the gathered scores; the main one wrote them
    if quiet:
        return
    if shard is not None:
        part = Shard.parse(shard)
        total = run_dir.read_info().train_file.rows
        start, stop = part.rows(total)
        console.print(
            f"scored shard {part}: training rows {start}..{stop - 1} of {total}"
            + (f" on {result.meta['val_rows']} validation rows" if val is not None else "")
            + f" -> {out}; put the parts together with 'tod-clean merge'",
            highlight=False,
            markup=False,  # paths and ids are shown as written
        )
        return
    by = result.meta["rank_by"]
    top = result.frame.sort_values("rank").head(5)
    shown = ", ".join(str(v) for v in (top["id"] if "id" in top else top["row"]))
    console.print(
        f"scored {len(result.frame)} training rows"
        + (
            f" on {result.meta['val_rows']} validation rows ({result.meta['influence_method']} influence)"
            if val is not None
            else ""
        )
        + f"; ranked by {by}; first to drop: {shown}"
        + (f" -> {out}" if out not in (None, STDIN) else ""),
        highlight=False,
        markup=False,  # paths and ids are shown as written
    )
