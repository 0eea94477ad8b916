"""``tod-clean score``: per-instance influence and label-error signals of a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import (
    INFLUENCE_HELP,
    app,
    columns_like,
    console,
    handle_errors,
    progress_for,
    setup,
)
from tod_clean.config import ScoreConfig
from tod_clean.data import (
    STDIN,
    check_destination,
    check_distinct_outputs,
    output_format,
    read_table,
    save_npy,
    write_frame,
)
from tod_clean.errors import ConfigError
from tod_clean.processes import is_main_process
from tod_clean.rundir import SCORES, SCORES_META, RunDir
from tod_clean.shard import Shard


@app.command("score")
@handle_errors
def score_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory written by train.")] = Path(
        "tod-run"
    ),
    val: Annotated[
        str | None, typer.Option(help="Validation data: adds the influence of each training row on it.")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", "-o", help="Write scores here (.csv .parquet .jsonl), or - for CSV on stdout."),
    ] = None,
    train: Annotated[
        str | None,
        typer.Option(help="The training file, if it moved (must be unchanged: sha256 is checked)."),
    ] = None,
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
    val_split: Annotated[
        str | None, typer.Option(help="Split of a DatasetDict folder given as --val.")
    ] = None,
    val_text_col: Annotated[
        str | None, typer.Option(help="Text column of --val (default: training's).")
    ] = None,
    val_text_pair_col: Annotated[str | None, typer.Option(help="Second text column of --val.")] = None,
    val_label_col: Annotated[
        str | None, typer.Option(help="Label column of --val (default: training's).")
    ] = None,
    influence: Annotated[str, typer.Option("--influence", help=INFLUENCE_HELP)] = "auto",
    shard: Annotated[
        str | None,
        typer.Option(
            help="K/N: score only shard K of N (counted from 0) of the training rows, into --out PART.parquet, "
            "not into the run; put the parts together with 'tod-clean merge'."
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Rows per forward pass.")] = 64,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Score every training row; save the scores in the run directory (and to --out)."""
    quiet = setup(quiet)
    from tod_clean import score as core

    run_dir = RunDir(run)
    info = run_dir.read_complete_info()
    part = Shard.parse(shard) if shard is not None else None
    if part is not None:
        part.check_rows(info.train_file.rows)
        if out is None or out == STDIN or output_format(out, "csv") != "parquet":
            raise ConfigError(
                f"--shard {shard} needs --out PART.parquet: a shard is written to its own Parquet file "
                "(never into the run), for 'tod-clean merge'"
            )
        if matrix is not None or pred_probs is not None:
            raise ConfigError(
                f"--shard {shard}: --matrix and --pred-probs cover every training row; score without --shard "
                "to write them"
            )
    if out is not None:
        output_format(out, "csv")  # refuse an unsupported extension before the work
    train_path = train or info.train_file.path
    # A shard never writes the run's scores: the run's saved scores stay those of a whole 'score' (or merge).
    run_copy = (
        {}
        if part is not None
        else {
            f"the run's {SCORES}": run_dir.file(SCORES),
            f"the run's {SCORES_META}": run_dir.file(SCORES_META),
        }
    )
    check_distinct_outputs(
        {
            **run_dir.own_files(exclude=(SCORES, SCORES_META) if part is None else ()),
            "the training file": train_path,
            "--val": val,
        },
        {"--out": out, "--matrix": matrix, "--pred-probs": pred_probs, **run_copy},
    )
    for dest in (out, matrix, pred_probs, *run_copy.values()):
        if dest is not None:
            check_destination(dest)
    if pred_probs is not None and not info.scope.masked:
        raise ConfigError(
            f"{run}: trained with scope '{info.scope}', so it has no hidden sub-networks for --pred-probs"
        )
    train_table = read_table(train_path, split=info.train_file.split)
    val_table = read_table(val, split=val_split) if val is not None else None
    val_columns = columns_like(info.train.columns, val_text_col, val_text_pair_col, val_label_col)
    result = core.score_run(
        run_dir,
        train_table,
        val_table=val_table,
        val_columns=val_columns,
        config=ScoreConfig(batch_size=batch_size, influence_method=influence),
        device=device,
        matrix_path=matrix,
        shard=part,
        progress=progress_for(quiet),
    )
    if not is_main_process():
        return  # under accelerate launch every process holds the gathered scores; the main one writes
    if pred_probs is not None:
        assert result.self_scores.hidden_probs is not None
        save_npy(pred_probs, result.self_scores.hidden_probs)
    if out is not None:
        write_frame(result.frame, out)
    if part is not None:
        if not quiet:
            start, stop = part.rows(info.train_file.rows)
            console.print(
                f"scored shard {part}: training rows {start}..{stop - 1} of {info.train_file.rows}"
                + (f" on {result.meta['val_rows']} validation rows" if val_table is not None else "")
                + f" -> {out}; put the parts together with 'tod-clean merge'",
                highlight=False,
            )
        return
    # The run's copy last: if an output above failed, filter still sees the scores it saw before.
    core.save_scores(run_dir, result)
    if not quiet:
        by = result.meta["rank_by"]
        top = result.frame.sort_values("rank").head(5)
        shown = ", ".join(str(v) for v in (top["id"] if "id" in top else top["row"]))
        console.print(
            f"scored {len(result.frame)} training rows"
            + (
                f" on {result.meta['val_rows']} validation rows ({result.meta['influence_method']} influence)"
                if val_table is not None
                else ""
            )
            + f"; ranked by {by}; first to drop: {shown}"
            + (f" -> {out}" if out not in (None, STDIN) else ""),
            highlight=False,
        )
