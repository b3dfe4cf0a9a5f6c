"""Ingestion: read, validate, quarantine, deduplicate, impute and record each input.

One call is one transaction: if any input fails (bad file, crash), every table is
left as it was. An input whose fingerprint was loaded before for the same source
is skipped, so loading the same file twice is a no-op while new files append.

A call works in two phases. First every new input is read once and validated into
a temporary table (nothing the user sees is written, so this needs no transaction;
temporary tables committed this way are scanned in parallel later, which rows
written inside the transaction are not). Then, in the one transaction, each
validated input is quarantined, deduplicated and written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    drop_staging,
    fingerprint_file,
    fingerprint_frame,
    finish_staging,
    forget_staging,
    read_error,
    read_file,
    stage_frame,
)
from segmint.data.schema import TABLES, Table
from segmint.data.store import ensure_tables
from segmint.data.validation import ValidatedSelect, build_validated_select
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import EngineError, SourceNotFoundError, UserInputError

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
    """Load every file of the named sources (all sources if none) in one transaction.

    Each new file is read once and validated into a temporary table first (these add
    up over the files of one call; the engine spills them to disk beyond its memory
    limit), then all are quarantined, deduplicated and written in one transaction.
    Files whose bytes were loaded before for the same source are skipped.

    Parameters
    ----------
    wh
        The warehouse.
    project
        The project file: its sources say where the files are and how to read them.
    base_dir
        Directory that relative source paths start from.
    names
        Sources to load; all of them when omitted.

    Returns
    -------
    list[LoadResult]
        One result per file, in load order (``status`` ``loaded`` or ``unchanged``).

    Raises
    ------
    SourceNotFoundError
        A source's path matches no file.
    DataValidationError
        A file cannot be read (empty, not UTF-8, missing required columns, ...);
        nothing is written then.

    Examples
    --------
    >>> results = ingest_sources(wh, project.config, project.base_dir)  # doctest: +SKIP
    >>> [(r.source, r.status, r.rows_loaded) for r in results]  # doctest: +SKIP
    [('orders', 'loaded', 510822), ('web_events', 'loaded', 2865893)]
    """
    sources = [project.source(n) for n in names] if names else list(project.sources)
    if not sources:
        raise UserInputError("the project file defines no sources")
    ensure_tables(wh)
    plan = [(source, path) for source in sources for path in resolve_files(source, base_dir)]
    formats = {source.name: source.resolved_format() for source in sources}
    # Files are hashed in load order in a thread (hashing releases the GIL), so while a
    # file is read, the next one's fingerprint is being computed.
    hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmint-fingerprint")
    fingerprints = [hashing.submit(fingerprint_file, path) for _, path in plan]
    prepared: list[_Validated | LoadResult] = []
    try:
        with _rows_in_any_order(wh):
            for (source, path), pending in zip(plan, fingerprints, strict=True):
                fingerprint = pending.result()
                if _already_loaded(wh, source.name, fingerprint):
                    prepared.append(_unchanged(source, str(path)))
                    continue
                table = TABLES[source.kind.value]
                staged = read_file(
                    wh,
                    path,
                    formats[source.name],
                    delimiter=source.delimiter,
                    jsonl_fields=[source.columns.get(f, f) for f in table.user_columns()],
                    replayable=_needs_lookups(table),
                )
                prepared.append(_validate(wh, source, staged, fingerprint))
            with wh.transaction():
                results = [_write_or_skip(wh, item) for item in prepared]
    finally:
        hashing.shutdown(wait=True, cancel_futures=True)
        _discard(wh, prepared)
    wh.checkpoint()
    return results


def ingest_frame(wh: Warehouse, source: Source, frame: Any) -> LoadResult:
    """Load a pandas / polars data frame or Arrow table as input of ``source``.

    Typed columns (timestamps, numbers) are used as they are; text columns are
    parsed like a file's. Loading the same frame twice is a no-op.

    Examples
    --------
    >>> import pandas as pd
    >>> from segmint.config import Source
    >>> wh = Warehouse(":memory:")
    >>> shop = Source(name="shop", kind="orders", path="unused.csv")
    >>> frame = pd.DataFrame({"order_id": ["o1"], "customer_id": ["c1"],
    ...                       "ordered_at": pd.to_datetime(["2024-01-01"]), "amount": [9.5]})
    >>> ingest_frame(wh, shop, frame).rows_loaded
    1
    >>> ingest_frame(wh, shop, frame).status
    'unchanged'
    """
    data = _to_arrow(frame)
    ensure_tables(wh)
    fingerprint = fingerprint_frame(data)
    if _already_loaded(wh, source.name, fingerprint):
        return LoadResult(source.name, f"frame:{source.name}", source.kind.value, "unchanged")
    prepared: list[_Validated | LoadResult] = []
    try:
        with _rows_in_any_order(wh):
            staged = stage_frame(wh, data, source.name)
            prepared.append(_validate(wh, source, staged, fingerprint))
            with wh.transaction():
                result = _write_or_skip(wh, prepared[0])
    finally:
        _discard(wh, prepared)
    wh.checkpoint()
    return result


@contextlib.contextmanager
def _rows_in_any_order(wh: Warehouse) -> Iterator[None]:
    """Let the engine write rows in any order while loading; restored afterwards.

    Unordered writes run in parallel with less bookkeeping, and every staged row
    carries its position (``_ordinal``, ``_line``) anyway. Readers that need order
    ask for it themselves. The setting is not transactional, so this wraps the
    transaction and restores it after a rollback too.
    """
    previous = bool(wh.scalar("SELECT current_setting('preserve_insertion_order')"))
    wh.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        wh.execute(f"SET preserve_insertion_order = {str(previous).lower()}")


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


def _needs_lookups(table: Table) -> bool:
    """Whether validating the table reads its input twice (phone / country lookups)."""
    return any(c.normalise in ("phone", "country") for c in table.columns)


def _unchanged(source: Source, file: str) -> LoadResult:
    return LoadResult(source.name, file, source.kind.value, "unchanged")


@dataclass(frozen=True)
class _Validated:
    """An input read and validated into the temporary table ``checked``."""

    source: Source
    staged: StagedInput  # rows and malformed lines known; its relation is dropped
    validated: ValidatedSelect
    checked: str
    fingerprint: str
    started: datetime


def _validate(wh: Warehouse, source: Source, staged: StagedInput, fingerprint: str) -> _Validated:
    """Read a staged input once into its validated temporary table.

    Each row gets its typed columns, its first failed rule (if any) and, when it
    failed, its source text; the staged relation is dropped afterwards.
    """
    table = TABLES[source.kind.value]
    started = utcnow()
    checked = f"{staged.table}_checked"
    try:
        validated = build_validated_select(wh, source, table, staged, started + CLOCK_SKEW)
        try:
            wh.execute(f"CREATE TEMP TABLE {checked} AS {validated.sql}", validated.params)
        except EngineError as e:
            raise read_error(staged, e) from e
        finally:
            for lookup in validated.lookups:
                wh.unregister(lookup)
        staged = finish_staging(wh, staged, checked)
    except BaseException:
        forget_staging(wh, staged)
        with contextlib.suppress(Exception):
            drop_staging(wh, staged)
        with contextlib.suppress(Exception):
            wh.execute(f"DROP TABLE IF EXISTS {checked}")
        raise
    drop_staging(wh, staged)
    return _Validated(source, staged, validated, checked, fingerprint, started)


def _write_or_skip(wh: Warehouse, item: _Validated | LoadResult) -> LoadResult:
    """Write a validated input, unless an input with its bytes was loaded meanwhile
    (the same file twice in one call)."""
    if isinstance(item, LoadResult):
        return item
    if _already_loaded(wh, item.source.name, item.fingerprint):
        return _unchanged(item.source, item.staged.file)
    return _write(wh, item)


def _discard(wh: Warehouse, prepared: list[_Validated | LoadResult]) -> None:
    """Drop the validated temporary tables (after the transaction, whatever its end).

    Best effort: they are scratch, and go with the connection anyway.
    """
    for item in prepared:
        if isinstance(item, _Validated):
            try:
                wh.execute(f"DROP TABLE IF EXISTS {item.checked}")
            except EngineError:
                logger.debug("could not drop %s", item.checked, exc_info=True)


def _write(wh: Warehouse, item: _Validated) -> LoadResult:
    """Quarantine, deduplicate and write a validated input (inside the transaction).

    The rows that pass are written from the validated table through a view: the
    batch is not copied again.
    """
    source, validated, checked, started = item.source, item.validated, item.checked, item.started
    table = TABLES[source.kind.value]
    load_id = uuid.uuid4().hex[:16]
    rows_read = item.staged.rows + len(item.staged.malformed)
    failed = f"{checked}_raw"
    raw_columns = "".join(
        f", _source_values[{i + 1}] AS {quote(name)}"
        for i, name in enumerate(validated.source_columns)
    )
    wh.execute(
        f"CREATE TEMP TABLE {failed} AS SELECT _ordinal{raw_columns} FROM {checked} "
        f"WHERE _fail_rule IS NOT NULL"
    )
    # From here on the staged input stands for the source text of the failed rows.
    staged = dataclasses.replace(
        item.staged,
        table=failed,
        columns=list(validated.source_columns),
        temp_tables=(failed,),
        temp_views=(),
        registered=(),
    )
    suppressed, staged = drop_suppressed(wh, table.name, checked, staged)
    quarantined = _quarantine(wh, source, staged, checked, load_id, started)
    lineage = f"{checked}_lineage"
    wh.execute(
        f"CREATE TEMP TABLE {lineage} AS SELECT ?::VARCHAR AS _source, ?::VARCHAR AS _file, "
        f"?::VARCHAR AS _load_id, ?::TIMESTAMP AS _loaded_at",
        [source.name, staged.file, load_id, started],
    )
    batch = f"{checked}_good"
    canonical = ", ".join(
        f"c.{quote(c.name)}"
        if c.name in validated.columns
        else f"NULL::{c.sql_type} AS {quote(c.name)}"
        for c in table.columns
        if not c.name.startswith("_")
    )
    wh.execute(
        f"CREATE TEMP VIEW {batch} AS SELECT {canonical}, l._source, l._file, "
        f"c._line, l._load_id, l._loaded_at, NULL::VARCHAR[] AS _imputed, "
        f"c._ordinal FROM {checked} c CROSS JOIN {lineage} l "
        f"WHERE c._fail_rule IS NULL"
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
            item.fingerprint,
            rows_read,
            stats.loaded,
            quarantined,
            stats.duplicates,
            started,
            utcnow(),
        ],
    )
    wh.execute(f"DROP VIEW {batch}")
    wh.execute(f"DROP TABLE {lineage}")
    drop_staging(wh, staged)
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


def _quarantine(
    wh: Warehouse,
    source: Source,
    staged: StagedInput,
    checked: str,
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
        f"INSERT INTO quarantine SELECT ?, ?, ?, ?, c._line, CAST({raw} AS VARCHAR), "
        f"c._fail_rule, c._fail_column, c._fail_message, ? FROM {checked} c "
        f"JOIN {staged.table} s ON s._ordinal = c._ordinal "
        f"WHERE c._fail_rule IS NOT NULL",
        [load_id, source.name, source.kind.value, staged.file, *source_columns, now],
    )
    if staged.malformed:
        lines = pa.table(
            {
                "line": pa.array([bad.line for bad in staged.malformed], pa.int64()),
                "raw": pa.array([bad.raw for bad in staged.malformed], pa.string()),
                "message": pa.array(
                    [f"malformed line: {bad.message}" for bad in staged.malformed], pa.string()
                ),
            }
        )
        name = f"{staged.table}_malformed"
        wh.register(name, lines)
        try:
            wh.execute(
                f"INSERT INTO quarantine SELECT ?, ?, ?, ?, line, raw, 'malformed', NULL, "
                f"message, ? FROM {name} ORDER BY line",
                [load_id, source.name, source.kind.value, staged.file, now],
            )
        finally:
            wh.unregister(name)
    return int(wh.scalar("SELECT count(*) FROM quarantine")) - before
