"""Computing feature snapshots in the engine and storing them in the ``features`` table.

:func:`compute_features` renders the definitions into one ``CREATE TABLE AS``
statement (hash aggregations and two window passes, no per-customer Python and no
correlated subqueries), so the cost grows linearly with the rows of the canonical
tables. User-defined features run first, one statement each, so that an error is
reported against the feature that caused it.

The ``features`` table holds one row per customer and snapshot: ``customer_id``,
``snapshot_id``, ``as_of`` and one column per feature. A snapshot computed again
under the same id replaces the earlier one; a new feature adds a column (earlier
snapshots read ``NULL`` there).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from segmint.data.identity.graph import ensure_identity_tables
from segmint.data.schema import SQL_TYPES, TABLES, Column, Table, register_table
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import EngineError, UserInputError
from segmint.features.definitions import (
    BUILTIN_DEFINITIONS,
    PERSON_KEY,
    FeatureDefinition,
    as_of_query,
    check_name,
    parameters_of,
    render_query,
    user_feature,
)
from segmint.features.lifecycle import LifecycleThresholds, lifecycle_definition

__all__ = [
    "FEATURES_TABLE",
    "KEY_COLUMNS",
    "FeatureSet",
    "compute_features",
    "default_as_of",
    "default_definitions",
]

logger = logging.getLogger(__name__)

#: The table feature snapshots are written to.
FEATURES_TABLE = "features"
#: Columns of the features table that identify a row and are not features.
KEY_COLUMNS: tuple[str, ...] = (PERSON_KEY, "snapshot_id", "as_of")

_STAGE = "_segmint_features_stage"
_USER_TABLE = "_segmint_user_feature_{}"
_NEEDED_TABLES = ("customers", "orders", "order_items", "products", "events")
_NUMERIC_TYPES = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE")
_UNSIGNED = ("UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT")


def default_definitions(*, lifecycle: LifecycleThresholds | None = None) -> list[FeatureDefinition]:
    """The built-in features plus ``lifecycle_stage``.

    Examples
    --------
    >>> names = [d.name for d in default_definitions()]
    >>> names[:3], names[-1]
    (['recency_days', 'frequency', 'monetary'], 'lifecycle_stage')
    """
    return [*BUILTIN_DEFINITIONS, lifecycle_definition(lifecycle)]


def default_as_of(wh: Warehouse) -> datetime:
    """The newest order or event timestamp in the warehouse, or now (UTC) when there is none.

    Examples
    --------
    >>> from segmint.data.store import ensure_tables
    >>> wh = Warehouse(":memory:"); ensure_tables(wh)
    >>> wh.execute("INSERT INTO orders (order_id, customer_id, ordered_at, amount) "
    ...            "VALUES ('o1', 'c1', TIMESTAMP '2024-03-01 12:00:00', 10)")
    >>> default_as_of(wh)
    datetime.datetime(2024, 3, 1, 12, 0)
    """
    newest = wh.scalar(
        'SELECT greatest((SELECT max(ordered_at) FROM orders), (SELECT max("timestamp") '
        "FROM events))"
    )
    if newest is None:
        return datetime.now(UTC).replace(tzinfo=None)
    return _naive_utc(newest)


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


# --------------------------------------------------------------------------- result


@dataclass(frozen=True)
class FeatureSet:
    """One snapshot of features in the ``features`` table.

    Attributes
    ----------
    warehouse
        Where the snapshot lives.
    snapshot_id
        Its identifier in the ``snapshot_id`` column.
    as_of
        The as-of timestamp (naive UTC) it was computed for.
    definitions
        The features, in column order.
    table
        The features table.

    Examples
    --------
    >>> from segmint.data.store import ensure_tables
    >>> wh = Warehouse(":memory:"); ensure_tables(wh)
    >>> wh.execute("INSERT INTO customers (customer_id) VALUES ('c1')")
    >>> fs = compute_features(wh, as_of=datetime(2024, 1, 1))
    >>> fs.frame()[["customer_id", "frequency", "lifecycle_stage"]].to_dict("records")
    [{'customer_id': 'c1', 'frequency': 0, 'lifecycle_stage': 'prospect'}]
    """

    warehouse: Warehouse
    snapshot_id: str
    as_of: datetime
    definitions: tuple[FeatureDefinition, ...]
    table: str = FEATURES_TABLE

    @property
    def columns(self) -> list[str]:
        """Feature column names, in order (without the key columns)."""
        return [d.name for d in self.definitions]

    @property
    def kinds(self) -> dict[str, str]:
        """Feature name -> ``numeric`` or ``categorical``."""
        return {d.name: d.kind for d in self.definitions}

    @property
    def transform_hints(self) -> dict[str, str]:
        """Feature name -> default transform hint (for ``FeatureTransformer(hints=...)``)."""
        return {d.name: d.transform for d in self.definitions}

    def _select(self) -> str:
        cols = ", ".join(quote(c) for c in (*KEY_COLUMNS, *self.columns))
        return (
            f"SELECT {cols} FROM {quote(self.table)} WHERE snapshot_id = ? "
            f"ORDER BY {quote(PERSON_KEY)}"
        )

    def arrow(self) -> pa.Table:
        """The snapshot as an Arrow table, one row per customer, ordered by customer."""
        return self.warehouse.arrow(self._select(), [self.snapshot_id])

    def frame(self) -> pd.DataFrame:
        """The snapshot as a pandas DataFrame, one row per customer, ordered by customer."""
        return self.warehouse.df(self._select(), [self.snapshot_id])

    def __len__(self) -> int:
        return int(
            self.warehouse.scalar(
                f"SELECT count(*) FROM {quote(self.table)} WHERE snapshot_id = ?",
                [self.snapshot_id],
            )
        )

    def dictionary(self) -> pd.DataFrame:
        """One row per feature: name, kind, unit, description, sources, transform hint, SQL."""
        return pd.DataFrame(
            [
                {
                    "name": d.name,
                    "kind": d.kind,
                    "unit": d.unit,
                    "description": d.description,
                    "sources": ", ".join(d.sources),
                    "transform": d.transform,
                    "sql": d.query if d.query is not None else d.sql(),
                }
                for d in self.definitions
            ],
            columns=["name", "kind", "unit", "description", "sources", "transform", "sql"],
        )


# --------------------------------------------------------------------------- compute


def compute_features(
    wh: Warehouse,
    *,
    as_of: datetime | None = None,
    definitions: Sequence[FeatureDefinition] | None = None,
    user_features: Mapping[str, str] | None = None,
    snapshot: str | None = None,
    session_gap_minutes: float = 30.0,
) -> FeatureSet:
    """Compute a feature snapshot in the engine and store it in the ``features`` table.

    Parameters
    ----------
    wh
        The warehouse holding the canonical tables.
    as_of
        Only data up to this timestamp is used (naive = UTC; aware ones are converted).
        Default: :func:`default_as_of` (newest order or event, else now).
    definitions
        Features to compute. Default: :func:`default_definitions`.
    user_features
        Name -> ``SELECT customer_id, <expr> AS value FROM ... GROUP BY customer_id`` over
        the canonical tables, seen as of ``as_of`` (see
        :func:`~segmint.features.definitions.user_feature`); left-joined by customer.
    snapshot
        Snapshot id. Default: ``as_of`` in ISO format. Recomputing a snapshot replaces it.
    session_gap_minutes
        Inactivity that ends a session.

    Returns
    -------
    FeatureSet

    Raises
    ------
    UserInputError
        A user feature or definition is invalid or fails in the engine (the message names
        the feature and carries the database's message).

    Examples
    --------
    >>> from segmint.data.store import ensure_tables
    >>> wh = Warehouse(":memory:"); ensure_tables(wh)
    >>> wh.execute("INSERT INTO customers (customer_id) VALUES ('c1'), ('c2')")
    >>> wh.execute("INSERT INTO orders (order_id, customer_id, ordered_at, amount) VALUES "
    ...            "('o1', 'c1', TIMESTAMP '2024-01-01', 40), ('o2', 'c1', "
    ...            "TIMESTAMP '2024-01-11', 60)")
    >>> fs = compute_features(wh, as_of=datetime(2024, 1, 21), user_features={
    ...     "big_orders": "SELECT customer_id, count(*) AS value FROM orders "
    ...                   "WHERE amount > 50 GROUP BY customer_id"})
    >>> fs.frame()[["customer_id", "recency_days", "monetary", "big_orders"]].values.tolist()
    [['c1', 10.0, 100.0, 1.0], ['c2', nan, 0.0, nan]]
    """
    missing = [t for t in _NEEDED_TABLES if not wh.has_table(t)]
    if missing:
        raise UserInputError(
            f"the warehouse has no table {', '.join(missing)}: ingest data first",
            where=wh.path,
        )
    ensure_identity_tables(wh)  # features follow resolved persons (see definitions)
    if isinstance(session_gap_minutes, bool) or not isinstance(session_gap_minutes, int | float):
        raise UserInputError("session_gap_minutes must be a number", where="session_gap_minutes")
    if not math.isfinite(session_gap_minutes) or session_gap_minutes <= 0:
        raise UserInputError("session_gap_minutes must be > 0", where="session_gap_minutes")
    as_of = default_as_of(wh) if as_of is None else _naive_utc(as_of)
    snapshot_id = as_of.isoformat() if snapshot is None else snapshot
    if not isinstance(snapshot_id, str) or not snapshot_id.strip():
        raise UserInputError("snapshot id must be a non-empty string", where="snapshot")

    defs = list(default_definitions() if definitions is None else definitions)
    if not defs and not user_features:
        raise UserInputError("no features to compute", where="definitions")
    names = {d.name for d in defs}
    user_defs = []
    for name, query in (user_features or {}).items():
        check_name(name)
        if name in names:
            raise UserInputError(
                f"user feature {name!r} has the name of another feature", where=f"features.{name}"
            )
        user_defs.append(user_feature(name, query))
    values: dict[str, Any] = {
        "as_of": as_of,
        "session_gap_seconds": float(session_gap_minutes) * 60.0,
        "snapshot_id": snapshot_id,
    }
    logger.info(
        "computing %d features as of %s (snapshot %s)",
        len(defs) + len(user_defs),
        as_of,
        snapshot_id,
    )
    tables: dict[str, str] = {}
    try:
        user_defs = [_run_user_feature(wh, d, values, tables) for d in user_defs]
        all_defs = [*defs, *user_defs]
        query = render_query(all_defs, tables=tables)
        key = quote(PERSON_KEY)
        outputs = "".join(f", {quote(d.name)}" for d in all_defs)
        statement = (
            f"CREATE OR REPLACE TEMP TABLE {_STAGE} AS\n"
            f"SELECT {key}, CAST($snapshot_id AS VARCHAR) AS snapshot_id, "
            f"CAST($as_of AS TIMESTAMP) AS as_of{outputs}\nFROM (\n{query}\n) AS computed"
        )
        wh.execute(statement, parameters_of(statement, values))
        _store(wh, snapshot_id)
    finally:
        for table in tables.values():
            wh.execute(f"DROP TABLE IF EXISTS {quote(table)}")
        wh.execute(f"DROP TABLE IF EXISTS {_STAGE}")
    _register(wh, all_defs)
    features = FeatureSet(wh, snapshot_id, as_of, tuple(all_defs))
    logger.info("feature snapshot %s: %d customers", snapshot_id, len(features))
    return features


def _run_user_feature(
    wh: Warehouse,
    definition: FeatureDefinition,
    values: Mapping[str, Any],
    tables: dict[str, str],
) -> FeatureDefinition:
    """Materialise a user feature, check its shape, and return it with its kind."""
    name = definition.name
    where = f"features.{name}"
    table = _USER_TABLE.format(name)
    inner, _ = as_of_query(name, definition.query or "")
    statement = f"CREATE OR REPLACE TEMP TABLE {quote(table)} AS SELECT * FROM ({inner}) AS q"
    try:
        wh.execute(statement, parameters_of(statement, values))
    except (EngineError, UserInputError) as e:
        raise UserInputError(f"user feature {name!r} failed: {e}", where=where) from e
    tables[name] = table
    described = {row[0]: str(row[1]) for row in wh.fetchall(f"DESCRIBE {quote(table)}")}
    if set(described) != {PERSON_KEY, "value"}:
        raise UserInputError(
            f"user feature {name!r} must return exactly the columns {PERSON_KEY} and value, "
            f"not {', '.join(described)}",
            where=where,
        )
    if described[PERSON_KEY] != "VARCHAR":
        wh.execute(
            f"CREATE OR REPLACE TEMP TABLE {quote(table)} AS SELECT "
            f"CAST({quote(PERSON_KEY)} AS VARCHAR) AS {quote(PERSON_KEY)}, value "
            f"FROM {quote(table)}"
        )
    duplicates = wh.scalar(
        f"SELECT count(*) - count(DISTINCT {quote(PERSON_KEY)}) FROM {quote(table)}"
    )
    if duplicates:
        raise UserInputError(
            f"user feature {name!r} returns {duplicates} repeated {PERSON_KEY} rows: "
            f"GROUP BY {PERSON_KEY}",
            where=where,
        )
    value_type = described["value"]
    if value_type in ("VARCHAR", "BOOLEAN") or value_type.startswith("ENUM"):
        kind = "categorical"
    elif (
        value_type in _NUMERIC_TYPES or value_type in _UNSIGNED or value_type.startswith("DECIMAL")
    ):
        kind = "numeric"
    else:
        raise UserInputError(
            f"user feature {name!r} returns a {value_type} value: return a number, text or boolean",
            where=where,
        )
    logger.debug("user feature %s: %s value", name, kind)
    return replace(
        definition,
        kind=kind,  # type: ignore[arg-type]
        transform="onehot" if kind == "categorical" else definition.transform,
    )


def _column_types(wh: Warehouse, table: str) -> dict[str, str]:
    return {
        row[0]: str(row[1])
        for row in wh.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        )
    }


def _store(wh: Warehouse, snapshot_id: str) -> None:
    """Move the staged snapshot into the features table, replacing one of the same id."""
    target = quote(FEATURES_TABLE)
    with wh.transaction():
        # An empty features table (e.g. created from the data dictionary by
        # ensure_tables) holds nothing to keep: take the staged columns as they are.
        if not wh.has_table(FEATURES_TABLE) or not wh.scalar(
            f"SELECT count(*) > 0 FROM (SELECT 1 FROM {target} LIMIT 1) AS t"
        ):
            wh.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {_STAGE}")
            return
        existing = _column_types(wh, FEATURES_TABLE)
        for column, sql_type in _column_types(wh, _STAGE).items():
            if column not in existing:
                wh.execute(f"ALTER TABLE {target} ADD COLUMN {quote(column)} {sql_type}")
            elif existing[column] != sql_type:
                raise UserInputError(
                    f"feature {column!r} is {sql_type} now but {existing[column]} in earlier "
                    f"snapshots of the {FEATURES_TABLE} table: rename the feature",
                    where=f"features.{column}",
                )
        wh.execute(f"DELETE FROM {target} WHERE snapshot_id = ?", [snapshot_id])
        wh.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {_STAGE}")


def _logical_type(sql_type: str) -> str:
    by_sql = {v: k for k, v in SQL_TYPES.items()}
    if sql_type in by_sql:
        return by_sql[sql_type]
    if sql_type in _NUMERIC_TYPES[:5] or sql_type in _UNSIGNED:
        return "integer"
    if sql_type in _NUMERIC_TYPES or sql_type.startswith("DECIMAL"):
        return "float"
    return "string"


def _register(wh: Warehouse, definitions: Sequence[FeatureDefinition]) -> None:
    """Describe the features table (every column it has) in the data dictionary."""
    described = {d.name: d for d in definitions}
    previous = TABLES.get(FEATURES_TABLE)
    meanings = {
        PERSON_KEY: "Person the features describe.",
        "snapshot_id": "Snapshot the row belongs to.",
        "as_of": "Only data up to this timestamp (UTC) was used.",
    }
    columns = []
    for name, sql_type in _column_types(wh, FEATURES_TABLE).items():
        if name in described:
            meaning = described[name].description
        elif name in meanings:
            meaning = meanings[name]
        elif previous is not None and name in {c.name for c in previous.columns}:
            meaning = previous.column(name).meaning
        else:
            meaning = "Feature computed by an earlier snapshot."
        columns.append(Column(name, _logical_type(sql_type), meaning, pii=name == PERSON_KEY))
    register_table(
        Table(
            FEATURES_TABLE,
            "Feature snapshots: one row per customer and snapshot, one column per feature.",
            tuple(columns),
            key=(PERSON_KEY, "snapshot_id"),
            timestamp_column="as_of",
        )
    )
