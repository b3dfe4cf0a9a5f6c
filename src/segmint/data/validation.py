"""Validation of staged rows: typing, normalisation and rule checks, all in SQL.

For a staged input this builds the ``SELECT`` that yields, per row, the typed and
normalised canonical columns plus the first failed rule, its column and a message
listing every failure, and two narrower ones: the failed rows only (with their source
text, for the quarantine) and the typed rows without any check (to write the rows that
passed by scanning the input again). Rule constants from the project file are bound
values: the SQL reads them with ``getvariable`` (so it can also back a view), and
:meth:`ValidatedSelect.bind` sets them as session variables with bound parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from segmint.config import ColumnRule, Source
from segmint.data.normalise import normalise_country, normalise_phone
from segmint.data.readers import MALFORMED, StagedInput, json_key
from segmint.data.schema import Column, Table
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import DataValidationError, EngineError

logger = logging.getLogger(__name__)

EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
SEGMENT_TYPES = ["track", "identify", "page", "screen", "group", "alias"]

# Rules every source of a kind gets; the project file's rules override them per attribute.
DEFAULT_RULES: dict[str, dict[str, ColumnRule]] = {
    "customers": {
        "email": ColumnRule(regex=EMAIL_PATTERN),
        "age": ColumnRule(min=0, max=120),
        "income": ColumnRule(min=0),
        "birth_date": ColumnRule(not_in_future=True),
        "signup_at": ColumnRule(not_in_future=True),
    },
    "orders": {
        "amount": ColumnRule(min=0),
        "discount": ColumnRule(min=0),
        "ordered_at": ColumnRule(not_in_future=True),
    },
    "order_items": {
        "quantity": ColumnRule(min=1),
        "unit_price": ColumnRule(min=0),
        "discount": ColumnRule(min=0),
    },
    "events": {
        "type": ColumnRule(allowed=SEGMENT_TYPES),
        "timestamp": ColumnRule(not_in_future=True),
    },
    "consents": {"at": ColumnRule(not_in_future=True)},
    "products": {"price": ColumnRule(min=0)},
}

RULE_ORDER = ("required", "type", "format", "min", "max", "regex", "allowed", "not_in_future")


def effective_rules(source: Source, table: Table) -> dict[str, ColumnRule]:
    """Defaults of the kind, the schema's required flags, then the project file's rules."""
    rules: dict[str, ColumnRule] = {}
    defaults = DEFAULT_RULES.get(table.name, {})
    for column in table.columns:
        if column.name.startswith("_"):
            continue
        merged: dict[str, Any] = {"required": True} if column.required else {}
        if column.name in defaults:
            merged.update(defaults[column.name].model_dump(exclude_none=True))
        if column.name in source.validation:
            merged.update(source.validation[column.name].model_dump(exclude_none=True))
        if merged:
            rules[column.name] = ColumnRule(**merged)
    return rules


@dataclass
class _Params:
    """Constants of the SQL, read from session variables named ``<prefix>_p<n>``."""

    prefix: str
    values: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        name = f"{self.prefix}_p{len(self.values)}"
        self.values[name] = value
        return variable(name)


def variable(name: str) -> str:
    """SQL reading the session variable ``name`` (an internal identifier, not user text).

    Examples
    --------
    >>> variable("_stg_csv_0_p0")
    "getvariable('_stg_csv_0_p0')"
    """
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a variable name: {name!r}")
    return f"getvariable('{name}')"


def set_variables(wh: Warehouse, values: dict[str, Any]) -> None:
    """Set session variables to values bound as parameters.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> set_variables(wh, {"_x_p0": "it's"})
    >>> wh.scalar(f"SELECT {variable('_x_p0')}")
    "it's"
    >>> reset_variables(wh, ["_x_p0"])
    """
    for name, value in values.items():
        wh.execute(f"SET VARIABLE {quote(name)} = ?", [value])


def reset_variables(wh: Warehouse, names: Iterable[str]) -> None:
    """Remove session variables (best effort: they are scratch)."""
    for name in names:
        try:
            wh.execute(f"RESET VARIABLE {quote(name)}")
        except EngineError:  # pragma: no cover - only after the connection failed
            logger.debug("could not reset variable %s", name, exc_info=True)


@dataclass(frozen=True)
class _Check:
    rule: str
    column: str
    condition: str
    message: str  # SQL expression producing the message text
    # Checked while writing instead (a strict cast fails the statement): JSON text.
    deferrable: bool = False


@dataclass(frozen=True)
class ValidatedSelect:
    """The SQL validating a staged input, in three shapes, and its constants.

    ``sql`` gives every row: ``_ordinal``, ``_line``, the typed ``columns``,
    ``_fail_rule`` / ``_fail_column`` / ``_fail_message`` and ``_source_values``: for a
    failed row only (NULL for rows that pass), the text of its ``source_columns`` in
    order. A JSON Lines input also passes ``_malformed`` through.

    ``failed_sql`` gives the failed rows only: ``_ordinal``, ``_line``, the three failure
    columns and one text column per source column (named as in the source), which is
    what the quarantine keeps. :meth:`typed_sql` gives ``_ordinal``, ``_line`` and the
    typed columns without checking anything, of every row or of those not in a table
    of ordinals (the failed rows: the rest pass). Both read the staged relation again,
    so they need one that can be scanned more than once. With ``deferred``,
    ``failed_sql`` leaves some checks (JSON text) to :meth:`typed_sql`, whose strict
    casts then fail on a row that fails them and is not excluded.

    All three read their constants with ``getvariable``: call :meth:`bind` before
    running them and :meth:`release` when done.
    """

    sql: str
    failed_sql: str
    typed_around: tuple[str, str]  # the typed SQL before and after the staged rows
    relation: str  # the staged relation
    variables: dict[str, Any]  # session variable -> bound value
    columns: list[str]  # canonical columns present in the output
    source_columns: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)  # registered tables the SQL joins
    deferred: bool = False  # failed_sql leaves checks to typed_sql()'s strict casts

    def typed_sql(self, excluding: str | None = None) -> str:
        """SQL of the typed rows, without the rows whose ``_ordinal`` is in ``excluding``.

        The rows are left out before anything is computed for them, so a strict cast
        never sees an excluded row.
        """
        rows = f"{self.relation} s"
        if excluding is not None:
            rows += f" ANTI JOIN {excluding} x ON x._ordinal = s._ordinal"
        before, after = self.typed_around
        return f"{before}{rows}{after}"

    def bind(self, wh: Warehouse) -> None:
        """Set the session variables the SQL reads."""
        set_variables(wh, self.variables)

    def release(self, wh: Warehouse) -> None:
        """Reset the variables and unregister the lookup tables (best effort)."""
        reset_variables(wh, self.variables)
        for lookup in self.lookups:
            try:
                wh.unregister(lookup)
            except Exception:  # pragma: no cover - only after the connection failed
                logger.debug("could not unregister %s", lookup, exc_info=True)


def source_column_for(column: str, source: Source, staged: StagedInput) -> str | None:
    """The staged column feeding a canonical column, or None if the input lacks it."""
    if column in source.columns:
        return source.columns[column]
    for candidate in (column, json_key(column)):
        if candidate in staged.columns:
            return candidate
    return None


def check_columns(source: Source, table: Table, staged: StagedInput) -> dict[str, str]:
    """Map canonical columns to staged columns; missing mapped/required columns are errors."""
    found = set(staged.columns)
    for canonical, source_column in source.columns.items():
        if source_column not in found:
            raise DataValidationError(
                f"column {source_column!r} (mapped to {canonical!r}) is not in the input; "
                f"found: {', '.join(staged.columns)}",
                where=staged.file,
            )
    mapping: dict[str, str] = {}
    for column in table.columns:
        if column.name.startswith("_"):
            continue
        src = source_column_for(column.name, source, staged)
        if src is not None:
            mapping[column.name] = src
        elif column.required:
            raise DataValidationError(
                f"required column {column.name!r} is missing; found: {', '.join(staged.columns)}",
                where=staged.file,
            )
    return mapping


def build_validated_select(
    wh: Warehouse,
    source: Source,
    table: Table,
    staged: StagedInput,
    now: Any,
    *,
    defer_json: bool = False,
    normalised: Mapping[str, pa.Table] | None = None,
) -> ValidatedSelect:
    """Build the typed, normalised, checked projections of a staged input.

    Four levels, so each expression is evaluated once per row: raw values (trimmed
    text, or the typed value when the reader already produced the column's type),
    typed and normalised values, one boolean per check, then the failure columns
    built from those booleans. ``sql`` reads the staged relation once; ``failed_sql``
    and :meth:`~ValidatedSelect.typed_sql` are the two halves of a second way to run
    it (failed rows for the quarantine, typed rows to write) that carry no source text
    for the rows that pass and check nothing while writing.

    Parameters
    ----------
    wh
        The warehouse; phone and country columns register lookup tables on it
        (listed in ``lookups``; :meth:`ValidatedSelect.release` unregisters them).
    source, table
        The source (column mapping, rules, time zone) and the canonical table.
    staged
        The staged input.
    now
        Timestamps after this are "in the future".
    defer_json
        Leave the parsing of JSON text out of ``failed_sql`` for rows that fail no
        other check: ``typed_sql()`` casts it strictly, so writing its rows fails if
        any is not JSON (then validate again without deferring). Parsing is most of
        the cost of checking event data, and writing parses it anyway.
    normalised
        Lookup tables of phone / country columns already made with
        :func:`normalisations` (by column); the others are made here.

    Returns
    -------
    ValidatedSelect
        The SQL and the values of the variables it reads.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from datetime import datetime
    >>> from segmint.config import Source
    >>> from segmint.data.readers import stage_frame
    >>> from segmint.data.schema import TABLES
    >>> wh = Warehouse(":memory:")
    >>> data = pa.table({"order_id": ["o1", "o2"], "customer_id": [" c1 ", "c2"],
    ...                  "ordered_at": ["2024-01-01T10:00:00Z"] * 2, "amount": ["-1", "5"]})
    >>> staged = stage_frame(wh, data, "shop")
    >>> shop = Source(name="shop", kind="orders", path="orders.csv")
    >>> v = build_validated_select(wh, shop, TABLES["orders"], staged, datetime(2030, 1, 1))
    >>> v.bind(wh)
    >>> wh.fetchall(f"SELECT customer_id, amount, _fail_rule, _fail_message FROM ({v.sql}) "
    ...             "ORDER BY _ordinal")
    [('c1', -1.0, 'min', 'amount: -1 is below the minimum 0'), ('c2', 5.0, None, None)]
    >>> wh.fetchall(f"SELECT _line, _fail_rule, customer_id, amount FROM ({v.failed_sql})")
    [(1, 'min', ' c1 ', '-1')]
    >>> wh.fetchall(f"SELECT customer_id, amount FROM ({v.typed_sql()}) ORDER BY _ordinal")
    [('c1', -1.0), ('c2', 5.0)]
    >>> v.release(wh)
    """
    mapping = check_columns(source, table, staged)
    rules = effective_rules(source, table)
    params = _Params(staged.table)
    joins: list[str] = []
    lookups: list[str] = []
    typed: dict[str, str] = {}
    checks: list[_Check] = []
    passthrough = [MALFORMED] if staged.malformed_in_rows else []
    sources = [c for c in staged.columns if c not in ("_ordinal", "_line")]
    carried = {c: f"__src_{i}" for i, c in enumerate(sources)}
    raws = [f"s.{quote(c)} AS {quote(carried[c])}" for c in sources]
    values: list[str] = []
    strict_values: list[str] = []  # typed_sql()'s: deferred checks fail the statement
    deferred = False
    for column in table.columns:
        if column.name not in mapping:
            continue
        source_column = mapping[column.name]
        raw_name = quote(f"__raw_{column.name}")
        reader_type = _reader_type(column, staged.column_types.get(source_column))
        if reader_type is None:
            raws.append(f"{_raw(source_column, 's.')} AS {raw_name}")
            value = _typed_expression(column, f"r.{raw_name}", source, params)
        else:
            raws.append(f"s.{quote(source_column)} AS {raw_name}")
            value = _from_reader_type(column, reader_type, f"r.{raw_name}", source, params)
        deferrable = defer_json and reader_type is None and column.type == "json"
        strict_value = f"CAST(r.{raw_name} AS JSON)" if deferrable else value
        raw = f"v.{raw_name}"
        ref = f"v.{quote(column.name)}"
        if column.normalise in ("phone", "country"):
            alias = f"m_{column.name}"
            # Phones written without +country are read in the row's own country.
            region_column = mapping.get("country") if column.normalise == "phone" else None
            if normalised is not None and column.name in normalised:
                lookup = normalised[column.name]
            else:
                lookup = _normalisation(wh, source, staged, mapping, column).table()
            lookup_name = f"_lookup_{staged.table}_{column.name}"
            wh.register(lookup_name, lookup)
            lookups.append(lookup_name)
            row_region = f"r.{quote('__raw_country')}" if region_column else "NULL::VARCHAR"
            joins.append(
                f"LEFT JOIN {lookup_name} {alias} "
                f"ON {alias}.raw = r.{raw_name} AND {alias}.region IS NOT DISTINCT FROM "
                f"{row_region}"
            )
            value = strict_value = f"{alias}.value"
            checks.append(
                _Check(
                    "format",
                    column.name,
                    f"{raw} IS NOT NULL AND {ref} IS NULL",
                    f"'{column.name}: ' || {raw} || ' is not a valid {column.normalise}'",
                )
            )
        values.append(f"{value} AS {quote(column.name)}")
        strict_values.append(f"{strict_value} AS {quote(column.name)}")
        typed[column.name] = ref
        if column.type != "string":  # typed input can fail too (an unsigned out of range)
            checks.append(
                _Check(
                    "type",
                    column.name,
                    f"{raw} IS NOT NULL AND {ref} IS NULL",
                    f"'{column.name}: ' || {raw} || ' is not a valid {column.type}'",
                    deferrable,
                )
            )
            deferred = deferred or deferrable
        rule = rules.get(column.name)
        if rule is not None:
            checks.extend(_rule_checks(column, raw, ref, rule, params, now))
    for column_name, rule in rules.items():
        if column_name not in mapping and rule.required:
            checks.append(_Check("required", column_name, "true", f"'{column_name}: missing'"))
    if table.name == "events" and ("user_id" in typed or "anonymous_id" in typed):
        ids = [typed[c] for c in ("user_id", "anonymous_id") if c in typed]
        checks.append(
            _Check(
                "required",
                "user_id",
                " AND ".join(f"{i} IS NULL" for i in ids),
                "'userId or anonymousId is required'",
            )
        )
    checks.sort(key=lambda c: RULE_ORDER.index(c.rule))
    flags = [f"coalesce({c.condition}, false) AS _f{i}" for i, c in enumerate(checks)]
    level1_columns = ["s._ordinal", "s._line", *(f"s.{p}" for p in passthrough), *raws]
    level1 = f"SELECT {', '.join(level1_columns)} FROM {staged.table} s"
    level2 = f"SELECT {', '.join(['r.*', *values])} FROM ({level1}) r {' '.join(joins)}"
    level3 = f"SELECT {', '.join(['v.*', *flags])} FROM ({level2}) v"
    failed = " OR ".join(f"_f{i}" for i in range(len(checks))) or "false"
    # Rows failing an immediate check; the deferred ones are evaluated for those only.
    immediate = " OR ".join(f"_f{i}" for i, c in enumerate(checks) if not c.deferrable)
    position = ["v._ordinal AS _ordinal", "v._line AS _line"]
    typed_columns = [f"{expr} AS {quote(name)}" for name, expr in typed.items()]
    if checks:
        rule_case = " ".join(f"WHEN _f{i} THEN '{c.rule}'" for i, c in enumerate(checks))
        column_case = " ".join(f"WHEN _f{i} THEN '{c.column}'" for i, c in enumerate(checks))
        messages = ", ".join(f"CASE WHEN _f{i} THEN {c.message} END" for i, c in enumerate(checks))
        failure = [
            f"CASE {rule_case} END AS _fail_rule",
            f"CASE {column_case} END AS _fail_column",
            f"CASE WHEN {failed} THEN concat_ws('; ', {messages}) END AS _fail_message",
        ]
    else:
        failure = [
            "NULL::VARCHAR AS _fail_rule",
            "NULL::VARCHAR AS _fail_column",
            "NULL::VARCHAR AS _fail_message",
        ]
    # One list (NULL for rows that pass) rather than a column per source column: a
    # table of every validated row takes the least room with NULL lists.
    texts = ", ".join(f"CAST(v.{quote(name)} AS VARCHAR)" for name in carried.values())
    select = [
        *position,
        *(f"v.{p} AS {p}" for p in passthrough),
        *typed_columns,
        *failure,
        f"CASE WHEN {failed} THEN [{texts}]::VARCHAR[] END AS _source_values",
    ]
    sql = f"SELECT {', '.join(select)} FROM ({level3}) v"
    source_texts = [
        f"CAST(v.{quote(carried[name])} AS VARCHAR) AS {quote(name)}" for name in sources
    ]
    failed_sql = (
        f"SELECT {', '.join([*position, *failure, *source_texts])} FROM ({level3}) v "
        f"WHERE {immediate or 'false'}"
    )
    typed_around = (
        f"SELECT {', '.join([*position, *typed_columns])} FROM (SELECT "
        f"{', '.join(['r.*', *strict_values])} FROM (SELECT {', '.join(level1_columns)} FROM ",
        f") r {' '.join(joins)}) v",
    )
    return ValidatedSelect(
        sql,
        failed_sql,
        typed_around,
        staged.table,
        params.values,
        list(typed),
        sources,
        lookups,
        deferred,
    )


_WHITESPACE = (" ", "\\t", "\\r", "\\n")
_TRIMMED = "' \t\r\n'"


def _raw(source_column: str, prefix: str = "") -> str:
    """The trimmed text of a source column; empty text counts as missing.

    Text without whitespace at either end (nearly all of it) is used as it is:
    trimming copies every string, checking the ends does not.
    """
    text = f"CAST({prefix}{quote(source_column)} AS VARCHAR)"
    ends = " OR ".join(f"prefix({text}, e'{w}') OR suffix({text}, e'{w}')" for w in _WHITESPACE)
    return (
        f"CASE WHEN {ends} THEN NULLIF(trim({text}, {_TRIMMED}), '') "
        f"WHEN {text} = '' THEN NULL ELSE {text} END"
    )


_INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
_FLOAT_TYPES = {"FLOAT", "DOUBLE"}
_TIMESTAMP_TYPES = {"TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"}


def _reader_type(column: Column, reader_type: str | None) -> str | None:
    """The reader's type of a source column when it can be used without going
    through text (same family as the canonical type), else None."""
    if reader_type is None:
        return None
    family = reader_type.split("(")[0]
    compatible = {
        "integer": _INTEGER_TYPES,
        "float": _INTEGER_TYPES | _FLOAT_TYPES | {"DECIMAL"},
        "boolean": {"BOOLEAN"},
        "date": {"DATE"},
        "timestamp": _TIMESTAMP_TYPES | {"TIMESTAMP WITH TIME ZONE"},
        "json": {"JSON"},
    }.get(column.type, set())
    return reader_type if family in compatible else None


def _from_reader_type(
    column: Column, reader_type: str, value: str, source: Source, params: _Params
) -> str:
    """Typed value of a column the reader already produced in a compatible type."""
    if column.type == "timestamp":
        if reader_type == "TIMESTAMP WITH TIME ZONE":
            return _naive_utc(value)
        local = f"CAST({value} AS TIMESTAMP)"
        if source.timezone == "UTC":
            return local
        return _naive_utc(f"({local} AT TIME ZONE {params.bind(source.timezone)})")
    if column.type == "json":
        return value
    return f"TRY_CAST({value} AS {column.sql_type})"


def _naive_utc(instant: str) -> str:
    """The naive UTC timestamp of a TIMESTAMP WITH TIME ZONE.

    Its microseconds since the epoch are the UTC wall clock's: plain arithmetic, where
    a cast goes through the time-zone library row by row (several times slower).
    """
    return f"make_timestamp(epoch_us({instant}))"


def _typed_expression(column: Column, raw: str, source: Source, params: _Params) -> str:
    if column.type == "string":
        if column.normalise == "email" or column.normalise == "lower":
            return f"lower({raw})"
        return raw
    if column.type == "integer":
        return (
            f"CASE WHEN TRY_CAST({raw} AS DOUBLE) = TRY_CAST({raw} AS BIGINT) "
            f"THEN TRY_CAST({raw} AS BIGINT) END"
        )
    if column.type == "float":
        return f"TRY_CAST({raw} AS DOUBLE)"
    if column.type == "boolean":
        return (
            f"CASE WHEN lower({raw}) IN ('true','t','yes','y','1') THEN true "
            f"WHEN lower({raw}) IN ('false','f','no','n','0') THEN false END"
        )
    if column.type == "json":
        return f"TRY_CAST({raw} AS JSON)"
    if column.type == "date":
        if source.timestamp_format:
            fmt = params.bind(source.timestamp_format)
            return f"coalesce(TRY_CAST({raw} AS DATE), CAST(try_strptime({raw}, {fmt}) AS DATE))"
        return f"TRY_CAST({raw} AS DATE)"
    if column.type == "timestamp":
        return _timestamp_expression(raw, source, params)
    raise AssertionError(f"unhandled column type {column.type}")


def _timestamp_expression(raw: str, source: Source, params: _Params) -> str:
    """Parse a timestamp to naive UTC; naive text is read in the source's time zone.

    Text ending in ``Z`` (UTC, the common case of event data) is parsed directly; other
    text with an offset goes through the time-zone-aware parser.
    """
    if source.timestamp_format:
        local = f"try_strptime({raw}, {params.bind(source.timestamp_format)})"
        local = f"CAST({local} AS TIMESTAMP)"
    else:
        local = f"TRY_CAST({raw} AS TIMESTAMP)"
    with_offset = _naive_utc(f"TRY_CAST({raw} AS TIMESTAMPTZ)")
    if source.timezone == "UTC":
        naive = local
    else:
        naive = _naive_utc(f"({local} AT TIME ZONE {params.bind(source.timezone)})")
    utc = f"TRY_CAST({raw} AS TIMESTAMP)" if source.timestamp_format else local
    has_offset = f"regexp_matches({raw}, '[+-]\\d\\d(:?\\d\\d)?$')"
    return (
        f"CASE WHEN suffix({raw}, 'Z') THEN coalesce({utc}, {with_offset}) "
        f"WHEN {has_offset} THEN {with_offset} ELSE {naive} END"
    )


def _rule_checks(
    column: Column, raw: str, value: str, rule: ColumnRule, params: _Params, now: Any
) -> Iterable[_Check]:
    name = column.name
    if rule.required:
        yield _Check("required", name, f"{raw} IS NULL", f"'{name}: missing'")
    if rule.type is not None and rule.type.value != column.type:
        cast = {
            "integer": "BIGINT",
            "float": "DOUBLE",
            "boolean": "BOOLEAN",
            "date": "DATE",
            "timestamp": "TIMESTAMP",
            "json": "JSON",
            "string": "VARCHAR",
        }[rule.type.value]
        yield _Check(
            "type",
            name,
            f"{raw} IS NOT NULL AND TRY_CAST({raw} AS {cast}) IS NULL",
            f"'{name}: ' || {raw} || ' is not a valid {rule.type.value}'",
        )
    if rule.min is not None:
        bound = params.bind(_plain(rule.min))
        yield _Check(
            "min",
            name,
            f"{value} < {bound}",
            f"'{name}: ' || {raw} || ' is below the minimum ' || {bound}",
        )
    if rule.max is not None:
        bound = params.bind(_plain(rule.max))
        yield _Check(
            "max",
            name,
            f"{value} > {bound}",
            f"'{name}: ' || {raw} || ' is above the maximum ' || {bound}",
        )
    if rule.regex is not None:
        pattern = params.bind(rule.regex)
        yield _Check(
            "regex",
            name,
            f"NOT regexp_matches(CAST({value} AS VARCHAR), {pattern})",
            f"'{name}: ' || {raw} || ' does not match ' || {pattern}",
        )
    if rule.allowed is not None:
        allowed = params.bind(rule.allowed)
        yield _Check(
            "allowed",
            name,
            f"NOT list_contains({allowed}, CAST({value} AS VARCHAR))",
            f"'{name}: ' || {raw} || ' is not one of the allowed values'",
        )
    if rule.not_in_future:
        limit = params.bind(now)
        yield _Check(
            "not_in_future",
            name,
            f"CAST({value} AS TIMESTAMP) > {limit}",
            f"'{name}: ' || {raw} || ' is in the future'",
        )


def _plain(number: float) -> int | float:
    """120.0 -> 120, so messages read naturally."""
    return int(number) if float(number).is_integer() else number


@dataclass(frozen=True)
class Normalisation:
    """The distinct values of a phone or country column of a staged input.

    :meth:`table` normalises them in Python (phone numbers with ``phonenumbers``);
    it touches no database, so it can run in a worker thread while the engine works.
    """

    column: str
    kind: str  # phone | country
    raws: list[str]
    regions: list[str | None]  # the row's country, for phones written without +country
    default_region: str

    def table(self) -> pa.Table:
        """The lookup table ``(raw, region, value)``; ``value`` is NULL where invalid.

        Examples
        --------
        >>> n = Normalisation("phone", "phone", ["030 1234567", "x"], ["DE", None], "US")
        >>> n.table().column("value").to_pylist()
        ['+49301234567', None]
        """
        if self.kind == "phone":
            values = [
                normalise_phone(v, normalise_country(r) or self.default_region)
                for v, r in zip(self.raws, self.regions, strict=True)
            ]
        else:
            values = [normalise_country(v) for v in self.raws]
        return pa.table(
            {
                "raw": pa.array(self.raws, pa.string()),
                "region": pa.array(self.regions, pa.string()),
                "value": pa.array(values, pa.string()),
            }
        )


def normalisations(
    wh: Warehouse, source: Source, table: Table, staged: StagedInput
) -> list[Normalisation]:
    """The phone / country columns of a staged input with their distinct values.

    Raises
    ------
    DataValidationError
        The input lacks a required or mapped column (as :func:`check_columns`).
    """
    mapping = check_columns(source, table, staged)
    return [
        _normalisation(wh, source, staged, mapping, column)
        for column in table.columns
        if column.normalise in ("phone", "country") and column.name in mapping
    ]


def _normalisation(
    wh: Warehouse, source: Source, staged: StagedInput, mapping: dict[str, str], column: Column
) -> Normalisation:
    if staged.single_scan:
        raise AssertionError("normalisation lookups need a replayable staged input")
    raw = _raw(mapping[column.name])
    region_column = mapping.get("country") if column.normalise == "phone" else None
    region = _raw(region_column) if region_column else "NULL::VARCHAR"
    pairs = wh.fetchall(
        f"SELECT DISTINCT {raw}, {region} FROM {staged.table} WHERE {raw} IS NOT NULL"
    )
    return Normalisation(
        column.name,
        str(column.normalise),
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        source.default_phone_region,
    )
