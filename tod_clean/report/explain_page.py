"""explain's page (``tod-clean explain --html``): the explained validation rows of an
:class:`~tod_clean.explain.ExplainResult` as one self-contained HTML page, drawn with the report's cards
(``templates/_explained.html.j2``): texts as tables; for images, each validation image beside its most
harmful and most helpful training images, embedded as PNG thumbnails (no link to the user's files).

At most ``PAGE_ROWS`` validation rows are shown, so the page stays small; the page says so, and
``--out`` holds them all.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from tod_clean.config import HurtFrom
from tod_clean.explain import ExplainResult
from tod_clean.io.thumbnails import thumbnail_uris
from tod_clean.report.render import ExplainedView, explained_views, templates
from tod_clean.version import __version__

TEMPLATE = "explain.html.j2"
PAGE_ROWS = 20  # validation rows shown on the page, at most


@dataclass
class ExplainPageView:
    """Everything explain's page shows, as strings and lists: no markup."""

    title: str
    header: list[tuple[str, str]]
    summary: str
    hurt_from: str
    images: bool
    noun: str  # "row" or "image"
    explained: list[ExplainedView]
    version: str
    generated: str
    notes: list[str] = field(default_factory=list)


def explain_page_view(
    result: ExplainResult,
    *,
    header: list[tuple[str, str]],
    val_rows: int,
    hurt_from: str = HurtFrom.WRONG.value,
    title: str = "tod-clean explain",
) -> ExplainPageView:
    """The values explain's page shows: ``header`` (name, value) pairs about the run and files,
    ``val_rows`` the rows of the validation file; thumbnails are made here for image rows."""
    images = result.val_images is not None and result.train_images is not None
    noun = "image" if images else "row"
    first = list(dict.fromkeys(result.frame["val_row"]))[:PAGE_ROWS]
    frame = result.frame[result.frame["val_row"].isin(first)]
    notes = []
    train_thumbnails: dict[int, str] = {}
    val_thumbnails: dict[int, str] = {}
    if images:
        assert result.train_images is not None and result.val_images is not None
        train_thumbnails, train_problems = thumbnail_uris(result.train_images, frame["train_row"])
        val_thumbnails, val_problems = thumbnail_uris(result.val_images, frame["val_row"])
        problems = list(dict.fromkeys(train_problems + val_problems))
        if problems:
            notes.append(
                f"{len(problems)} image{'s' if len(problems) > 1 else ''} could not be shown: {problems[0]}"
            )
    if result.explained > len(first):
        notes.append(
            f"The first {len(first)} of the {result.explained} explained validation {noun}s are shown here "
            f"(at most {PAGE_ROWS}, to keep the page small); --out writes them all."
        )
    summary = (
        f"Full network: accuracy {result.accuracy:.3f} on {val_rows} validation {noun}s "
        f"({result.misclassified} misclassified); explained {result.explained} "
        f"({result.influence_method} influence)."
    )
    return ExplainPageView(
        title=title,
        header=header,
        summary=summary,
        hurt_from=(
            f"among training {noun}s labeled with the wrong prediction"
            if hurt_from == HurtFrom.WRONG
            else f"among all training {noun}s"
        ),
        images=images,
        noun=noun,
        explained=explained_views(frame, train_thumbnails=train_thumbnails, val_thumbnails=val_thumbnails),
        version=__version__,
        generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        notes=notes,
    )


def render_explain_html(
    result: ExplainResult,
    *,
    header: list[tuple[str, str]],
    val_rows: int,
    hurt_from: str = HurtFrom.WRONG.value,
    title: str = "tod-clean explain",
) -> str:
    """explain's self-contained page: inline CSS, thumbnails as data URIs, all user text escaped."""
    view = explain_page_view(result, header=header, val_rows=val_rows, hurt_from=hurt_from, title=title)
    return templates().get_template(TEMPLATE).render(page=view)
