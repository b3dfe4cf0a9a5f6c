"""The data-quality report: how much was loaded, how complete, valid, fresh and varied it is.

Every figure is computed in the engine with aggregate SQL (one pass per canonical
table plus small ``GROUP BY`` queries over ``loads`` and ``quarantine``); only the
aggregates reach Python, so the cost grows linearly with the number of rows.

Definitions
-----------
rows read / loaded / quarantined / duplicate
    Sums over the ``loads`` table per source (one row per file loaded).
completeness
    Share of a table's rows (per source, and over all sources) where the column is
    not null. Imputed values count as present; ``observed`` is the share that is
    present *and* not imputed (``_imputed`` does not list the column).
validity (pass rate)
    ``1 - failures / rows read`` per source, rule and column, with failures counted
    from ``quarantine.rule`` and ``quarantine.column_name``. Ingestion records only
    the *first* rule a row failed (``message`` lists all of them), so a row failing
    two rules counts against the first only: pass rates are upper bounds for the
    later rules. Listed rules are the source's effective rules (kind defaults, the
    schema's required flags, the project file) plus every rule that quarantined at
    least one row (implicit ``type`` and ``format`` checks, ``malformed`` lines).
duplicate rate
    ``rows_duplicate / rows_read`` per source.
freshness
    The newest value of the table's timestamp column (``Table.timestamp_column``;
    ``_loaded_at`` for tables without one) and its age against ``now``, plus the
    newest load time.
inventory
    Source x attribute matrix: coverage (share non-null among the source's rows)
    and the newest timestamp among the source's rows where the attribute is set.
score
    Per table, ``completeness x validity`` where *completeness* is the mean
    ``observed`` share over the scored columns (the required columns and every
    column that holds at least one value: columns no source supplies are data not
    collected, shown in the inventory, not a defect) and *validity* is
    ``1 - rows_quarantined / rows_read`` over every load of the table. A table
    without rows scores 0. The overall score is the mean over tables that have
    rows or loads (0 when there are none).

Rates with a zero denominator are reported as 0 (completeness, duplicate rate) or
1 (pass rates: nothing failed), so an empty warehouse gives a report of zeros.
"""

from __future__ import annotations

import json
import logging
import types
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, fields, is_dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from segmint.config import ColumnRule, Source
from segmint.config import Project as ProjectFile
from segmint.data.schema import QUALITY_RUNS, TABLES, Table
from segmint.data.validation import RULE_ORDER, effective_rules
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

REPORT_VERSION = 1
# String columns with at most this many distinct values get an exact distinct count.
DISTINCT_LIMIT = 50
# Changes smaller than this (absolute, on a 0..1 rate) are not reported by compare().
DEFAULT_THRESHOLD = 0.05

_NUMERIC = ("integer", "float")
_TEMPORAL = ("date", "timestamp")
_RULE_FIELDS = ("required", "type", "min", "max", "regex", "allowed", "not_in_future")


# --------------------------------------------------------------------------- report types


@dataclass(frozen=True)
class SourceSummary:
    """Load figures of one source (sums over its files in ``loads``)."""

    source: str
    table: str
    files: int
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int
    rows: int  # rows currently in the table attributed to the source (``_source``)
    quarantine_rate: float
    duplicate_rate: float
    last_load_at: datetime | None


@dataclass(frozen=True)
class QuarantineCount:
    """Rows of one source quarantined by one rule on one column (``None``: whole row)."""

    source: str
    table: str
    rule: str
    column: str | None
    rows: int


@dataclass(frozen=True)
class ColumnQuality:
    """Completeness and imputation of one column, for one source or all (``source=None``)."""

    table: str
    source: str | None
    column: str
    type: str
    required: bool
    rows: int
    non_null: int
    imputed: int
    completeness: float  # non_null / rows
    imputed_share: float  # imputed / rows
    observed: float  # (non_null - imputed) / rows


@dataclass(frozen=True)
class RuleValidity:
    """Pass rate of one rule on one column (``None``: row-level, e.g. malformed) of a source."""

    source: str
    table: str
    column: str | None
    rule: str
    rows_read: int
    failures: int
    pass_rate: float


