"""Ingestion: read, validate, quarantine, deduplicate, impute and record each input.

One call is one transaction: if any input fails (bad file, crash), every table is
left as it was. An input whose fingerprint was loaded before for the same source
is skipped, so loading the same file twice is a no-op while new files append.

A call works in two phases. First every new input is validated and its failed rows
are kept in a temporary table (nothing the user sees is written, so this needs no
transaction, and scratch tables committed this way are scanned in parallel later,
which rows written inside the transaction are not). Then, in the one transaction,
each input is quarantined, deduplicated and written.

The rows that pass are not copied on the way: an input that can be read again
(Parquet, a data frame, a CSV file staged in a temporary table) is scanned once for
its failed rows, and once more to write the rows that pass straight into the table,
so the failure columns and source text exist only for the failed rows. JSON held as
text is parsed only by that write (a strict cast: a row that is not JSON fails it,
and the input is then validated again with every check up front). A streamed input
(JSON Lines) can be read only once, so it is validated into a temporary table of
every row and written from there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from segmint.config import Project, Source
from segmint.data import dedupe, impute
from segmint.data.privacy.suppression import drop_suppressed, reading_schemes
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
from segmint.data.validation import (
    ValidatedSelect,
    build_validated_select,
    normalisations,
    reset_variables,
    set_variables,
    variable,
)
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

    Each new file is validated first (its failed rows, or for a streamed input every
    validated row, go to a temporary table; these add up over the files of one call
    and the engine spills them to disk beyond its memory limit), then all are
    quarantined, deduplicated and written in one transaction. Files whose bytes were
    loaded before for the same source are skipped.

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
    # Phone numbers and countries are normalised in Python, in a thread, while the
    # engine validates the other files (it releases the GIL).
    normalising = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segmint-normalise")
    prepared: list[_Validated | LoadResult | _Normalising] = []
    ready: list[_Validated | LoadResult] = []
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
                if _needs_lookups(table):
                    prepared.append(_normalise(wh, source, staged, fingerprint, normalising))
                else:
                    prepared.append(_validate(wh, source, staged, fingerprint))
            for index, item in enumerate(prepared):
                if isinstance(item, _Normalising):
                    lookups = item.lookups.result()
                    prepared[index] = _validate(
                        wh, item.source, item.staged, item.fingerprint, normalised=lookups
                    )
            ready = [item for item in prepared if not isinstance(item, _Normalising)]
            results = _write_all(wh, ready)
    finally:
        hashing.shutdown(wait=True, cancel_futures=True)
        normalising.shutdown(wait=True, cancel_futures=True)
        _discard(wh, [*prepared, *ready])
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
            [result] = _write_all(wh, prepared)
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
    """An input read and validated before the load transaction.

    ``failed`` is a temporary table of the rows that failed validation: position,
    failure and the source text of each source column. The rows that pass are either
    read again from the staged relation, which stays until the load is done
    (``checked`` is None: Parquet, data frames, staged CSV), or kept with every other
    validated row in the temporary table ``checked`` (a streamed input, which can be
    read only once, or when the suppression list must see every row).
    """

    source: Source
    staged: StagedInput
    validated: ValidatedSelect
    failed: str
    checked: str | None
    fingerprint: str
    started: datetime

    @property
    def name(self) -> str:
        """Prefix of every scratch object of this input."""
        return self.staged.table


@dataclass(frozen=True)
class _Normalising:
    """A staged input whose phone / country values are being normalised in a thread."""

    source: Source
    staged: StagedInput
    fingerprint: str
    lookups: Future[dict[str, pa.Table]]


def _normalise(
    wh: Warehouse, source: Source, staged: StagedInput, fingerprint: str, pool: ThreadPoolExecutor
) -> _Normalising:
    """Read the distinct phone / country values of an input and normalise them in ``pool``."""
    try:
        found = normalisations(wh, source, TABLES[source.kind.value], staged)
    except BaseException:
        forget_staging(wh, staged)
        with contextlib.suppress(Exception):
            drop_staging(wh, staged)
        raise
    return _Normalising(
        source, staged, fingerprint, pool.submit(lambda: {n.column: n.table() for n in found})
    )


def _validate(
    wh: Warehouse,
    source: Source,
    staged: StagedInput,
    fingerprint: str,
    *,
    defer: bool = True,
    normalised: dict[str, pa.Table] | None = None,
) -> _Validated:
    """Validate a staged input before the transaction: find its failed rows.

    An input that can be scanned again is scanned once here for the failed rows only
    (the rows that pass are written straight from a second scan in the transaction;
    nothing is materialised for them). JSON text is then parsed only while writing,
    unless ``defer`` is false: see :func:`_write_all`. A streamed input is validated
    once into a temporary table of every row, and its staged relation is dropped.
    """
    table = TABLES[source.kind.value]
    started = utcnow()
    materialise = staged.single_scan or _suppression_active(wh)
    failed, checked = f"{staged.table}_failed", f"{staged.table}_checked"
    validated: ValidatedSelect | None = None
    try:
        validated = build_validated_select(
            wh,
            source,
            table,
            staged,
            started + CLOCK_SKEW,
            defer_json=defer and not materialise,
            normalised=normalised,
        )
        validated.bind(wh)
        if not materialise:
            _scan(wh, staged, f"CREATE TEMP TABLE {failed} AS {validated.failed_sql}")
            return _Validated(source, staged, validated, failed, None, fingerprint, started)
        _scan(wh, staged, f"CREATE TEMP TABLE {checked} AS {validated.sql}")
        staged = finish_staging(wh, staged, checked)
        wh.execute(f"CREATE TEMP TABLE {failed} AS {_failed_rows(checked, validated)}")
    except BaseException:
        forget_staging(wh, staged)
        with contextlib.suppress(Exception):
            drop_staging(wh, staged)
        for scratch in (checked, failed):
            with contextlib.suppress(Exception):
                wh.execute(f"DROP TABLE IF EXISTS {scratch}")
        if validated is not None:
            validated.release(wh)
        raise
    drop_staging(wh, staged)
    staged = dataclasses.replace(staged, temp_tables=(), temp_views=(), registered=())
    return _Validated(source, staged, validated, failed, checked, fingerprint, started)


def _scan(wh: Warehouse, staged: StagedInput, sql: str) -> None:
    """Run a statement reading the staged input; a failed read raises the reader's error."""
    try:
        wh.execute(sql)
    except EngineError as e:
        raise read_error(staged, e) from e


