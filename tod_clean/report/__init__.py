"""The HTML report of a scored run."""

from tod_clean.report.content import page_view

__all__ = ["page_view"]
