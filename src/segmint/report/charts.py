"""Plotly figures of the report, one builder per chart.

Every builder takes view-model objects and returns a ``plotly.graph_objects.Figure``
with the empty ``"none"`` template and explicit colours, size and fonts, so the
output does not depend on plotly's global defaults (and stays small). Text that
comes from the data (segment and feature names) goes through :func:`label`:
plotly.js renders a subset of HTML in labels, so names are entity-escaped to
show literally (``<b>`` stays ``<b>``).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from segmint.report.palette import UNKNOWN_COLOUR, VERDICT_COLOURS
from segmint.report.technical import METRICS
from segmint.report.viewmodel import (
    KSelection,
    Migration,
    Profile,
    Projection,
    SegmentView,
    Silhouette,
    Stability,
)
from segmint.segments.validation import DOUBTFUL_JACCARD, STABLE_JACCARD

FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
#: Largest number of bins of a feature histogram.
MAX_BINS = 40
#: Points drawn per segment in the silhouette plot (its sorted curve is resampled).
SILHOUETTE_POINTS = 300
#: Columns of the small-multiple grids.
GRID_COLUMNS = 3
CUSTOMERS_COLOUR = "#9db7d5"
REVENUE_COLOUR = "#1f4e79"
LINE_COLOUR = "#1f4e79"
CHOSEN_COLOUR = "#c62828"
GRID_COLOUR = "#e9ecef"
AXIS_COLOUR = "#c8cdd2"
ELBOW_COLOUR = "#6d6d6d"


def label(name: str) -> str:
    """Escape a data-provided name for plotly text (shown literally, never as markup).

    Examples
    --------
    >>> label("<b>VIP</b> & co")
    '&lt;b&gt;VIP&lt;/b&gt; &amp; co'
    """
    return html.escape(name, quote=False)


def _figure(*traces: go.Figure) -> go.Figure:
    """A figure on the empty template (plotly's default one is large and slow to apply)."""
    return go.Figure(data=list(traces), layout={"template": "none"})


def _layout(fig: go.Figure, *, height: int, **extra: object) -> go.Figure:
    settings: dict[str, object] = {
        "height": height,
        "font": {"family": FONT, "size": 13, "color": "#222"},
        "margin": {"l": 60, "r": 20, "t": 40, "b": 50},
        "hoverlabel": {"font": {"family": FONT}},
        "paper_bgcolor": "#fff",
        "plot_bgcolor": "#fff",
    }
    fig.update_layout(**(settings | extra))
    fig.update_xaxes(gridcolor=GRID_COLOUR, linecolor=AXIS_COLOUR, zerolinecolor=AXIS_COLOUR)
    fig.update_yaxes(gridcolor=GRID_COLOUR, linecolor=AXIS_COLOUR, zerolinecolor=AXIS_COLOUR)
    return fig


def _vline(
    fig: go.Figure, x: float, *, colour: str, dash: str, axis: str = "", text: str = ""
) -> None:
    """A vertical line across the plot area of axis pair ``x{axis}``/``y{axis}``."""
    fig.add_shape(
        type="line",
        x0=x,
        x1=x,
        xref=f"x{axis}",
        y0=0,
        y1=1,
        yref=f"y{axis} domain",
        line={"color": colour, "dash": dash, "width": 2},
    )
    if text:
        fig.add_annotation(
            x=x,
            xref=f"x{axis}",
            y=1,
            yref=f"y{axis} domain",
            text=text,
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
        )


def _hline(fig: go.Figure, y: float, *, text: str) -> None:
    """A dashed horizontal line across the plot, labelled in the right margin."""
    fig.add_shape(
        type="line",
        x0=0,
        x1=1,
        xref="x domain",
        y0=y,
        y1=y,
        yref="y",
        line={"color": "#555", "dash": "dash", "width": 1},
    )
    fig.add_annotation(
        x=1,
        xref="x domain",
        y=y,
        yref="y",
        text=text,
        showarrow=False,
        xanchor="left",
        font={"color": "#555"},
    )


def _grid(n: int) -> tuple[int, int]:
    cols = min(GRID_COLUMNS, max(n, 1))
    return math.ceil(n / cols), cols


def segment_sizes(segments: Sequence[SegmentView]) -> go.Figure | None:
    """Share of customers next to share of revenue, per segment (horizontal bars).

    Returns ``None`` when neither is known for any segment.
    """
    shares = [s.share for s in segments]
    revenue = [s.revenue_share for s in segments]
    if all(v is None for v in shares + revenue):
        return None
    names = [label(s.name) for s in segments]
    fig = _figure()
    for title, values, colour in (
        ("Share of customers", shares, CUSTOMERS_COLOUR),
        ("Share of revenue", revenue, REVENUE_COLOUR),
    ):
        if all(v is None for v in values):
            continue
        fig.add_trace(
            go.Bar(
                name=title,
                y=names,
                x=values,
                orientation="h",
                marker_color=colour,
                text=[None if v is None else f"{v:.0%}" for v in values],
                textposition="outside",
                hovertemplate="%{y}<br>" + title + ": %{x:.1%}<extra></extra>",
            )
        )
    return _layout(
        fig,
        height=120 + 56 * len(segments),
        barmode="group",
        xaxis={"tickformat": ".0%", "rangemode": "tozero", "title": {"text": "share"}},
        yaxis={"autorange": "reversed", "automargin": True},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        margin={"l": 20, "r": 40, "t": 40, "b": 50},
    )


def migration(view: Migration) -> go.Figure:
    """Heat map of customer counts from old segments (rows) to new ones (columns)."""
    counts = np.array(view.counts, dtype=float).reshape(len(view.rows), len(view.columns))
    totals = counts.sum(axis=1, keepdims=True)
    row_share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig = _figure(
        go.Heatmap(
            z=counts.tolist(),
            x=[label(c) for c in view.columns],
            y=[label(r) for r in view.rows],
            customdata=np.round(row_share, 4).tolist(),
            colorscale="Blues",
            texttemplate="%{z:,.0f}",
            hovertemplate=(
                "from %{y}<br>to %{x}<br>%{z:,.0f} customers"
                " (%{customdata:.1%} of %{y})<extra></extra>"
            ),
            colorbar={"title": {"text": "customers"}},
            xgap=1,
            ygap=1,
        )
    )
    return _layout(
        fig,
        height=160 + 44 * len(view.rows),
        xaxis={
            "title": {"text": f"new segment ({label(view.to_version or 'new model')})"},
            "side": "bottom",
            "automargin": True,
        },
        yaxis={
            "title": {"text": f"old segment ({label(view.from_version or 'old model')})"},
            "autorange": "reversed",
            "automargin": True,
        },
    )


def _histogram(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray, bool]:
    """Counts and bin edges of a sample, and whether its long upper tail was folded.

    A tail beyond the 99th percentile that is longer than the rest of the range
    is counted in the last bin. Whole-number data gets bins of whole-number width
    centred on the values, so counts do not alternate with empty bins.
    """
    data = np.asarray(values, dtype=float)
    low, high = float(data.min()), float(data.max())
    top = float(np.quantile(data, 0.99))
    clipped = high - top > top - low and top > low
    if clipped:
        data = np.minimum(data, top)
        high = top
    if high == low:
        return np.array([data.size]), np.array([low - 0.5, low + 0.5]), False
    edges = np.histogram_bin_edges(data, bins="auto", range=(low, high))
    if edges.size - 1 > MAX_BINS:
        edges = np.histogram_bin_edges(data, bins=MAX_BINS, range=(low, high))
    if np.all(data == np.round(data)):
        width = max(1.0, math.ceil(edges[1] - edges[0]))
        edges = np.arange(low - 0.5, high + width, width)
    counts, edges = np.histogram(data, bins=edges)
    return counts, edges, clipped


def feature_histograms(samples: Mapping[str, Sequence[float]]) -> go.Figure | None:
    """Small-multiple histograms, one per feature; ``None`` without samples."""
    names = list(samples)
    if not names:
        return None
    rows, cols = _grid(len(names))
    titles = []
    histograms = []
    for name in names:
        counts, edges, clipped = _histogram(samples[name])
        histograms.append((counts, edges))
        titles.append(label(name) + (" (top 1% in last bar)" if clipped else ""))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.07,
        figure=_figure(),
        vertical_spacing=min(0.3 / rows, 0.12) if rows > 1 else 0.0,
    )
    for i, (counts, edges) in enumerate(histograms):
        centres = (edges[:-1] + edges[1:]) / 2
        fig.add_trace(
            go.Bar(
                x=np.round(centres, 6).tolist(),
                y=counts.tolist(),
                width=np.diff(edges).tolist(),
                customdata=np.round(np.column_stack([edges[:-1], edges[1:]]), 6).tolist(),
                marker={"color": LINE_COLOUR, "line": {"width": 0}},
                hovertemplate=(
                    "%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{y} customers<extra></extra>"
                ),
                showlegend=False,
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    fig.update_annotations(font_size=13)
    return _layout(
        fig, height=60 + 200 * rows, bargap=0.0, margin={"l": 50, "r": 20, "t": 50, "b": 30}
    )


def k_selection(view: KSelection) -> go.Figure | None:
    """One small line chart per metric against k.

    A dashed line marks the chosen k, a dotted one the elbow of the inertia curve.
    """
    shown = [key for key in METRICS if any(m.values[key] is not None for m in view.metrics)]
    if not shown:
        return None
    rows, cols = _grid(len(shown))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[f"{METRICS[key][0]} ({METRICS[key][1]})" for key in shown],
        horizontal_spacing=0.08,
        figure=_figure(),
        vertical_spacing=0.18 if rows > 1 else 0.0,
    )
    ks = [m.k for m in view.metrics]
    for i, key in enumerate(shown):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Scatter(
                x=ks,
                y=[m.values[key] for m in view.metrics],
                mode="lines+markers",
                line={"color": LINE_COLOUR},
                name=METRICS[key][0],
                hovertemplate="k = %{x}<br>" + METRICS[key][0] + ": %{y:.4g}<extra></extra>",
                showlegend=False,
            ),
            row=row,
            col=col,
        )
        if key == "min_share":
            fig.update_yaxes(tickformat=".0%", row=row, col=col)
        axis = "" if i == 0 else str(i + 1)  # make_subplots numbers axes row by row
        if view.k is not None:
            _vline(fig, view.k, colour=CHOSEN_COLOUR, dash="dash", axis=axis)
        if view.elbow_k is not None and view.elbow_k != view.k:
            _vline(fig, view.elbow_k, colour=ELBOW_COLOUR, dash="dot", axis=axis)
    fig.update_xaxes(dtick=1, title_text="k")
    fig.update_annotations(font_size=13)
    return _layout(fig, height=60 + 260 * rows, margin={"l": 60, "r": 20, "t": 50, "b": 40})