def _failed_rows(checked: str, validated: ValidatedSelect) -> str:
    """SQL of the failed rows of a table of every validated row, shaped as ``failed_sql``."""
    texts = "".join(
        f", _source_values[{i + 1}] AS {quote(name)}"
        for i, name in enumerate(validated.source_columns)
    )
    return (
        f"SELECT _ordinal, _line, _fail_rule, _fail_column, _fail_message{texts} "
        f"FROM {checked} WHERE _fail_rule IS NOT NULL"
    )


def _suppression_active(wh: Warehouse) -> bool:
    """Whether loads must check rows against the suppression list (it holds hashes)."""
    return bool(reading_schemes(wh))


class _DeferredCheckFailed(Exception):
    """Writing an input whose checks were deferred to the write failed."""

    def __init__(self, item: _Validated) -> None:
        super().__init__(f"writing {item.staged.file} failed a deferred check")
        self.item = item


def _write_all(wh: Warehouse, prepared: list[_Validated | LoadResult]) -> list[LoadResult]:
    """Write every validated input in one transaction.

    An input whose JSON text was not parsed during validation is cast strictly while
    written, so a row that is not JSON fails the statement: then the transaction is
    rolled back, that input validated again with every check up front (its bad rows
    go to the quarantine as usual) and the transaction run again. Each retry turns
    one input strict, so this ends.
    """
    while True:
        try:
            with wh.transaction():
                return [_write_or_skip(wh, item) for item in prepared]
        except _DeferredCheckFailed as failure:
            item = failure.item
            logger.info("%s has rows failing a deferred check; validating it again", item.name)
            index = next(i for i, other in enumerate(prepared) if other is item)
            item.validated.release(wh)
            wh.execute(f"DROP TABLE IF EXISTS {item.failed}")
            prepared[index] = _validate(wh, item.source, item.staged, item.fingerprint, defer=False)


def _write_or_skip(wh: Warehouse, item: _Validated | LoadResult) -> LoadResult:
    """Write a validated input, unless an input with its bytes was loaded meanwhile
    (the same file twice in one call)."""
    if isinstance(item, LoadResult):
        return item
    if _already_loaded(wh, item.source.name, item.fingerprint):
        return _unchanged(item.source, item.staged.file)
    return _write(wh, item)


def _discard(wh: Warehouse, prepared: Sequence[_Validated | LoadResult | _Normalising]) -> None:
    """Drop every scratch object of the validated inputs (after the transaction,
    whatever its end).

    Best effort: they are scratch, and go with the connection anyway.
    """
    for item in prepared:
        if isinstance(item, _Normalising):
            try:
                drop_staging(wh, item.staged)
            except EngineError:
                logger.debug("could not drop the staged input %s", item.staged.table)
            continue
        if not isinstance(item, _Validated):
            continue
        statements = [f"DROP VIEW IF EXISTS {item.name}_good"]
        statements += [f"DROP TABLE IF EXISTS {t}" for t in (item.failed, f"{item.name}_checked")]
        for sql in statements:
            try:
                wh.execute(sql)
            except EngineError:
                logger.debug("could not run %s", sql, exc_info=True)
        try:
            drop_staging(wh, item.staged)
        except EngineError:
            logger.debug("could not drop the staged input %s", item.name, exc_info=True)
        item.validated.release(wh)
        reset_variables(wh, _lineage_variables(item.name).values())


def _lineage_variables(name: str) -> dict[str, str]:
    """Session variables holding the lineage columns of an input's rows, by column."""
    return {c: f"{name}_{c.lstrip('_')}" for c in ("_source", "_file", "_load_id", "_loaded_at")}


