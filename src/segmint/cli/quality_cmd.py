"""``segmint quality``: the data-quality report, saved per run and comparable over time."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from segmint.cli.common import ProjectOption, console, open_project
from segmint.data.quality import (
    DEFAULT_THRESHOLD,
    QualityChange,
    QualityReport,
    compare,
    list_runs,
    load_run,
    quality_report,
    save_run,
)
from segmint.errors import UserInputError


def register(app: typer.Typer) -> None:
    app.command("quality")(quality)


def quality(
    project: ProjectOption = Path("."),
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Print JSON: {run_id, file, previous_run_id, report, changes}.",
        ),
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write the JSON report here (default: <project>/quality/quality-<run_id>.json).",
            dir_okay=False,
        ),
    ] = None,
    against_previous: Annotated[
        bool, typer.Option("--compare", help="Show what changed since the previous run.")
    ] = False,
    threshold: Annotated[
        float,
        typer.Option(help="With --compare: smallest change of a rate to show (0..1)."),
    ] = DEFAULT_THRESHOLD,
) -> None:
    """Report completeness, validity, duplicates, freshness and coverage of the loaded data."""
    if not 0 <= threshold <= 1:
        raise UserInputError(f"--threshold must be between 0 and 1, not {threshold}")
    with open_project(project) as proj:
        wh = proj.warehouse
        runs = list_runs(wh)
        previous_id = runs[-1].run_id if against_previous and runs else None
        previous = load_run(wh, previous_id) if previous_id else None
        with console.status("measuring data quality..."):
            report = quality_report(wh, proj.config)
        run_id = save_run(wh, report)
        path = out or proj.base_dir / "quality" / f"quality-{run_id}.json"
    _write(path, report)
    changes = compare(previous, report, threshold=threshold) if previous else None
    if as_json:
        payload: dict[str, Any] = {
            "run_id": run_id,
            "file": str(path),
            "previous_run_id": previous_id,
            "report": report.to_dict(),
            "changes": None if changes is None else [c.to_dict() for c in changes],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    print_report(report)
    if against_previous:
        print_changes(changes, previous_id)
    console.print(f"run [bold]{run_id}[/] saved; report written to {escape(str(path))}")


def _write(path: Path, report: QualityReport) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(report.to_json() + "\n", encoding="utf-8")
    except OSError as e:
        raise UserInputError(f"cannot write the report: {e.strerror or e}", where=str(path)) from e


# --------------------------------------------------------------------------- printing


def _pct(value: float) -> str:
    return f"{value:.1%}"


def _rate(value: float, *, good_high: bool = True) -> str:
    """A rate coloured green / yellow / red by how good it is."""
    goodness = value if good_high else 1 - value
    style = "green" if goodness >= 0.95 else "yellow" if goodness >= 0.8 else "red"
    return f"[{style}]{_pct(value)}[/]"


def _age(hours: float | None) -> str:
    if hours is None:
        return "-"
    if abs(hours) < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M}"


def _active_tables(report: QualityReport) -> list[str]:
    return [t.table for t in report.tables if t.rows or t.rows_read]


def print_report(report: QualityReport) -> None:
    """Print the report as Rich tables: sources, scores, columns, inventory, freshness."""
    active = _active_tables(report)
    _print_sources(report)
    if not active:
        console.print("[yellow]no data loaded yet[/] (run `segmint ingest`)")
        return
    _print_scores(report, active)
    for table in active:
        _print_columns(report, table)
        _print_inventory(report, table)
    _print_freshness(report, active)
    _print_ranges(report, active)


def _print_sources(report: QualityReport) -> None:
    view = Table(
        "source",
        "table",
        "files",
        "read",
        "loaded",
        "quarantined",
        "duplicate",
        "rows now",
        title="sources",
    )
    for s in report.sources:
        view.add_row(
            s.source,
            s.table,
            f"{s.files:,}",
            f"{s.rows_read:,}",
            f"{s.rows_loaded:,}",
            f"{s.rows_quarantined:,} ({_rate(s.quarantine_rate, good_high=False)})",
            f"{s.rows_duplicate:,} ({_pct(s.duplicate_rate)})",
            f"{s.rows:,}",
        )
    console.print(view)
    if report.quarantine:
        breakdown = Table("source", "table", "rule", "column", "rows", title="quarantine by rule")
        for q in report.quarantine:
            breakdown.add_row(q.source, q.table, q.rule, q.column or "(row)", f"{q.rows:,}")
        console.print(breakdown)


def _print_scores(report: QualityReport, active: Sequence[str]) -> None:
    view = Table(
        "table", "rows", "completeness", "validity", "score", title="quality score per table"
    )
    for t in report.tables:
        if t.table in active:
            view.add_row(
                t.table,
                f"{t.rows:,}",
                _rate(t.completeness),
                _rate(t.validity),
                f"[bold]{_rate(t.score)}[/]",
            )
    console.print(view)
    console.print(
        f"overall score: [bold]{_rate(report.overall_score)}[/] "
        "(score = mean observed completeness of populated columns x share of rows not quarantined)"
    )


def _print_columns(report: QualityReport, table: str) -> None:
    sources = sorted({v.source for v in report.validity if v.table == table})
    view = Table("column", "type", "completeness", "imputed", "validity (pass rate)")
    view.title = f"{table}: columns"
    columns = [c for c in report.columns if c.table == table and c.source is None]
    row_rules = [v for v in report.validity if v.table == table and v.column is None]
    for c in columns:
        rules = [v for v in report.validity if v.table == table and v.column == c.column]
        view.add_row(
            c.column,
            c.type,
            _rate(c.completeness) if c.rows else "-",
            _pct(c.imputed_share) if c.imputed else "",
            _rules(rules, several_sources=len(sources) > 1),
        )
    if row_rules:
        view.add_row("(row)", "", "", "", _rules(row_rules, several_sources=len(sources) > 1))
    console.print(view)


def _rules(rules: Sequence[Any], *, several_sources: bool) -> str:
    parts = []
    for v in rules:
        label = f"{v.source}: {v.rule}" if several_sources else v.rule
        parts.append(f"{label} {_rate(v.pass_rate)}")
    return ", ".join(parts)


def _print_inventory(report: QualityReport, table: str) -> None:
    cells = [c for c in report.inventory if c.table == table]
    sources = sorted({c.source for c in cells})
    if not sources:
        return
    view = Table("attribute", *sources, title=f"{table}: inventory (coverage, newest)")
    by_key = {(c.source, c.column): c for c in cells}
    for column in dict.fromkeys(c.column for c in cells):
        row = [column]
        for source in sources:
            cell = by_key.get((source, column))
            if cell is None or cell.coverage == 0:
                row.append("[dim]-[/]")
            else:
                age = "-"
                if cell.newest is not None:
                    age = _age((report.generated_at - cell.newest).total_seconds() / 3600)
                row.append(f"{_rate(cell.coverage)} · {age}")
        view.add_row(*row)
    console.print(view)


def _print_freshness(report: QualityReport, active: Sequence[str]) -> None:
    view = Table(
        "table", "source", "timestamp", "newest", "age", "last load", "load age", title="freshness"
    )
    for f in report.freshness:
        if f.table not in active:
            continue
        several = sum(1 for g in report.freshness if g.table == f.table and g.source) > 1
        if f.source is None and not several:
            continue
        view.add_row(
            f.table,
            f.source or "(all)",
            f.timestamp_column,
            _when(f.newest),
            _age(f.age_hours),
            _when(f.last_loaded_at),
            _age(f.load_age_hours),
        )
    console.print(view)


def _print_ranges(report: QualityReport, active: Sequence[str]) -> None:
    view = Table("table", "column", "type", "min", "max", "mean", "distinct", title="value ranges")
    for r in report.ranges:
        if r.table not in active or not r.non_null:
            continue
        distinct = ""
        if r.distinct is not None:
            distinct = f"{r.distinct:,}" if r.distinct_exact else f"~{r.distinct:,}"
        view.add_row(
            r.table,
            r.column,
            r.type,
            _value(r.min),
            _value(r.max),
            _value(r.mean),
            distinct,
        )
    console.print(view)


def _value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.4g}"
    return escape(str(value))


def print_changes(changes: list[QualityChange] | None, previous_id: str | None) -> None:
    """Print the changes since the previous run (``None``: there was none)."""
    if changes is None:
        console.print("no previous run to compare with")
        return
    if not changes:
        console.print(f"no change beyond the threshold since run {previous_id}")
        return
    view = Table("", "change", title=f"changes since run {previous_id}")
    for change in changes:
        mark = "[red]worse[/]" if change.worse else "[green]better[/]"
        view.add_row(mark, escape(change.describe()))
    console.print(view)
