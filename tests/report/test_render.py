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


def test_an_image_run_shows_thumbnails_in_the_table_and_pictures_in_the_explanations() -> None:
    """Image content: each table row's thumbnail above its (escaped) name, a card per validation image with
    its training images, their labels and predictions; an image that could not be read is a placeholder."""
    from PIL import Image

    from tod_clean.io.thumbnails import png_data_uri

    uri = png_data_uri(Image.new("RGB", (3, 2), (1, 2, 3)))
    content = tiny_content("unused", "cat")
    content.top_rows = content.top_rows.drop(columns=["text"]).assign(image=['<b>"x".png'])
    content.images, content.top_thumbnails = True, [uri]
    content.explanations = pd.DataFrame(
        [
            {"val_row": 4, "val_id": None, "val_label": "cat", "val_pred": "dog", "val_prob": 0.1, "kind": kind,
             "rank": rank, "train_row": row, "train_id": None, "train_label": "dog", "influence": value,
             "train_text": f"dog/{row}.png", "val_text": "val/cat.png", "train_pred": "dog"}
            for kind, rank, row, value in (("hurt", 1, 7, -0.5), ("hurt", 2, 8, -0.25), ("helped", 1, 9, 0.5))
        ]
    )  # fmt: skip
    content.train_thumbnails, content.val_thumbnails = {7: uri, 9: uri}, {4: uri}  # row 8 unreadable
    view = page_view(content, report_figures(content))
    cell = next(c for c in view.top_table.rows[0].cells if c.css == "image")
    assert cell.image == uri and cell.text == '<b>"x".png'
    (card,) = view.explained
    assert card.image == uri and [n.image for n in card.hurt] == [uri, None] and card.helped[0].pred == "dog"
    page = render_html(content, report_figures(content))
    assert_self_contained(page)
    assert (
        f'<img class="thumb" src="{uri}" alt="&lt;b&gt;&#34;x&#34;.png"><br>&lt;b&gt;&#34;x&#34;.png' in page
    )
    explained = page.split('id="explanations"')[1]
    assert "Misclassified validation images" in explained and explained.count("<img") == 3
    assert "no picture</span>" in explained and '<table class="explained">' not in explained
    assert explained.index(">dog/7.png<") < explained.index(">dog/8.png<") < explained.index(">dog/9.png<")
    assert explained.count('predicted <span class="label">dog</span>') == 3