def _write(wh: Warehouse, item: _Validated) -> LoadResult:
    """Quarantine, deduplicate and write a validated input (inside the transaction).

    The rows that pass reach the table through a view (over the staged input read
    again, or over the validated table): they are not copied on the way.
    """
    source, validated, started = item.source, item.validated, item.started
    table = TABLES[source.kind.value]
    load_id = uuid.uuid4().hex[:16]
    rows_read = item.staged.rows + len(item.staged.malformed)
    checked = item.checked
    if checked is None and _suppression_active(wh):
        # Persons were erased since validation: the list must see every row (and every
        # check runs now, deferred ones too).
        checked = f"{item.name}_checked"
        wh.execute(f"CREATE TEMP TABLE {checked} AS {validated.sql}")
        wh.execute(
            f"CREATE OR REPLACE TEMP TABLE {item.failed} AS {_failed_rows(checked, validated)}"
        )
    # From here on the staged input stands for the source text of the failed rows.
    staged = dataclasses.replace(
        item.staged,
        table=item.failed,
        columns=list(validated.source_columns),
        temp_tables=(),
        temp_views=(),
        registered=(),
    )
    suppressed = 0
    if checked is not None:
        suppressed, staged = drop_suppressed(wh, table.name, checked, staged)
        if suppressed:
            wh.execute(
                f"DELETE FROM {item.failed} WHERE _ordinal NOT IN (SELECT _ordinal FROM {checked})"
            )
    quarantined = _quarantine(wh, source, staged, load_id, started)
    lineage = _lineage_variables(item.name)
    set_variables(
        wh,
        {
            lineage["_source"]: source.name,
            lineage["_file"]: staged.file,
            lineage["_load_id"]: load_id,
            lineage["_loaded_at"]: started,
        },
    )
    canonical = ", ".join(
        f"c.{quote(c.name)}"
        if c.name in validated.columns
        else f"NULL::{c.sql_type} AS {quote(c.name)}"
        for c in table.columns
        if not c.name.startswith("_")
    )
    if checked is not None:
        rows = f"{checked} c WHERE c._fail_rule IS NULL"
    elif wh.scalar(f"SELECT count(*) FROM {item.failed}"):
        rows = f"({validated.typed_sql(excluding=item.failed)}) c"
    else:
        rows = f"({validated.typed_sql()}) c"
    batch = f"{item.name}_good"
    wh.execute(
        f"CREATE TEMP VIEW {batch} AS SELECT {canonical}, "
        f"CAST({variable(lineage['_source'])} AS VARCHAR) AS _source, "
        f"CAST({variable(lineage['_file'])} AS VARCHAR) AS _file, c._line, "
        f"CAST({variable(lineage['_load_id'])} AS VARCHAR) AS _load_id, "
        f"CAST({variable(lineage['_loaded_at'])} AS TIMESTAMP) AS _loaded_at, "
        f"NULL::VARCHAR[] AS _imputed, c._ordinal FROM {rows}"
    )
    try:
        stats = dedupe.merge_batch(wh, table, batch, source.key_columns(), load_id, started)
    except EngineError as e:
        if checked is None and validated.deferred:
            raise _DeferredCheckFailed(item) from e
        raise
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
    wh: Warehouse, source: Source, failed: StagedInput, load_id: str, now: datetime
) -> int:
    """Quarantine the failed rows (``failed.table``) and the malformed lines of an input."""
    raw = (
        "json_object("
        + ", ".join(f"?, CAST(f.{quote(c)} AS VARCHAR)" for c in failed.columns)
        + ")"
    )
    quarantined = _count(
        wh.fetchall(
            f"INSERT INTO quarantine SELECT ?, ?, ?, ?, f._line, CAST({raw} AS VARCHAR), "
            f"f._fail_rule, f._fail_column, f._fail_message, ? FROM {failed.table} f",
            [load_id, source.name, source.kind.value, failed.file, *failed.columns, now],
        )
    )
    if failed.malformed:
        lines = pa.table(
            {
                "line": pa.array([bad.line for bad in failed.malformed], pa.int64()),
                "raw": pa.array([bad.raw for bad in failed.malformed], pa.string()),
                "message": pa.array(
                    [f"malformed line: {bad.message}" for bad in failed.malformed], pa.string()
                ),
            }
        )
        name = f"{failed.table}_malformed"
        wh.register(name, lines)
        try:
            quarantined += _count(
                wh.fetchall(
                    f"INSERT INTO quarantine SELECT ?, ?, ?, ?, line, raw, 'malformed', NULL, "
                    f"message, ? FROM {name} ORDER BY line",
                    [load_id, source.name, source.kind.value, failed.file, now],
                )
            )
        finally:
            wh.unregister(name)
    return quarantined


def _count(rows: list[Any]) -> int:
    """The row count an INSERT statement returns."""
    return int(rows[0][0]) if rows else 0