@dataclass(frozen=True)
class Freshness:
    """Newest record and newest load of a table, for one source or all (``source=None``)."""

    table: str
    source: str | None
    timestamp_column: str
    rows: int
    newest: datetime | None
    age_hours: float | None
    age_days: float | None
    last_loaded_at: datetime | None
    load_age_hours: float | None


@dataclass(frozen=True)
class ValueRange:
    """Range of one column over all rows of a table.

    Numbers get min / max / mean, dates and timestamps min / max (ISO text), booleans
    the share true as ``mean``, strings a distinct count: exact when the HyperLogLog
    estimate is at most twice :data:`DISTINCT_LIMIT` (low cardinality), else that
    estimate (``distinct_exact`` false), so memory stays bounded.
    """

    table: str
    column: str
    type: str
    non_null: int
    min: float | int | str | None = None
    max: float | int | str | None = None
    mean: float | None = None
    distinct: int | None = None
    distinct_exact: bool = False


@dataclass(frozen=True)
class InventoryCell:
    """One cell of the source x attribute inventory matrix."""

    source: str
    table: str
    column: str
    rows: int
    coverage: float
    newest: datetime | None  # newest timestamp among the source's rows with the column set


@dataclass(frozen=True)
class TableScore:
    """Overall quality of one table: ``score = completeness x validity``."""

    table: str
    rows: int
    rows_read: int
    rows_quarantined: int
    completeness: float
    validity: float
    score: float
    scored_columns: tuple[str, ...]


@dataclass(frozen=True)
class QualityChange:
    """A metric that moved by more than the threshold between two reports."""

    metric: str  # completeness | validity | duplicate_rate | quarantine_rate | score
    table: str | None
    source: str | None
    column: str | None
    rule: str | None
    before: float
    after: float
    delta: float
    worse: bool

    def describe(self) -> str:
        """One line for people, e.g. ``completeness of customers.email [crm]: 75.0% -> 50.0%``."""
        subject = ".".join(p for p in (self.table, self.column) if p) or "overall"
        if self.rule:
            subject = f"{self.rule} on {subject}"
        if self.source:
            subject += f" [{self.source}]"
        label = self.metric.replace("_", " ")
        direction = "worse" if self.worse else "better"
        return (
            f"{label} of {subject}: {self.before:.1%} -> {self.after:.1%} "
            f"({self.delta:+.1%}, {direction})"
        )

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True)
class QualityRun:
    """A saved run, as listed by :func:`list_runs`."""

    run_id: str
    run_at: datetime
    overall_score: float | None


