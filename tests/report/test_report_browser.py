"""The written report in a real browser (Debian chromium): every chart draws, offline, no errors."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from segmint.report import write_report
from tests.report.conftest import CHART_IDS, make_hostile_data, make_report_data

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian chromium (/usr/bin/chromium) is not installed: apt-get install chromium",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

#: Elements plotly draws for data: bars, lines, markers, heat-map images.
DRAWN = ".cartesianlayer .trace path, .cartesianlayer image"

LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield instance
        instance.close()


@dataclass
class Visit:
    """A page opened offline, with everything that went wrong while loading it."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def problems(self) -> dict[str, list[str]]:
        return {
            name: found
            for name, found in (
                ("console errors", self.console_errors),
                ("page errors", self.page_errors),
                ("failed requests", self.failed_requests),
                ("network requests", self.blocked_requests),
                ("dialogs", self.dialogs),
            )
            if found
        }


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    """Open a file with the network cut off: anything but file:// is aborted and recorded."""
    contexts = []

    def _visit(path: Path, *, charts: int) -> Visit:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        seen = Visit(page)

        def route(request_route: Any) -> None:
            url = request_route.request.url
            if url.startswith("file://"):
                request_route.continue_()
            else:
                seen.blocked_requests.append(url)
                request_route.abort()

        context.route("**/*", route)
        page.on(
            "console",
            lambda m: seen.console_errors.append(m.text) if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: seen.page_errors.append(str(e)))
        page.on("requestfailed", lambda r: seen.failed_requests.append(r.url))

        def dialog(d: Any) -> None:
            seen.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        page.goto(path.resolve().as_uri(), wait_until="load")
        page.wait_for_function(
            "n => document.querySelectorAll('.js-plotly-plot').length === n", arg=charts
        )
        try:  # plotly draws asynchronously; the assertions on drawn_charts() say what is missing
            page.wait_for_function(
                f"() => [...document.querySelectorAll('.js-plotly-plot')]"
                f".every(gd => gd.querySelectorAll({DRAWN!r}).length > 0)",
                timeout=15_000,
            )
        except sync_api.TimeoutError:
            pass
        return seen

    yield _visit
    for context in contexts:
        context.close()


def drawn_charts(page: Any) -> dict[str, dict[str, int]]:
    """Per chart div: its SVG layers, traces in plotly's data, and drawn elements."""
    result: dict[str, dict[str, int]] = page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')].map(gd => [
            gd.id,
            {
                svgs: gd.querySelectorAll('svg.main-svg').length,
                traces: (gd.data || []).length,
                drawn: gd.querySelectorAll(DRAWN).length,
            },
        ]))""".replace("DRAWN", repr(DRAWN))
    )
    return result


def test_complete_report_renders_offline(visit: Any, tmp_path: Path) -> None:
    report = write_report(make_report_data(), tmp_path / "report.html")
    seen = visit(report, charts=len(CHART_IDS))
    charts = drawn_charts(seen.page)
    assert sorted(charts) == sorted(CHART_IDS)
    for chart_id, state in charts.items():
        assert state["svgs"] >= 1, chart_id
        assert state["traces"] >= 1, chart_id
        assert state["drawn"] >= 1, chart_id
    assert seen.problems() == {}
    # The table of contents leads to every section.
    anchors = seen.page.eval_on_selector_all(
        "nav.toc a", "links => links.map(a => a.getAttribute('href'))"
    )
    for anchor in anchors:
        assert seen.page.locator(anchor).count() == 1


def test_hostile_names_stay_text(visit: Any, tmp_path: Path) -> None:
    data = make_hostile_data()
    report = write_report(data, tmp_path / "hostile.html")
    seen = visit(report, charts=len(CHART_IDS))
    page = seen.page
    assert seen.problems() == {}  # in particular: no alert() dialog ever opened
    assert page.title() == data["title"]
    first_card = page.locator("#segment-1 h3").inner_text()
    assert data["segments"][0]["name"] in first_card
    assert page.locator("script").count() == 1 + len(CHART_IDS)
    assert page.locator("img, iframe").count() == 0
    legend = page.locator("#chart-projection .legendtext").all_text_contents()
    assert data["segments"][0]["name"] in legend and "<b>Bold</b> & co" in legend


def test_empty_report_renders_offline(visit: Any, tmp_path: Path) -> None:
    report = write_report({}, tmp_path / "empty.html")
    seen = visit(report, charts=0)
    assert seen.problems() == {}
    assert seen.page.locator("p.na").count() >= 10


def test_report_prints(visit: Any, tmp_path: Path) -> None:
    report = write_report(make_report_data(), tmp_path / "report.html")
    seen = visit(report, charts=len(CHART_IDS))
    seen.page.emulate_media(media="print")
    assert seen.page.eval_on_selector("nav.toc", "n => getComputedStyle(n).position") == "static"
    pdf = seen.page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000
    assert seen.problems() == {}
