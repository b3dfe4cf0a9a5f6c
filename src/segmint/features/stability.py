"""Feature stability between two snapshots: the population stability index (PSI).

``PSI = sum over bins of (c - r) * ln(c / r)`` where ``r`` and ``c`` are the shares
of the reference and the current snapshot in a bin. Each term is >= 0, so PSI is
never negative, and it is 0 for identical distributions.

Bins
    Numeric: the deciles of the reference (``bins - 1`` inner edges, from
    ``numpy.quantile``; repeated edges are merged), bins closed on the right, plus one
    bin for missing values. Categorical: one bin per level seen in either snapshot,
    plus one for missing values.
Empty bins
    A share of 0 is raised to ``EPSILON`` (1e-4) so that the logarithm is defined.
Reading
    ``PSI < 0.1`` stable, ``0.1 <= PSI <= 0.2`` moderate shift, ``PSI > 0.2``
    significant shift (the usual credit-scoring rule of thumb).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import UserInputError
from segmint.features.compute import FEATURES_TABLE, KEY_COLUMNS

__all__ = [
    "EPSILON",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "feature_stability",
    "psi",
    "psi_status",
]

logger = logging.getLogger(__name__)

#: Share given to an empty bin.
EPSILON = 1e-4
#: PSI from which a shift is moderate.
PSI_MODERATE = 0.1
#: PSI above which a shift is significant.
PSI_SIGNIFICANT = 0.2

_CATEGORICAL_SQL = ("VARCHAR", "BOOLEAN")


def _is_categorical(values: npt.NDArray[Any]) -> bool:
    return values.dtype.kind in "OUSb"


def _shares(counts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    total = counts.sum()
    return np.maximum(counts / total, EPSILON)


def _numeric_counts(
    reference: npt.NDArray[Any], current: npt.NDArray[Any], bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    try:
        ref = np.asarray(reference, dtype=np.float64)
        cur = np.asarray(current, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UserInputError(f"numeric PSI needs numbers: {e}") from e
    finite = ref[np.isfinite(ref)]
    if finite.size:
        inner = np.quantile(finite, np.arange(1, bins) / bins)
        edges = np.unique(inner)
    else:
        edges = np.empty(0)

    def counts(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        missing = np.isnan(values)
        index = np.searchsorted(edges, values[~missing], side="left")
        binned = np.bincount(index, minlength=edges.size + 1).astype(np.float64)
        return np.append(binned, float(missing.sum()))

    return counts(ref), counts(cur)


def _categorical_counts(
    reference: npt.NDArray[Any], current: npt.NDArray[Any]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    ref = pd.Series(reference, dtype=object)
    cur = pd.Series(current, dtype=object)
    ref_missing, cur_missing = ref.isna(), cur.isna()
    ref_levels = ref[~ref_missing].astype(str).value_counts()
    cur_levels = cur[~cur_missing].astype(str).value_counts()
    levels = sorted(set(ref_levels.index) | set(cur_levels.index))
    r = [float(ref_levels.get(level, 0)) for level in levels] + [float(ref_missing.sum())]
    c = [float(cur_levels.get(level, 0)) for level in levels] + [float(cur_missing.sum())]
    return np.asarray(r), np.asarray(c)


def psi(
    reference: npt.ArrayLike,
    current: npt.ArrayLike,
    bins: int = 10,
    *,
    categorical: bool | None = None,
) -> float:
    """Population stability index of ``current`` against ``reference``.

    Parameters
    ----------
    reference, current
        One value per customer; NaN / None are missing values (a bin of their own).
    bins
        Number of quantile bins of the reference (numeric values).
    categorical
        Compare per level instead of per bin. Default: for text, object and boolean
        arrays.

    Returns
    -------
    float
        PSI >= 0.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=5000), rng.normal(size=5000)
    >>> psi(a, a)
    0.0
    >>> psi(a, b) < 0.1, psi(a, b + 1.0) > 0.2
    (True, True)
    >>> round(psi(np.array(["x", "y"] * 50), np.array(["x"] * 100)), 2)
    4.6
    """
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 2:
        raise UserInputError(f"bins must be an integer >= 2, not {bins!r}", where="bins")
    ref = np.asarray(reference)
    cur = np.asarray(current)
    if ref.ndim != 1 or cur.ndim != 1:
        raise UserInputError("PSI compares two one-dimensional arrays")
    if ref.size == 0 or cur.size == 0:
        raise UserInputError("PSI needs at least one value in each array")
    if categorical is None:
        categorical = _is_categorical(ref) or _is_categorical(cur)
    if categorical:
        ref_counts, cur_counts = _categorical_counts(ref, cur)
    else:
        ref_counts, cur_counts = _numeric_counts(ref, cur, int(bins))
    r, c = _shares(ref_counts), _shares(cur_counts)
    return float(np.sum((c - r) * np.log(c / r)))


def psi_status(value: float) -> str:
    """``stable`` (< 0.1), ``moderate`` (0.1 to 0.2) or ``significant`` (> 0.2).

    Examples
    --------
    >>> psi_status(0.05), psi_status(0.15), psi_status(0.5)
    ('stable', 'moderate', 'significant')
    """
    if value > PSI_SIGNIFICANT:
        return "significant"
    if value >= PSI_MODERATE:
        return "moderate"
    return "stable"


def feature_stability(
    wh: Warehouse,
    snapshot_a: str,
    snapshot_b: str,
    *,
    bins: int = 10,
    features: list[str] | None = None,
    table: str = FEATURES_TABLE,
) -> pd.DataFrame:
    """PSI of every feature of snapshot ``snapshot_b`` against snapshot ``snapshot_a``.

    Parameters
    ----------
    wh
        Warehouse with the features table.
    snapshot_a
        Reference snapshot id.
    snapshot_b
        Current snapshot id.
    bins
        Quantile bins of numeric features.
    features
        Features to compare (default: every feature column of the table).
    table
        The features table.

    Returns
    -------
    pandas.DataFrame
        One row per feature, in column order: ``feature``, ``kind``, ``psi``, ``status``,
        ``reference_rows``, ``current_rows``, ``reference_missing``, ``current_missing``
        (shares of missing values).

    Examples
    --------
    >>> from datetime import datetime
    >>> from segmint.data.store import ensure_tables
    >>> from segmint.features.compute import compute_features
    >>> wh = Warehouse(":memory:"); ensure_tables(wh)
    >>> wh.execute("INSERT INTO customers (customer_id) VALUES ('c1'), ('c2')")
    >>> _ = compute_features(wh, as_of=datetime(2024, 1, 1), snapshot="jan")
    >>> _ = compute_features(wh, as_of=datetime(2024, 2, 1), snapshot="feb")
    >>> report = feature_stability(wh, "jan", "feb")
    >>> row = report.set_index("feature").loc["frequency"]
    >>> float(row["psi"]), row["status"]
    (0.0, 'stable')
    """
    if not wh.has_table(table):
        raise UserInputError(f"there is no {table} table: compute features first", where=table)
    known = {row[0] for row in wh.fetchall(f"SELECT DISTINCT snapshot_id FROM {quote(table)}")}
    for snapshot in (snapshot_a, snapshot_b):
        if snapshot not in known:
            raise UserInputError(
                f"unknown snapshot {snapshot!r}; known: {', '.join(sorted(known)) or 'none'}",
                where=table,
            )
    types = {
        row[0]: str(row[1])
        for row in wh.fetchall(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_name = ? ORDER BY ordinal_position",
            [table],
        )
    }
    available = [c for c in types if c not in KEY_COLUMNS]
    chosen = available if features is None else list(features)
    unknown = [f for f in chosen if f not in types or f in KEY_COLUMNS]
    if unknown:
        raise UserInputError(f"unknown features {unknown}", where=table)
    rows = []
    for feature in chosen:
        categorical = types[feature] in _CATEGORICAL_SQL
        sql = f"SELECT {quote(feature)} FROM {quote(table)} WHERE snapshot_id = ?"
        ref = _column(wh, sql, snapshot_a, categorical)
        cur = _column(wh, sql, snapshot_b, categorical)
        value = psi(ref, cur, bins, categorical=categorical)
        rows.append(
            {
                "feature": feature,
                "kind": "categorical" if categorical else "numeric",
                "psi": value,
                "status": psi_status(value),
                "reference_rows": ref.size,
                "current_rows": cur.size,
                "reference_missing": float(pd.isna(ref).mean()),
                "current_missing": float(pd.isna(cur).mean()),
            }
        )
    shifted = [str(r["feature"]) for r in rows if r["status"] == "significant"]
    if shifted:
        logger.info("significant shift (PSI > %s) in %s", PSI_SIGNIFICANT, ", ".join(shifted))
    return pd.DataFrame(
        rows,
        columns=[
            "feature",
            "kind",
            "psi",
            "status",
            "reference_rows",
            "current_rows",
            "reference_missing",
            "current_missing",
        ],
    )


def _column(wh: Warehouse, sql: str, snapshot: str, categorical: bool) -> npt.NDArray[Any]:
    column = wh.arrow(sql, [snapshot]).column(0)
    if categorical:
        return np.asarray(column.to_pylist(), dtype=object)
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.float64)
