"""Segment profiles: size, revenue and how each segment differs on the raw features.

Segments are fitted on transformed features (``log1p`` + scaling), but they are
described on the **raw** features so people can read them ("14 orders", "9 days
ago"). Per segment, :func:`profile_segments` (in memory) and
:func:`profile_segments_sql` (in the engine, over the whole population) compute:

- ``size`` (rows), ``share`` (``size / n``), ``revenue`` (sum of the revenue
  column) and ``revenue_share`` (segment revenue / total revenue; NaN when the
  total is zero or there is no revenue column);
- per feature: ``mean`` and ``median`` (missing values skipped);
- ``lift = segment mean / population mean`` (NaN when the population mean is 0);
- ``zscore = (segment mean - population mean) / population std`` (sample standard
  deviation, ``ddof=1``); 0 when the feature is constant in the population;
- ``drivers``: the (at most) ``TOP_DRIVERS`` features with the largest
  ``|zscore|``, each with direction ``"high"`` or ``"low"``.

The population is every profiled row, unassigned ones included; the unassigned
segment (``-1``) is profiled like any other and named "Unassigned". Missing
values are NULL in the engine and NaN in memory (NaN in the engine is treated as
NULL as well), so both functions give the same numbers.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"frequency": [1, 2, 10, 12], "monetary": [10.0, 30.0, 200.0, 160.0]})
>>> p = profile_segments(frame, [0, 0, 1, 1], features=["frequency", "monetary"])
>>> p.table[["segment_id", "size", "share", "revenue_share"]].to_dict("records")[1]
{'segment_id': 1, 'size': 2, 'share': 0.5, 'revenue_share': 0.9}
>>> p.drivers[1][0].feature, p.drivers[1][0].direction
('frequency', 'high')
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from segmint.engine.dialect import quote
from segmint.engine.warehouse import Warehouse
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

__all__ = [
    "TOP_DRIVERS",
    "UNASSIGNED_NAME",
    "Driver",
    "SegmentProfiles",
    "as_label_array",
    "default_segment_name",
    "numeric_features",
    "profile_segments",
    "profile_segments_sql",
]

#: Number of top drivers kept per segment.
TOP_DRIVERS = 5
#: Display name of the unassigned segment ``-1``.
UNASSIGNED_NAME = "Unassigned"
_UNASSIGNED = -1
# A population standard deviation this small relative to the mean is zero.
_REL_STD_EPS = 1e-12


class Driver(NamedTuple):
    """A feature on which a segment differs from the population.

    Examples
    --------
    >>> Driver("frequency", 2.4, "high")
    Driver(feature='frequency', zscore=2.4, direction='high')
    """

    feature: str
    zscore: float
    direction: str


def default_segment_name(segment_id: int) -> str:
    """The name shown for a segment before it is named: ``"Segment 3"`` or "Unassigned".

    Examples
    --------
    >>> default_segment_name(-1), default_segment_name(2)
    ('Unassigned', 'Segment 2')
    """
    return UNASSIGNED_NAME if segment_id == _UNASSIGNED else f"Segment {segment_id}"


@dataclass(frozen=True, eq=False)
class SegmentProfiles:
    """Profiles of every segment (see the module docstring for definitions).

    Attributes
    ----------
    table
        One row per segment with columns ``segment_id``, ``name``, ``size``,
        ``share``, ``revenue`` and ``revenue_share``. Regular segments in
        ascending order, then the unassigned segment ``-1``.
    feature_means, feature_medians, lift, zscores
        Segment x feature frames, indexed by ``segment_id`` in the order of
        ``table``.
    drivers
        Segment id -> top drivers, largest ``|zscore|`` first.
    population_means, population_medians, population_stds
        Per feature, over the whole population.
    features
        The profiled features, in order.
    revenue
        The revenue column, or None.
    n_rows
        Size of the population.
    total_revenue
        Revenue of the whole population (NaN without a revenue column).

    Examples
    --------
    >>> import pandas as pd
    >>> p = profile_segments(pd.DataFrame({"x": [1.0, 3.0]}), [0, 1], features=["x"],
    ...                      revenue=None)
    >>> p.lift.loc[1, "x"]
    np.float64(1.5)
    """

    table: pd.DataFrame
    feature_means: pd.DataFrame
    feature_medians: pd.DataFrame
    lift: pd.DataFrame
    zscores: pd.DataFrame
    drivers: dict[int, list[Driver]]
    population_means: pd.Series
    population_medians: pd.Series
    population_stds: pd.Series
    features: tuple[str, ...]
    revenue: str | None
    n_rows: int
    total_revenue: float

    @property
    def segments(self) -> list[int]:
        """Segment ids in table order."""
        return [int(s) for s in self.table["segment_id"]]

    def name_of(self, segment_id: int) -> str:
        """The display name of a segment."""
        row = self._row(segment_id)
        return str(row["name"])

    def row(self, segment_id: int) -> dict[str, Any]:
        """The ``table`` row of one segment as a plain dict."""
        row = self._row(segment_id)
        return {
            "segment_id": int(row["segment_id"]),
            "name": str(row["name"]),
            "size": int(row["size"]),
            "share": float(row["share"]),
            "revenue": float(row["revenue"]),
            "revenue_share": float(row["revenue_share"]),
        }

    def with_names(self, names: Mapping[int, str]) -> SegmentProfiles:
        """A copy whose ``table`` shows the given names (others keep their default).

        Raises
        ------
        UserInputError
            If a name is given for a segment that is not profiled.
        """
        unknown = sorted(set(names) - set(self.segments))
        if unknown:
            raise UserInputError(
                f"names given for unknown segments {unknown}; segments are {self.segments}",
                where="names",
            )
        table = self.table.copy()
        table["name"] = [_display_name(s, names) for s in self.segments]
        return dataclasses.replace(self, table=table)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (NaN and infinities become None)."""
        population = {
            f: {
                "mean": _json_float(self.population_means[f]),
                "median": _json_float(self.population_medians[f]),
                "std": _json_float(self.population_stds[f]),
            }
            for f in self.features
        }
        segments = []
        for seg in self.segments:
            row = self.row(seg)
            segments.append(
                {
                    "segment_id": seg,
                    "name": row["name"],
                    "size": row["size"],
                    "share": _json_float(row["share"]),
                    "revenue": _json_float(row["revenue"]),
                    "revenue_share": _json_float(row["revenue_share"]),
                    "features": {
                        f: {
                            "mean": _json_float(self.feature_means.loc[seg, f]),
                            "median": _json_float(self.feature_medians.loc[seg, f]),
                            "lift": _json_float(self.lift.loc[seg, f]),
                            "zscore": _json_float(self.zscores.loc[seg, f]),
                        }
                        for f in self.features
                    },
                    "drivers": [
                        {"feature": d.feature, "zscore": float(d.zscore), "direction": d.direction}
                        for d in self.drivers[seg]
                    ],
                }
            )
        return {
            "n_rows": int(self.n_rows),
            "revenue_column": self.revenue,
            "total_revenue": _json_float(self.total_revenue),
            "features": list(self.features),
            "population": population,
            "segments": segments,
        }

    def _row(self, segment_id: int) -> pd.Series:
        matches = self.table.index[self.table["segment_id"] == segment_id]
        if len(matches) == 0:
            raise UserInputError(
                f"no segment {segment_id}; segments are {self.segments}", where="segment"
            )
        return self.table.loc[matches[0]]


