"""The report's page built from plain content, without a run: the values handed to the template are raw
text, and the template escapes every one of them."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd

from tod_clean.report.content import ClassCount, Distribution, ReportContent
from tod_clean.report.figures import report_figures
from tod_clean.report.render import page_view, render_html


class TagCollector(HTMLParser):
    """The tags of a page and their src/href attributes, as a browser parses them (escaped text is text)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.sources += [value or "" for name, value in attrs if name in ("src", "href", "srcset", "action")]


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    parser = TagCollector()
    parser.feed(page)
    assert all(source.startswith("data:") for source in parser.sources), parser.sources
    assert parser.sources, "no embedded figure"
    assert not {"script", "link", "iframe", "object", "embed"} & set(parser.tags)


def tiny_content(text: str, label: str) -> ReportContent:
    flagged = np.array([True, False, False])
    return ReportContent(
        header=[("training file", f"{label}.jsonl")],
        by="full_loss",
        drop=0.3,
        flagged=flagged,
        distributions=[Distribution("full_loss", np.array([2.0, 0.5, 0.1]), cutoff=1.25)],
        classes=[ClassCount(label, 2, 1), ClassCount("b", 1, 0)],
        top_rows=pd.DataFrame(
            {"#": [1], "row": [0], "label": [label], "full_loss": [2.0], "flagged": [True], "text": [text]}
        ),
        notes=[f"note about {label}"],
    )


def test_render_html_escapes_user_text() -> None:
    content = tiny_content("<script>alert(1)</script>", '"><img src=x onerror=alert(2)> $x_{1$')
    page = render_html(content, report_figures(content))
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<img src=x" not in page and "&#34;&gt;&lt;img src=x onerror=alert(2)&gt;" in page
    assert_self_contained(page)


def test_page_view_holds_plain_values_and_the_template_escapes_them() -> None:
    """The Python side hands the template raw text (no markup, no escaping); the template escapes it."""
    content = tiny_content("<b>x</b> & y", "a<b")
    figures = report_figures(content)
    view = page_view(content, figures)
    text_cell = view.top_table.rows[0].cells[-1]
    assert text_cell.text == "<b>x</b> & y" and text_cell.css == "text"
    assert view.top_table.rows[0].flagged
    assert [c.text for c in view.class_table.head] == ["label", "rows", "flagged", "% flagged"]
    assert view.per_class_figure is not None and view.per_class_figure.src.startswith(
        "data:image/png;base64,"
    )
    assert view.share == "33.33%" and view.notes == ["note about a<b"]
    page = render_html(content, figures)
    assert "&lt;b&gt;x&lt;/b&gt; &amp; y" in page and "<b>x</b>" not in page
    assert 'title="a&lt;b"' in page  # attribute values too