@dataclass(frozen=True)
class QualityReport:
    """The data-quality report of a warehouse at one moment.

    Build it with :func:`quality_report`; save it with :func:`save_run` and compare
    two with :func:`compare`. See the module docstring for the definitions.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> report = quality_report(Warehouse(":memory:"), now=datetime(2024, 1, 1))
    >>> report.overall_score, report.table("customers").rows
    (0.0, 0)
    >>> QualityReport.from_json(report.to_json()) == report
    True
    """

    generated_at: datetime
    sources: tuple[SourceSummary, ...]
    quarantine: tuple[QuarantineCount, ...]
    columns: tuple[ColumnQuality, ...]
    validity: tuple[RuleValidity, ...]
    freshness: tuple[Freshness, ...]
    ranges: tuple[ValueRange, ...]
    inventory: tuple[InventoryCell, ...]
    tables: tuple[TableScore, ...]
    overall_score: float
    version: int = REPORT_VERSION

    # ----------------------------------------------------------------- look-ups
    def source(self, name: str) -> SourceSummary:
        """The load summary of a source."""
        return _one(self.sources, f"source {name!r}", source=name)

    def table(self, name: str) -> TableScore:
        """The score of a table."""
        return _one(self.tables, f"table {name!r}", table=name)

    def column(self, table: str, column: str, source: str | None = None) -> ColumnQuality:
        """Completeness of a column, for one source or all sources (``None``)."""
        return _one(
            self.columns, f"column {table}.{column}", table=table, column=column, source=source
        )

    def rule(self, source: str, column: str | None, rule: str) -> RuleValidity:
        """Pass rate of a rule on a column (``None`` for row-level rules) of a source."""
        return _one(
            self.validity, f"rule {rule} on {column}", source=source, column=column, rule=rule
        )

    def freshness_of(self, table: str, source: str | None = None) -> Freshness:
        """Freshness of a table, for one source or all sources (``None``)."""
        return _one(self.freshness, f"freshness of {table}", table=table, source=source)

    def value_range(self, table: str, column: str) -> ValueRange:
        """Value range of a column."""
        return _one(self.ranges, f"range of {table}.{column}", table=table, column=column)

    def cell(self, source: str, column: str) -> InventoryCell:
        """The inventory cell of a source and attribute."""
        return _one(self.inventory, f"inventory {source} x {column}", source=source, column=column)

    # ----------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data (timestamps as ISO 8601 text)."""
        return _jsonable(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QualityReport:
        """Rebuild a report from :meth:`to_dict` output."""
        version = data.get("version", REPORT_VERSION)
        if version != REPORT_VERSION:
            raise UserInputError(f"unsupported quality report version {version!r}")
        return _decode_dataclass(cls, data)

    @classmethod
    def from_json(cls, text: str) -> QualityReport:
        return cls.from_dict(json.loads(text))


_T = TypeVar("_T")


def _one(items: Iterable[_T], what: str, **match: Any) -> _T:
    for item in items:
        if all(getattr(item, k) == v for k, v in match.items()):
            return item
    raise KeyError(f"no {what} in the report")


# --------------------------------------------------------------------------- computing


def quality_report(
    wh: Warehouse, project: ProjectFile | None = None, *, now: datetime | None = None
) -> QualityReport:
    """Compute the data-quality report of a warehouse.

    Parameters
    ----------
    wh
        The warehouse. Missing tables count as empty; nothing is written.
    project
        The parsed project file; with it, sources without data yet are listed and
        every configured validation rule gets a pass rate (without it, only rules
        that quarantined a row).
    now
        The reference time for freshness (UTC; default: the clock).

    Returns
    -------
    QualityReport

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> report = quality_report(Warehouse(":memory:"), now=datetime(2024, 1, 1))
    >>> [t.table for t in report.tables][:2]
    ['customers', 'orders']
    """
    now = _naive_utc(now or datetime.now(UTC))
    tables = [t for t in TABLES.values() if t.source_kind]
    loads = _load_figures(wh)
    quarantine = _quarantine_counts(wh)
    pairs = _source_pairs(project, loads, quarantine)

    columns: list[ColumnQuality] = []
    freshness: list[Freshness] = []
    ranges: list[ValueRange] = []
    inventory: list[InventoryCell] = []
    table_rows: dict[str, int] = {}
    source_rows: dict[tuple[str, str], int] = {}
    for table in tables:
        scan = _scan_table(wh, table)
        for source in scan.sources():
            pairs.setdefault((source, table.name), None)
        table_sources = sorted(s for s, t in pairs if t == table.name)
        table_rows[table.name] = scan.rows(None)
        for source in table_sources:
            source_rows[(source, table.name)] = scan.rows(source)
        columns += scan.column_quality(None)
        for source in table_sources:
            columns += scan.column_quality(source)
        freshness += [scan.freshness(s, now) for s in (None, *table_sources)]
        ranges += scan.ranges(wh)
        inventory += [cell for s in table_sources for cell in scan.inventory(s)]

    sources = _source_summaries(pairs, loads, source_rows)
    validity = _validity(pairs, loads, quarantine)
    scores = tuple(_table_score(t, table_rows[t.name], columns, loads) for t in tables)
    active = [s.score for s in scores if s.rows or s.rows_read]
    report = QualityReport(
        generated_at=now,
        sources=sources,
        quarantine=tuple(
            QuarantineCount(source, table, rule, column, rows)
            for (source, table, rule, column), rows in quarantine.items()
        ),
        columns=tuple(columns),
        validity=validity,
        freshness=tuple(freshness),
        ranges=tuple(ranges),
        inventory=tuple(inventory),
        tables=scores,
        overall_score=sum(active) / len(active) if active else 0.0,
    )
    logger.info("quality report: overall score %.3f", report.overall_score)
    return report


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _hours(now: datetime, moment: datetime | None) -> float | None:
    return None if moment is None else (now - moment).total_seconds() / 3600


@dataclass(frozen=True)
class _Loads:
    files: int
    rows_read: int
    rows_loaded: int
    rows_quarantined: int
    rows_duplicate: int
    last_load_at: datetime | None


def _load_figures(wh: Warehouse) -> dict[tuple[str, str], _Loads]:
    if not wh.has_table("loads"):
        return {}
    rows = wh.fetchall(
        "SELECT source, table_name, count(*), coalesce(sum(rows_read), 0), "
        "coalesce(sum(rows_loaded), 0), coalesce(sum(rows_quarantined), 0), "
        "coalesce(sum(rows_duplicate), 0), max(finished_at) FROM loads "
        "GROUP BY source, table_name ORDER BY source, table_name"
    )
    return {
        (source, table): _Loads(int(n), int(read), int(loaded), int(quar), int(dup), last)
        for source, table, n, read, loaded, quar, dup, last in rows
    }


def _quarantine_counts(wh: Warehouse) -> dict[tuple[str, str, str, str | None], int]:
    if not wh.has_table("quarantine"):
        return {}
    rows = wh.fetchall(
        "SELECT source, table_name, rule, column_name, count(*) FROM quarantine "
        "GROUP BY source, table_name, rule, column_name "
        "ORDER BY source, table_name, rule, column_name NULLS LAST"
    )
    return {(s, t, r, c): int(n) for s, t, r, c, n in rows}


def _source_pairs(
    project: ProjectFile | None,
    loads: dict[tuple[str, str], _Loads],
    quarantine: dict[tuple[str, str, str, str | None], int],
) -> dict[tuple[str, str], Source | None]:
    """Every (source, table) known: configured, loaded, quarantined or present in a table."""
    pairs: dict[tuple[str, str], Source | None] = {}
    if project is not None:
        for configured in project.sources:
            pairs[(configured.name, configured.kind.value)] = configured
    for key in loads:
        pairs.setdefault(key, None)
    for name, table, _rule, _column in quarantine:
        pairs.setdefault((name, table), None)
    return pairs


class _TableScan:
    """The one-pass aggregate of a canonical table, per source and over all sources."""

    def __init__(self, table: Table, columns: list[str], freshness_column: str) -> None:
        self.table = table
        self.columns = columns
        self.freshness_column = freshness_column
        self.groups: dict[str | None, dict[str, Any]] = {}

    def sources(self) -> list[str]:
        return [s for s in self.groups if s is not None]

    def _group(self, source: str | None) -> dict[str, Any]:
        return self.groups.get(source, {})

    def rows(self, source: str | None) -> int:
        return int(self._group(source).get("n", 0))

    def column_quality(self, source: str | None) -> list[ColumnQuality]:
        group, rows = self._group(source), self.rows(source)
        result = []
        for i, name in enumerate(self.columns):
            column = self.table.column(name)
            non_null = int(group.get(f"nn{i}", 0))
            imputed = int(group.get(f"imp{i}", 0))
            result.append(
                ColumnQuality(
                    table=self.table.name,
                    source=source,
                    column=name,
                    type=column.type,
                    required=column.required,
                    rows=rows,
                    non_null=non_null,
                    imputed=imputed,
                    completeness=_ratio(non_null, rows),
                    imputed_share=_ratio(imputed, rows),
                    observed=_ratio(non_null - imputed, rows),
                )
            )
        return result

    def freshness(self, source: str | None, now: datetime) -> Freshness:
        group = self._group(source)
        newest, loaded = group.get("newest"), group.get("loaded_at")
        age = _hours(now, newest)
        return Freshness(
            table=self.table.name,
            source=source,
            timestamp_column=self.freshness_column,
            rows=self.rows(source),
            newest=newest,
            age_hours=age,
            age_days=None if age is None else age / 24,
            last_loaded_at=loaded,
            load_age_hours=_hours(now, loaded),
        )

    def inventory(self, source: str) -> list[InventoryCell]:
        group, rows = self._group(source), self.rows(source)
        return [
            InventoryCell(
                source=source,
                table=self.table.name,
                column=name,
                rows=rows,
                coverage=_ratio(int(group.get(f"nn{i}", 0)), rows),
                newest=group.get(f"fresh{i}"),
            )
            for i, name in enumerate(self.columns)
        ]

    def ranges(self, wh: Warehouse) -> list[ValueRange]:
        total = self._group(None)
        low_cardinality = [
            (i, name)
            for i, name in enumerate(self.columns)
            if self.table.column(name).type == "string"
            and total.get(f"approx{i}") is not None
            and int(total[f"approx{i}"]) <= 2 * DISTINCT_LIMIT
        ]
        exact: dict[int, int] = {}
        if low_cardinality and self.rows(None):
            counts = wh.fetchall(
                "SELECT "
                + ", ".join(f"count(DISTINCT {quote(name)})" for _, name in low_cardinality)
                + f" FROM {quote(self.table.name)}"
            )[0]
            exact = {i: int(n) for (i, _), n in zip(low_cardinality, counts, strict=True)}
        result = []
        for i, name in enumerate(self.columns):
            kind = self.table.column(name).type
            if kind == "json":
                continue
            values: dict[str, Any] = {}
            if kind in _NUMERIC:
                values = {
                    "min": total.get(f"min{i}"),
                    "max": total.get(f"max{i}"),
                    "mean": total.get(f"mean{i}"),
                }
            elif kind in _TEMPORAL:
                values = {
                    "min": _iso(total.get(f"min{i}")),
                    "max": _iso(total.get(f"max{i}")),
                }
            elif kind == "boolean":
                values = {"mean": total.get(f"mean{i}")}
            elif kind == "string":
                if i in exact:
                    values = {"distinct": exact[i], "distinct_exact": True}
                else:
                    values = {"distinct": int(total.get(f"approx{i}") or 0)}
                    values["distinct_exact"] = values["distinct"] == 0
            result.append(
                ValueRange(
                    table=self.table.name,
                    column=name,
                    type=kind,
                    non_null=int(total.get(f"nn{i}", 0)),
                    **values,
                )
            )
        return result


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, date) else value


