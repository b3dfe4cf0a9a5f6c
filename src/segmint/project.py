"""The Python entry point: a :class:`Project` bound to a project file and its warehouse."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from segmint.config import PROJECT_FILE, load_project
from segmint.config import Project as ProjectFile
from segmint.data.ingest import LoadResult, ingest_frame, ingest_sources
from segmint.data.schema import TABLES, Column, Table, register_table
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError

if TYPE_CHECKING:
    from segmint.pipeline import PipelineResult

logger = logging.getLogger(__name__)

REPORTS = Table(
    "reports",
    "Report data of each published model version (JSON), rendered by `segmint report`.",
    (
        Column("version", "string", "Model version."),
        Column("data", "json", "The report's data: profiles, metrics, charts' inputs."),
    ),
)
register_table(REPORTS)


def save_report_data(wh: Warehouse, version: str, data: dict[str, Any]) -> None:
    wh.execute(REPORTS.ddl())
    with wh.transaction():
        wh.execute("DELETE FROM reports WHERE version = ?", [version])
        wh.execute(
            "INSERT INTO reports VALUES (?, ?)",
            [version, json.dumps(data, allow_nan=False, default=str)],
        )


def load_report_data(wh: Warehouse, version: str) -> dict[str, Any]:
    wh.execute(REPORTS.ddl())
    text = wh.scalar("SELECT data FROM reports WHERE version = ?", [version])
    if text is None:
        raise UserInputError(f"no report data for model version {version}")
    data: dict[str, Any] = json.loads(text)
    return data


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
            from segmint.config import get_settings

            self._warehouse = Warehouse(location, memory_limit=get_settings().memory_limit)
            ensure_tables(self._warehouse)
        return self._warehouse

    def ingest(self, sources: list[str] | None = None) -> list[LoadResult]:
        """Load the files of the named sources (all when ``None``) in one transaction."""
        return ingest_sources(self.warehouse, self.config, self.base_dir, sources)

    def ingest_frame(self, frame: Any, source: str) -> LoadResult:
        """Load a pandas / polars data frame or Arrow table as input of ``source``."""
        return ingest_frame(self.warehouse, self.config.source(source), frame)

    def run(
        self, *, as_of: datetime | None = None, on_stage: Callable[[str], None] | None = None
    ) -> PipelineResult:
        """Run the batch pipeline and publish a model version (see :mod:`segmint.pipeline`)."""
        from segmint.pipeline import run_pipeline

        result = run_pipeline(self.warehouse, self.config, as_of=as_of, on_stage=on_stage)
        save_report_data(self.warehouse, result.version, result.report_data)
        return result

    def features(self, *, as_of: datetime | None = None) -> pd.DataFrame:
        """Compute a feature snapshot in the engine; one row per customer."""
        from segmint.features.compute import compute_features

        return compute_features(
            self.warehouse,
            as_of=as_of,
            user_features=self.config.features.custom or None,
            session_gap_minutes=self.config.features.session_gap_minutes,
        ).frame()

    def assignments(self) -> pd.DataFrame:
        """Segment of every customer under the active model version."""
        from segmint.segments.registry import current_assignments

        return current_assignments(self.warehouse)

    def why(self, customer_id: str, *, top: int = 5) -> dict[str, Any]:
        """Why a customer is in its segment: the features pulling it to its centroid."""
        from segmint.pipeline import explain_customer

        return explain_customer(self.warehouse, customer_id, top=top)

    def write_report(self, path: str | Path | None = None, *, version: str | None = None) -> Path:
        """Write the HTML report of a model version (default: the active one)."""
        from segmint.report import write_report
        from segmint.segments.registry import active_version, normalise_version

        if version is None:
            active = active_version(self.warehouse)
            if active is None:
                raise UserInputError("no model version yet: run `segmint run` first")
            version = active.version
        version = normalise_version(version)
        data = load_report_data(self.warehouse, version)
        target = Path(path) if path else self.base_dir / "reports" / f"report-{version}.html"
        target.parent.mkdir(parents=True, exist_ok=True)
        return write_report(data, target)

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
