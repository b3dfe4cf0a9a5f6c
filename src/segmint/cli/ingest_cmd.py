"""``segmint ingest``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segmint.cli.common import ProjectOption, console, open_project
from segmint.data.ingest import LoadResult


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    sources: Annotated[
        list[str] | None, typer.Argument(help="Sources to load (default all).")
    ] = None,
    project: ProjectOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Load source files: validate, quarantine bad rows, deduplicate, impute."""
    with open_project(project) as proj:
        with console.status("loading..."):
            results = proj.ingest(sources or None)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        print_results(results)


def print_results(results: Sequence[LoadResult]) -> None:
    view = Table(
        "source",
        "file",
        "table",
        "status",
        "read",
        "loaded",
        "quarantined",
        "duplicate",
        "imputed",
        title="ingest",
    )
    for r in results:
        view.add_row(
            r.source,
            r.file,
            r.table,
            r.status,
            f"{r.rows_read:,}",
            f"{r.rows_loaded:,}",
            f"{r.rows_quarantined:,}",
            f"{r.rows_duplicate:,}",
            f"{r.imputed:,}",
        )
    console.print(view)
