"""The report's page: plain-data views of the content (:func:`page_view`), rendered by the Jinja2 template
``templates/report.html.j2`` (autoescaped; the CSS is ``templates/report.css``) into one self-contained
page (:func:`render_html`); and the whole report built (:func:`build_report`) and written with its figures
beside it (:func:`write_report`)."""

from __future__ import annotations

import base64
import datetime
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tod_clean.errors import InputError
from tod_clean.io.paths import atomic_output
from tod_clean.io.table import Table
from tod_clean.report.content import (
    ReportConfig,
    ReportContent,
    load_run_scores,
    recorded_val_table,
    report_content,
    shorten,
)
from tod_clean.report.figures import FIGURES, PER_CLASS_FIGURE, report_figures
from tod_clean.run.rundir import RunDir
from tod_clean.runtime.progress import Progress
from tod_clean.signals import SIGNED_SIGNALS
from tod_clean.version import __version__

HTML_SUFFIXES = (".html", ".htm")


@dataclass
class Report:
    """The page and its figures (name -> PNG bytes), ready to write."""

    html: str
    figures: dict[str, bytes]
    content: ReportContent


# ---- where the report goes --------------------------------------------------------------------------


def figures_folder(out: str | Path) -> Path:
    """Where the PNGs of ``report.html`` go: ``report_files/`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}_files")


def check_page_destination(out: str | Path, what: str = "the report") -> None:
    """Refuse an output that is not an .html file in an existing folder, before any work is done
    (``what`` names the page in messages)."""
    path = Path(out)
    if str(out) == "-" or path.suffix.lower() not in HTML_SUFFIXES:
        raise InputError(f"{out}: {what} is an HTML page; give a path ending in .html")
    if not path.parent.is_dir():
        raise InputError(f"{out}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{out}: is a folder, expected a file name for {what}")


def check_report_destination(out: str | Path) -> None:
    """Refuse an output that is not an .html file in an existing folder, or whose figures folder is taken,
    before any work is done."""
    check_page_destination(out)
    path = Path(out)
    folder = figures_folder(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; the report's figures go there")


# ---- HTML: a plain-data view of the page, rendered by templates/report.html.j2 -------------------------

TEMPLATE = "report.html.j2"
TEXT_IN_TABLE = 220  # characters of a training text shown in a table cell (the whole text on hover)
TEXT_OF_VAL_ROW = 600


def _format_number(value: Any, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "—"
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if abs(number) >= 1e4:
            return f"{number:.4g}"
        return f"{number:+.4f}" if signed else f"{number:.4f}"
    return str(value)


@dataclass
class CellView:
    """One table cell: the shown text, its CSS classes, an optional hover title and, for an image, its
    thumbnail (a ``data:image/png;base64,...`` URI)."""

    text: str
    css: str = ""
    title: str | None = None
    image: str | None = None


@dataclass
class RowView:
    cells: list[CellView]
    flagged: bool = False


@dataclass
class TableView:
    head: list[CellView]
    rows: list[RowView]
    css: str = ""


@dataclass
class FigureView:
    """An embedded figure: a ``data:image/png;base64,...`` URI and its alt text."""

    src: str
    alt: str


@dataclass
class NeighbourView:
    """A training row that hurt or helped an explained validation row; for images, its thumbnail (a data
    URI; None when it could not be read) and the prediction the scores hold for it (None: not known)."""

    kind: str  # "hurt" or "helped"
    rank: str
    name: str
    label: str
    influence: str
    text: str
    image: str | None = None
    pred: str | None = None


@dataclass
class ExplainedView:
    """An explained validation row (in the report, a misclassified one) and the training rows that explain
    it; for images, its thumbnail (a data URI, None when it could not be read)."""

    name: str
    label: str
    pred: str
    prob: str
    text: str
    neighbours: list[NeighbourView]
    image: str | None = None
    correct: bool = False

    @property
    def hurt(self) -> list[NeighbourView]:
        return [n for n in self.neighbours if n.kind == "hurt"]

    @property
    def helped(self) -> list[NeighbourView]:
        return [n for n in self.neighbours if n.kind == "helped"]


@dataclass
class PageView:
    """Everything the template shows, as strings, numbers and lists: no markup."""

    title: str
    header: list[tuple[str, str]]
    num_flagged: int
    total: int
    share: str
    worse_when: str
    by: str
    drop: str
    notes: list[str]
    has_influence: bool
    distribution_figures: list[FigureView]
    per_class_figure: FigureView | None
    class_table: TableView
    top_table: TableView
    explain_summary: str | None
    explain_note: str | None
    explained: list[ExplainedView]
    version: str
    generated: str
    check_table: TableView | None = None
    check_summary: str | None = None
    images: bool = False  # an image run: thumbnails in the tables, pictures in the explanations


def _figure(png: bytes, alt: str) -> FigureView:
    return FigureView("data:image/png;base64," + base64.b64encode(png).decode("ascii"), alt)


def _cell(column: str, value: Any, by: str, image: str | None = None) -> CellView:
    by_class = ["by"] if column == by else []
    if column == "text":
        return CellView(
            shorten(value, TEXT_IN_TABLE), "text", str(value) if len(str(value)) > TEXT_IN_TABLE else None
        )
    if column == "image":  # the image's name under its thumbnail
        return CellView(shorten(value, TEXT_IN_TABLE), "image", str(value), image)
    if column in ("label", "hidden_pred", "full_pred", "train_label"):
        return CellView(str(value), " ".join([*by_class, "label"]), str(value))
    if column in ("id", "train"):
        return CellView(str(value), " ".join([*by_class, "key"]), str(value))
    if isinstance(value, (bool, np.bool_)):
        return CellView("yes" if value else "")
    numeric = isinstance(value, (int, float, np.integer, np.floating))
    if column.startswith("%"):
        shown = "—" if np.isnan(value) else f"{value:.2f}"
    else:
        shown = _format_number(value, signed=column in SIGNED_SIGNALS)
    return CellView(shown, " ".join([*by_class, *(["num"] if numeric else [])]))


def table_view(
    frame: pd.DataFrame,
    by: str,
    *,
    flag_column: str | None = None,
    css: str = "",
    thumbnails: Sequence[str | None] | None = None,
) -> TableView:
    """A frame as a table: numbers right-aligned and formatted, the ranking column ``by`` highlighted,
    rows whose ``flag_column`` is true marked flagged; an ``image`` column shows ``thumbnails`` (data URIs,
    one per row) above the images' names."""
    head = []
    for column in frame.columns:
        dtype = frame[column].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        head.append(
            CellView(str(column), " ".join(n for n, on in (("by", column == by), ("num", numeric)) if on))
        )
    images = list(thumbnails) if thumbnails is not None else [None] * len(frame)
    rows = [
        RowView(
            [_cell(str(c), record[c], by, image) for c in frame.columns],
            flag_column is not None and bool(record[flag_column]),
        )
        for record, image in zip(frame.to_dict(orient="records"), images, strict=True)
    ]
    return TableView(head, rows, css)


