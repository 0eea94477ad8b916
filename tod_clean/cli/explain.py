"""``tod-clean explain``: the training rows that hurt and helped each validation row most."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import (
    INFERENCE_BATCH_SIZE,
    BatchSizeOption,
    DeviceOption,
    InfluenceOption,
    StdinFormatOption,
    ValLabelColOption,
    ValSplitOption,
    ValTextColOption,
    ValTextPairColOption,
    stdin_format_for,
)
from tod_clean.config import ColumnChoice, ScoreConfig
from tod_clean.run.rundir import RunDir


def shorten(text: str, width: int = 80) -> str:
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" …")


def both_texts(row: Any, column: str) -> str:
    """A row's text and, for sentence pairs, its second text after a ‖."""
    pair = row.get(f"{column}_pair")
    return str(row[column]) if not isinstance(pair, str) else f"{row[column]} ‖ {pair}"


@app.command("explain")
@handle_errors
def explain_command(
    val: Annotated[
        str,
        typer.Option(
            help="Validation data whose rows to explain (a data file, a save_to_disk folder or hf:NAME[/CONFIG])."
        ),
    ],
    run: Annotated[Path, typer.Option("--run", "-r", help="Run directory written by train.")] = Path(
        "tod-run"
    ),
    top: Annotated[int, typer.Option("--top", "-k", help="Training rows per list (hurt and helped).")] = 5,
    errors_only: Annotated[bool, typer.Option(help="Explain only the rows the model gets wrong.")] = False,
    index: Annotated[
        list[int] | None,
        typer.Option(metavar="<row>", help="Explain only this validation row (0-based; repeatable)."),
    ] = None,
    id_: Annotated[
        str | None, typer.Option("--id", help="Explain only the validation row with this id.")
    ] = None,
    hurt_from: Annotated[
        str, typer.Option(help="Hurt candidates: 'wrong' (rows labeled with the wrong prediction) or 'any'.")
    ] = "wrong",
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Full result (.jsonl .csv .parquet, - = CSV stdout).")
    ] = None,
    html: Annotated[
        str | None,
        typer.Option(
            help="Also a self-contained HTML page (.html): the first 20 rows, images as thumbnails."
        ),
    ] = None,
    show: Annotated[int, typer.Option(help="Validation rows shown in the terminal.")] = 5,
    train: Annotated[
        str | None, typer.Option(help="The training file, if it moved (sha256 is checked).")
    ] = None,
    stdin_format: StdinFormatOption = None,
    val_split: ValSplitOption = None,
    val_text_col: ValTextColOption = None,
    val_text_pair_col: ValTextPairColOption = None,
    val_label_col: ValLabelColOption = None,
    val_id_col: Annotated[
        str | None, typer.Option(help="Id column of --val (default: training's, if present).")
    ] = None,
    influence: InfluenceOption = "auto",
    batch_size: BatchSizeOption = INFERENCE_BATCH_SIZE,
    device: DeviceOption = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or tables.")] = False,
) -> None:
    """For each validation row, the training rows with the most negative and most positive influence on it."""
    quiet = setup(quiet)
    from_stdin_as = stdin_format_for(stdin_format, val, train)
    from tod_clean.pipelines import explain as pipeline

    explained = pipeline.explain(
        RunDir(run),
        val,
        train=train,
        val_split=val_split,
        val_columns=ColumnChoice(val_text_col, val_text_pair_col, val_label_col, val_id_col),
        top=top,
        errors_only=errors_only,
        index=index,
        id_=id_,
        hurt_from=hurt_from,
        config=ScoreConfig(batch_size=batch_size, influence_method=influence),
        device=device,
        out=out,
        html=html,
        stdin_format=from_stdin_as,
        progress=progress_for(quiet),
    )
    result, val_table = explained.result, explained.val_table
    if quiet:
        return
    console.print(
        f"full network: accuracy {result.accuracy:.3f} on {len(val_table)} validation rows "
        f"({result.misclassified} misclassified); explained {result.explained} "
        f"({result.influence_method} influence)",
        highlight=False,
    )
    for number, (val_row, group) in enumerate(result.frame.groupby("val_row", sort=False)):
        if number >= show:
            console.print(
                f"… {result.explained - show} more validation rows"
                + (f" in {out}" if out else " (use --out)")
            )
            break
        first = group.iloc[0]
        name = f"id {first.val_id}" if first.val_id is not None else f"row {val_row}"
        verdict = "[green]correct[/green]" if first.val_label == first.val_pred else "[red]wrong[/red]"
        table = RichTable(
            title=f"validation {escape(name)}: label {escape(str(first.val_label))}, predicted "
            f"{escape(str(first.val_pred))} ({verdict}, p(label) {first.val_prob:.2f})",
            caption=escape(shorten(both_texts(first, "val_text"), 120)),
            title_justify="left",
        )
        for column, justify in (
            ("", "left"),
            ("#", "right"),
            ("train", "left"),
            ("label", "left"),
            ("influence", "right"),
            ("text", "left"),
        ):
            table.add_column(column, justify=justify)  # type: ignore[arg-type]
        train_width = 120 if "train_text_pair" in group.columns else 80  # room for both texts of a pair
        for _, row in group.iterrows():
            train_name = str(row.train_id) if row.train_id is not None else str(row.train_row)
            style = "red" if row.kind == "hurt" else "green"
            table.add_row(
                f"[{style}]{row.kind}[/{style}]",
                str(row["rank"]),
                escape(train_name),
                escape(str(row.train_label)),
                f"{row.influence:+.4f}",
                escape(shorten(both_texts(row, "train_text"), train_width)),
            )
        console.print(table)