# ======================================================================= in memory
def profile_segments(
    frame: pd.DataFrame,
    labels: Any,
    *,
    features: Sequence[str],
    revenue: str | None = "monetary",
    names: Mapping[int, str] | None = None,
) -> SegmentProfiles:
    """Profile segments of rows held in memory.

    Parameters
    ----------
    frame
        One row per customer with the raw feature columns (and the revenue column).
    labels
        Segment id of each row (same length as ``frame``; ``-1`` = unassigned).
    features
        Raw feature columns to profile (numeric or boolean).
    revenue
        Column summed for revenue shares (need not be a profiled feature), or None.
    names
        Optional display names per segment id.

    Returns
    -------
    SegmentProfiles

    Raises
    ------
    UserInputError
        On an empty frame, a missing or non-numeric column, or invalid labels.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"frequency": [1, 3, 8], "monetary": [5.0, 15.0, 80.0]})
    >>> p = profile_segments(frame, [0, 0, 1], features=["frequency"])
    >>> p.feature_medians.loc[0, "frequency"]
    np.float64(2.0)
    """
    features = _check_feature_list(features)
    if len(frame) == 0:
        raise UserInputError("there are no rows to profile", where="frame")
    codes = as_label_array(labels, len(frame))
    if revenue is not None and revenue not in frame.columns:
        raise UserInputError(_no_revenue(revenue), where="revenue")
    values = numeric_features(frame, features)
    data = pd.DataFrame(values, columns=list(features))
    segments = _order_segments(np.unique(codes).tolist())

    grouped = data.groupby(codes, sort=True)
    means = grouped.mean().reindex(segments)
    medians = grouped.median().reindex(segments)
    sizes = pd.Series(codes).value_counts().reindex(segments).to_numpy(dtype=np.int64)

    if revenue is None:
        revenue_sums = None
    else:
        rev = numeric_features(frame, [revenue])[:, 0]
        revenue_sums = (
            pd.Series(rev).groupby(codes, sort=True).sum(min_count=1).reindex(segments).to_numpy()
        )

    return _assemble(
        _Stats(
            segments=segments,
            sizes=sizes,
            revenue_sums=revenue_sums,
            means=means,
            medians=medians,
            pop_means=data.mean(),
            pop_medians=data.median(),
            pop_stds=data.std(ddof=1),
        ),
        features=features,
        revenue=revenue,
        names=names,
    )