def _scan_table(wh: Warehouse, table: Table) -> _TableScan:
    """Aggregate a table in one pass, grouped by ``_source`` and over all rows."""
    present = set(wh.columns(table.name)) if wh.has_table(table.name) else set()
    columns = [c for c in table.user_columns() if c in present]
    freshness_column = table.timestamp_column or "_loaded_at"
    scan = _TableScan(table, columns, freshness_column)
    if not present:
        return scan
    has_source = "_source" in present
    sources = (
        [r[0] for r in wh.fetchall(f"SELECT DISTINCT _source FROM {quote(table.name)} LIMIT 2")]
        if has_source
        else []
    )
    # With one source (the usual case) its group is the total: one grouping, not two.
    grouped = len(sources) > 1
    name = quote(table.name)
    has_imputed = "_imputed" in present and _any_row(wh, f"{name} WHERE _imputed IS NOT NULL")
    # A column without NULLs is complete and as fresh as its table. Asking first is nearly
    # free (the engine answers from its column statistics) and keeps the pass below from
    # reading long text columns just to count them.
    with_nulls = {c for c in columns if _any_row(wh, f"{name} WHERE {quote(c)} IS NULL")}
    ts = quote(freshness_column) if freshness_column in present else "NULL::TIMESTAMP"
    loaded = "max(_loaded_at)" if "_loaded_at" in present else "NULL::TIMESTAMP"
    select: list[tuple[str, str]] = [
        ("all", "GROUPING(_source)" if grouped else "1"),
        ("source", "_source" if grouped else "NULL::VARCHAR"),
        ("n", "count(*)"),
        ("loaded_at", loaded),
        ("newest", f"max({ts})"),
    ]
    params: dict[str, Any] = {}
    for i, column_name in enumerate(columns):
        column, kind = quote(column_name), table.column(column_name).type
        if column_name in with_nulls:
            select.append((f"nn{i}", f"count({column})"))
            select.append((f"fresh{i}", f"max({ts}) FILTER (WHERE {column} IS NOT NULL)"))
        else:
            select += [(f"nn{i}", "count(*)"), (f"fresh{i}", f"max({ts})")]
        if has_imputed:
            params[f"c{i}"] = column_name
            select.append((f"imp{i}", f"count(*) FILTER (WHERE list_contains(_imputed, $c{i}))"))
        if kind in _NUMERIC:
            select += [
                (f"min{i}", f"min({column})"),
                (f"max{i}", f"max({column})"),
                (f"mean{i}", f"avg({column})"),
            ]
        elif kind in _TEMPORAL:
            select += [(f"min{i}", f"min({column})"), (f"max{i}", f"max({column})")]
        elif kind == "boolean":
            select.append((f"mean{i}", f"avg(CAST({column} AS DOUBLE))"))
        elif kind == "string":
            select.append((f"approx{i}", f"approx_count_distinct({column})"))
    group_by = " GROUP BY GROUPING SETS ((_source), ())" if grouped else ""
    sql = (
        "SELECT "
        + ", ".join(f"{expr} AS {quote(alias)}" for alias, expr in select)
        + f" FROM {name}{group_by}"
    )
    aliases = [alias for alias, _ in select]
    for row in wh.fetchall(sql, params or None):
        values = dict(zip(aliases, row, strict=True))
        if not grouped:
            scan.groups[None] = values
            if sources and sources[0] is not None:
                scan.groups[sources[0]] = {**values, "all": 0, "source": sources[0]}
        elif values["all"]:
            scan.groups[None] = values
        elif values["source"] is not None:  # rows without lineage count in the total only
            scan.groups[values["source"]] = values
    return scan


