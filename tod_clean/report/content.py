"""One self-contained HTML page about a scored run: what was trained, how the scores are distributed, which
rows the filter would drop (per class and one by one), and why the model errs on validation rows.

The page embeds its figures as base64 PNG data URIs and its CSS inline: no script, no external URL, so it
opens anywhere and can be mailed as one file. The same PNGs are also written beside it for reuse. Every
piece of user text (file names, labels, training and validation texts) is HTML-escaped.

The work is split so each part can be called and tested alone: :func:`report_content` gathers plain data
(the one step that may run the model, for the explanations), :func:`report_figures` draws it,
:func:`page_view` turns both into the plain values the page shows, and :func:`render_html` renders them with
the Jinja2 template ``templates/report.html.j2`` (autoescaped; the CSS is ``templates/report.css``).
"""

from __future__ import annotations

import base64
import datetime
import functools
import io
import logging
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tod_clean import __version__
from tod_clean.config import INFLUENCE_METHODS, ScoreConfig
from tod_clean.errors import ConfigError, InputError, RunDirError, TodCleanError
from tod_clean.io.columns import label_key
from tod_clean.io.formats.hub import is_hub_ref
from tod_clean.io.inputs import read_table
from tod_clean.io.paths import atomic_output
from tod_clean.io.table import Table
from tod_clean.progress import Progress
from tod_clean.run.rundir import SCORES, SCORES_META, RunDir, RunInfo
from tod_clean.selection import check_drop_options, filter_table, match_scores
from tod_clean.signals import LABEL_SIGNALS, SIGNALS, SIGNALS_BY_NAME, SIGNED_SIGNALS, WORSE_WHEN_LOWER

log = logging.getLogger(__name__)

# Histograms drawn when the column exists (a scope 'none' run has only full_loss).
DISTRIBUTION_COLUMNS = ("influence", "self_influence", "hidden_loss", "full_loss")
# Score columns shown in the table of flagged rows, when present (and the ranking column in any case).
TABLE_SCORE_COLUMNS = ("influence", "self_influence", "hidden_loss", "full_loss")
PER_CLASS_FIGURE = "flagged_per_class"
FIGURES = (*SIGNALS, PER_CLASS_FIGURE)  # every figure a report may write (and remove when it has none)
MAX_CLASSES_SHOWN = 40
HTML_SUFFIXES = (".html", ".htm")

_KEPT_COLOR = "#8fb3d9"
_FLAGGED_COLOR = "#d62728"
_CUTOFF_COLOR = "#222222"


@dataclass
class ReportConfig:
    """What the report flags and how much it shows; ranges are checked here, before any work."""

    by: str | None = field(
        default=None, metadata={"help": "score column to flag by (default: filter's default)"}
    )
    drop: float | None = field(
        default=None, metadata={"help": "fraction of rows flagged, as filter --drop (default 0.01)"}
    )
    drop_count: int | None = field(default=None, metadata={"help": "rows flagged, as filter --drop-count"})
    threshold: float | None = field(
        default=None, metadata={"help": "flag rows beyond this score, as filter --threshold"}
    )
    allow_empty_class: bool = field(
        default=False, metadata={"help": "allow flagging every row of a class, as filter --allow-empty-class"}
    )
    top: int = field(default=30, metadata={"help": "flagged rows listed in the table"})
    max_explained: int = field(default=10, metadata={"help": "misclassified validation rows explained"})
    explain_k: int = field(default=3, metadata={"help": "hurt and helped training rows per explained row"})
    influence_method: str | None = field(
        default=None,
        metadata={"help": "exact, linear or auto for the explanations (default: the method score used)"},
    )

    @property
    def criterion(self) -> str:
        """The flagging criterion as filter's options spell it."""
        if self.threshold is not None:
            return f"--threshold {self.threshold}"
        if self.drop_count is not None:
            return f"--drop-count {self.drop_count}"
        return f"--drop {self.drop}"

    def __post_init__(self) -> None:
        if self.influence_method is not None and self.influence_method not in INFLUENCE_METHODS:
            raise ConfigError(
                f"--influence {self.influence_method}: choose one of {', '.join(INFLUENCE_METHODS)}"
            )
        if self.by is not None and self.by not in SIGNALS:
            raise ConfigError(f"--by {self.by}: cannot rank by it; choose one of: {', '.join(SIGNALS)}")
        if self.drop is None and self.drop_count is None and self.threshold is None:
            self.drop = 0.01
        # the same checks and messages as filter's
        check_drop_options(by=self.by, fraction=self.drop, count=self.drop_count, threshold=self.threshold)
        if self.top < 1:
            raise ConfigError(f"--top must be a positive number of rows, got {self.top}")
        if self.max_explained < 0:
            raise ConfigError(f"--max-explained must be 0 or more, got {self.max_explained}")
        if self.explain_k < 1:
            raise ConfigError(f"explain_k must be a positive number of rows, got {self.explain_k}")