# ======================================================================= in the engine
def profile_segments_sql(
    wh: Warehouse,
    *,
    assignments_sql: str,
    features_table: str,
    features: Sequence[str],
    revenue: str | None = "monetary",
    params: Sequence[Any] | dict[str, Any] | None = None,
    names: Mapping[int, str] | None = None,
    on: Sequence[str] = ("person_id",),
    segment_column: str = "segment",
) -> SegmentProfiles:
    """Profile segments inside the engine, over the whole population.

    ``assignments_sql`` is a ``SELECT`` returning the join columns ``on`` and
    ``segment_column``; it is joined (inner join) to ``features_table`` on
    ``on``, and one ``GROUP BY GROUPING SETS ((segment), ())`` query computes
    every number (``avg``, ``median`` and ``stddev_samp``), so only one row per
    segment leaves the engine.

    Parameters
    ----------
    wh
        The warehouse.
    assignments_sql
        Query of segment assignments (written by segmint, not by end users);
        its ``?`` placeholders take ``params``.
    features_table
        Table (or view) holding the raw feature columns and the revenue column.
    features
        Raw feature columns to profile.
    revenue
        Column summed for revenue shares, or None.
    params
        Values bound to the placeholders of ``assignments_sql``.
    names
        Optional display names per segment id.
    on
        Join columns present in both the assignments and the features table.
    segment_column
        Column of ``assignments_sql`` holding the segment id.

    Returns
    -------
    SegmentProfiles
        The same numbers :func:`profile_segments` gives on the joined rows.

    Raises
    ------
    UserInputError
        If a column is missing, nothing is assigned, or a segment id is NULL.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE features AS SELECT range AS person_id, "
    ...            "range * 10.0 AS monetary FROM range(4)")
    >>> p = profile_segments_sql(
    ...     wh, features_table="features", features=["monetary"],
    ...     assignments_sql="SELECT person_id, CASE WHEN person_id < ? THEN 0 ELSE 1 END "
    ...                     "AS segment FROM features", params=[2])
    >>> p.table["revenue_share"].round(3).tolist()
    [0.167, 0.833]
    """
    features = _check_feature_list(features)
    keys = [str(k) for k in on]
    if not keys:
        raise UserInputError("at least one join column is needed", where="on")
    available = set(wh.arrow(f"SELECT * FROM {quote(features_table)} LIMIT 0").column_names)
    if revenue is not None and revenue not in available:
        raise UserInputError(_no_revenue(revenue, features_table), where="revenue")
    wanted = [*keys, *features, *([revenue] if revenue is not None else [])]
    missing = [c for c in dict.fromkeys(wanted) if c not in available]
    if missing:
        raise UserInputError(f"missing columns {missing}", where=features_table)

    def value(column: str) -> str:
        # NaN is treated as missing, like pandas does.
        return f"NULLIF(CAST(f.{quote(column)} AS DOUBLE), CAST('NaN' AS DOUBLE))"

    row_columns = [f"CAST(a.{quote(segment_column)} AS BIGINT) AS __segment"]
    row_columns += [f"{value(c)} AS __f{i}" for i, c in enumerate(features)]
    if revenue is not None:
        row_columns.append(f"{value(revenue)} AS __revenue")
    aggregates = ["GROUPING(__segment) AS __total", "__segment", "count(*) AS __n"]
    aggregates.append("sum(__revenue)" if revenue is not None else "NULL")
    for i in range(len(features)):
        aggregates += [f"avg(__f{i})", f"median(__f{i})", f"stddev_samp(__f{i})"]
    using = ", ".join(quote(k) for k in keys)
    sql = (
        f"WITH __assignments AS ({assignments_sql}), "
        f"__rows AS (SELECT {', '.join(row_columns)} "
        f"FROM __assignments AS a JOIN {quote(features_table)} AS f USING ({using})) "
        f"SELECT {', '.join(aggregates)} FROM __rows "
        "GROUP BY GROUPING SETS ((__segment), ()) ORDER BY __total, __segment"
    )
    rows = wh.fetchall(sql, params)
    group_rows = [r for r in rows if r[0] == 0]
    total_rows = [r for r in rows if r[0] == 1]
    if not total_rows or total_rows[0][2] == 0:
        raise UserInputError("no assigned rows joined the features table", where=features_table)
    if any(r[1] is None for r in group_rows):
        raise UserInputError("some assignments have a NULL segment", where=segment_column)

    by_segment = {int(r[1]): r for r in group_rows}
    segments = _order_segments(list(by_segment))
    ordered = [by_segment[s] for s in segments]

    def stat(row: tuple[Any, ...], i: int, which: int) -> float:
        return _float(row[4 + 3 * i + which])

    means = pd.DataFrame(
        [[stat(r, i, 0) for i in range(len(features))] for r in ordered],
        index=segments,
        columns=list(features),
        dtype=np.float64,
    )
    medians = pd.DataFrame(
        [[stat(r, i, 1) for i in range(len(features))] for r in ordered],
        index=segments,
        columns=list(features),
        dtype=np.float64,
    )
    total = total_rows[0]
    pop = {
        which: pd.Series(
            [stat(total, i, k) for i, _ in enumerate(features)],
            index=list(features),
            dtype=np.float64,
        )
        for k, which in enumerate(("mean", "median", "std"))
    }
    return _assemble(
        _Stats(
            segments=segments,
            sizes=np.array([int(r[2]) for r in ordered], dtype=np.int64),
            revenue_sums=(
                np.array([_float(r[3]) for r in ordered]) if revenue is not None else None
            ),
            means=means,
            medians=medians,
            pop_means=pop["mean"],
            pop_medians=pop["median"],
            pop_stds=pop["std"],
        ),
        features=features,
        revenue=revenue,
        names=names,
    )


