"""Ingestion: read, validate, quarantine, deduplicate, impute and record each input.

One call is one transaction: if any input fails (bad file, crash), every table is
left as it was. An input whose fingerprint was loaded before for the same source
is skipped, so loading the same file twice is a no-op while new files append.
"""

from __future__ import annotations

import glob
import logging
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from segmint.config import Project, Source
from segmint.data import dedupe, impute
from segmint.data.privacy.suppression import drop_suppressed
from segmint.data.readers import (
    StagedInput,
    fingerprint_file,
    fingerprint_frame,
    read_file,
    stage_frame,
)
from segmint.data.schema import TABLES
from segmint.data.store import ensure_tables
from segmint.data.validation import build_validated_select
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import SourceNotFoundError, UserInputError

logger = logging.getLogger(__name__)

# Timestamps up to this far ahead of the clock are accepted (client clock skew).
CLOCK_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class LoadResult:
    """What happened to one input."""

    source: str
    file: str
    table: str
    status: str  # loaded | unchanged
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_duplicate: int = 0
    imputed: int = 0
    load_id: str | None = None
    rows_suppressed: int = 0  # rows of erased persons: dropped, stored nowhere

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def resolve_files(source: Source, base_dir: Path) -> list[Path]:
    """The files a source's path or glob names, sorted; an error if there are none."""
    pattern = source.path if Path(source.path).is_absolute() else str(base_dir / source.path)
    matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not matches:
        raise SourceNotFoundError(f"no file matches {source.path!r}", where=f"source {source.name}")
    return matches


def ingest_sources(
    wh: Warehouse, project: Project, base_dir: Path, names: Sequence[str] | None = None
) -> list[LoadResult]:
    """Load every file of the named sources (all sources if none) in one transaction."""
    sources = [project.source(n) for n in names] if names else list(project.sources)
    if not sources:
        raise UserInputError("the project file defines no sources")
    ensure_tables(wh)
    plan = [(source, path) for source in sources for path in resolve_files(source, base_dir)]
    formats = {source.name: source.resolved_format() for source in sources}
    results: list[LoadResult] = []
    with wh.transaction():
        for source, path in plan:
            fingerprint = fingerprint_file(path)
            if _already_loaded(wh, source.name, fingerprint):
                results.append(LoadResult(source.name, str(path), source.kind.value, "unchanged"))
                continue
            fields = TABLES[source.kind.value].user_columns()
            jsonl_fields = [source.columns.get(f, f) for f in fields]
            staged = read_file(
                wh,
                path,
                formats[source.name],
                delimiter=source.delimiter,
                jsonl_fields=jsonl_fields,
            )
            results.append(_load(wh, source, staged, fingerprint))
    wh.checkpoint()
    return results


def ingest_frame(wh: Warehouse, source: Source, frame: Any) -> LoadResult:
    """Load a pandas / polars data frame or Arrow table as input of ``source``."""
    data = _to_arrow(frame)
    ensure_tables(wh)
    fingerprint = fingerprint_frame(data)
    if _already_loaded(wh, source.name, fingerprint):
        return LoadResult(source.name, f"frame:{source.name}", source.kind.value, "unchanged")
    with wh.transaction():
        staged = stage_frame(wh, data, source.name)
        result = _load(wh, source, staged, fingerprint)
    wh.checkpoint()
    return result


def _to_arrow(frame: Any) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if hasattr(frame, "to_arrow"):  # polars
        return frame.to_arrow()
    try:
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            return pa.Table.from_pandas(frame, preserve_index=False)
    except ImportError:  # pragma: no cover - pandas is a core dependency
        pass
    raise UserInputError(
        f"cannot ingest a {type(frame).__name__}; pass a pandas or polars "
        "data frame or an Arrow table"
    )


def _already_loaded(wh: Warehouse, source: str, fingerprint: str) -> bool:
    return bool(
        wh.scalar(
            "SELECT count(*) FROM loads WHERE source = ? AND fingerprint = ?", [source, fingerprint]
        )
    )