@dataclass
class Distribution:
    """The values ``[N]`` float64 of one score column; ``cutoff`` only for the column rows are flagged by."""

    column: str
    values: np.ndarray
    cutoff: float | None = None


@dataclass
class ClassCount:
    label: str
    rows: int
    flagged: int


@dataclass
class ReportContent:
    """Everything the page shows, as plain values (no figures yet).

    ``flagged`` is bool ``[N]`` in training-row order. ``top_rows`` has the display columns of the table of
    flagged rows (``text`` and ``flagged`` are rendered specially). ``explanations`` is the frame of
    :func:`tod_clean.explain.explain_run` cut to the explained validation rows, or None with
    ``explain_note`` saying why.
    """

    header: list[tuple[str, str]]
    by: str
    drop: float | None
    flagged: np.ndarray
    distributions: list[Distribution]
    classes: list[ClassCount]
    top_rows: pd.DataFrame
    explanations: pd.DataFrame | None = None
    explain_summary: str | None = None
    explain_note: str | None = None
    notes: list[str] = field(default_factory=list)
    criterion: str | None = None  # as filter's options spell it; None: --drop DROP
    ranking_note: str | None = None  # which signal was ranked by and why, when none was chosen
    warnings: list[str] = field(default_factory=list)  # classes that lose a disproportionate share

    @property
    def flagged_by(self) -> str:
        return self.criterion or f"--drop {self.drop}"

    @property
    def worse_when(self) -> str:
        return "lowest" if self.by in WORSE_WHEN_LOWER else "highest"

    @property
    def num_flagged(self) -> int:
        return int(self.flagged.sum())

    @property
    def explained(self) -> int:
        return 0 if self.explanations is None else int(self.explanations["val_row"].nunique())


@dataclass
class Report:
    """The page and its figures (name -> PNG bytes), ready to write."""

    html: str
    figures: dict[str, bytes]
    content: ReportContent


# ---- inputs -----------------------------------------------------------------------------------------


def figures_folder(out: str | Path) -> Path:
    """Where the PNGs of ``report.html`` go: ``report_files/`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}_files")


def check_report_destination(out: str | Path) -> None:
    """Refuse an output that is not an .html file in an existing folder, before any work is done."""
    path = Path(out)
    if str(out) == "-" or path.suffix.lower() not in HTML_SUFFIXES:
        raise InputError(f"{out}: the report is an HTML page; give a path ending in .html")
    if not path.parent.is_dir():
        raise InputError(f"{out}: the folder {path.parent} does not exist")
    if path.is_dir():
        raise InputError(f"{out}: is a folder, expected a file name for the report")
    folder = figures_folder(path)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{folder}: exists and is not a folder; the report's figures go there")


def load_run_scores(run: RunDir) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scores saved in the run directory by ``score``, with a message that says how to get them."""
    from tod_clean.score import load_scores

    run.read_info()
    if not run.file(SCORES).is_file() or not run.file(SCORES_META).is_file():
        raise RunDirError(f"{run.path}: has no scores yet; run 'tod-clean score --run {run.path}' first")
    return load_scores(run)


def recorded_val_table(meta: dict[str, Any]) -> tuple[Table | None, str | None]:
    """The validation file ``score`` recorded in scores.json, or None and the reason it cannot be used."""
    path = meta.get("val_file")
    if not path:
        return (
            None,
            "the run was scored without a validation set; pass --val FILE to explain validation errors",
        )
    if path.startswith("<") or not (is_hub_ref(path) or Path(path).exists()):
        return None, f"the validation file the run was scored on ({path}) was not found; pass --val FILE"
    try:
        table = read_table(path, split=meta.get("val_split"))
    except TodCleanError as error:
        return None, f"cannot read the validation file the run was scored on: {error}"
    if meta.get("val_sha256") and table.sha256 != meta["val_sha256"]:
        log.warning("%s changed since the run was scored; explaining its current rows", path)
    return table, None