def _any_row(wh: Warehouse, relation_where: str) -> bool:
    """Whether ``SELECT ... FROM <relation_where>`` has a row (stops at the first)."""
    return bool(wh.fetchall(f"SELECT 1 FROM {relation_where} LIMIT 1"))


def _source_summaries(
    pairs: dict[tuple[str, str], Source | None],
    loads: dict[tuple[str, str], _Loads],
    source_rows: dict[tuple[str, str], int],
) -> tuple[SourceSummary, ...]:
    summaries = []
    for source, table in sorted(pairs):
        figures = loads.get((source, table), _Loads(0, 0, 0, 0, 0, None))
        summaries.append(
            SourceSummary(
                source=source,
                table=table,
                files=figures.files,
                rows_read=figures.rows_read,
                rows_loaded=figures.rows_loaded,
                rows_quarantined=figures.rows_quarantined,
                rows_duplicate=figures.rows_duplicate,
                rows=source_rows.get((source, table), 0),
                quarantine_rate=_ratio(figures.rows_quarantined, figures.rows_read),
                duplicate_rate=_ratio(figures.rows_duplicate, figures.rows_read),
                last_load_at=figures.last_load_at,
            )
        )
    return tuple(summaries)


def _configured_rules(rule: ColumnRule) -> list[str]:
    return [name for name in _RULE_FIELDS if _is_set(getattr(rule, name))]


