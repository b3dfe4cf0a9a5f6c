"""The HTML report: complete, offline, escaped, tolerant of missing sections, deterministic."""

from __future__ import annotations

import copy
import doctest
import importlib
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from plotly.offline import get_plotlyjs

from segmint.errors import UserInputError
from segmint.report import SECTIONS, build_figures, build_view, render_report_html, write_report
from segmint.report.charts import _histogram
from segmint.report.formatting import fmt_when
from tests.report.conftest import CHART_IDS, FEATURES, XSS, make_hostile_data, make_report_data

HEADINGS = (
    "At a glance",
    "The segments",
    "How customers moved",
    "Data quality",
    "Features",
    "Choosing the number of segments",
    "Segment profiles",
    "Validation",
    "Explanation rules",
    "Model and lineage",
)
NOT_AVAILABLE = 'class="na"'


@pytest.fixture(scope="module")
def page(report_data: dict[str, Any]) -> str:
    return render_report_html(report_data)


def without_plotlyjs(page: str) -> str:
    """The page minus the inlined plotly.js bundle (the one script in <head>)."""
    head, body = page.split("</head>", 1)
    bundle = re.search(r"<script>.*?</script>", head, flags=re.S)
    assert bundle is not None, "plotly.js is not inlined in <head>"
    return head.replace(bundle.group(0), "") + body


def section(page: str, anchor: str) -> str:
    match = re.search(rf'<section id="{re.escape(anchor)}">(.*?)</section>', page, flags=re.S)
    assert match is not None, f"no section {anchor!r}"
    return match.group(1)