# ---- gathering --------------------------------------------------------------------------------------


def shorten(text: str, width: int) -> str:
    """One line of at most ``width`` characters, cut at a word boundary (a long word is cut hard)."""
    flat = " ".join(str(text).split())
    if len(flat) <= width:
        return flat
    short = textwrap.shorten(flat, width=width, placeholder=" …")
    if short == "…" or len(short) < width // 2:  # one very long word: cut it rather than lose it
        short = flat[: width - 1] + "…"
    return short


def _texts(table: Table, info: RunInfo) -> list[str]:
    columns = info.train.columns
    texts = [str(value) for value in table.column(columns.text_col)]
    if columns.text_pair_col is not None and columns.text_pair_col in table.columns:
        pairs = table.column(columns.text_pair_col)
        texts = [f"{text} ‖ {pair}" for text, pair in zip(texts, pairs, strict=True)]
    return texts


def _cutoff(values: np.ndarray, order: np.ndarray, count: int) -> float | None:
    """Midway between the last flagged and the first kept value (None when nothing or everything is)."""
    if count <= 0 or count >= len(values):
        return None
    return float((values[order[count - 1]] + values[order[count]]) / 2)


def _format_number(value: Any, *, signed: bool = False) -> str:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return "—"
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if abs(number) >= 1e4:
            return f"{number:.4g}"
        return f"{number:+.4f}" if signed else f"{number:.4f}"
    return str(value)


def _shown_path(path: str) -> str:
    """A recorded (absolute) path as the reader knows it: relative to the current folder when inside it."""
    if is_hub_ref(path):
        return path
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except (ValueError, OSError):
        return path


def _header(
    run: RunDir, info: RunInfo, meta: dict[str, Any], train_table: Table, config: ReportConfig, by: str
) -> list[tuple[str, str]]:
    final_loss = info.epochs[-1].get("train_loss") if info.epochs else None
    epochs = f"{len(info.epochs)} of {info.train.epochs}"
    if final_loss is not None:
        epochs += f" (final training loss {final_loss:.4f})"
    val_file = meta.get("val_file")
    scored = (
        f"{_shown_path(val_file)} ({meta.get('val_rows', '?')} rows)"
        + (f", {meta['influence_method']} influence" if meta.get("influence_method") else "")
        if val_file
        else "no validation set (self-scores only)"
    )
    rows = [
        ("run directory", str(run.path)),
        (
            "training file",
            _shown_path(info.train_file.path)
            if train_table.ref == info.train_file.path
            else f"{train_table.source} (trained on {_shown_path(info.train_file.path)})",
        ),
        (
            "rows",
            f"{len(train_table)} ({len(info.labels)} classes: {', '.join(map(str, info.labels))})",
        ),
        ("model", info.train.model),
        ("scope", str(info.scope)),
        ("keep_prob", f"{info.train.keep_prob}" + ("" if info.scope.masked else " (no instance masks)")),
        ("instance key", info.instance_key),
        ("epochs", epochs),
        ("scored on", scored),
        (
            "flagged by",
            f"the {'lowest' if by in WORSE_WHEN_LOWER else 'highest'} {by}"
            + (" within each class" if by in LABEL_SIGNALS and config.threshold is None else "")
            + f", {config.criterion}",
        ),
    ]
    return rows


