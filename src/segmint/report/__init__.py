"""The HTML report of a segmentation run: one self-contained file that works offline.

Examples
--------
>>> from segmint.report import render_report_html
>>> "At a glance" in render_report_html({"title": "Segments"})
True
"""

from __future__ import annotations

from segmint.report.html import SECTIONS, build_figures, render_report_html, write_report
from segmint.report.view import build_view

__all__ = ["SECTIONS", "build_figures", "build_view", "render_report_html", "write_report"]
