"""One self-contained HTML page about a scored run: what was trained, how the scores are distributed, which
rows the filter would drop (per class and one by one), and why the model errs on validation rows.

The page embeds its figures as base64 PNG data URIs and its CSS inline: no script, no external URL, so it
opens anywhere and can be mailed as one file. The same PNGs are also written beside it for reuse. Every
piece of user text (file names, labels, training and validation texts) is HTML-escaped.

Each part can be called and tested alone, each module using only those above it:

- ``content``: what the page says, as plain data (:class:`~tod_clean.report.content.ReportConfig`,
  :func:`~tod_clean.report.content.report_content`, the one step that may run the model, for the
  explanations);
- ``figures``: the PNGs drawn from it with matplotlib (:func:`~tod_clean.report.figures.report_figures`);
- ``render``: the plain values the page shows (:func:`page_view`), rendered with the Jinja2 template
  ``templates/report.html.j2`` (autoescaped; the CSS is ``templates/report.css``) by
  :func:`~tod_clean.report.render.render_html`; the whole report built and written with its figures
  (:func:`~tod_clean.report.render.build_report`, :func:`~tod_clean.report.render.write_report`);
- ``explain_page``: ``explain --html``'s page of explained validation rows, drawn with the report's cards
  (:func:`~tod_clean.report.explain_page.render_explain_html`).

Image runs show their images as thumbnails (``tod_clean.io.thumbnails``: PNG data URIs, no link to the
user's files).

The ``report`` command's checks, reads and writes are in :mod:`tod_clean.pipelines.report`.
"""

from tod_clean.report.render import page_view

__all__ = ["page_view"]