def report_content(
    run: RunDir,
    config: ReportConfig,
    *,
    scores: pd.DataFrame,
    meta: dict[str, Any],
    train_table: Table | None = None,
    val_table: Table | None = None,
    val_note: str | None = None,
    val_explicit: bool = False,
    device: str = "auto",
    progress: Progress | None = None,
) -> ReportContent:
    """Gather the report of a scored run.

    Rows are flagged exactly as ``tod-clean filter --by config.by --drop config.drop`` would drop them.
    Misclassified rows of ``val_table`` are explained (the run's model is loaded for this) unless the run
    has no instance masks, no validation table is given (``val_note`` says why) or ``max_explained`` is 0.
    A validation table the user did not name (``val_explicit=False``) that cannot be explained becomes a
    note on the page rather than an error.
    """
    info = run.read_info()
    if train_table is None:
        train_table = read_table(info.train_source(), split=info.train_file.split)
    result = filter_table(
        train_table,
        scores,
        info,
        by=config.by,
        fraction=config.drop,
        count=config.drop_count,
        threshold=config.threshold,
        allow_empty_class=config.allow_empty_class,
        scores_source=str(run.file(SCORES)),
    )
    by = result.by
    aligned = match_scores(train_table, scores, info, source=str(run.file(SCORES)))
    flagged = np.zeros(len(train_table), dtype=bool)
    flagged[result.dropped] = True
    values = aligned[by].to_numpy(dtype=np.float64)
    order = result.order  # the ranking filter uses: within each class for label-error signals
    if config.threshold is not None:
        cutoff = config.threshold
    elif by in LABEL_SIGNALS:
        cutoff = None  # ranked within each class: no single value of the column separates the rows
    else:
        cutoff = _cutoff(values, order, len(result.dropped))

    columns = [name for name in DISTRIBUTION_COLUMNS if name in aligned.columns]
    if by not in columns:
        columns.append(by)
    distributions = [
        Distribution(
            name,
            aligned[name].to_numpy(dtype=np.float64),
            cutoff if name == by else None,
        )
        for name in columns
    ]

    label_keys = [label_key(value) for value in aligned["label"]]
    classes = []
    for label in info.labels:
        key = label_key(label)
        in_class = np.array([k == key for k in label_keys], dtype=bool)
        classes.append(ClassCount(str(label), int(in_class.sum()), int((in_class & flagged).sum())))

    texts = _texts(train_table, info)
    top = order[: config.top]
    shown: dict[str, Any] = {"#": np.arange(1, len(top) + 1), "row": aligned["row"].to_numpy()[top]}
    if "id" in aligned.columns:
        shown["id"] = aligned["id"].to_numpy()[top]
    shown["label"] = aligned["label"].to_numpy()[top]
    pred = "hidden_pred" if "hidden_pred" in aligned.columns else "full_pred"
    shown[pred] = aligned[pred].to_numpy()[top]
    for name in (*TABLE_SCORE_COLUMNS, by):
        if name in aligned.columns and name not in shown:
            shown[name] = aligned[name].to_numpy()[top]
    shown["flagged"] = flagged[top]
    shown["text"] = [texts[i] for i in top]
    top_rows = pd.DataFrame(shown)

    content = ReportContent(
        header=_header(run, info, meta, train_table, config, by),
        by=by,
        drop=config.drop,
        flagged=flagged,
        distributions=distributions,
        classes=classes,
        top_rows=top_rows,
        criterion=config.criterion,
        ranking_note=result.note,
        warnings=list(result.warnings),
    )
    content.notes += [f"Warning: {warning}." for warning in result.warnings]
    if len(result.dropped) == 0:
        content.notes.append(
            (
                f"--drop {config.drop} of {len(train_table)} rows rounds to 0 rows"
                if config.drop is not None
                else f"{config.criterion} flags no row"
            )
            + ": nothing is flagged; the table lists the rows closest to the cut."
        )
    # Explanations use the method the scores were computed with, unless the report asks for another.
    method = config.influence_method or meta.get("influence_method") or "auto"
    _add_explanations(
        content, run, info, method, config, train_table, val_table, val_note, val_explicit, device, progress
    )
    return content


def _add_explanations(
    content: ReportContent,
    run: RunDir,
    info: RunInfo,
    influence_method: str,
    config: ReportConfig,
    train_table: Table,
    val_table: Table | None,
    val_note: str | None,
    val_explicit: bool,
    device: str,
    progress: Progress | None,
) -> None:
    if not info.scope.masked:
        content.explain_note = (
            f"This run was trained with scope '{info.scope}' (no instance masks), so it has no influence to explain "
            "validation errors with."
        )
        return
    if val_table is None:
        content.explain_note = val_note or "No validation file is known; pass --val FILE."
        return
    if config.max_explained == 0:
        content.explain_note = "Explanations were turned off (--max-explained 0)."
        return
    from tod_clean.explain import explain_run

    try:
        result = explain_run(
            run,
            train_table,
            val_table,
            k=config.explain_k,
            errors_only=True,
            max_rows=config.max_explained,
            config=ScoreConfig(influence_method=influence_method),
            device=device,
            progress=progress,
        )
    except TodCleanError as error:
        if val_explicit:
            raise
        content.explain_note = f"Validation errors could not be explained: {error}"
        log.warning("validation errors not explained: %s", error)
        return
    content.explain_summary = (
        f"{val_table.source}: the full network gets {result.misclassified} of {len(val_table)} "
        f"validation rows wrong (accuracy {result.accuracy:.3f})."
    )
    if result.explained == 0:
        content.explain_note = "No validation row is misclassified: nothing to explain."
        return
    first = list(dict.fromkeys(result.frame["val_row"]))[: config.max_explained]
    content.explanations = result.frame[result.frame["val_row"].isin(first)].reset_index(drop=True)
    if result.explained > len(first):
        content.explain_summary += f" The first {len(first)} are explained (--max-explained)."