class _Tags(HTMLParser):
    """Collects start tags, their attributes, and script bodies."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def parse(page: str) -> _Tags:
    parser = _Tags()
    parser.feed(without_plotlyjs(page))
    parser.close()
    return parser


# --------------------------------------------------------------------------- the whole page


def test_write_report_writes_the_page_with_every_section(
    tmp_path: Path, report_data: dict[str, Any]
) -> None:
    target = tmp_path / "out" / "report.html"  # parent created
    assert write_report(report_data, target) == target
    page = target.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    assert [title for _, title, _ in SECTIONS] == list(HEADINGS)
    for anchor, _, _ in SECTIONS:
        assert f'<a href="#{anchor}">' in page  # table of contents
        assert f'<section id="{anchor}">' in page
    assert NOT_AVAILABLE not in page  # complete data: nothing missing
    assert target.stat().st_mode & 0o044 == 0o044  # readable by others, like any report


def test_every_chart_is_embedded_once_with_plotlyjs_inlined_once(page: str) -> None:
    tags = parse(page)
    divs = [
        a.get("id")
        for t, a in tags.tags
        if t == "div" and "plotly-graph-div" in (a.get("class") or "")
    ]
    assert sorted(divs) == sorted(CHART_IDS)
    plot_calls = [s for s in tags.scripts if "Plotly.newPlot" in s]
    assert len(plot_calls) == len(CHART_IDS)
    assert page.count(get_plotlyjs()[:300]) == 1
    assert page.index(get_plotlyjs()[:300]) < page.index("Plotly.newPlot")


def test_page_loads_nothing_from_elsewhere(page: str) -> None:
    # No element that fetches, anywhere in the page (plotly.js included).
    assert not re.search(r"<script[^>]*\ssrc\s*=", page, flags=re.I)
    assert not re.search(r"<link\b", page, flags=re.I)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:)?//", page, flags=re.I)
    assert not re.search(r"@import", page, flags=re.I)
    # Outside the plotly.js bundle (whose comments hold licence URLs): no URL at all.
    rest = without_plotlyjs(page)
    assert "http://" not in rest and "https://" not in rest
    for tag, attrs in parse(page).tags:
        assert tag not in {"img", "iframe", "object", "embed", "link", "audio", "video", "source"}
        for name in ("src", "href", "action", "srcset"):
            value = attrs.get(name)
            assert value is None or value.startswith("#"), (tag, name, value)
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert policy is not None and "default-src &#39;none&#39;" in policy.group(1)


def test_summary_speaks_plainly_and_warnings_come_first(
    page: str, report_data: dict[str, Any]
) -> None:
    summary = section(page, "summary")
    segments = report_data["segments"]
    total = sum(s["size"] for s in segments)
    largest = max(segments, key=lambda s: s["size"])
    richest = max(segments, key=lambda s: s["revenue_share"])
    assert "<strong>6 customer segments</strong>" in summary
    assert f"<strong>{total:,} customers</strong>" in summary
    assert f'The largest is <a href="#segment-{segments.index(largest) + 1}">' in summary
    assert f"{largest['share'] * 100:.1f}% of customers" in summary
    assert f"{richest['name']}</a> brings in the most revenue" in summary
    # Warnings are callouts above the figures; a segment given by id is shown by name.
    callouts = re.findall(
        r'<div class="callout callout-(\w+)" role="alert">(.*?)</div>', summary, re.S
    )
    assert [severity for severity, _ in callouts] == ["danger", "danger"]
    assert segments[2]["name"] in callouts[0][1]
    assert "do not target it yet" in callouts[0][1]
    assert summary.index("callout") < summary.index('class="tiles"')
    # One row per segment, with its stability badge.
    for segment in segments:
        assert segment["name"] in summary
    assert summary.count("badge-stable") == 4
    assert summary.count("badge-doubtful") == 1 and summary.count("badge-unstable") == 1


def test_segment_cards_show_figures_badge_drivers_and_rules(
    page: str, report_data: dict[str, Any]
) -> None:
    cards = section(page, "segments")
    for i, segment in enumerate(report_data["segments"], start=1):
        card = re.search(
            rf'<article class="card" id="segment-{i}"[^>]*>(.*?)</article>', cards, re.S
        )
        assert card is not None
        body = card.group(1)
        assert segment["name"] in body and segment["description"] in body
        assert f"{segment['size']:,}" in body
        assert f"badge-{segment['stability']}" in body
        top = max(segment["drivers"], key=lambda d: abs(d["zscore"]))
        direction = "higher" if top["direction"] == "high" else "lower"
        assert f"<strong>{top['feature']}</strong> {direction} than average" in body
        for rule in segment["rules"]:
            assert f"<code>{rule.replace('>', '&gt;').replace('<', '&lt;')}</code>" in body


def test_technical_sections_carry_their_figures(page: str, report_data: dict[str, Any]) -> None:
    quality = section(page, "quality")
    assert "91.2%" in quality and "52,000" in quality and "malformed" in quality
    features = section(page, "features")
    for name in FEATURES:
        assert f"<strong>{name}</strong>" in features
    assert "SELECT person_id, monetary FROM features" in features
    k_selection = section(page, "k-selection")
    assert "silhouette" in k_selection and ">chosen<" in k_selection and ">elbow<" in k_selection
    validation = section(page, "validation")
    assert "6 of 8 features separate the segments" in validation
    explanation = section(page, "explanation")
    assert "<strong>93.4%</strong>" in explanation and "(depth 3)" in explanation
    lineage = section(page, "lineage")
    assert "training_window.start" in lineage and "sha256:9f2c4e" in lineage
    migration = section(page, "migration")
    assert "v0002" in migration and "Lapsed VIPs" in migration


# --------------------------------------------------------------------------- escaping


def test_user_text_is_escaped_everywhere() -> None:
    page = render_report_html(make_hostile_data())
    rest = without_plotlyjs(page)
    assert XSS not in rest
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rest
    assert "alert(3)" in rest and "<script>alert(3)" not in rest
    tags = parse(page)
    allowed = {
        "html", "head", "meta", "title", "style", "script", "body", "header", "h1", "p",
        "span", "div", "nav", "h2", "ol", "li", "a", "main", "section", "table", "thead",
        "tbody", "tr", "th", "td", "strong", "figure", "figcaption", "article", "h3", "h4",
        "dl", "dt", "dd", "ul", "code", "pre", "caption", "footer",
    }  # fmt: skip
    assert {tag for tag, _ in tags.tags} <= allowed
    for tag, attrs in tags.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    # Every script is plotly's chart call; none carries user markup unescaped.
    assert len(tags.scripts) == len(CHART_IDS)
    for script in tags.scripts:
        assert script.lstrip().startswith("window.PLOTLYENV")
        assert "</" not in script and "<script" not in script.lower()


def test_chart_labels_are_entity_escaped_for_plotly() -> None:
    # plotly.js renders a subset of HTML in labels; names must show literally.
    view = build_view(make_hostile_data())
    figures = build_figures(view)
    legend_names = [trace.name for trace in figures["chart-projection"].data]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in legend_names
    assert "&lt;b&gt;Bold&lt;/b&gt; &amp; co" in legend_names
    assert list(figures["chart-profile"].data[0].y)[0] == "&lt;script&gt;alert(1)&lt;/script&gt;"


# --------------------------------------------------------------------------- missing sections


@pytest.mark.parametrize(
    ("key", "anchor"),
    [
        ("segments", "segments"),
        ("migration", "migration"),
        ("quality", "quality"),
        ("features", "features"),
        ("k_selection", "k-selection"),
        ("profile", "profiles"),
        ("projection", "profiles"),
        ("silhouette", "validation"),
        ("stability", "validation"),
        ("separation", "validation"),
        ("explanation", "explanation"),
        ("model", "lineage"),
    ],
)
def test_a_missing_section_says_not_available(
    report_data: dict[str, Any], key: str, anchor: str
) -> None:
    data = copy.deepcopy(report_data)
    del data[key]
    page = render_report_html(data)
    assert NOT_AVAILABLE in section(page, anchor)
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    others = [a for a, _, _ in SECTIONS if a not in (anchor, "summary")]
    assert all(NOT_AVAILABLE not in section(page, a) for a in others)


@pytest.mark.parametrize("how", ["missing", "none"])
def test_empty_data_renders_every_section_as_not_available(
    report_data: dict[str, Any], how: str
) -> None:
    page = render_report_html({} if how == "missing" else dict.fromkeys(report_data))
    assert "<title>Customer segmentation report</title>" in page
    assert "generated at an unrecorded time" in page
    for anchor, title, _ in SECTIONS:
        assert f"<h2>{title}</h2>" in page
        assert NOT_AVAILABLE in section(page, anchor), anchor
    assert "Warnings were not recorded" in page
    assert "Plotly.newPlot" not in without_plotlyjs(page)


def test_partial_records_are_tolerated(report_data: dict[str, Any]) -> None:
    data = copy.deepcopy(report_data)
    data["warnings"] = []
    data["migration"] = None
    data["quality"] = {"overall_score": 0.5, "sources": [{"source": "crm", "extra": {"x": 1}}]}
    data["k_selection"]["metrics"] = [
        {"k": k, "silhouette": None, "bic": float("nan")} for k in (2, 3)
    ]
    data["segments"][0].update({"size": None, "drivers": None, "rules": None, "stability": None})
    data["segments"][1]["stability"] = None
    del data["stability"]["segments"][1]
    data["profile"]["means"] = None
    data["explanation"]["fidelity"] = {"accuracy": 0.9}
    page = render_report_html(data)
    assert "No warnings" in section(page, "summary")
    rows = section(page, "summary").split("<tr>")[2:]
    # Segment 0's verdict falls back on the stability section; segment 1 has none at all.
    assert f"badge-{data['stability']['segments'][0]['verdict']}" in rows[0]
    assert "badge-unknown" in rows[1] and "not tested" in rows[1]
    assert "Scores by table" in section(page, "quality")
    assert NOT_AVAILABLE in section(page, "quality")  # table scores, quarantine missing
    assert "chart-k-selection" not in page  # no metric has values
    card = section(page, "segments").split('id="segment-2"')[0]
    assert "No drivers recorded" in card
    # The segment's rules fall back on the explanation's rule set.
    assert data["explanation"]["rules"][data["segments"][0]["name"]][0].split(" ")[0] in card
    assert "<strong>90.0%</strong>" in section(page, "explanation")


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("key", "value", "where"),
    [
        ("segments", "six segments", "report.segments"),
        ("segments", [{"name": "A", "share": "most"}], "report.segments[0].share"),
        ("model", {"k": 2.5}, "report.model.k"),
        (
            "profile",
            {"features": ["a", "b"], "segments": ["A"], "zscores": [[1.0]]},
            "report.profile.zscores[0]",
        ),
        ("migration", {"rows": ["A"], "columns": ["B"], "counts": []}, "report.migration.counts"),
        ("projection", {"x": [1.0], "y": [], "segment": ["A"]}, "report.projection"),
        ("separation", [{"feature": "a", "separating": "yes"}], "report.separation[0].separating"),
    ],
)
def test_a_value_of_the_wrong_type_names_its_key(key: str, value: Any, where: str) -> None:
    with pytest.raises(UserInputError) as info:
        render_report_html({key: value})
    assert info.value.where == where


def test_data_must_be_a_dict(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="must be a dict"):
        render_report_html([("title", "x")])  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="is a directory"):
        write_report({}, tmp_path)


def test_a_failed_render_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    with pytest.raises(UserInputError):
        write_report({"segments": "bad"}, target)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- determinism


def test_same_data_gives_the_same_bytes(tmp_path: Path, report_data: dict[str, Any]) -> None:
    first = write_report(report_data, tmp_path / "a.html").read_bytes()
    second = write_report(copy.deepcopy(report_data), tmp_path / "b.html").read_bytes()
    assert first == second
    changed = copy.deepcopy(report_data)
    changed["generated_at"] = "2027-01-01T00:00:00+00:00"
    assert render_report_html(changed).encode() != first  # the time shown is the data's


def test_times_are_shown_without_the_locale() -> None:
    assert fmt_when("2026-03-05T09:07:00+00:00") == "5 Mar 2026, 09:07 UTC"


# --------------------------------------------------------------------------- charts


def test_chart_marks_follow_the_contract(report_data: dict[str, Any]) -> None:
    figures = build_figures(build_view(report_data))
    k = report_data["k_selection"]["k"]
    elbow = report_data["k_selection"]["elbow_k"]
    shapes = figures["chart-k-selection"].layout.shapes
    n_metrics = len(figures["chart-k-selection"].data)
    assert sorted(s.x0 for s in shapes) == sorted([k] * n_metrics + [elbow] * n_metrics)
    stability = figures["chart-stability"].layout.shapes
    assert sorted(s.y0 for s in stability) == [0.6, 0.75]
    heat = figures["chart-profile"].data[0]
    assert heat.zmid == 0 and heat.zmin == -heat.zmax
    sizes = figures["chart-segment-sizes"].data
    assert [t.name for t in sizes] == ["Share of customers", "Share of revenue"]
    assert list(sizes[1].x) == [s["revenue_share"] for s in report_data["segments"]]
    migration = figures["chart-migration"].data[0]
    assert [list(row) for row in migration.z] == report_data["migration"]["counts"]


def test_one_colour_per_segment_across_charts(report_data: dict[str, Any]) -> None:
    view = build_view(report_data)
    figures = build_figures(view)
    names = [s["name"] for s in report_data["segments"]]
    assert list(view.colours)[: len(names)] == names
    assert len(set(view.colours.values())) == len(view.colours)
    for trace in figures["chart-projection"].data:
        assert trace.marker.color == view.colours[trace.name]
    for trace in figures["chart-silhouette"].data:
        assert trace.fillcolor == view.colours[trace.name]


def test_histogram_bins() -> None:
    counts, edges, folded = _histogram([1, 2, 2, 3, 3, 3, 5])
    assert list(edges) == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] and list(counts) == [1, 2, 3, 0, 1]
    assert not folded
    tail = [float(v) for v in range(100)] + [1e6]
    counts, edges, folded = _histogram(tail)
    assert folded and edges[-1] < 1000 and counts.sum() == len(tail)
    counts, edges, folded = _histogram([4.2, 4.2])
    assert list(counts) == [2]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    names=st.lists(
        st.text(min_size=1, max_size=20).filter(lambda s: s.strip()),
        min_size=2,
        max_size=4,
        unique=True,
    ),
    keep=st.sets(
        st.sampled_from(["segments", "silhouette", "stability", "explanation", "warnings", "title"])
    ),
)
def test_any_names_and_any_subset_of_sections_render_safely(
    names: list[str], keep: set[str]
) -> None:
    full = make_report_data(names=tuple(names))
    data = {key: full[key] for key in keep}
    page = render_report_html(data)
    for heading in HEADINGS:
        assert f"<h2>{heading}</h2>" in page
    tags = parse(page)
    assert not any(name.startswith("on") for _, attrs in tags.tags for name in attrs)
    assert len(tags.scripts) == len(build_figures(build_view(data)))
    if "segments" in keep:
        rest = without_plotlyjs(page)
        for name in names:
            escaped = name.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            assert escaped.replace('"', "&#34;").replace("'", "&#39;") in rest


# --------------------------------------------------------------------------- docs


@pytest.mark.parametrize(
    "module",
    [
        "segmint.report",
        "segmint.report._coerce",
        "segmint.report.business",
        "segmint.report.charts",
        "segmint.report.formatting",
        "segmint.report.html",
        "segmint.report.palette",
        "segmint.report.technical",
        "segmint.report.view",
        "segmint.report.viewmodel",
    ],
)
def test_docstring_examples_run(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_shares_are_derived_from_sizes_when_missing() -> None:
    data = {"segments": [{"name": "A", "size": 300}, {"name": "B", "size": 100}]}
    page = render_report_html(data)
    summary = section(page, "summary")
    assert '<td class="num">75.0%</td>' in summary and '<td class="num">25.0%</td>' in summary
    assert list(build_figures(build_view(data))["chart-segment-sizes"].data[0].x) == [0.75, 0.25]


def test_numpy_values_and_warning_segment_lists_are_accepted(
    report_data: dict[str, Any],
) -> None:
    data = copy.deepcopy(report_data)
    data["stability"]["segments"][0]["segment"] = np.int64(0)
    data["segments"][0]["size"] = np.int64(data["segments"][0]["size"])
    data["segments"][0]["share"] = np.float32(data["segments"][0]["share"])
    data["separation"][0]["separating"] = np.bool_(True)
    data["features"]["samples"]["monetary"] = np.asarray(data["features"]["samples"]["monetary"])
    data["warnings"] = [
        {"code": "not_distinguished", "message": "Too alike.", "segments": [np.int64(0), 1]}
    ]
    summary = section(render_report_html(data), "summary")
    first, second = data["segments"][0]["name"], data["segments"][1]["name"]
    assert f"segments “{first}”, “{second}”: Too alike." in summary
    assert '<div class="callout callout-warning" role="alert">' in summary
