"""The ``report`` pipeline: one HTML page about a scored run, with its figures beside it, built and written."""

from __future__ import annotations

from pathlib import Path

from tod_clean.errors import spelled
from tod_clean.io.inputs import read_table
from tod_clean.io.paths import check_destination, check_distinct_outputs
from tod_clean.report.content import ReportConfig, load_run_scores
from tod_clean.report.figures import FIGURES
from tod_clean.report.render import (
    Report,
    build_report,
    check_report_destination,
    figures_folder,
    write_report,
)
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.device import pick_device
from tod_clean.runtime.progress import Progress


def report(
    run: RunDir,
    config: ReportConfig,
    out: Path,
    *,
    val: str | None = None,
    val_split: str | None = None,
    train: str | None = None,
    stdin_format: str | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> tuple[Report, Path]:
    """Build the report of the run's saved scores (explaining errors on ``val``, default: the validation
    file scored on; ``train``: the training data when the recorded file moved) and write it to ``out``,
    checked before any work. Returns the report and the folder its figures went to."""
    pick_device(device)  # refuse a bad --device before any work
    info = run.read_info()
    check_report_destination(out)
    check_destination(out)
    scores = load_run_scores(run)
    figures = figures_folder(out)
    check_distinct_outputs(
        {
            **run.own_files(),
            spelled("val"): val or scores[1].get("val_file"),
            "the training file": train or info.train_file.path,
        },
        {spelled("out"): out, **{f"the figure {name}.png": figures / f"{name}.png" for name in FIGURES}},
    )
    val_table = read_table(val, split=val_split, stdin_format=stdin_format) if val is not None else None
    train_table = read_table(
        train or info.train_source(), split=info.train_file.split, stdin_format=stdin_format
    )
    built = build_report(
        run,
        config,
        scores=scores,
        train_table=train_table,
        val_table=val_table,
        device=device,
        progress=progress,
    )
    return built, write_report(built, out)
