"""``segmint run`` and ``segmint report``: the whole pipeline, and its HTML report."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from segmint.cli.common import ProjectOption, console, err_console, open_project

if TYPE_CHECKING:
    from segmint.pipeline import PipelineResult

STAGES = (
    "features",
    "clv",
    "sample",
    "transform",
    "choose k",
    "fit",
    "validate",
    "explain",
    "score",
    "profile",
    "rules",
)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("report")(report)
    app.command("why")(why)


def run(
    project: ProjectOption = Path("."),
    as_of: Annotated[datetime | None, typer.Option(help="Features as of this date.")] = None,
    report_path: Annotated[Path | None, typer.Option("--report", help="Report file.")] = None,
    ingest: Annotated[bool, typer.Option(help="Ingest new files first.")] = True,
) -> None:
    """Run the pipeline: ingest, features, segments, validation, scoring, report."""
    with open_project(project) as proj:
        if ingest and proj.config.sources:
            with console.status("ingesting..."):
                proj.ingest()
        result = run_with_progress(proj, as_of)
        path = proj.write_report(report_path)
    print_summary(result)
    console.print(f"report: {path}")


def run_with_progress(proj: object, as_of: datetime | None) -> PipelineResult:
    from segmint.project import Project

    assert isinstance(proj, Project)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("pipeline", total=len(STAGES))

        def on_stage(name: str) -> None:
            progress.update(task, description=f"stage: {name}", advance=1)

        return proj.run(as_of=as_of, on_stage=on_stage)


def print_summary(result: PipelineResult) -> None:
    view = Table(
        "segment",
        "name",
        "size",
        "share",
        "revenue share",
        "stability",
        title=f"model {result.version} ({result.algorithm}, k={result.k})",
    )
    records: list[dict[Any, Any]] = result.summary.to_dict("records")
    for row in records:
        revenue = "-" if row["revenue_share"] is None else f"{row['revenue_share']:.1%}"
        view.add_row(
            str(row["segment"]),
            str(row["name"]),
            f"{row['size']:,}",
            f"{row['share']:.1%}",
            revenue,
            str(row["stability"]),
        )
    console.print(view)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {warning.message}")
    peaks = result.peak_memory_mb
    timings = ", ".join(
        f"{k} {v:.1f}s" + (f" ({peaks[k]:,.0f} MB)" if k in peaks else "")
        for k, v in result.timings.items()
    )
    console.print(f"[dim]stage time (peak memory): {timings}[/]")


def report(
    project: ProjectOption = Path("."),
    out: Annotated[Path | None, typer.Option(help="Output HTML file.")] = None,
    version: Annotated[str | None, typer.Option(help="Model version (default: active).")] = None,
) -> None:
    """Write the self-contained HTML report of a model version."""
    with open_project(project) as proj:
        path = proj.write_report(out, version=version)
    console.print(f"report: {path}")


def why(
    customer_id: str,
    project: ProjectOption = Path("."),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Why a customer is in its segment under the active model."""
    with open_project(project) as proj:
        answer = proj.why(customer_id)
    if as_json:
        typer.echo(json.dumps(answer, default=str, indent=2))
        return
    console.print(f"[bold]{customer_id}[/] is in [bold]{answer.get('segment_name')}[/]")
    console.print(answer["text"])
