"""Choice of the number of segments k.

For every candidate k, :func:`select_k` fits one estimator (made by a factory
``make_estimator(k)``) on a bounded random sample of the data and records, on
that sample:

- ``silhouette``: mean silhouette width, computed on a further bounded
  sub-sample (``silhouette_size``) because its cost is quadratic;
- ``inertia``: sum of squared distances to the nearest centre when the
  estimator has ``cluster_centers_``, else its ``inertia_``, else the
  within-segment sum of squares around the segment means;
- ``calinski_harabasz`` and ``davies_bouldin``;
- ``bic`` when the estimator has a ``bic(X)`` method (Gaussian mixtures),
  else NaN;
- ``min_share``: the share of the sample in the smallest of the k segments
  (0 when a segment is empty).

The elbow of the inertia curve is located with
``kneed.KneeLocator(curve="convex", direction="decreasing")``. The cost per k
depends on ``sample_size`` and ``silhouette_size`` only, not on ``len(X)``.

Decision rule (the one rule, applied by :func:`decide_k`)
---------------------------------------------------------
1. Only k <= ``max_k`` are fitted. A k is *eligible* when every one of its
   segments holds at least ``min_share`` of the sample and the fit produced
   at least two segments (so that the metrics are defined).
2. The criterion is BIC when asked for, or with ``criterion="auto"`` when
   every eligible k has a BIC (mixtures); otherwise it is the silhouette.
3. BIC: the eligible k with the lowest BIC. Silhouette: the eligible k with
   the highest silhouette. Ties go to the smaller k.
4. Elbow preference (silhouette criterion only): when the elbow k is eligible,
   is one step away from the silhouette-best k and its silhouette is at most
   ``ELBOW_SILHOUETTE_TOLERANCE`` (0.01) lower, the elbow k is chosen — unless
   Calinski-Harabasz and Davies-Bouldin both favour the silhouette-best k, in which
   case three of the four criteria agree and the silhouette-best k stays.
5. When no k is eligible, the k whose smallest segment is largest is chosen
   (ties to the smaller k); the criterion is reported as ``"min_share"`` and
   the reason says that the size floor could not be met.

:attr:`KSelection.reason` states the rule and how it applied.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from kneed import KneeLocator
from sklearn.metrics import (
    calinski_harabasz_score,
    davies_bouldin_score,
    euclidean_distances,
    silhouette_score,
)

from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

__all__ = [
    "ELBOW_SILHOUETTE_TOLERANCE",
    "METRIC_COLUMNS",
    "ClusterEstimator",
    "EstimatorFactory",
    "KSelection",
    "as_matrix",
    "decide_k",
    "sample_indices",
    "select_k",
]

#: Largest silhouette loss accepted to prefer the elbow k over the silhouette-best k.
ELBOW_SILHOUETTE_TOLERANCE = 0.01

#: Columns of :attr:`KSelection.metrics`, in order (plus the boolean ``eligible``).
METRIC_COLUMNS = (
    "silhouette",
    "inertia",
    "calinski_harabasz",
    "davies_bouldin",
    "bic",
    "min_share",
)

Criterion = Literal["auto", "silhouette", "bic"]


@runtime_checkable
class ClusterEstimator(Protocol):
    """What segmint needs from a clustering estimator.

    ``fit(X)`` and ``predict(X)`` as in scikit-learn. Optional attributes are
    used when present: ``cluster_centers_``, ``inertia_`` and ``bic(X)``.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> isinstance(KMeans(n_clusters=2), ClusterEstimator)
    True
    """

    def fit(self, X: Any, y: Any = None) -> Any:
        """Fit on the rows of ``X``."""
        ...

    def predict(self, X: Any) -> Any:
        """Return one segment label per row of ``X``."""
        ...


#: A callable returning a new, unfitted estimator for a given number of segments.
EstimatorFactory = Callable[[int], ClusterEstimator]


def as_matrix(X: Any, *, name: str = "X") -> np.ndarray:
    """Return ``X`` as a finite 2-D float array, or raise a clear error.

    Parameters
    ----------
    X
        Array-like of shape (n_rows, n_features).
    name
        Name used in error messages.

    Returns
    -------
    numpy.ndarray
        A float64 array.

    Raises
    ------
    UserInputError
        If ``X`` is not 2-D, has no rows or columns, or holds NaN/inf values.

    Examples
    --------
    >>> as_matrix([[1, 2], [3, 4]]).dtype
    dtype('float64')
    """
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise UserInputError(f"must be numeric: {e}", where=name) from e
    if arr.ndim != 2:
        raise UserInputError(f"must be 2-D (rows x features), got {arr.ndim}-D", where=name)
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UserInputError(f"is empty (shape {arr.shape})", where=name)
    if not np.isfinite(arr).all():
        raise UserInputError("holds NaN or infinite values; impute them first", where=name)
    return arr


def sample_indices(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row indices of a random sample without replacement, at most ``size``.

    Returns every index when ``n <= size``. The cost depends on ``size``, not ``n``.

    Examples
    --------
    >>> idx = sample_indices(1_000_000, 3, np.random.default_rng(0))
    >>> len(idx)
    3
    """
    if size < 1:
        raise UserInputError(f"sample size must be at least 1, got {size}")
    if n <= size:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


