"""Shared fixtures: small hand-made projects and a CLI runner that checks exit codes."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from segmint.project import Project

SEED = 20261123


@pytest.fixture
def seed() -> int:
    return SEED


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, str | bytes], Path]:
    """Write a file under tmp_path; text is dedented."""

    def _write(name: str, content: str | bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def make_project(
    tmp_path: Path, write: Callable[[str, str | bytes], Path]
) -> Callable[..., Project]:
    """Write segmint.yaml (sources YAML) and data files, return an open Project."""
    opened: list[Project] = []

    def _make(sources_yaml: str, files: dict[str, str | bytes] | None = None) -> Project:
        for name, content in (files or {}).items():
            write(name, content)
        write("segmint.yaml", "warehouse: ./segmint.duckdb\n" + textwrap.dedent(sources_yaml))
        project = Project(tmp_path / "segmint.yaml")
        opened.append(project)
        return project

    yield _make
    for project in opened:
        project.close()


class Cli:
    """Run the segmint CLI in-process and assert the exit code."""

    def __init__(self) -> None:
        from segmint.cli.main import app

        self.app = app
        self.runner = CliRunner()

    def __call__(self, *args: str, exit_code: int = 0):
        result = self.runner.invoke(self.app, [str(a) for a in args])
        assert result.exit_code == exit_code, (
            f"exit {result.exit_code} != {exit_code}\nstdout: {result.stdout}\n"
            f"stderr: {result.stderr}\nexception: {result.exception!r}"
        )
        return result


@pytest.fixture
def cli() -> Cli:
    return Cli()
