"""``segmint init`` and ``segmint schema``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segmint.cli.common import console
from segmint.project import data_dictionary, init_project


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("schema")(schema)


def init(
    folder: Annotated[Path, typer.Argument(help="Folder for the project file.")] = Path("."),
    force: Annotated[bool, typer.Option(help="Overwrite an existing project file.")] = False,
) -> None:
    """Write a commented starter segmint.yaml."""
    path = init_project(folder, force=force)
    console.print(f"wrote {path}")


def schema(
    table: Annotated[str | None, typer.Argument(help="Only this table.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the data dictionary: table, column, type, meaning, PII flag."""
    frame = data_dictionary()
    if table is not None:
        frame = frame[frame["table"] == table]
        if frame.empty:
            from segmint.errors import UserInputError

            raise UserInputError(f"unknown table {table!r}")
    if as_json:
        typer.echo(frame.to_json(orient="records", indent=2))
        return
    view = Table("table", "column", "type", "meaning", "PII", title="segmint data dictionary")
    for row in frame.itertuples():
        view.add_row(
            str(row.table),
            str(row.column),
            str(row.type),
            str(row.meaning),
            "yes" if row.pii else "",
        )
    console.print(view)