@dataclass(frozen=True, eq=False)
class KSelection:
    """The chosen number of segments and the evidence for it.

    Attributes
    ----------
    k
        The chosen number of segments.
    reason
        The decision rule and how it applied, in plain words.
    metrics
        One row per fitted k (index ``k``) with columns :data:`METRIC_COLUMNS`
        and ``eligible``; ``bic`` is NaN for estimators without ``bic``.
    elbow_k
        Knee of the inertia curve, or None when the curve has none.
    criterion
        The criterion actually used: ``"silhouette"``, ``"bic"``, or
        ``"min_share"`` when no k met the size floor (rule 5).

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> X, _ = make_blobs(300, centers=[[0, 0], [9, 9], [0, 9]], random_state=0)
    >>> sel = select_k(X, lambda k: KMeans(k, n_init=3, random_state=0), k_range=range(2, 6))
    >>> sel.k
    3
    """

    k: int
    reason: str
    metrics: pd.DataFrame
    elbow_k: int | None
    criterion: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (NaN becomes None)."""
        rows = []
        for record in self.metrics.rename_axis("k").reset_index().to_dict("records"):
            item: dict[str, Any] = {"k": int(record["k"])}
            item.update({col: _json_float(record[col]) for col in METRIC_COLUMNS})
            item["eligible"] = bool(record["eligible"])
            rows.append(item)
        return {
            "k": int(self.k),
            "reason": self.reason,
            "criterion": self.criterion,
            "elbow_k": None if self.elbow_k is None else int(self.elbow_k),
            "metrics": rows,
        }


def select_k(
    X: Any,
    make_estimator: EstimatorFactory,
    *,
    k_range: Iterable[int] = range(2, 11),
    sample_size: int = 20_000,
    silhouette_size: int = 5_000,
    min_share: float = 0.02,
    max_k: int = 10,
    random_state: int = 0,
    criterion: Criterion = "auto",
) -> KSelection:
    """Fit one estimator per candidate k and choose k by the module's decision rule.

    Parameters
    ----------
    X
        Feature matrix (n_rows, n_features), already scaled as the estimator expects.
    make_estimator
        ``make_estimator(k)`` returns a new, unfitted estimator with k segments.
    k_range
        Candidate numbers of segments (each at least 2); those above ``max_k``
        are not fitted.
    sample_size
        At most this many rows are fitted and scored per k.
    silhouette_size
        At most this many rows enter the (quadratic) silhouette computation.
    min_share
        Smallest acceptable share of a segment, in [0, 1).
    max_k
        Largest acceptable number of segments.
    random_state
        Seed of the row samples.
    criterion
        ``"auto"`` (BIC when available, else silhouette), ``"silhouette"`` or ``"bic"``.

    Returns
    -------
    KSelection
        The chosen k, the reason, the metrics table and the elbow.

    Raises
    ------
    UserInputError
        On a bad ``X``, an empty or invalid ``k_range``, ``min_share`` outside
        [0, 1), too few rows for the largest k, or ``criterion="bic"`` with an
        estimator that has no ``bic``.

    Examples
    --------
    >>> from sklearn.mixture import GaussianMixture
    >>> from sklearn.datasets import make_blobs
    >>> X, _ = make_blobs(400, centers=[[0, 0], [8, 8]], random_state=1)
    >>> sel = select_k(X, lambda k: GaussianMixture(k, random_state=0), k_range=[2, 3, 4])
    >>> (sel.k, sel.criterion)
    (2, 'bic')
    """
    data = as_matrix(X)
    ks = _check_k_range(k_range, max_k)
    if not 0.0 <= min_share < 1.0:
        raise UserInputError(f"min_share must be in [0, 1), got {min_share}", where="min_share")
    if criterion not in ("auto", "silhouette", "bic"):
        raise UserInputError(
            f"criterion must be 'auto', 'silhouette' or 'bic', got {criterion!r}",
            where="criterion",
        )
    if silhouette_size < 2:
        raise UserInputError("silhouette_size must be at least 2", where="silhouette_size")
    if criterion == "bic" and not callable(getattr(make_estimator(ks[0]), "bic", None)):
        raise UserInputError(
            "criterion 'bic' needs an estimator with a bic(X) method (e.g. a Gaussian mixture)",
            where="criterion",
        )

    rng = np.random.default_rng(random_state)
    sample = data[sample_indices(len(data), sample_size, rng)]
    if len(sample) <= max(ks):
        raise UserInputError(
            f"{len(sample)} rows cannot be split into {max(ks)} segments; "
            "lower k_range or supply more rows",
            where="X",
        )
    sil_seed = int(rng.integers(0, 2**31 - 1))

    rows = []
    for k in ks:
        rows.append(_score_k(sample, make_estimator, k, silhouette_size, sil_seed))
        logger.debug("select_k: k=%d scored: %s", k, rows[-1])
    metrics = pd.DataFrame(rows, index=pd.Index(ks, name="k"), columns=list(METRIC_COLUMNS))
    metrics["eligible"] = (metrics["min_share"] >= min_share) & metrics["silhouette"].notna()

    elbow_k = _elbow(metrics["inertia"])
    k, used, reason = decide_k(
        metrics, min_share=min_share, max_k=max_k, elbow_k=elbow_k, criterion=criterion
    )
    logger.info("select_k chose k=%d (%s)", k, used)
    return KSelection(k=k, reason=reason, metrics=metrics, elbow_k=elbow_k, criterion=used)


def decide_k(
    metrics: pd.DataFrame,
    *,
    min_share: float,
    max_k: int,
    elbow_k: int | None,
    criterion: Criterion = "auto",
) -> tuple[int, str, str]:
    """Apply the decision rule of this module to a metrics table.

    Parameters
    ----------
    metrics
        Indexed by k, with at least the columns ``silhouette``, ``bic`` and
        ``min_share`` (as in :attr:`KSelection.metrics`).
    min_share, max_k
        The size floor and the largest acceptable k.
    elbow_k
        The elbow of the inertia curve, or None.
    criterion
        ``"auto"``, ``"silhouette"`` or ``"bic"``.

    Returns
    -------
    tuple
        ``(k, criterion_used, reason)``; ``criterion_used`` is ``"silhouette"``,
        ``"bic"`` or ``"min_share"`` (no k met the size floor).

    Examples
    --------
    >>> m = pd.DataFrame(
    ...     {"silhouette": [0.5, 0.7, 0.6], "bic": [float("nan")] * 3,
    ...      "min_share": [0.3, 0.01, 0.2]},
    ...     index=[2, 3, 4],
    ... )
    >>> decide_k(m, min_share=0.02, max_k=10, elbow_k=None)[:2]
    (4, 'silhouette')
    """
    table = metrics.loc[[k for k in metrics.index if int(k) <= max_k]].sort_index()
    if table.empty:
        raise UserInputError(f"no candidate k is at most max_k={max_k}", where="k_range")
    if criterion == "bic" and not table["bic"].notna().any():
        raise UserInputError("criterion 'bic' needs BIC values in the metrics", where="criterion")
    sil = table["silhouette"].astype(float)
    bic = table["bic"].astype(float)
    share = table["min_share"].astype(float)
    eligible = (share >= min_share) & sil.notna()
    floor = f"every segment holds at least {min_share:.1%} of customers"
    ks_text = _ks_text([int(k) for k in table.index])

    if not eligible.any():
        best = _first_best(share, largest=True)
        used = "min_share"
        reason = (
            f"k={best}: no k in {ks_text} meets the size floor ({floor}); chose the k "
            f"whose smallest segment is largest ({share[best]:.1%}). Consider a lower "
            "min_share, other features or fewer segments."
        )
        return best, used, reason

    cand = table.index[eligible]
    use_bic = criterion == "bic" or (criterion == "auto" and bool(bic[cand].notna().all()))
    n_elig = f"{len(cand)} of {len(table)} k in {ks_text} eligible"
    small = [int(k) for k in table.index[share < min_share]]
    if small:
        n_elig += f"; k={_ks_text(small)} excluded for a segment below the floor"
    if use_bic:
        if not bic[cand].notna().any():
            raise UserInputError("no eligible k has a BIC value", where="criterion")
        best = _first_best(bic[cand], largest=False)
        reason = (
            f"k={best}: BIC {bic[best]:.1f}. Rule: lowest BIC among k <= {max_k} where "
            f"{floor} ({n_elig}); ties go to the smaller k."
        )
        return best, "bic", reason

    best = _first_best(sil[cand], largest=True)
    rule = (
        f"highest silhouette among k <= {max_k} where {floor} ({n_elig}); ties go to the "
        f"smaller k; the elbow k is preferred when it is one step away, its silhouette "
        f"is within {ELBOW_SILHOUETTE_TOLERANCE} and Calinski-Harabasz and Davies-Bouldin "
        f"do not both favour the silhouette's k"
    )
    others_agree = False
    if elbow_k is not None and {"calinski_harabasz", "davies_bouldin"} <= set(table.columns):
        ch = table["calinski_harabasz"].astype(float)
        db = table["davies_bouldin"].astype(float)
        others_agree = bool(
            ch.get(best, math.nan) > ch.get(elbow_k, math.nan)
            and db.get(best, math.nan) < db.get(elbow_k, math.nan)
        )
    if (
        elbow_k is not None
        and elbow_k in cand
        and abs(elbow_k - best) == 1
        and sil[best] - sil[elbow_k] <= ELBOW_SILHOUETTE_TOLERANCE
        and not others_agree
    ):
        reason = (
            f"k={elbow_k}: elbow of the inertia curve, preferred to k={best} "
            f"(silhouette {sil[elbow_k]:.3f} vs {sil[best]:.3f}). Rule: {rule}."
        )
        return int(elbow_k), "silhouette", reason
    elbow_text = "no elbow found" if elbow_k is None else f"elbow at k={elbow_k}"
    reason = f"k={best}: silhouette {sil[best]:.3f}, {elbow_text}. Rule: {rule}."
    return best, "silhouette", reason


# ---------------------------------------------------------------- helpers
def _check_k_range(k_range: Iterable[int], max_k: int) -> list[int]:
    try:
        ks = sorted({int(k) for k in k_range})
    except (TypeError, ValueError) as e:
        raise UserInputError(f"must hold integers: {e}", where="k_range") from e
    if not ks:
        raise UserInputError("is empty", where="k_range")
    if ks[0] < 2:
        raise UserInputError(f"every k must be at least 2, got {ks[0]}", where="k_range")
    kept = [k for k in ks if k <= max_k]
    if not kept:
        raise UserInputError(f"no candidate k is at most max_k={max_k}", where="k_range")
    if len(kept) < len(ks):
        logger.info("select_k: k above max_k=%d not fitted: %s", max_k, ks[len(kept) :])
    return kept


def _score_k(
    sample: np.ndarray,
    make_estimator: EstimatorFactory,
    k: int,
    silhouette_size: int,
    seed: int,
) -> dict[str, float]:
    est = make_estimator(k)
    est.fit(sample)
    labels = np.asarray(est.predict(sample))
    n = len(sample)
    _, counts = np.unique(labels, return_counts=True)
    min_share = 0.0 if len(counts) < k else float(counts.min()) / n

    row = {col: math.nan for col in METRIC_COLUMNS}
    row["min_share"] = min_share
    row["inertia"] = _inertia(est, sample, labels)
    if len(counts) >= 2:
        row["silhouette"] = float(
            silhouette_score(sample, labels, sample_size=min(silhouette_size, n), random_state=seed)
        )
        row["calinski_harabasz"] = float(calinski_harabasz_score(sample, labels))
        row["davies_bouldin"] = float(davies_bouldin_score(sample, labels))
    else:
        logger.warning("select_k: the fit with k=%d produced a single segment", k)
    bic = getattr(est, "bic", None)
    if callable(bic):
        row["bic"] = float(bic(sample))
    return row


def _inertia(est: Any, sample: np.ndarray, labels: np.ndarray) -> float:
    centers = getattr(est, "cluster_centers_", None)
    if centers is not None:
        d2 = euclidean_distances(sample, np.asarray(centers, dtype=np.float64), squared=True)
        return float(d2.min(axis=1).sum())
    inertia = getattr(est, "inertia_", None)
    if inertia is not None:
        return float(inertia)
    total = 0.0
    for lab in np.unique(labels):
        members = sample[labels == lab]
        total += float(((members - members.mean(axis=0)) ** 2).sum())
    return total


def _first_best(values: pd.Series, *, largest: bool) -> int:
    """The k of the best value, NaN ignored; the first (smallest k) on ties."""
    arr = values.to_numpy(dtype=np.float64)
    pos = int(np.nanargmax(arr) if largest else np.nanargmin(arr))
    return int(values.index.to_numpy()[pos])


def _elbow(inertia: pd.Series) -> int | None:
    if len(inertia) < 3:
        return None
    x = [int(k) for k in inertia.index]
    y = [float(v) for v in inertia]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kneed warns when there is no knee
        knee = KneeLocator(x, y, curve="convex", direction="decreasing").knee
    return None if knee is None else int(knee)


def _ks_text(ks: list[int]) -> str:
    if len(ks) == 1:
        return str(ks[0])
    if ks == list(range(ks[0], ks[-1] + 1)) and len(ks) > 2:
        return f"{ks[0]}..{ks[-1]}"
    return "{" + ", ".join(str(k) for k in ks) + "}"


def _json_float(value: Any) -> float | None:
    v = float(value)
    return None if math.isnan(v) or math.isinf(v) else v
