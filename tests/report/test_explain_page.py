"""explain's page (explain --html) from a plain ExplainResult, without a run: at most PAGE_ROWS validation
rows, said on the page; every value escaped; the option's help gives the same number."""

from __future__ import annotations

import pandas as pd

from tests.cli.conftest import invoke
from tests.report.test_render import TagCollector
from tod_clean.explain import ExplainResult
from tod_clean.report.explain_page import PAGE_ROWS, explain_page_view, render_explain_html


def result_of(rows: int) -> ExplainResult:
    frame = pd.DataFrame(
        [
            {"val_row": v, "val_id": None, "val_label": "a", "val_pred": "a" if v % 2 else "<b>", "val_prob": 0.5,
             "kind": kind, "rank": 1, "train_row": 0, "train_id": "t0", "train_label": "a", "influence": value,
             "train_text": "<i>train</i>", "val_text": f"val {v}"}
            for v in range(rows) for kind, value in (("hurt", -0.1), ("helped", 0.2))
        ]
    )  # fmt: skip
    return ExplainResult(frame, rows, rows // 2, 0.5)


def test_the_page_shows_at_most_page_rows_and_says_so() -> None:
    view = explain_page_view(result_of(PAGE_ROWS + 5), header=[("run directory", "r")], val_rows=40)
    assert len(view.explained) == PAGE_ROWS and not view.images and view.noun == "row"
    assert view.notes == [
        f"The first {PAGE_ROWS} of the {PAGE_ROWS + 5} explained validation rows are shown here (at most "
        f"{PAGE_ROWS}, to keep the page small); --out writes them all."
    ]
    assert view.explained[1].correct and not view.explained[0].correct
    few = explain_page_view(result_of(3), header=[], val_rows=3, hurt_from="any")
    assert few.notes == [] and few.hurt_from == "among all training rows"


def test_the_page_escapes_every_value() -> None:
    page = render_explain_html(result_of(2), header=[("validation file", "<v>.jsonl")], val_rows=2)
    parser = TagCollector()
    parser.feed(page)
    assert not {"script", "b", "i", "v", "img"} & set(parser.tags)
    assert "&lt;i&gt;train&lt;/i&gt;" in page and "&lt;v&gt;.jsonl" in page
    assert 'predicted <span class="wrong">&lt;b&gt;</span>' in page and 'class="right">a</span>' in page


def test_the_help_gives_the_page_s_row_limit() -> None:
    help_text = " ".join(invoke("explain", "--help").output.split())
    assert f"the first {PAGE_ROWS} rows" in help_text