def _present(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def _both_texts(row: Any, column: str) -> str:
    """An explained row's text and, for sentence pairs, its second text (``explain``'s ``<column>_pair``)."""
    pair = row.get(f"{column}_pair")
    return str(row[column]) if not _present(pair) else f"{row[column]} ‖ {pair}"


def explained_views(
    explanations: pd.DataFrame | None,
    *,
    train_thumbnails: dict[int, str] | None = None,
    val_thumbnails: dict[int, str] | None = None,
) -> list[ExplainedView]:
    """The explained validation rows of an ``explain`` frame, with the thumbnails (data URIs by
    ``train_row`` and ``val_row``) of an image run, and each training row's prediction when the frame has
    a ``train_pred`` column."""
    if explanations is None:
        return []
    train_thumbnails, val_thumbnails = train_thumbnails or {}, val_thumbnails or {}
    views = []
    for val_row, group in explanations.groupby("val_row", sort=False):
        first = group.iloc[0]
        neighbours = [
            NeighbourView(
                kind=str(row.kind),
                rank=str(row["rank"]),
                name=str(row.train_id if _present(row.train_id) else row.train_row),
                label=str(row.train_label),
                influence=f"{row.influence:+.4f}",
                text=shorten(_both_texts(row, "train_text"), TEXT_IN_TABLE),
                image=train_thumbnails.get(int(row.train_row)),
                pred=str(row.train_pred) if _present(row.get("train_pred")) else None,
            )
            for _, row in group.iterrows()
        ]
        views.append(
            ExplainedView(
                name=f"id {first.val_id}" if _present(first.val_id) else f"row {val_row}",
                label=str(first.val_label),
                pred=str(first.val_pred),
                prob=f"{first.val_prob:.2f}",
                text=shorten(_both_texts(first, "val_text"), TEXT_OF_VAL_ROW),
                neighbours=neighbours,
                image=val_thumbnails.get(int(first.val_row)),
                correct=str(first.val_label) == str(first.val_pred),
            )
        )
    return views


def page_view(
    content: ReportContent, figures: dict[str, bytes], *, title: str = "tod-clean report"
) -> PageView:
    """The data the page shows, from the gathered content and the drawn figures."""
    total = len(content.flagged)
    class_table = pd.DataFrame(
        {
            "label": [c.label for c in content.classes],
            "rows": [c.rows for c in content.classes],
            "flagged": [c.flagged for c in content.classes],
            "% flagged": [100 * c.flagged / c.rows if c.rows else float("nan") for c in content.classes],
        }
    )
    return PageView(
        title=title,
        header=[(name, str(value)) for name, value in content.header],
        num_flagged=content.num_flagged,
        total=total,
        share=f"{content.num_flagged / max(total, 1):.2%}",
        worse_when=content.worse_when,
        by=content.by,
        drop=content.flagged_by,
        notes=list(content.notes),
        has_influence=any(d.column == "influence" for d in content.distributions),
        distribution_figures=[
            _figure(figures[d.column], f"histogram of {d.column}")
            for d in content.distributions
            if d.column in figures
        ],
        per_class_figure=(
            _figure(figures[PER_CLASS_FIGURE], "flagged rows per class")
            if PER_CLASS_FIGURE in figures
            else None
        ),
        class_table=table_view(class_table, "", css="compact"),
        top_table=table_view(
            content.top_rows, content.by, flag_column="flagged", thumbnails=content.top_thumbnails
        ),
        explain_summary=content.explain_summary,
        explain_note=content.explain_note,
        explained=explained_views(
            content.explanations,
            train_thumbnails=content.train_thumbnails,
            val_thumbnails=content.val_thumbnails,
        ),
        images=content.images,
        check_table=None if content.check_rows is None else table_view(content.check_rows, "", css="compact"),
        check_summary=content.check_summary,
        version=__version__,
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


@functools.cache
def templates() -> Any:
    """The Jinja2 environment of the report's templates (autoescaped; misspelt fields are errors)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("tod_clean.report", "templates"),
        autoescape=True,  # every value; the template marks nothing safe
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not an empty string
        keep_trailing_newline=True,
    )


def render_html(content: ReportContent, figures: dict[str, bytes], *, title: str = "tod-clean report") -> str:
    """The self-contained page: inline CSS, figures as data URIs, all user text escaped."""
    return templates().get_template(TEMPLATE).render(page=page_view(content, figures, title=title))


# ---- the whole report -------------------------------------------------------------------------------


def build_report(
    run: RunDir,
    config: ReportConfig,
    *,
    scores: tuple[pd.DataFrame, dict[str, Any]] | None = None,
    train_table: Table | None = None,
    val_table: Table | None = None,
    device: str = "auto",
    progress: Progress | None = None,
) -> Report:
    """The report of a scored run; without ``val_table`` the validation file recorded by ``score`` is used.

    ``scores`` is what :func:`load_run_scores` returns (loaded here when not given).
    """
    frame, meta = scores if scores is not None else load_run_scores(run)
    val_note = None
    explicit = val_table is not None
    if val_table is None:
        val_table, val_note = recorded_val_table(meta)
    content = report_content(
        run,
        config,
        scores=frame,
        meta=meta,
        train_table=train_table,
        val_table=val_table,
        val_note=val_note,
        val_explicit=explicit,
        device=device,
        progress=progress,
    )
    figures = report_figures(content)
    return Report(render_html(content, figures), figures, content)


def write_report(report: Report, out: str | Path) -> Path:
    """Write the figures to ``<stem>_files/`` and then the page, each atomically; returns the folder.

    Figures of an earlier report that this one does not have (e.g. ``influence.png``) are removed, so the
    folder always matches the page.
    """
    out = Path(out)
    folder = figures_folder(out)
    folder.mkdir(exist_ok=True)
    for name, png in report.figures.items():
        with atomic_output(folder / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    for name in FIGURES:
        if name not in report.figures:
            (folder / f"{name}.png").unlink(missing_ok=True)
    with atomic_output(out) as tmp:
        tmp.write_text(report.html, encoding="utf-8")
    return folder