def silhouette(view: Silhouette, colours: Mapping[str, str]) -> go.Figure | None:
    """The classic silhouette plot: each segment's values sorted, as a filled block."""
    blocks = [(name, sorted(values, reverse=True)) for name, values in view.per_segment.items()]
    blocks = [(name, values) for name, values in blocks if values]
    if not blocks:
        return None
    fig = _figure()
    gap = max(2, round(sum(len(v) for _, v in blocks) * 0.02))
    start = 0
    tickvals, ticktext = [], []
    for name, values in blocks:
        n = len(values)
        index = np.unique(np.linspace(0, n - 1, min(n, SILHOUETTE_POINTS)).round().astype(int))
        xs = np.asarray(values)[index]
        ys = start + index
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([[0.0], np.round(xs, 4), [0.0]]).tolist(),
                y=np.concatenate([[start], ys, [start + n - 1]]).tolist(),
                mode="lines",
                fill="toself",
                line={"width": 1, "color": colours.get(name, UNKNOWN_COLOUR)},
                fillcolor=colours.get(name, UNKNOWN_COLOUR),
                name=label(name),
                hoveron="fills",
                hoverinfo="name",
            )
        )
        tickvals.append(start + n / 2)
        ticktext.append(label(name))
        start += n + gap
    if view.mean is not None:
        _vline(fig, view.mean, colour=CHOSEN_COLOUR, dash="dash", text=f"mean {view.mean:.2f}")
    low = min(min(v) for _, v in blocks)
    return _layout(
        fig,
        height=140 + 40 * len(blocks) + min(start, 400) // 2,
        showlegend=False,
        xaxis={
            "title": {"text": "silhouette (1: fits its segment well, below 0: closer to another)"},
            "range": [min(-0.1, low - 0.05), 1.0],
            "zeroline": True,
        },
        yaxis={
            "tickvals": tickvals,
            "ticktext": ticktext,
            "autorange": "reversed",
            "showgrid": False,
            "zeroline": False,
            "automargin": True,
        },
    )


