"""``segmint demo-data`` and ``segmint demo``."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from segmint.cli.common import console
from segmint.cli.ingest_cmd import print_results
from segmint.cli.run_cmd import print_summary, run_with_progress
from segmint.data.demo import write_demo_project
from segmint.errors import UserInputError
from segmint.project import Project


def register(app: typer.Typer) -> None:
    app.command("demo-data")(demo_data)
    app.command("demo")(demo)


def demo_data(
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same files).")] = 0,
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("demo-data"),
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    clean: Annotated[bool, typer.Option("--clean", help="No injected dirt.")] = False,
) -> None:
    """Generate realistic synthetic retail data with planted segments and dirt."""
    from segmint.data.synthetic import generate

    if fmt not in ("csv", "parquet"):
        raise UserInputError(f"--format must be csv or parquet, not {fmt!r}")
    with console.status(f"generating {customers:,} customers..."):
        data = generate(out, customers=customers, seed=seed, fmt=fmt, dirty=not clean)  # type: ignore[arg-type]
    for name, count in data.counts.items():
        console.print(f"{name:>12}: {count:,} rows -> {data.files[name]}")


def demo(
    folder: Annotated[Path, typer.Option("--dir", help="Fresh folder for the demo.")] = Path(
        "demo"
    ),
    customers: Annotated[int, typer.Option(help="Number of customers.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Generate demo data in a fresh folder, write a project file, then ingest, segment,
    explain and report."""
    from segmint.data.synthetic import generate

    if folder.exists():
        shutil.rmtree(folder)
    with console.status("generating demo data..."):
        data = generate(folder / "data", customers=customers, seed=seed, fmt="csv")
    project_file = write_demo_project(data.files, folder)
    console.print(f"project file: {project_file}")
    with Project(project_file) as project:
        with console.status("ingesting..."):
            results = project.ingest()
        print_results(results)
        result = run_with_progress(project, None)
        report = project.write_report()
    print_summary(result)
    console.print(f"\nreport: [bold]{report}[/] (open it in a browser; it works offline)")
