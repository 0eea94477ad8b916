"""The report's figures, drawn with matplotlib as PNG bytes: a histogram per score column (flagged rows
stacked in red, the cut-off dashed) and the flagged rows per class."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from tod_clean.report.content import ClassCount, Distribution, ReportContent, shorten
from tod_clean.signals import SIGNALS, SIGNALS_BY_NAME

PER_CLASS_FIGURE = "flagged_per_class"
FIGURES = (*SIGNALS, PER_CLASS_FIGURE)  # every figure a report may write (and remove when it has none)
MAX_CLASSES_SHOWN = 40

_KEPT_COLOR = "#8fb3d9"
_FLAGGED_COLOR = "#d62728"
_CUTOFF_COLOR = "#222222"


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
