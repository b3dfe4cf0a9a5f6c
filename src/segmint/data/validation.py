"""Validation of staged rows: typing, normalisation and rule checks, all in SQL.

For a staged input this builds one ``SELECT`` that yields, per row, the typed and
normalised canonical columns plus the first failed rule, its column and a message
listing every failure. Rule constants from the project file are bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from segmint.config import ColumnRule, Source
from segmint.data.normalise import normalise_country, normalise_phone
from segmint.data.readers import MALFORMED, StagedInput, json_key
from segmint.data.schema import Column, Table
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import DataValidationError

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
    values: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"${name}"


@dataclass(frozen=True)
class _Check:
    rule: str
    column: str
    condition: str
    message: str  # SQL expression producing the message text


@dataclass(frozen=True)
class ValidatedSelect:
    """The SQL producing typed rows with failure columns, and its parameters.

    Besides ``_ordinal``, ``_line``, the typed ``columns`` and ``_fail_rule`` /
    ``_fail_column`` / ``_fail_message``, each row has ``_source_values``: for a failed
    row only (NULL for rows that pass), the text of its ``source_columns`` in order, for
    the quarantine. A JSON Lines input also passes ``_malformed`` through.
    """

    sql: str
    params: dict[str, Any]
    columns: list[str]  # canonical columns present in the output
    source_columns: list[str] = field(default_factory=list)
    lookups: list[str] = field(default_factory=list)  # registered tables the SQL joins


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
    wh: Warehouse, source: Source, table: Table, staged: StagedInput, now: Any
) -> ValidatedSelect:
    """Build the typed, normalised, checked projection of a staged input.

    The staged relation is read once. Four levels, so each expression is evaluated
    once per row: raw values (trimmed text, or the typed value when the reader
    already produced the column's type), typed and normalised values, one boolean
    per check, then the failure columns built from those booleans.

    Parameters
    ----------
    wh
        The warehouse; phone and country columns register lookup tables on it
        (listed in ``lookups``, to unregister once the SQL has run).
    source, table
        The source (column mapping, rules, time zone) and the canonical table.
    staged
        The staged input.
    now
        Timestamps after this are "in the future".

    Returns
    -------
    ValidatedSelect
        The SQL and its bound parameters.

    Examples
    --------
    >>> import pyarrow as pa
    >>> from datetime import datetime
    >>> from segmint.config import Source
    >>> from segmint.data.readers import stage_frame
    >>> from segmint.data.schema import TABLES
    >>> wh = Warehouse(":memory:")
    >>> data = pa.table({"order_id": ["o1"], "customer_id": [" c1 "],
    ...                  "ordered_at": ["2024-01-01T10:00:00Z"], "amount": ["-1"]})
    >>> staged = stage_frame(wh, data, "shop")
    >>> shop = Source(name="shop", kind="orders", path="orders.csv")
    >>> v = build_validated_select(wh, shop, TABLES["orders"], staged, datetime(2030, 1, 1))
    >>> wh.fetchall(f"SELECT customer_id, amount, _fail_rule, _fail_message FROM ({v.sql})",
    ...             v.params)
    [('c1', -1.0, 'min', 'amount: -1 is below the minimum 0')]
    """
    mapping = check_columns(source, table, staged)
    rules = effective_rules(source, table)
    params = _Params()
    joins: list[str] = []
    lookups: list[str] = []
    typed: dict[str, str] = {}
    checks: list[_Check] = []
    passthrough = [MALFORMED] if staged.malformed_in_rows else []
    sources = [c for c in staged.columns if c not in ("_ordinal", "_line")]
    carried = {c: f"__src_{i}" for i, c in enumerate(sources)}
    raws = [f"s.{quote(c)} AS {quote(carried[c])}" for c in sources]
    values: list[str] = []
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
        raw = f"v.{raw_name}"
        ref = f"v.{quote(column.name)}"
        if column.normalise in ("phone", "country"):
            alias = f"m_{column.name}"
            # Phones written without +country are read in the row's own country.
            region_column = mapping.get("country") if column.normalise == "phone" else None
            region = _raw(region_column) if region_column else "NULL::VARCHAR"
            if staged.single_scan:
                raise AssertionError("normalisation lookups need a replayable staged input")
            lookup = _normalisation_lookup(
                wh, staged, _raw(mapping[column.name]), region, column, source
            )
            lookup_name = f"_lookup_{staged.table}_{column.name}"
            wh.register(lookup_name, lookup)
            lookups.append(lookup_name)
            row_region = f"r.{quote('__raw_country')}" if region_column else "NULL::VARCHAR"
            joins.append(
                f"LEFT JOIN {lookup_name} {alias} "
                f"ON {alias}.raw = r.{raw_name} AND {alias}.region IS NOT DISTINCT FROM "
                f"{row_region}"
            )
            value = f"{alias}.value"
            checks.append(
                _Check(
                    "format",
                    column.name,
                    f"{raw} IS NOT NULL AND {ref} IS NULL",
                    f"'{column.name}: ' || {raw} || ' is not a valid {column.normalise}'",
                )
            )
        values.append(f"{value} AS {quote(column.name)}")
        typed[column.name] = ref
        if column.type != "string":  # typed input can fail too (an unsigned out of range)
            checks.append(
                _Check(
                    "type",
                    column.name,
                    f"{raw} IS NOT NULL AND {ref} IS NULL",
                    f"'{column.name}: ' || {raw} || ' is not a valid {column.type}'",
                )
            )
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
    level1 = ", ".join(["s._ordinal", "s._line", *(f"s.{p}" for p in passthrough), *raws])
    level1 = f"SELECT {level1} FROM {staged.table} s"
    level2 = f"SELECT {', '.join(['r.*', *values])} FROM ({level1}) r {' '.join(joins)}"
    level3 = f"SELECT {', '.join(['v.*', *flags])} FROM ({level2}) v"
    failed = " OR ".join(f"_f{i}" for i in range(len(checks))) or "false"
    select = ["v._ordinal AS _ordinal", "v._line AS _line"]
    select += [f"v.{p} AS {p}" for p in passthrough]
    select += [f"{expr} AS {quote(name)}" for name, expr in typed.items()]
    if checks:
        rule_case = " ".join(f"WHEN _f{i} THEN '{c.rule}'" for i, c in enumerate(checks))
        column_case = " ".join(f"WHEN _f{i} THEN '{c.column}'" for i, c in enumerate(checks))
        messages = ", ".join(f"CASE WHEN _f{i} THEN {c.message} END" for i, c in enumerate(checks))
        select += [
            f"CASE {rule_case} END AS _fail_rule",
            f"CASE {column_case} END AS _fail_column",
            f"CASE WHEN {failed} THEN concat_ws('; ', {messages}) END AS _fail_message",
        ]
    else:
        select += [
            "NULL::VARCHAR AS _fail_rule",
            "NULL::VARCHAR AS _fail_column",
            "NULL::VARCHAR AS _fail_message",
        ]
    # One list (NULL for rows that pass) rather than a column per source column: the
    # validated table holds every row, and NULL lists take the least room.
    texts = ", ".join(f"CAST(v.{quote(name)} AS VARCHAR)" for name in carried.values())
    select.append(f"CASE WHEN {failed} THEN [{texts}]::VARCHAR[] END AS _source_values")
    sql = f"SELECT {', '.join(select)} FROM ({level3}) v"
    return ValidatedSelect(sql, params.values, list(typed), sources, lookups)


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
        if reader_type == "TIMESTAMP WITH TIME ZONE" or source.timezone == "UTC":
            return f"CAST({value} AS TIMESTAMP)"
        local = f"CAST({value} AS TIMESTAMP)"
        return f"CAST(({local} AT TIME ZONE {params.bind(source.timezone)}) AS TIMESTAMP)"
    if column.type == "json":
        return value
    return f"TRY_CAST({value} AS {column.sql_type})"


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
    with_offset = f"CAST(TRY_CAST({raw} AS TIMESTAMPTZ) AS TIMESTAMP)"
    if source.timezone == "UTC":
        naive = local
    else:
        naive = f"CAST(({local} AT TIME ZONE {params.bind(source.timezone)}) AS TIMESTAMP)"
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


def _normalisation_lookup(
    wh: Warehouse, staged: StagedInput, raw: str, region: str, column: Column, source: Source
) -> pa.Table:
    """Normalise the distinct (value, region) pairs of a phone/country column in Python."""
    pairs = wh.fetchall(
        f"SELECT DISTINCT {raw}, {region} FROM {staged.table} WHERE {raw} IS NOT NULL"
    )
    raws = [p[0] for p in pairs]
    regions = [p[1] for p in pairs]
    if column.normalise == "phone":
        values = [
            normalise_phone(v, normalise_country(r) or source.default_phone_region)
            for v, r in pairs
        ]
    else:
        values = [normalise_country(v) for v in raws]
    return pa.table(
        {
            "raw": pa.array(raws, pa.string()),
            "region": pa.array(regions, pa.string()),
            "value": pa.array(values, pa.string()),
        }
    )
