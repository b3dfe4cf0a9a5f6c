"""``segmint features``: the feature dictionary, snapshots and their stability (PSI)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from segmint.cli.common import ProjectOption, console, open_project
from segmint.features.compute import compute_features, default_definitions
from segmint.features.definitions import user_feature
from segmint.features.stability import feature_stability

features_app = typer.Typer(
    help="Feature dictionary, snapshots and stability.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(features_app, name="features")


@features_app.command("list")
def list_features(
    project: ProjectOption = Path("."),
    sql: Annotated[bool, typer.Option("--sql", help="Show each feature's SQL.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The feature dictionary: name, definition, transform (and SQL)."""
    with open_project(project) as proj:
        custom = proj.config.features.custom
    definitions = [*default_definitions(), *(user_feature(n, q) for n, q in custom.items())]
    columns = ["name", "kind", "unit", "transform", "description"] + (["sql"] if sql else [])
    rows: list[list[Any]] = []
    for d in definitions:
        values: list[Any] = [d.name, d.kind, d.unit or "", d.transform, d.description]
        if sql:
            values.append(d.query if d.query is not None else d.sql())
        rows.append(values)
    if as_json:
        typer.echo(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], indent=2))
        return
    view = Table(*columns, title="features")
    for values in rows:
        view.add_row(*[str(v) for v in values])
    console.print(view)


@features_app.command("compute")
def compute(
    project: ProjectOption = Path("."),
    as_of: Annotated[datetime | None, typer.Option(help="Use data up to this date.")] = None,
) -> None:
    """Compute a feature snapshot in the engine (as of a date)."""
    with open_project(project) as proj:
        snapshot = compute_features(
            proj.warehouse,
            as_of=as_of,
            user_features=proj.config.features.custom or None,
            session_gap_minutes=proj.config.features.session_gap_minutes,
        )
        console.print(
            f"snapshot {snapshot.snapshot_id}: {len(snapshot):,} customers, "
            f"{len(snapshot.columns)} features as of {snapshot.as_of}"
        )


@features_app.command("stability")
def stability(
    snapshot_a: str,
    snapshot_b: str,
    project: ProjectOption = Path("."),
) -> None:
    """Population stability index of every feature between two snapshots (flag > 0.2)."""
    with open_project(project) as proj:
        frame = feature_stability(proj.warehouse, snapshot_a, snapshot_b)
    view = Table(*[str(c) for c in frame.columns], title="feature stability (PSI)")
    for row in frame.itertuples(index=False):
        view.add_row(*[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row])
    console.print(view)
