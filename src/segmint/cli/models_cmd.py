"""``segmint models``: list, show, diff, rollback, migration."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from segmint.cli.common import ProjectOption, console, open_project
from segmint.segments import registry

models_app = typer.Typer(help="Published model versions.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models(project: ProjectOption = Path(".")) -> None:
    """List model versions (the active one is marked)."""
    with open_project(project) as proj:
        frame = registry.list_versions(proj.warehouse)
    view = Table(*[str(c) for c in frame.columns], title="model versions")
    for row in frame.itertuples(index=False):
        view.add_row(*[str(v) for v in row])
    console.print(view)


@models_app.command("show")
def show(version: str, project: ProjectOption = Path(".")) -> None:
    """Show a version: names, lineage, metrics."""
    with open_project(project) as proj:
        model = registry.get_version(proj.warehouse, version)
        sizes = registry.segment_sizes(proj.warehouse, version)
    console.print(
        f"[bold]{model.version}[/] {model.algorithm} k={model.k} status={model.status} "
        f"parent={model.parent_version}"
    )
    view = Table("segment", "name", "customers", "description")
    for sid, named in sorted(model.names.items()):
        view.add_row(str(sid), named.name, f"{sizes.get(sid, 0):,}", named.description)
    console.print(view)
    console.print_json(json.dumps(model.lineage.to_dict(), default=str))


@models_app.command("diff")
def diff(a: str, b: str, project: ProjectOption = Path(".")) -> None:
    """What differs between two versions."""
    with open_project(project) as proj:
        changes = registry.diff_versions(proj.warehouse, a, b)
    console.print_json(json.dumps(changes, default=str))


@models_app.command("rollback")
def rollback(version: str, project: ProjectOption = Path(".")) -> None:
    """Make an earlier version active again (its assignments are kept)."""
    with open_project(project) as proj:
        model = registry.rollback(proj.warehouse, version)
    console.print(f"active version: {model.version}")


@models_app.command("migration")
def migration(
    a: str,
    b: str,
    project: ProjectOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """How customers moved between the segments of two versions."""
    with open_project(project) as proj:
        matrix = registry.migration_matrix(proj.warehouse, a, b)
    if as_json:
        typer.echo(matrix.to_json(orient="split"))
        return
    view = Table(f"{a} \\ {b}", *[str(c) for c in matrix.columns], title="migration")
    for label, row in matrix.iterrows():
        view.add_row(str(label), *[f"{int(v):,}" for v in row])
    console.print(view)