def stability(view: Stability) -> go.Figure | None:
    """Mean bootstrap Jaccard per segment, coloured by verdict, with the two thresholds."""
    rows = [r for r in view.segments if r.mean_jaccard is not None]
    if not rows:
        return None
    fig = _figure(
        go.Bar(
            x=[label(r.name) for r in rows],
            y=[r.mean_jaccard for r in rows],
            marker_color=[VERDICT_COLOURS.get(r.verdict or "", UNKNOWN_COLOUR) for r in rows],
            text=[r.verdict or "" for r in rows],
            textposition="outside",
            hovertemplate="%{x}<br>mean Jaccard %{y:.2f}<br>%{text}<extra></extra>",
        )
    )
    for threshold, word in ((STABLE_JACCARD, "stable"), (DOUBTFUL_JACCARD, "doubtful")):
        _hline(fig, threshold, text=f"{word} from {threshold:g}")
    return _layout(
        fig,
        height=380,
        showlegend=False,
        margin={"l": 60, "r": 120, "t": 30, "b": 50},
        yaxis={"range": [0, 1.08], "title": {"text": "mean Jaccard similarity"}},
        xaxis={"automargin": True},
    )


def profile_heatmap(view: Profile) -> go.Figure:
    """Segment x feature z-scores on a diverging scale centred on 0 (red high, blue low)."""
    z = [[v for v in row] for row in view.zscores]
    finite = [abs(v) for row in z for v in row if v is not None]
    bound = max(min(max(finite, default=1.0), 3.0), 0.5)
    features = [label(f) for f in view.features]
    segments = [label(s) for s in view.segments]
    means = view.means
    trace = go.Heatmap(
        z=z,
        x=features,
        y=segments,
        zmid=0,
        zmin=-bound,
        zmax=bound,
        colorscale="RdBu",
        reversescale=True,
        texttemplate="%{z:+.1f}",
        colorbar={"title": {"text": "z-score"}},
        xgap=1,
        ygap=1,
        hovertemplate=(
            "%{y}<br>%{x}<br>z = %{z:+.2f}"
            + ("<br>mean %{customdata:.4g}" if means is not None else "")
            + "<extra></extra>"
        ),
    )
    if means is not None:
        trace.customdata = [list(row) for row in means]
    fig = _figure(trace)
    return _layout(
        fig,
        height=170 + 46 * len(segments),
        xaxis={"tickangle": -35 if len(features) > 6 else 0, "automargin": True, "side": "bottom"},
        yaxis={"autorange": "reversed", "automargin": True},
        margin={"l": 20, "r": 20, "t": 20, "b": 20},
    )


def projection(view: Projection, colours: Mapping[str, str]) -> go.Figure:
    """A 2-D map of a sample of customers, one colour per segment."""
    order: dict[str, list[int]] = {}
    for i, name in enumerate(view.segment):
        order.setdefault(name, []).append(i)
    fig = _figure()
    method = label(view.method)
    for name, index in order.items():
        fig.add_trace(
            go.Scatter(
                x=[None if view.x[i] is None else round(view.x[i] or 0.0, 4) for i in index],
                y=[None if view.y[i] is None else round(view.y[i] or 0.0, 4) for i in index],
                mode="markers",
                name=label(name),
                marker={"size": 5, "opacity": 0.7, "color": colours.get(name, UNKNOWN_COLOUR)},
                hovertemplate=label(name) + "<extra></extra>",
            )
        )
    return _layout(
        fig,
        height=520,
        xaxis={"title": {"text": f"{method} 1"}, "zeroline": False},
        yaxis={"title": {"text": f"{method} 2"}, "zeroline": False},
        legend={"itemsizing": "constant"},
    )