# ---- figures ----------------------------------------------------------------------------------------


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _new_figure(width: float, height: float) -> Any:
    # The object-oriented API with an Agg canvas: no pyplot global state, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def distribution_figure(distribution: Distribution, flagged: np.ndarray, by: str) -> bytes:
    """A histogram of one score column, flagged rows stacked in red; the cut-off as a dashed line."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    values = distribution.values
    finite = np.isfinite(values)
    figure = _new_figure(5.6, 3.1)
    axes = figure.add_subplot()
    bins = np.histogram_bin_edges(values[finite], bins=40) if finite.any() else 10
    axes.hist(
        [values[finite & ~flagged], values[finite & flagged]],
        bins=bins,
        stacked=True,
        color=[_KEPT_COLOR, _FLAGGED_COLOR],
        label=["kept", f"flagged by {by}"],
    )
    if distribution.cutoff is not None:
        axes.axvline(
            distribution.cutoff,
            color=_CUTOFF_COLOR,
            linestyle="--",
            linewidth=1.2,
            label=f"cut-off {distribution.cutoff:.4g}",
        )
    if flagged.any() and flagged.sum() < 0.05 * len(flagged):
        # a few flagged rows stay visible next to tall bins; ticks as plain counts (1, 10, 100)
        axes.set_yscale("symlog", linthresh=1)
        axes.set_ylim(bottom=0)
        axes.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.set_title(distribution.column, fontsize=11, loc="left")
    signal = SIGNALS_BY_NAME.get(distribution.column)
    axes.set_xlabel(distribution.column if signal is None else signal.meaning, fontsize=8.5)
    axes.set_ylabel("training rows", fontsize=9)
    if axes.get_yscale() == "linear":
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.tick_params(labelsize=8)
    axes.legend(fontsize=8, frameon=False)
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def _plain(text: str) -> str:
    """Text for matplotlib, which would read a pair of ``$`` as mathematics (and fail on bad formulas)."""
    return text.replace("$", r"\$")


def per_class_figure(classes: Sequence[ClassCount], by: str, drop: float | str) -> bytes:
    """Class sizes with the flagged rows of each class, and each class's flagged share.

    With more than ``MAX_CLASSES_SHOWN`` classes only those with the most flagged rows are drawn.
    """
    title = "rows per class"
    if len(classes) > MAX_CLASSES_SHOWN:
        classes = sorted(classes, key=lambda c: (-c.flagged, -c.rows))[:MAX_CLASSES_SHOWN]
        title += f" ({MAX_CLASSES_SHOWN} with the most flagged rows)"
    labels = [_plain(shorten(c.label, 24)) for c in classes]
    sizes = np.array([c.rows for c in classes])
    flagged = np.array([c.flagged for c in classes])
    share = np.divide(flagged, sizes, out=np.zeros(len(classes)), where=sizes > 0) * 100
    overall = flagged.sum() / max(sizes.sum(), 1) * 100
    figure = _new_figure(11.0, max(2.4, 0.42 * len(classes) + 1.3))
    left, right = figure.subplots(1, 2, sharey=True)
    positions = np.arange(len(classes))
    left.barh(positions, sizes, color=_KEPT_COLOR, label="rows in class")
    left.barh(positions, flagged, color=_FLAGGED_COLOR, label=f"flagged by {by}")
    for y, (size, count) in enumerate(zip(sizes, flagged, strict=True)):
        left.text(size, y, f" {count} of {size}", va="center", fontsize=8)
    left.set_yticks(positions, labels, fontsize=9)
    left.invert_yaxis()
    left.set_xlim(0, sizes.max() * 1.22 if len(sizes) and sizes.max() > 0 else 1)
    left.set_title(title, fontsize=11, loc="left")
    right.barh(positions, share, color=_FLAGGED_COLOR)
    right.axvline(
        overall, color=_CUTOFF_COLOR, linestyle="--", linewidth=1.2, label=f"all rows {overall:.2f}%"
    )
    for y, value in enumerate(share):
        right.text(value, y, f" {value:.1f}%", va="center", fontsize=8)
    right.set_xlim(0, max(share.max() if len(share) else 0, overall, 1e-9) * 1.3)
    criterion = drop if isinstance(drop, str) else f"--drop {drop}"
    right.set_title(f"share of the class flagged ({criterion})", fontsize=11, loc="left")
    right.set_xlabel("% of the class's rows", fontsize=8.5)
    left.set_xlabel("training rows", fontsize=8.5)
    figure.legend(loc="outside lower center", ncols=3, fontsize=8.5, frameon=False)
    for axes in (left, right):
        axes.tick_params(axis="x", labelsize=8)
        axes.grid(axis="x", alpha=0.3)
    return _png(figure)


def report_figures(content: ReportContent) -> dict[str, bytes]:
    """PNG bytes per figure name: one histogram per score column and the per-class chart."""
    figures = {d.column: distribution_figure(d, content.flagged, content.by) for d in content.distributions}
    figures[PER_CLASS_FIGURE] = per_class_figure(content.classes, content.by, content.flagged_by)
    return figures


# ---- HTML: a plain-data view of the page, rendered by templates/report.html.j2 -------------------------

TEMPLATE = "report.html.j2"
TEXT_IN_TABLE = 220  # characters of a training text shown in a table cell (the whole text on hover)
TEXT_OF_VAL_ROW = 600


@dataclass
class CellView:
    """One table cell: the shown text, its CSS classes and an optional hover title."""

    text: str
    css: str = ""
    title: str | None = None


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
    """A training row that hurt or helped an explained validation row."""

    kind: str  # "hurt" or "helped"
    rank: str
    name: str
    label: str
    influence: str
    text: str


@dataclass
class ExplainedView:
    """A misclassified validation row and the training rows that explain it."""

    name: str
    label: str
    pred: str
    prob: str
    text: str
    neighbours: list[NeighbourView]


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


def _figure(png: bytes, alt: str) -> FigureView:
    return FigureView("data:image/png;base64," + base64.b64encode(png).decode("ascii"), alt)


def _cell(column: str, value: Any, by: str) -> CellView:
    by_class = ["by"] if column == by else []
    if column == "text":
        return CellView(
            shorten(value, TEXT_IN_TABLE), "text", str(value) if len(str(value)) > TEXT_IN_TABLE else None
        )
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


def table_view(frame: pd.DataFrame, by: str, *, flag_column: str | None = None, css: str = "") -> TableView:
    """A frame as a table: numbers right-aligned and formatted, the ranking column ``by`` highlighted,
    rows whose ``flag_column`` is true marked flagged."""
    head = []
    for column in frame.columns:
        dtype = frame[column].dtype
        numeric = pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
        head.append(
            CellView(str(column), " ".join(n for n, on in (("by", column == by), ("num", numeric)) if on))
        )
    rows = [
        RowView(
            [_cell(str(c), record[c], by) for c in frame.columns],
            flag_column is not None and bool(record[flag_column]),
        )
        for record in frame.to_dict(orient="records")
    ]
    return TableView(head, rows, css)


def _present(value: Any) -> bool:
    return value is not None and not pd.isna(value)


def _both_texts(row: Any, column: str) -> str:
    """An explained row's text and, for sentence pairs, its second text (``explain``'s ``<column>_pair``)."""
    pair = row.get(f"{column}_pair")
    return str(row[column]) if not _present(pair) else f"{row[column]} ‖ {pair}"


def _explained_views(explanations: pd.DataFrame | None) -> list[ExplainedView]:
    if explanations is None:
        return []
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
        top_table=table_view(content.top_rows, content.by, flag_column="flagged"),
        explain_summary=content.explain_summary,
        explain_note=content.explain_note,
        explained=_explained_views(content.explanations),
        version=__version__,
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )


@functools.cache
def _templates() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("tod_clean.report", "templates"),
        autoescape=True,  # every value; the template marks nothing safe
        undefined=jinja2.StrictUndefined,  # a misspelt field is an error, not an empty string
        keep_trailing_newline=True,
    )


def render_html(content: ReportContent, figures: dict[str, bytes], *, title: str = "tod-clean report") -> str:
    """The self-contained page: inline CSS, figures as data URIs, all user text escaped."""
    return _templates().get_template(TEMPLATE).render(page=page_view(content, figures, title=title))


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