def _load(wh: Warehouse, source: Source, staged: StagedInput, fingerprint: str) -> LoadResult:
    table = TABLES[source.kind.value]
    load_id = uuid.uuid4().hex[:16]
    started = utcnow()
    validated = build_validated_select(wh, source, table, staged, started + CLOCK_SKEW)
    checked = f"{staged.table}_checked"
    wh.execute(f"CREATE TEMP TABLE {checked} AS {validated.sql}", validated.params)
    rows_read = staged.rows + len(staged.malformed)
    suppressed, staged = drop_suppressed(wh, table.name, checked, staged)
    line_sql = _line_expression(wh, staged)
    quarantined = _quarantine(wh, source, staged, checked, line_sql, load_id, started)
    batch = f"{staged.table}_good"
    canonical = ", ".join(
        quote(c.name) if c.name in validated.columns else f"NULL::{c.sql_type} AS {quote(c.name)}"
        for c in table.columns
        if not c.name.startswith("_")
    )
    wh.execute(
        f"CREATE TEMP TABLE {batch} AS SELECT {canonical}, ? AS _source, ? AS _file, "
        f"{line_sql} AS _line, ? AS _load_id, ? AS _loaded_at, NULL::VARCHAR[] AS _imputed, "
        f"c._ordinal FROM {checked} c {_line_join(staged)} WHERE c._fail_rule IS NULL",
        [source.name, staged.file, load_id, started],
    )
    stats = dedupe.merge_batch(wh, table, batch, source.key_columns(), load_id, started)
    imputed = impute.impute(wh, table, dict(source.impute)) if source.impute else {}
    wh.execute(
        "INSERT INTO loads VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            load_id,
            source.name,
            table.name,
            staged.file,
            fingerprint,
            rows_read,
            stats.loaded,
            quarantined,
            stats.duplicates,
            started,
            utcnow(),
        ],
    )
    for temp in (batch, checked, staged.table):
        wh.execute(f"DROP TABLE IF EXISTS {temp}")
    for column in validated.columns:
        try:
            wh.unregister(f"_lookup_{staged.table}_{column}")
        except Exception:  # noqa: BLE001 - only phone/country columns have a lookup
            pass
    result = LoadResult(
        source.name,
        staged.file,
        table.name,
        "loaded",
        rows_read,
        stats.loaded,
        quarantined,
        stats.duplicates,
        sum(imputed.values()),
        load_id,
        rows_suppressed=suppressed,
    )
    logger.info("loaded %s", result)
    return result


def _line_expression(wh: Warehouse, staged: StagedInput) -> str:
    if not staged.line_offsets:
        return f"(c._ordinal + {int(staged.first_data_line)})"
    offsets = pa.table(
        {
            "good_before": pa.array(staged.line_offsets, pa.int64()),
            "shift": pa.array(range(1, len(staged.line_offsets) + 1), pa.int64()),
        }
    )
    wh.register(f"{staged.table}_offsets", offsets)
    return f"(c._ordinal + {int(staged.first_data_line)} + coalesce(o.shift, 0))"


def _line_join(staged: StagedInput) -> str:
    if not staged.line_offsets:
        return ""
    return f"ASOF LEFT JOIN {staged.table}_offsets o ON c._ordinal >= o.good_before"


def _quarantine(
    wh: Warehouse,
    source: Source,
    staged: StagedInput,
    checked: str,
    line_sql: str,
    load_id: str,
    now: datetime,
) -> int:
    before = int(wh.scalar("SELECT count(*) FROM quarantine"))
    source_columns = [c for c in staged.columns if c != "_ordinal"]
    raw = (
        "json_object("
        + ", ".join(f"?, CAST(s.{quote(c)} AS VARCHAR)" for c in source_columns)
        + ")"
    )
    wh.execute(
        f"INSERT INTO quarantine SELECT ?, ?, ?, ?, {line_sql}, CAST({raw} AS VARCHAR), "
        f"c._fail_rule, c._fail_column, c._fail_message, ? FROM {checked} c "
        f"JOIN {staged.table} s ON s._ordinal = c._ordinal {_line_join(staged)} "
        f"WHERE c._fail_rule IS NOT NULL",
        [load_id, source.name, source.kind.value, staged.file, *source_columns, now],
    )
    for bad in staged.malformed:
        wh.execute(
            "INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, 'malformed', NULL, ?, ?)",
            [
                load_id,
                source.name,
                source.kind.value,
                staged.file,
                bad.line,
                bad.raw,
                f"malformed line: {bad.message}",
                now,
            ],
        )
    return int(wh.scalar("SELECT count(*) FROM quarantine")) - before
