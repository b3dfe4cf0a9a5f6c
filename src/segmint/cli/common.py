"""What every command shares: exit codes, consoles, the project option."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from segmint.project import Project

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USER_ERROR = 2

console = Console()
err_console = Console(stderr=True)

ProjectOption = Annotated[
    Path,
    typer.Option("--project", "-p", help="Project file or its folder.", envvar="SEGMINT_PROJECT"),
]


def open_project(path: Path) -> Project:
    return Project(path)