# ======================================================================= shared
@dataclass(frozen=True, eq=False)
class _Stats:
    """Raw aggregates, computed in memory or in the engine."""

    segments: list[int]
    sizes: np.ndarray
    revenue_sums: np.ndarray | None  # NaN = no revenue value in the segment
    means: pd.DataFrame
    medians: pd.DataFrame
    pop_means: pd.Series
    pop_medians: pd.Series
    pop_stds: pd.Series


def _assemble(
    stats: _Stats,
    *,
    features: list[str],
    revenue: str | None,
    names: Mapping[int, str] | None,
) -> SegmentProfiles:
    segments = stats.segments
    names = dict(names or {})
    unknown = sorted(set(names) - set(segments))
    if unknown:
        raise UserInputError(
            f"names given for unknown segments {unknown}; segments are {segments}",
            where="names",
        )
    n = int(stats.sizes.sum())
    if stats.revenue_sums is None:
        seg_revenue = np.full(len(segments), math.nan)
        total_revenue = math.nan
    else:
        seg_revenue = np.nan_to_num(stats.revenue_sums.astype(np.float64), nan=0.0)
        total_revenue = float(seg_revenue.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        revenue_share = (
            seg_revenue / total_revenue
            if total_revenue != 0 and not math.isnan(total_revenue)
            else np.full(len(segments), math.nan)
        )
    table = pd.DataFrame(
        {
            "segment_id": np.array(segments, dtype=np.int64),
            "name": [_display_name(s, names) for s in segments],
            "size": stats.sizes.astype(np.int64),
            "share": stats.sizes / n,
            "revenue": seg_revenue,
            "revenue_share": revenue_share,
        }
    )

    index = pd.Index(segments, name="segment_id", dtype=np.int64)
    means = stats.means.set_axis(index, axis=0).astype(np.float64)
    medians = stats.medians.set_axis(index, axis=0).astype(np.float64)
    pop_means = stats.pop_means.reindex(features).astype(np.float64)
    pop_stds = stats.pop_stds.reindex(features).astype(np.float64)

    mean_values = means.to_numpy()
    pm = pop_means.to_numpy()
    ps = pop_stds.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        lift = np.where((pm != 0) & np.isfinite(pm), mean_values / pm, np.nan)
        spread = np.isfinite(ps) & (ps > _REL_STD_EPS * np.maximum(1.0, np.abs(pm)))
        z = np.where(spread, (mean_values - pm) / ps, 0.0)
    z = np.where(np.isfinite(mean_values), z, np.nan)

    zscores = pd.DataFrame(z, index=index, columns=list(features))
    drivers = {seg: _top_drivers(zscores.iloc[i], features) for i, seg in enumerate(segments)}
    return SegmentProfiles(
        table=table,
        feature_means=means,
        feature_medians=medians,
        lift=pd.DataFrame(lift, index=index, columns=list(features)),
        zscores=zscores,
        drivers=drivers,
        population_means=pop_means,
        population_medians=stats.pop_medians.reindex(features).astype(np.float64),
        population_stds=pop_stds,
        features=tuple(features),
        revenue=revenue,
        n_rows=n,
        total_revenue=total_revenue,
    )


def _top_drivers(z: pd.Series, features: list[str]) -> list[Driver]:
    """Largest ``|z|`` first; ties keep feature order; zero and NaN are not drivers."""
    candidates = [(f, float(z[f])) for f in features if math.isfinite(z[f]) and z[f] != 0]
    candidates.sort(key=lambda fz: -abs(fz[1]))  # stable: ties keep feature order
    return [Driver(f, v, "high" if v > 0 else "low") for f, v in candidates[:TOP_DRIVERS]]


def _order_segments(segments: list[int]) -> list[int]:
    """Regular segments ascending, the unassigned segment last."""
    regular = sorted(int(s) for s in segments if s != _UNASSIGNED)
    return regular + ([_UNASSIGNED] if _UNASSIGNED in segments else [])


def _display_name(segment_id: int, names: Mapping[int, str]) -> str:
    return names.get(segment_id) or default_segment_name(segment_id)


def _check_feature_list(features: Sequence[str]) -> list[str]:
    if isinstance(features, str):
        raise UserInputError("features must be a list of column names", where="features")
    out = [str(f) for f in features]
    duplicates = sorted({f for f in out if out.count(f) > 1})
    if duplicates:
        raise UserInputError(f"duplicate features {duplicates}", where="features")
    return out


def as_label_array(labels: Any, n_rows: int) -> np.ndarray:
    """Segment labels as a 1-D int64 array of length ``n_rows``, or a clear error.

    Examples
    --------
    >>> as_label_array([0, 1.0, -1], 3)
    array([ 0,  1, -1])
    """
    try:
        arr = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UserInputError(f"segment labels must be integers: {e}", where="labels") from e
    if arr.ndim != 1:
        raise UserInputError(f"labels must be 1-D, got {arr.ndim}-D", where="labels")
    if len(arr) != n_rows:
        raise UserInputError(f"{len(arr)} labels for {n_rows} rows", where="labels")
    if not np.isfinite(arr).all() or not (arr == np.round(arr)).all():
        raise UserInputError("segment labels must be finite integers", where="labels")
    return arr.astype(np.int64)


def numeric_features(frame: pd.DataFrame, features: Sequence[str]) -> np.ndarray:
    """The given columns as a float64 matrix (missing values as NaN), or a clear error.

    Examples
    --------
    >>> numeric_features(pd.DataFrame({"a": [1, None], "b": [True, False]}), ["a", "b"])
    array([[ 1.,  1.],
           [nan,  0.]])
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise UserInputError(
            f"missing columns {missing}; the frame has {list(frame.columns)}", where="frame"
        )
    columns = []
    for f in features:
        column = frame[f]
        if not (
            pd.api.types.is_numeric_dtype(column.dtype) or pd.api.types.is_bool_dtype(column.dtype)
        ):
            raise UserInputError(f"column {f!r} is not numeric ({column.dtype})", where="frame")
        columns.append(column.to_numpy(dtype=np.float64, na_value=np.nan))
    if not columns:
        return np.empty((len(frame), 0), dtype=np.float64)
    return np.column_stack(columns)


def _no_revenue(revenue: str, table: str = "the frame") -> str:
    return (
        f"revenue column {revenue!r} is not in {table}; name another column "
        "or pass revenue=None to profile without revenue"
    )


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _json_float(value: Any) -> float | None:
    v = float(value)
    return None if math.isnan(v) or math.isinf(v) else v