def _is_set(value: Any) -> bool:
    """A configured rule value: ``min: 0`` is set, ``not_in_future: false`` is not."""
    return value is not None and value is not False


def _rule_rank(table: Table, column: str | None, rule: str) -> tuple[int, int, str]:
    names = [c.name for c in table.columns]
    position = names.index(column) if column in names else len(names)
    order = RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER)
    return position, order, rule


def _validity(
    pairs: dict[tuple[str, str], Source | None],
    loads: dict[tuple[str, str], _Loads],
    quarantine: dict[tuple[str, str, str, str | None], int],
) -> tuple[RuleValidity, ...]:
    result: list[RuleValidity] = []
    for source, table_name in sorted(pairs):
        table = TABLES.get(table_name)
        if table is None:
            continue
        keys: set[tuple[str | None, str]] = set()
        config = pairs[(source, table_name)]
        if config is not None:
            for configured_column, column_rule in effective_rules(config, table).items():
                keys.update((configured_column, name) for name in _configured_rules(column_rule))
        keys.update(
            (failed_column, failed_rule)
            for (s, t, failed_rule, failed_column) in quarantine
            if (s, t) == (source, table_name)
        )
        rows_read = loads[(source, table_name)].rows_read if (source, table_name) in loads else 0
        for column, rule in sorted(keys, key=lambda k: _rule_rank(table, k[0], k[1])):
            failures = quarantine.get((source, table_name, rule, column), 0)
            result.append(
                RuleValidity(
                    source=source,
                    table=table_name,
                    column=column,
                    rule=rule,
                    rows_read=rows_read,
                    failures=failures,
                    pass_rate=1.0 - _ratio(failures, rows_read),
                )
            )
    return tuple(result)


