"""``tod-clean report``: one self-contained HTML page about a scored run, with its figures beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tod_clean.cli import app, console, handle_errors, progress_for, setup
from tod_clean.cli.options import StdinFormatOption, ValSplitOption, stdin_format_for
from tod_clean.run.rundir import RunDir
from tod_clean.signals import SIGNALS


@app.command("report")
@handle_errors
def report_command(
    run: Annotated[
        Path, typer.Option("--run", "-r", help="Run directory, scored by 'tod-clean score'.")
    ] = Path("tod-run"),
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="The HTML page; its PNG figures go to <name>_files/ beside it."),
    ] = Path("report.html"),
    val: Annotated[
        str | None, typer.Option(help="Validation file whose errors to explain (default: the one scored on).")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            help=f"Score column to flag rows by, as in filter: {', '.join(SIGNALS)} (default: influence, harm "
            "to the validation set, when the scores have it; else full_loss, the signal measured best at "
            "finding label errors)."
        ),
    ] = None,
    drop: Annotated[
        float | None, typer.Option(help="Fraction of rows flagged, as 'filter --drop' (default 0.01).")
    ] = None,
    drop_count: Annotated[
        int | None, typer.Option(help="Number of rows flagged, as 'filter --drop-count'.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Flag rows beyond this score, as 'filter --threshold'.")
    ] = None,
    allow_empty_class: Annotated[
        bool, typer.Option(help="Allow flagging every row of a class, as 'filter --allow-empty-class'.")
    ] = False,
    top: Annotated[int, typer.Option("--top", "-k", help="Rows listed in the table of flagged rows.")] = 30,
    max_explained: Annotated[
        int, typer.Option(help="Misclassified validation rows explained (0 = none).")
    ] = 10,
    influence: Annotated[
        str | None,
        typer.Option(
            "--influence",
            help="The --influence estimator of the explanations, as in score (default: the one the scores were computed with).",
        ),
    ] = None,
    val_split: ValSplitOption = None,
    train: Annotated[str | None, typer.Option(help="The training file, if it moved.")] = None,
    stdin_format: StdinFormatOption = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto (for the explanations).")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary line.")] = False,
) -> None:
    """Write an HTML report: score distributions, flagged rows per class and one by one, explained errors.

    Rows are flagged exactly as 'tod-clean filter' with the same --by and drop options would drop them.
    """
    setup(quiet)
    from_stdin_as = stdin_format_for(stdin_format, val, train)
    from tod_clean.pipelines import report as pipeline
    from tod_clean.report.content import ReportConfig

    config = ReportConfig(
        by=by,
        drop=drop,
        drop_count=drop_count,
        threshold=threshold,
        allow_empty_class=allow_empty_class,
        top=top,
        max_explained=max_explained,
        influence_method=influence,
    )
    report, folder = pipeline.report(
        RunDir(run),
        config,
        out,
        val=val,
        val_split=val_split,
        train=train,
        stdin_format=from_stdin_as,
        device=device,
        progress=progress_for(quiet),
    )
    if report.content.ranking_note is not None:  # said even with --quiet, as filter does
        console.print(report.content.ranking_note, highlight=False, markup=False, soft_wrap=True)
    for warning in report.content.warnings:
        console.print(f"warning: {warning}", highlight=False, markup=False, soft_wrap=True)
    if not quiet:
        content = report.content
        total = len(content.flagged)
        console.print(
            f"report -> {out} ({len(report.figures)} figures in {folder}/): "
            f"{content.num_flagged} of {total} rows flagged by the {content.worse_when} {content.by}; "
            + (
                f"{content.explained} misclassified validation rows explained"
                if content.explanations is not None
                else "no validation errors explained"
            ),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
