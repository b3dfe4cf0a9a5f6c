"""Imputation of missing values, flagged in ``_imputed`` so later stages know.

* ``median`` / ``mode``: the statistic of the observed (non-imputed) values of the
  whole table, computed in the engine;
* ``knn``: :class:`sklearn.impute.KNNImputer` over the table's numeric columns, with
  donors drawn from a bounded sample of complete rows so the cost stays linear.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from segmint.config import ImputeStrategy
from segmint.data.schema import Table
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import ConfigError

logger = logging.getLogger(__name__)

NUMERIC = ("integer", "float")
KNN_DONORS = 20_000


def _observed(column: str) -> str:
    return (
        f"{quote(column)} IS NOT NULL AND NOT "
        f"list_contains(coalesce(_imputed, []::VARCHAR[]), '{column}')"
    )


def _flag(column: str) -> str:
    return f"_imputed = list_append(coalesce(_imputed, []::VARCHAR[]), '{column}')"


def impute(wh: Warehouse, table: Table, strategies: dict[str, ImputeStrategy]) -> dict[str, int]:
    """Fill missing values per strategy; returns the number of values imputed per column."""
    counts: dict[str, int] = {}
    name = quote(table.name)
    knn_columns = [c for c, s in strategies.items() if s is ImputeStrategy.knn]
    for column, strategy in strategies.items():
        kind = table.column(column).type
        if strategy is ImputeStrategy.knn:
            continue
        if strategy is ImputeStrategy.median and kind not in (*NUMERIC, "date", "timestamp"):
            raise ConfigError(
                f"median imputation needs a numeric column; {column!r} is {kind}",
                where=f"impute.{column}",
            )
        missing = int(wh.scalar(f"SELECT count(*) FROM {name} WHERE {quote(column)} IS NULL"))
        if not missing:
            continue
        function = "median" if strategy is ImputeStrategy.median else "mode"
        value = wh.scalar(
            f"SELECT {function}({quote(column)}) FROM {name} WHERE {_observed(column)}"
        )
        if value is None:
            logger.warning("cannot impute %s.%s: no observed values", table.name, column)
            continue
        if kind == "integer":
            value = int(round(value))
        wh.execute(
            f"UPDATE {name} SET {quote(column)} = ?, {_flag(column)} WHERE {quote(column)} IS NULL",
            [value],
        )
        counts[column] = missing
    if knn_columns:
        counts.update(_impute_knn(wh, table, knn_columns))
    return counts


def _impute_knn(wh: Warehouse, table: Table, targets: list[str]) -> dict[str, int]:
    from sklearn.impute import KNNImputer

    for column in targets:
        if table.column(column).type not in NUMERIC:
            raise ConfigError(
                f"knn imputation needs a numeric column; {column!r} is {table.column(column).type}",
                where=f"impute.{column}",
            )
    name = quote(table.name)
    features = [c.name for c in table.columns if c.type in NUMERIC and not c.name.startswith("_")]
    feature_sql = ", ".join(f"CAST({quote(c)} AS DOUBLE) AS {quote(c)}" for c in features)
    any_missing = " OR ".join(f"{quote(c)} IS NULL" for c in targets)
    todo = wh.arrow(f"SELECT rowid AS _row, {feature_sql} FROM {name} WHERE {any_missing}")
    if todo.num_rows == 0:
        return {}
    complete = " AND ".join(_observed(c) for c in targets)
    donors = wh.arrow(
        f"SELECT {feature_sql} FROM {name} WHERE {complete} USING SAMPLE reservoir({KNN_DONORS} "
        f"ROWS) REPEATABLE (42)"
    )
    if donors.num_rows == 0:
        logger.warning("cannot KNN-impute %s: no complete rows", table.name)
        return {}
    matrix = np.column_stack([todo.column(c).to_numpy(zero_copy_only=False) for c in features])
    donor_matrix = np.column_stack(
        [donors.column(c).to_numpy(zero_copy_only=False) for c in features]
    )
    # Columns empty in every donor can't inform distances; KNNImputer would drop them.
    usable = ~np.all(np.isnan(donor_matrix), axis=0)
    imputer = KNNImputer(n_neighbors=5).fit(donor_matrix[:, usable])
    filled = matrix.copy()
    filled[:, usable] = imputer.transform(matrix[:, usable])
    counts: dict[str, int] = {}
    for column in targets:
        index = features.index(column)
        missing = np.isnan(matrix[:, index])
        values = filled[missing, index]
        if table.column(column).type == "integer":
            values = np.round(values)
        update = pa.table({"_row": todo.column("_row").to_numpy()[missing], "value": values})
        wh.register("_knn_values", update)
        try:
            wh.execute(
                f"UPDATE {name} SET {quote(column)} = v.value, {_flag(column)} "
                f"FROM _knn_values v WHERE {name}.rowid = v._row"
            )
        finally:
            wh.unregister("_knn_values")
        counts[column] = int(missing.sum())
    return counts