def _table_score(
    table: Table, rows: int, columns: list[ColumnQuality], loads: dict[tuple[str, str], _Loads]
) -> TableScore:
    overall = [c for c in columns if c.table == table.name and c.source is None]
    scored = [c for c in overall if c.required or c.non_null > 0]
    completeness = sum(c.observed for c in scored) / len(scored) if scored and rows else 0.0
    read = sum(f.rows_read for (_, t), f in loads.items() if t == table.name)
    quarantined = sum(f.rows_quarantined for (_, t), f in loads.items() if t == table.name)
    validity = 1.0 - _ratio(quarantined, read)
    return TableScore(
        table=table.name,
        rows=rows,
        rows_read=read,
        rows_quarantined=quarantined,
        completeness=completeness,
        validity=validity,
        score=completeness * validity,
        scored_columns=tuple(c.column for c in scored),
    )


# --------------------------------------------------------------------------- runs


def save_run(wh: Warehouse, report: QualityReport) -> str:
    """Store a report in ``quality_runs``; returns its run id.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> run_id = save_run(wh, quality_report(wh, now=datetime(2024, 1, 1)))
    >>> [r.run_id for r in list_runs(wh)] == [run_id]
    True
    """
    wh.execute(QUALITY_RUNS.ddl())
    run_id = f"{report.generated_at:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    wh.execute(
        "INSERT INTO quality_runs (run_id, run_at, report) VALUES (?, ?, ?)",
        [run_id, report.generated_at, report.to_json(indent=None)],
    )
    logger.info("saved quality run %s", run_id)
    return run_id


def list_runs(wh: Warehouse) -> list[QualityRun]:
    """Saved runs, oldest first."""
    if not wh.has_table("quality_runs"):
        return []
    rows = wh.fetchall(
        "SELECT run_id, run_at, TRY_CAST(report ->> 'overall_score' AS DOUBLE) "
        "FROM quality_runs ORDER BY run_at, rowid"
    )
    return [QualityRun(run_id, run_at, score) for run_id, run_at, score in rows]


def load_run(wh: Warehouse, run_id: str) -> QualityReport:
    """The report of a saved run; an unknown id is a :class:`UserInputError`."""
    text = None
    if wh.has_table("quality_runs"):
        text = wh.scalar(
            "SELECT CAST(report AS VARCHAR) FROM quality_runs WHERE run_id = ?", [run_id]
        )
    if text is None:
        raise UserInputError(f"no quality run {run_id!r} (see `segmint quality` runs)")
    return QualityReport.from_json(text)


# --------------------------------------------------------------------------- comparing


