"""Render the report of a segmentation run as one self-contained, offline HTML file.

The page inlines plotly.js (from the installed ``plotly`` package) and its CSS,
and loads nothing from the network: a Content-Security-Policy in the page
forbids every request besides inline scripts, styles and ``data:`` images. It
is rendered by Jinja2 with autoescaping on, so every string from the data
(segment names, descriptions, rules, feature SQL) is HTML-escaped; only the
plotly.js bundle and the figure snippets produced by plotly are inserted as
markup. The output depends only on the data: rendering the same data twice
gives the same bytes (no clock, no random ids).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import plotly.graph_objects as go
from markupsafe import Markup
from plotly.offline import get_plotlyjs

from segmint.errors import UserInputError
from segmint.report import charts
from segmint.report.formatting import MISSING, fmt_int, fmt_num, fmt_pct, fmt_signed, fmt_when
from segmint.report.view import build_view
from segmint.report.viewmodel import ReportView

logger = logging.getLogger(__name__)

#: The sections of the report, in order: (anchor id, heading, part).
SECTIONS: tuple[tuple[str, str, str], ...] = (
    ("summary", "At a glance", "overview"),
    ("segments", "The segments", "overview"),
    ("migration", "How customers moved", "overview"),
    ("quality", "Data quality", "technical"),
    ("features", "Features", "technical"),
    ("k-selection", "Choosing the number of segments", "technical"),
    ("profiles", "Segment profiles", "technical"),
    ("validation", "Validation", "technical"),
    ("explanation", "Explanation rules", "technical"),
    ("lineage", "Model and lineage", "technical"),
)

#: Headings of the parts of the report.
PARTS = {"overview": "For everyone", "technical": "Technical details"}

#: plotly.js options of every chart: no plotly logo or link, charts follow the page width.
PLOTLY_CONFIG: dict[str, Any] = {"displaylogo": False, "responsive": True}

#: Only inline code and styles, and data: images (chart downloads) are allowed.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; "
    "base-uri 'none'"
)


def _toc() -> list[tuple[str, int, list[tuple[str, str]]]]:
    """(part heading, number of its first section, [(anchor, heading)]) per part."""
    toc = []
    number = 1
    for part, heading in PARTS.items():
        entries = [(anchor, title) for anchor, title, in_part in SECTIONS if in_part == part]
        toc.append((heading, number, entries))
        number += len(entries)
    return toc


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("segmint.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        {"int": fmt_int, "pct": fmt_pct, "num": fmt_num, "signed": fmt_signed, "when": fmt_when}
    )
    env.globals.update(
        {
            "TOC": _toc(),
            "MISSING": MISSING,
        }
    )
    return env


@lru_cache(maxsize=1)
def _plotlyjs() -> Markup:
    return Markup(get_plotlyjs())


def build_figures(view: ReportView) -> dict[str, go.Figure]:
    """The report's figures by chart id (``chart-...``); charts without data are left out.

    Examples
    --------
    >>> from segmint.report.view import build_view
    >>> figs = build_figures(build_view({"segments": [{"name": "A", "share": 1.0}]}))
    >>> list(figs)
    ['chart-segment-sizes']
    """
    candidates: dict[str, go.Figure | None] = {
        "chart-segment-sizes": charts.segment_sizes(view.segments) if view.segments else None,
        "chart-migration": charts.migration(view.migration)
        if view.migration and view.migration.rows and view.migration.columns
        else None,
        "chart-features": charts.feature_histograms(view.features.samples)
        if view.features and view.features.samples
        else None,
        "chart-k-selection": charts.k_selection(view.k_selection) if view.k_selection else None,
        "chart-profile": charts.profile_heatmap(view.profile) if view.profile else None,
        "chart-projection": charts.projection(view.projection, view.colours)
        if view.projection
        else None,
        "chart-silhouette": charts.silhouette(view.silhouette, view.colours)
        if view.silhouette
        else None,
        "chart-stability": charts.stability(view.stability) if view.stability else None,
    }
    return {key: fig for key, fig in candidates.items() if fig is not None}


def _embed(figures: Mapping[str, go.Figure]) -> dict[str, Markup]:
    """Plotly's HTML snippet of each figure (a div and a script calling ``Plotly.newPlot``).

    Plotly escapes ``<``, ``>`` and ``/`` in the figure JSON, so data strings
    cannot close the script element.
    """
    return {
        key: Markup(
            fig.to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=key,
                config=PLOTLY_CONFIG,
                default_width="100%",
            )
        )
        for key, fig in figures.items()
    }


def render_report_html(data: Mapping[str, Any]) -> str:
    """Render the report data as a complete, self-contained HTML page.

    Parameters
    ----------
    data
        The report data; see :func:`write_report` for its keys. Missing keys or
        ``None`` values give a "not available" note in their section.

    Returns
    -------
    str
        The HTML page, with plotly.js and CSS inlined.

    Raises
    ------
    UserInputError
        When a value has the wrong type (``where`` names its key path).

    Examples
    --------
    >>> page = render_report_html({"title": "Spring review", "segments": []})
    >>> page.startswith("<!DOCTYPE html>"), "Spring review" in page
    (True, True)
    """
    view = build_view(data)
    figures = build_figures(view)
    template = _environment().get_template("report.html.j2")
    page = template.render(
        view=view,
        charts=_embed(figures),
        plotlyjs=_plotlyjs(),
        csp=CONTENT_SECURITY_POLICY,
    )
    logger.debug(
        "rendered report %r: %d charts, %d characters", view.title, len(figures), len(page)
    )
    return page


def write_report(data: Mapping[str, Any], path: Path | str) -> Path:
    """Write the HTML report of a segmentation run to ``path``.

    The file is written next to its final name and moved into place, so a
    reader never sees half a report. Parent directories are created.

    Parameters
    ----------
    data
        A JSON-serialisable dict. Every key may be missing or ``None``:

        - ``title``, ``generated_at`` (ISO text), ``model`` (``version``,
          ``algorithm``, ``k``, ``as_of``, ``seed``, ``lineage``);
        - ``quality``: a data-quality report dict (``overall_score``,
          ``sources``, ``tables``, ``quarantine``);
        - ``features``: ``dictionary`` (``name``, ``description``, ``sql``,
          ``transform``) and ``samples`` (feature -> values);
        - ``k_selection``: ``k``, ``reason``, ``elbow_k``, ``criterion``,
          ``metrics`` (one dict per k);
        - ``silhouette``: ``per_segment`` (name -> values), ``mean``;
        - ``stability``: ``mean_ari``, ``segments`` (``segment``, ``name``,
          ``mean_jaccard``, ``verdict``);
        - ``segments``: ``id``, ``name``, ``description``, ``size``, ``share``,
          ``revenue_share``, ``stability``, ``drivers``, ``rules``;
        - ``profile``: ``features``, ``segments``, ``zscores`` (and ``means``);
        - ``projection``: ``x``, ``y``, ``segment``, ``method``;
        - ``explanation``: ``fidelity``, ``depth``, ``rules`` (name -> rules);
        - ``separation``: per feature ``kruskal_h``, ``kruskal_p``,
          ``epsilon_squared``, ``separating``;
        - ``warnings``: ``code``, ``segment``, ``message``;
        - ``migration``: ``from``, ``to``, ``rows``, ``columns``, ``counts``.
    path
        The HTML file to write.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserInputError
        When ``path`` is a directory or a value of ``data`` has the wrong type.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "report.html"
    >>> write_report({"title": "Q2 segments"}, out) == out, out.stat().st_size > 1_000_000
    (True, True)
    """
    target = Path(path)
    if target.is_dir():
        raise UserInputError("is a directory, expected an HTML file name", where=str(target))
    page = render_report_html(data)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="\n") as stream:
            stream.write(page)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    logger.info("wrote report %s (%d bytes)", target, target.stat().st_size)
    return target
