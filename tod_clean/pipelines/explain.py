"""The ``explain`` pipeline: validation rows of a finished run explained by their most harmful and most
helpful training rows, written."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tod_clean.config import AS_TRAINED, ColumnChoice, HurtFrom, ScoreConfig
from tod_clean.errors import spelled
from tod_clean.explain import ExplainResult, explain_run
from tod_clean.io.frames import write_frame
from tod_clean.io.inputs import read_table
from tod_clean.io.paths import atomic_output, check_destination, check_distinct_outputs
from tod_clean.io.table import Table
from tod_clean.io.writers import output_format
from tod_clean.report.explain_page import render_explain_html
from tod_clean.report.render import check_page_destination
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.processes import is_main_process
from tod_clean.runtime.progress import Progress


@dataclass
class Explained:
    """What ``explain`` read as the validation set, and its result."""

    val_table: Table
    result: ExplainResult


def explain(
    run: RunDir,
    val: str,
    *,
    train: str | None = None,
    val_split: str | None = None,
    val_columns: ColumnChoice = AS_TRAINED,
    top: int = 5,
    errors_only: bool = False,
    index: Sequence[int] | None = None,
    id_: str | None = None,
    hurt_from: str = HurtFrom.WRONG.value,
    config: ScoreConfig | None = None,
    device: str = "auto",
    out: str | None = None,
    html: str | None = None,
    stdin_format: str | None = None,
    progress: Progress | None = None,
) -> Explained:
    """Explain the rows of ``val`` (a path; ``-``: standard input in ``stdin_format``) by the run's
    training rows (``train``: its data when the recorded file moved); write the full result to ``out`` and
    a self-contained page of it to ``html`` (thumbnails for images), both checked before any work.
    Columns of ``val`` default to training's (its id column if present)."""
    info = run.read_complete_info()
    train_path = train or info.train_source()
    check_distinct_outputs(
        {**run.own_files(), spelled("val"): val, "the training file": train_path},
        {spelled("out"): out, spelled("html"): html},
    )
    if out is not None:
        check_destination(out)
        output_format(out, "csv")
    if html is not None:
        check_page_destination(html, spelled("html"))
        check_destination(html)
    val_table = read_table(val, split=val_split, stdin_format=stdin_format)
    result = explain_run(
        run,
        read_table(train_path, split=info.train_file.split, stdin_format=stdin_format),
        val_table,
        val_columns=val_columns.like(info.train.columns, val_table.columns),
        k=top,
        errors_only=errors_only,
        val_rows=index,
        val_id=id_,
        hurt_from=hurt_from,
        config=config,
        device=device,
        progress=progress,
    )
    # under accelerate launch every process holds the gathered result; the main one writes
    if not is_main_process():
        return Explained(val_table, result)
    # the page is made before anything is written: a failure there leaves no output behind
    page: str | None = None
    if html is not None:
        header = [
            ("run directory", str(run.path)),
            ("training file", train_path),
            ("validation file", val_table.source),
            ("model", info.train.model),
            ("scope", str(info.scope)),
            ("influence", f"--influence {result.influence_method}"),
        ]
        page = render_explain_html(result, header=header, val_rows=len(val_table), hurt_from=hurt_from)
    if out is not None:
        write_frame(result.frame, out)
    if page is not None:
        assert html is not None
        with atomic_output(html) as tmp:
            tmp.write_text(page, encoding="utf-8")
    return Explained(val_table, result)