def compare(
    previous: QualityReport, current: QualityReport, *, threshold: float = DEFAULT_THRESHOLD
) -> list[QualityChange]:
    """Metrics that moved by more than ``threshold`` (absolute, on 0..1 rates).

    Compared: per-source completeness of every column, pass rate of every rule,
    duplicate and quarantine rates per source, table scores and the overall score.
    A rule that quarantined nothing in one report and something in the other counts
    as a pass rate of 1 where it is missing, when that source had rows read.
    Changes for the worse come first.

    Examples
    --------
    >>> from segmint.engine import Warehouse
    >>> report = quality_report(Warehouse(":memory:"), now=datetime(2024, 1, 1))
    >>> compare(report, report)
    []
    """
    if not 0 <= threshold <= 1:
        raise UserInputError(f"the threshold must be between 0 and 1, not {threshold}")
    changes: list[QualityChange] = []

    def check(
        metric: str, key: tuple[Any, ...], before: float, after: float, up_is_good: bool
    ) -> None:
        delta = after - before
        if abs(delta) > threshold + 1e-12:
            table, source, column, rule = key
            worse = delta < 0 if up_is_good else delta > 0
            changes.append(
                QualityChange(metric, table, source, column, rule, before, after, delta, worse)
            )

    old_columns = {(c.table, c.source, c.column): c for c in previous.columns if c.source}
    for c in current.columns:
        if c.source and (c.table, c.source, c.column) in old_columns:
            before = old_columns[(c.table, c.source, c.column)].completeness
            check("completeness", (c.table, c.source, c.column, None), before, c.completeness, True)

    old_read = {s.source: s.rows_read for s in previous.sources}
    new_read = {s.source: s.rows_read for s in current.sources}
    old_rules = {(v.table, v.source, v.column, v.rule): v.pass_rate for v in previous.validity}
    new_rules = {(v.table, v.source, v.column, v.rule): v.pass_rate for v in current.validity}
    for key in sorted(old_rules.keys() | new_rules.keys(), key=_sort_key):
        source = key[1]
        rate_before = old_rules.get(key, 1.0 if old_read.get(source) else None)
        rate_after = new_rules.get(key, 1.0 if new_read.get(source) else None)
        if rate_before is not None and rate_after is not None:
            check("validity", key, rate_before, rate_after, True)

    old_sources = {(s.table, s.source): s for s in previous.sources}
    for s in current.sources:
        old = old_sources.get((s.table, s.source))
        if old is not None and old.rows_read:
            subject = (s.table, s.source, None, None)
            check("duplicate_rate", subject, old.duplicate_rate, s.duplicate_rate, False)
            check("quarantine_rate", subject, old.quarantine_rate, s.quarantine_rate, False)

    old_scores = {t.table: t for t in previous.tables}
    for t in current.tables:
        old_score = old_scores.get(t.table)
        if old_score is not None and (old_score.rows or old_score.rows_read):
            check("score", (t.table, None, None, None), old_score.score, t.score, True)
    check("score", (None, None, None, None), previous.overall_score, current.overall_score, True)
    changes.sort(key=lambda c: not c.worse)
    return changes


def _sort_key(key: tuple[Any, ...]) -> tuple[str, ...]:
    return tuple("" if part is None else str(part) for part in key)


# --------------------------------------------------------------------------- JSON helpers


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return value


def _decode_dataclass(cls: type[_T], data: dict[str, Any]) -> _T:
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - known
    if unknown:
        raise UserInputError(f"unknown keys in a quality report: {', '.join(sorted(unknown))}")
    return cls(**{name: _decode(hints[name], value) for name, value in data.items()})


def _decode(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = get_origin(hint)
    if origin is tuple:
        item = get_args(hint)[0]
        return tuple(_decode(item, v) for v in value)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if datetime in args and isinstance(value, str):
            return datetime.fromisoformat(value)
        return value
    if isinstance(hint, type) and is_dataclass(hint):
        return _decode_dataclass(hint, value)
    if hint is datetime:
        return datetime.fromisoformat(value)
    return value


__all__ = [
    "DEFAULT_THRESHOLD",
    "DISTINCT_LIMIT",
    "ColumnQuality",
    "Freshness",
    "InventoryCell",
    "QualityChange",
    "QualityReport",
    "QualityRun",
    "QuarantineCount",
    "RuleValidity",
    "SourceSummary",
    "TableScore",
    "ValueRange",
    "compare",
    "list_runs",
    "load_run",
    "quality_report",
    "save_run",
]
