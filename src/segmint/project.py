"""The Python entry point: a :class:`Project` bound to a project file and its warehouse."""

from __future__ import annotations

import logging
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd

from segmint.config import PROJECT_FILE, load_project
from segmint.config import Project as ProjectFile
from segmint.data.ingest import LoadResult, ingest_frame, ingest_sources
from segmint.data.schema import TABLES
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)


def init_project(folder: str | Path = ".", *, force: bool = False) -> Path:
    """Write a commented starter ``segmint.yaml`` into ``folder``; returns its path."""
    target = Path(folder) / PROJECT_FILE
    if target.exists() and not force:
        raise UserInputError(f"{target} already exists (use --force to overwrite)")
    target.parent.mkdir(parents=True, exist_ok=True)
    template = resources.files("segmint") / "templates" / PROJECT_FILE
    with resources.as_file(template) as path:
        shutil.copyfile(path, target)
    return target


def data_dictionary() -> pd.DataFrame:
    """Every canonical table's columns: table, column, type, meaning, PII flag."""
    rows = [
        {"table": t.name, "column": c.name, "type": c.type, "meaning": c.meaning, "pii": c.pii}
        for t in TABLES.values()
        for c in t.columns
    ]
    return pd.DataFrame(rows)


class Project:
    """A segmint project: its project file and its warehouse.

    Parameters
    ----------
    path
        The project file, or the folder holding ``segmint.yaml``.

    Examples
    --------
    >>> project = Project("segmint.yaml")            # doctest: +SKIP
    >>> results = project.ingest()                    # doctest: +SKIP
    >>> project.table("customers").head()             # doctest: +SKIP
    """

    def __init__(self, path: str | Path = PROJECT_FILE) -> None:
        self.config: ProjectFile
        self.config, self.base_dir = load_project(path)
        self._warehouse: Warehouse | None = None

    @property
    def warehouse(self) -> Warehouse:
        """The warehouse connection, opened on first use."""
        if self._warehouse is None:
            location = self.config.warehouse
            if location != ":memory:" and not Path(location).is_absolute():
                location = str(self.base_dir / location)
            self._warehouse = Warehouse(location)
            ensure_tables(self._warehouse)
        return self._warehouse

    def ingest(self, sources: list[str] | None = None) -> list[LoadResult]:
        """Load the files of the named sources (all when ``None``) in one transaction."""
        return ingest_sources(self.warehouse, self.config, self.base_dir, sources)

    def ingest_frame(self, frame: Any, source: str) -> LoadResult:
        """Load a pandas / polars data frame or Arrow table as input of ``source``."""
        return ingest_frame(self.warehouse, self.config.source(source), frame)

    def table(self, name: str, limit: int | None = None) -> pd.DataFrame:
        """A canonical or derived table as a data frame."""
        if name not in TABLES:
            raise UserInputError(f"unknown table {name!r} (known: {', '.join(TABLES)})")
        sql = f'SELECT * FROM "{name}"' + (" LIMIT ?" if limit is not None else "")
        return self.warehouse.df(sql, [limit] if limit is not None else None)

    def close(self) -> None:
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
