"""Validation of segments: stability, separation and warnings.

- :func:`bootstrap_stability` follows Hennig's ``clusterboot`` (Hennig 2007,
  "Cluster-wise assessment of cluster stability", CSDA 52): the base
  partition of a bounded sample is compared with refits on bootstrap
  resamples. Per segment, the Jaccard similarity with the most similar
  bootstrap segment is averaged over the resamples; overall agreement is the
  adjusted Rand index (ARI). Verdicts: mean Jaccard >= ``STABLE_JACCARD``
  (0.75) "stable", >= ``DOUBTFUL_JACCARD`` (0.6) "doubtful", else "unstable".
- :func:`temporal_stability` fits one model per period and compares their
  partitions of a common reference set, matching segments with the Hungarian
  algorithm.
- :func:`separation_tests` runs Kruskal-Wallis and one-way ANOVA per feature;
  a feature *separates* the segments when the Kruskal-Wallis p-value is below
  ``SEPARATION_ALPHA`` (0.001) and epsilon-squared is at least
  ``SEPARATION_MIN_EFFECT`` (0.01). Kruskal-Wallis decides because customer
  features (spend, frequency) are skewed; ANOVA is reported alongside.
- :func:`segment_distinction` checks every pair of segments: a pair is
  *distinguished* when some feature differs with Mann-Whitney p below
  ``SEPARATION_ALPHA`` and ``|Cliff's delta|`` at least ``DISTINCTION_MIN_DELTA``
  (0.147, the "small" threshold of Romano et al. 2006).
- :func:`segment_warnings` turns all of the above into plain-language warnings.

Every function works on bounded random samples, so its cost does not grow with
the number of customers.
"""

from __future__ import annotations

import itertools
import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score

from segmint.errors import UserInputError
from segmint.segments.selection import (
    ClusterEstimator,
    EstimatorFactory,
    as_matrix,
    sample_indices,
)

logger = logging.getLogger(__name__)

__all__ = [
    "DISSOLVED_JACCARD",
    "DISTINCTION_MIN_DELTA",
    "DOUBTFUL_JACCARD",
    "SEPARATION_ALPHA",
    "SEPARATION_MIN_EFFECT",
    "STABLE_JACCARD",
    "SegmentMatch",
    "SegmentStability",
    "SegmentWarning",
    "StabilityResult",
    "TemporalStabilityResult",
    "WarningCode",
    "bootstrap_stability",
    "segment_distinction",
    "segment_warnings",
    "separation_tests",
    "stability_verdict",
    "temporal_stability",
]

#: Mean Jaccard at or above which a segment is "stable" (Hennig 2007).
STABLE_JACCARD = 0.75
#: Mean Jaccard at or above which a segment is "doubtful" rather than "unstable".
DOUBTFUL_JACCARD = 0.6
#: A segment is "dissolved" in a bootstrap run when its Jaccard is at most this.
DISSOLVED_JACCARD = 0.5
#: Significance level of the separation and distinction tests.
SEPARATION_ALPHA = 0.001
#: Smallest epsilon-squared (Kruskal-Wallis) for a feature to separate segments.
SEPARATION_MIN_EFFECT = 0.01
#: Smallest |Cliff's delta| for a feature to distinguish two segments.
DISTINCTION_MIN_DELTA = 0.147


class WarningCode:
    """Codes of :class:`SegmentWarning` (stable strings, safe to match on)."""

    TOO_SMALL = "too_small"
    UNSTABLE = "unstable"
    DOUBTFUL = "doubtful"
    NO_SEPARATING_FEATURE = "no_separating_feature"
    NOT_DISTINGUISHED = "not_distinguished"


def stability_verdict(mean_jaccard: float) -> str:
    """Return "stable", "doubtful" or "unstable" for a mean Jaccard similarity.

    NaN (the segment never appeared in a resample) is "unstable".

    Examples
    --------
    >>> [stability_verdict(j) for j in (0.9, 0.75, 0.6, 0.59)]
    ['stable', 'stable', 'doubtful', 'unstable']
    """
    if math.isnan(mean_jaccard) or mean_jaccard < DOUBTFUL_JACCARD:
        return "unstable"
    if mean_jaccard < STABLE_JACCARD:
        return "doubtful"
    return "stable"


# ===================================================================== bootstrap
@dataclass(frozen=True)
class SegmentStability:
    """Bootstrap stability of one segment of the base partition.

    Attributes
    ----------
    segment
        Label of the segment in the base partition.
    base_size
        Number of rows of the base sample in the segment.
    mean_jaccard
        Mean over resamples of the best Jaccard similarity with a bootstrap
        segment (NaN if the segment was never drawn).
    dissolved_rate
        Share of resamples with Jaccard <= ``DISSOLVED_JACCARD``.
    recovered_rate
        Share of resamples with Jaccard >= ``STABLE_JACCARD``.
    verdict
        "stable", "doubtful" or "unstable".

    Examples
    --------
    >>> SegmentStability(0, 120, 0.8, 0.0, 0.9, "stable").verdict
    'stable'
    """

    segment: int
    base_size: int
    mean_jaccard: float
    dissolved_rate: float
    recovered_rate: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (NaN becomes None)."""
        return {
            "segment": int(self.segment),
            "base_size": int(self.base_size),
            "mean_jaccard": _json_float(self.mean_jaccard),
            "dissolved_rate": _json_float(self.dissolved_rate),
            "recovered_rate": _json_float(self.recovered_rate),
            "verdict": self.verdict,
        }


@dataclass(frozen=True)
class StabilityResult:
    """Result of :func:`bootstrap_stability`.

    Attributes
    ----------
    k
        Number of segments asked of the estimator.
    n_boot
        Number of bootstrap resamples.
    sample_size
        Rows in the base sample.
    mean_ari
        Mean adjusted Rand index between the base partition and each refit's
        partition of the base sample (1 = identical; about 0 = chance; may be
        slightly negative).
    ari
        ARI of each resample.
    segments
        Per-segment results, in label order.

    Examples
    --------
    >>> r = StabilityResult(2, 1, 10, 1.0, (1.0,), (
    ...     SegmentStability(0, 5, 1.0, 0.0, 1.0, "stable"),
    ...     SegmentStability(1, 5, 0.5, 1.0, 0.0, "unstable")))
    >>> r.verdicts
    {0: 'stable', 1: 'unstable'}
    """

    k: int
    n_boot: int
    sample_size: int
    mean_ari: float
    ari: tuple[float, ...]
    segments: tuple[SegmentStability, ...]

    @property
    def mean_jaccard(self) -> float:
        """Mean over segments of their mean Jaccard (NaN segments ignored)."""
        values = [s.mean_jaccard for s in self.segments if not math.isnan(s.mean_jaccard)]
        return float(np.mean(values)) if values else math.nan

    @property
    def verdicts(self) -> dict[int, str]:
        """Segment label -> verdict."""
        return {s.segment: s.verdict for s in self.segments}

    @property
    def jaccard(self) -> dict[int, float]:
        """Segment label -> mean Jaccard."""
        return {s.segment: s.mean_jaccard for s in self.segments}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (NaN becomes None)."""
        return {
            "k": int(self.k),
            "n_boot": int(self.n_boot),
            "sample_size": int(self.sample_size),
            "mean_ari": _json_float(self.mean_ari),
            "mean_jaccard": _json_float(self.mean_jaccard),
            "ari": [_json_float(a) for a in self.ari],
            "segments": [s.to_dict() for s in self.segments],
            "thresholds": {"stable": STABLE_JACCARD, "doubtful": DOUBTFUL_JACCARD},
        }


def bootstrap_stability(
    X: Any,
    make_estimator: EstimatorFactory,
    k: int,
    *,
    n_boot: int = 20,
    sample_size: int = 5_000,
    random_state: int = 0,
    base_model: ClusterEstimator | None = None,
) -> StabilityResult:
    """Bootstrap stability of each segment, after Hennig's ``clusterboot``.

    A base sample of at most ``sample_size`` rows is drawn from ``X`` and
    partitioned, by ``base_model.predict`` when a fitted model is given (so the
    segment labels are that model's) or else by a model fitted on the base
    sample. For each of ``n_boot`` resamples (base-sample size, drawn with
    replacement) a new estimator is fitted and predicts the whole base sample:

    - ARI between that prediction and the base partition;
    - per base segment, the largest Jaccard similarity with any bootstrap
      segment, counted over the resampled rows (with their multiplicity, as
      ``clusterboot`` does). A segment absent from a resample is skipped for
      that resample.

    Rows with a negative label (unassigned: density methods mark outliers so)
    form no segment: no Jaccard is reported for them and no segment is matched
    to them, but they count in the ARI.

    Cost is bounded by ``sample_size`` and ``n_boot``, independent of ``len(X)``.

    Parameters
    ----------
    X
        Feature matrix (n_rows, n_features).
    make_estimator
        ``make_estimator(k)`` returns a new, unfitted estimator.
    k
        Number of segments.
    n_boot
        Number of bootstrap resamples (at least 1).
    sample_size
        Size of the base sample.
    random_state
        Seed of the base sample and the resamples.
    base_model
        Optional fitted model whose partition is validated.

    Returns
    -------
    StabilityResult

    Raises
    ------
    UserInputError
        On a bad ``X``, ``k < 2``, ``n_boot < 1`` or too few rows for ``k``.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> X, _ = make_blobs(300, centers=[[0, 0], [9, 9]], random_state=0)
    >>> r = bootstrap_stability(X, lambda k: KMeans(k, n_init=2, random_state=0), 2, n_boot=3)
    >>> r.verdicts
    {0: 'stable', 1: 'stable'}
    """
    data = as_matrix(X)
    _check_k(k)
    if n_boot < 1:
        raise UserInputError(f"n_boot must be at least 1, got {n_boot}", where="n_boot")
    rng = np.random.default_rng(random_state)
    base = data[sample_indices(len(data), sample_size, rng)]
    m = len(base)
    if m <= k:
        raise UserInputError(f"{m} rows cannot be split into {k} segments", where="X")

    if base_model is None:
        base_model = make_estimator(k)
        base_model.fit(base)
    base_labels = np.asarray(base_model.predict(base))
    segs = np.unique(base_labels[base_labels >= 0])
    n_seg = len(segs)
    # unassigned rows (negative labels) get the extra code n_seg: never reported
    base_codes = np.where(base_labels >= 0, np.searchsorted(segs, base_labels), n_seg)

    ari = np.empty(n_boot)
    jac = np.full((n_boot, n_seg), np.nan)
    for b in range(n_boot):
        draw = rng.integers(0, m, size=m)
        est = make_estimator(k)
        est.fit(base[draw])
        pred = np.asarray(est.predict(base))
        ari[b] = adjusted_rand_score(base_labels, pred)
        jac[b] = _best_jaccard(base_codes[draw], pred[draw], n_seg)
    logger.info("bootstrap_stability: k=%d, %d resamples, mean ARI %.3f", k, n_boot, ari.mean())

    segments = []
    for i, seg in enumerate(segs):
        col = jac[:, i][~np.isnan(jac[:, i])]
        mean_j = float(col.mean()) if len(col) else math.nan
        segments.append(
            SegmentStability(
                segment=_label(seg),
                base_size=int((base_codes == i).sum()),
                mean_jaccard=mean_j,
                dissolved_rate=float((col <= DISSOLVED_JACCARD).mean()) if len(col) else math.nan,
                recovered_rate=float((col >= STABLE_JACCARD).mean()) if len(col) else math.nan,
                verdict=stability_verdict(mean_j),
            )
        )
    return StabilityResult(
        k=k,
        n_boot=n_boot,
        sample_size=m,
        mean_ari=float(ari.mean()),
        ari=tuple(float(a) for a in ari),
        segments=tuple(segments),
    )


def _best_jaccard(base_codes: np.ndarray, boot_labels: np.ndarray, n_seg: int) -> np.ndarray:
    """Per base segment, the largest Jaccard with any bootstrap segment (NaN if absent).

    ``base_codes`` are 0..n_seg-1 for segments and n_seg for unassigned rows;
    unassigned rows of the refit (negative labels) are no segment to match.
    """
    boot_segs, boot_codes = np.unique(boot_labels, return_inverse=True)
    n_boot_seg = len(boot_segs)
    table = np.bincount(
        base_codes * n_boot_seg + boot_codes, minlength=(n_seg + 1) * n_boot_seg
    ).reshape(n_seg + 1, n_boot_seg)
    cols = table.sum(axis=0)
    table = table[:n_seg]
    rows = table.sum(axis=1)
    union = rows[:, None] + cols[None, :] - table
    jac = np.where(union > 0, table / np.maximum(union, 1), 0.0)
    jac[:, boot_segs < 0] = 0.0
    best = jac.max(axis=1) if n_boot_seg else np.zeros(n_seg)
    best = best.astype(np.float64)
    best[rows == 0] = np.nan
    return best


# ====================================================================== temporal
@dataclass(frozen=True)
class SegmentMatch:
    """A segment of period A matched to a segment of period B.

    Attributes
    ----------
    segment_a, segment_b
        Labels in the models of period A and B.
    overlap
        Reference rows in both segments.
    jaccard
        ``overlap / |A ∪ B|`` over the reference rows.

    Examples
    --------
    >>> SegmentMatch(0, 2, 90, 0.9).segment_b
    2
    """

    segment_a: int
    segment_b: int
    overlap: int
    jaccard: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "segment_a": int(self.segment_a),
            "segment_b": int(self.segment_b),
            "overlap": int(self.overlap),
            "jaccard": _json_float(self.jaccard),
        }


@dataclass(frozen=True)
class TemporalStabilityResult:
    """Result of :func:`temporal_stability`.

    Attributes
    ----------
    ari
        Adjusted Rand index between the two models' partitions of the reference set.
    agreement
        Share of reference rows whose period-B segment is the match of their
        period-A segment.
    matches
        Best one-to-one matching of segments (Hungarian algorithm), by segment_a.
    unmatched_a, unmatched_b
        Segments left without a partner (when the two models found different counts).
    n_reference
        Rows in the reference set.

    Examples
    --------
    >>> r = TemporalStabilityResult(1.0, 1.0, (SegmentMatch(0, 1, 5, 1.0),), (), (), 5)
    >>> r.mapping
    {0: 1}
    """

    ari: float
    agreement: float
    matches: tuple[SegmentMatch, ...]
    unmatched_a: tuple[int, ...]
    unmatched_b: tuple[int, ...]
    n_reference: int

    @property
    def mapping(self) -> dict[int, int]:
        """Segment of period A -> matched segment of period B."""
        return {m.segment_a: m.segment_b for m in self.matches}

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (NaN becomes None)."""
        return {
            "ari": _json_float(self.ari),
            "agreement": _json_float(self.agreement),
            "matches": [m.to_dict() for m in self.matches],
            "unmatched_a": [int(s) for s in self.unmatched_a],
            "unmatched_b": [int(s) for s in self.unmatched_b],
            "n_reference": int(self.n_reference),
        }


def temporal_stability(
    X_a: Any,
    X_b: Any,
    make_estimator: EstimatorFactory,
    k: int,
    *,
    sample_size: int = 5_000,
    random_state: int = 0,
) -> TemporalStabilityResult:
    """Compare the segmentations fitted on two periods.

    One model is fitted on a sample of period A, one on a sample of period B
    (each at most ``sample_size`` rows). Both predict the reference set, the
    union of the two samples; the result holds their ARI and the one-to-one
    segment matching that maximises the overlap (Hungarian algorithm on the
    contingency table). Unassigned rows (negative labels) are not matched.

    Parameters
    ----------
    X_a, X_b
        Feature matrices of the two periods (same features, same scaling).
    make_estimator
        ``make_estimator(k)`` returns a new, unfitted estimator.
    k
        Number of segments.
    sample_size
        Rows sampled from each period.
    random_state
        Seed of the samples.

    Returns
    -------
    TemporalStabilityResult

    Raises
    ------
    UserInputError
        On bad matrices, different feature counts, ``k < 2`` or too few rows.

    Examples
    --------
    >>> from sklearn.cluster import KMeans
    >>> from sklearn.datasets import make_blobs
    >>> A, _ = make_blobs(200, centers=[[0, 0], [9, 9]], random_state=0)
    >>> B, _ = make_blobs(200, centers=[[0, 0], [9, 9]], random_state=1)
    >>> r = temporal_stability(A, B, lambda k: KMeans(k, n_init=2, random_state=0), 2)
    >>> round(r.ari, 2)
    1.0
    """
    a = as_matrix(X_a, name="X_a")
    b = as_matrix(X_b, name="X_b")
    _check_k(k)
    if a.shape[1] != b.shape[1]:
        raise UserInputError(
            f"the periods have different feature counts ({a.shape[1]} vs {b.shape[1]})",
            where="X_b",
        )
    rng = np.random.default_rng(random_state)
    sample_a = a[sample_indices(len(a), sample_size, rng)]
    sample_b = b[sample_indices(len(b), sample_size, rng)]
    for name, s in (("X_a", sample_a), ("X_b", sample_b)):
        if len(s) <= k:
            raise UserInputError(f"{len(s)} rows cannot be split into {k} segments", where=name)

    model_a = make_estimator(k)
    model_a.fit(sample_a)
    model_b = make_estimator(k)
    model_b.fit(sample_b)
    reference = np.vstack([sample_a, sample_b])
    labels_a = np.asarray(model_a.predict(reference))
    labels_b = np.asarray(model_b.predict(reference))

    segs_a, codes_a = np.unique(labels_a, return_inverse=True)
    segs_b, codes_b = np.unique(labels_b, return_inverse=True)
    table = np.zeros((len(segs_a), len(segs_b)), dtype=np.int64)
    np.add.at(table, (codes_a, codes_b), 1)
    row_sums = table.sum(axis=1)
    col_sums = table.sum(axis=0)
    # match segments only: unassigned rows (negative labels) are no segment
    real_a = np.flatnonzero(segs_a >= 0)
    real_b = np.flatnonzero(segs_b >= 0)
    sub_rows, sub_cols = linear_sum_assignment(table[np.ix_(real_a, real_b)], maximize=True)
    rows, cols = real_a[sub_rows], real_b[sub_cols]
    matches = tuple(
        SegmentMatch(
            segment_a=_label(segs_a[r]),
            segment_b=_label(segs_b[c]),
            overlap=int(table[r, c]),
            jaccard=float(table[r, c] / (row_sums[r] + col_sums[c] - table[r, c])),
        )
        for r, c in sorted(zip(rows.tolist(), cols.tolist(), strict=True))
    )
    matched_a, matched_b = set(rows.tolist()), set(cols.tolist())
    result = TemporalStabilityResult(
        ari=float(adjusted_rand_score(labels_a, labels_b)),
        agreement=float(table[rows, cols].sum() / len(reference)),
        matches=matches,
        unmatched_a=tuple(_label(segs_a[i]) for i in real_a.tolist() if i not in matched_a),
        unmatched_b=tuple(_label(segs_b[j]) for j in real_b.tolist() if j not in matched_b),
        n_reference=len(reference),
    )
    logger.info("temporal_stability: ARI %.3f, agreement %.3f", result.ari, result.agreement)
    return result


# ==================================================================== separation
def separation_tests(
    X: pd.DataFrame,
    labels: Sequence[Any] | np.ndarray | pd.Series,
    *,
    sample_size: int = 20_000,
    random_state: int = 0,
    alpha: float = SEPARATION_ALPHA,
    min_effect: float = SEPARATION_MIN_EFFECT,
) -> pd.DataFrame:
    """Test, per feature, whether its distribution differs between segments.

    On a random sample of at most ``sample_size`` rows, per feature (rows
    where the feature is missing are left out for that feature):

    - Kruskal-Wallis H and p-value, and epsilon-squared
      ``H / ((n**2 - 1) / (n + 1))`` (Tomczak & Tomczak 2014);
    - one-way ANOVA F and p-value, and eta-squared (between-segment sum of
      squares over total sum of squares).

    A feature is ``separating`` when the Kruskal-Wallis p-value is below
    ``alpha`` and epsilon-squared is at least ``min_effect``. A feature that is
    constant gets H = F = 0, p = 1 and zero effect sizes.

    Parameters
    ----------
    X
        One numeric column per feature.
    labels
        Segment of each row of ``X`` (positional); missing and negative
        (unassigned) labels are left out.
    sample_size
        At most this many rows are tested.
    random_state
        Seed of the sample.
    alpha, min_effect
        Thresholds of the ``separating`` flag.

    Returns
    -------
    pandas.DataFrame
        Indexed by feature, columns ``n``, ``kruskal_h``, ``kruskal_p``,
        ``epsilon_squared``, ``anova_f``, ``anova_p``, ``eta_squared``,
        ``separating``.

    Raises
    ------
    UserInputError
        If ``X`` is not a data frame, has non-numeric columns, or its length
        differs from ``labels``.

    Examples
    --------
    >>> df = pd.DataFrame({"spend": [1, 2, 3, 4, 5, 6]})
    >>> out = separation_tests(df, [0, 0, 0, 1, 1, 1])
    >>> round(float(out.loc["spend", "epsilon_squared"]), 3)
    0.771
    """
    frame, codes, segs = _prepare_tests(X, labels, sample_size, random_state)
    rows = []
    for name in frame.columns:
        x = frame[name].to_numpy(dtype=np.float64)
        keep = ~np.isnan(x)
        rows.append(_feature_tests(x[keep], codes[keep], len(segs)))
    out = pd.DataFrame(
        rows,
        index=pd.Index([str(c) for c in frame.columns], name="feature"),
        columns=[
            "n",
            "kruskal_h",
            "kruskal_p",
            "epsilon_squared",
            "anova_f",
            "anova_p",
            "eta_squared",
        ],
    )
    out["n"] = out["n"].astype(np.int64)
    out["separating"] = (out["kruskal_p"] < alpha) & (out["epsilon_squared"] >= min_effect)
    return out


def _feature_tests(x: np.ndarray, codes: np.ndarray, n_seg: int) -> list[float]:
    groups = [x[codes == g] for g in range(n_seg)]
    groups = [g for g in groups if len(g)]
    n = len(x)
    if len(groups) < 2 or n <= len(groups):
        return [n, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan]
    if np.ptp(x) == 0:
        return [n, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant-within-group warnings from f_oneway
        h, h_p = stats.kruskal(*groups)
        f, f_p = stats.f_oneway(*groups)
    grand = x.mean()
    ss_total = float(((x - grand) ** 2).sum())
    ss_between = float(sum(len(g) * (g.mean() - grand) ** 2 for g in groups))
    epsilon2 = float(h) / ((n**2 - 1) / (n + 1))
    return [n, float(h), float(h_p), epsilon2, float(f), float(f_p), ss_between / ss_total]


def segment_distinction(
    X: pd.DataFrame,
    labels: Sequence[Any] | np.ndarray | pd.Series,
    *,
    sample_size: int = 20_000,
    random_state: int = 0,
    alpha: float = SEPARATION_ALPHA,
    min_delta: float = DISTINCTION_MIN_DELTA,
) -> pd.DataFrame:
    """Check that every pair of segments differs on at least one feature.

    For each pair of segments and each feature, on a random sample of at most
    ``sample_size`` rows: Mann-Whitney U test and Cliff's delta
    ``2 U / (n_a n_b) - 1`` (the probability that a member of segment a has a
    larger value than a member of b, minus the reverse). A pair is
    ``distinguished`` when some feature has p < ``alpha`` and
    ``|delta| >= min_delta``.

    Parameters
    ----------
    X
        One numeric column per feature.
    labels
        Segment of each row of ``X`` (positional); missing and negative
        (unassigned) labels are left out.
    sample_size, random_state
        Size and seed of the sample.
    alpha, min_delta
        Thresholds of the ``distinguished`` flag.

    Returns
    -------
    pandas.DataFrame
        One row per pair: ``segment_a``, ``segment_b``, ``feature`` (the most
        distinguishing feature), ``cliffs_delta`` (positive: a is larger),
        ``p_value``, ``distinguished``.

    Examples
    --------
    >>> df = pd.DataFrame({"spend": [1, 2, 3, 10, 11, 12], "age": [5, 6, 7, 5, 6, 7]})
    >>> out = segment_distinction(df, [0, 0, 0, 1, 1, 1], alpha=0.2)
    >>> row = out.iloc[0]
    >>> (row["feature"], float(row["cliffs_delta"]), bool(row["distinguished"]))
    ('spend', -1.0, True)
    """
    frame, codes, segs = _prepare_tests(X, labels, sample_size, random_state)
    values = frame.to_numpy(dtype=np.float64)
    features = [str(c) for c in frame.columns]
    has_nan = bool(np.isnan(values).any())
    rows = []
    for i, j in itertools.combinations(range(len(segs)), 2):
        va, vb = values[codes == i], values[codes == j]
        delta, p = _pair_deltas(va, vb, has_nan)
        ok = (np.abs(delta) >= min_delta) & (p < alpha)
        pool = np.where(ok, np.abs(delta), -1.0) if ok.any() else np.abs(delta)
        if np.isnan(pool).all():
            best_feature, best_delta, best_p = None, math.nan, math.nan
        else:
            best = int(np.nanargmax(pool))
            best_feature, best_delta, best_p = features[best], float(delta[best]), float(p[best])
        rows.append(
            {
                "segment_a": _plain(segs[i]),
                "segment_b": _plain(segs[j]),
                "feature": best_feature,
                "cliffs_delta": best_delta,
                "p_value": best_p,
                "distinguished": bool(ok.any()),
            }
        )
    columns = ["segment_a", "segment_b", "feature", "cliffs_delta", "p_value", "distinguished"]
    return pd.DataFrame(rows, columns=columns)


def _pair_deltas(va: np.ndarray, vb: np.ndarray, has_nan: bool) -> tuple[np.ndarray, np.ndarray]:
    """Cliff's delta and Mann-Whitney p-value per feature between two row sets."""
    n_feat = va.shape[1]
    na = (~np.isnan(va)).sum(axis=0)
    nb = (~np.isnan(vb)).sum(axis=0)
    delta = np.full(n_feat, np.nan)
    p = np.full(n_feat, np.nan)
    usable = (na > 0) & (nb > 0)
    if not usable.any():
        return delta, p
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = stats.mannwhitneyu(
            va[:, usable],
            vb[:, usable],
            axis=0,
            method="asymptotic",
            nan_policy="omit" if has_nan else "propagate",
        )
    u = np.asarray(res.statistic, dtype=np.float64)
    pairs = (na[usable] * nb[usable]).astype(np.float64)
    delta[usable] = 2.0 * u / pairs - 1.0
    p[usable] = np.asarray(res.pvalue, dtype=np.float64)
    return delta, p


def _prepare_tests(
    X: pd.DataFrame,
    labels: Sequence[Any] | np.ndarray | pd.Series,
    sample_size: int,
    random_state: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Validate, sample and encode: (numeric frame, segment codes 0..S-1, segment labels)."""
    if not isinstance(X, pd.DataFrame):
        raise UserInputError("must be a pandas DataFrame with one column per feature", where="X")
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) != len(X):
        raise UserInputError(
            f"labels must be 1-D with one entry per row of X ({len(X)}), got shape {lab.shape}",
            where="labels",
        )
    if X.shape[1] == 0:
        raise UserInputError("has no feature columns", where="X")
    bad = [str(c) for c in X.columns if not pd.api.types.is_numeric_dtype(X[c])]
    if bad:
        raise UserInputError(f"non-numeric feature columns: {', '.join(bad)}", where="X")
    rng = np.random.default_rng(random_state)
    idx = sample_indices(len(X), sample_size, rng)
    frame = X.iloc[idx].astype(np.float64).replace([np.inf, -np.inf], np.nan)
    sampled = pd.Series(lab[idx])
    if pd.api.types.is_numeric_dtype(sampled) and not pd.api.types.is_bool_dtype(sampled):
        sampled = sampled.where(sampled >= 0)  # negative: unassigned, left out
    codes, uniques = pd.factorize(sampled, sort=True)
    keep = codes >= 0
    frame = frame.iloc[keep]
    return frame, np.asarray(codes[keep]), np.asarray(uniques)


# ====================================================================== warnings
@dataclass(frozen=True)
class SegmentWarning:
    """A problem with a segmentation, in plain words.

    Attributes
    ----------
    code
        One of :class:`WarningCode`.
    message
        One sentence for a marketer.
    segments
        Segments concerned (empty when the warning is about the whole segmentation).
    value
        The number that triggered it (share, Jaccard, Cliff's delta), if any.

    Examples
    --------
    >>> SegmentWarning("too_small", "segment 3 is small", (3,), 0.01).to_dict()["segments"]
    [3]
    """

    code: str
    message: str
    segments: tuple[int | str, ...] = field(default=())
    value: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "code": self.code,
            "message": self.message,
            "segments": list(self.segments),
            "value": None if self.value is None else _json_float(self.value),
        }


def segment_warnings(
    sizes: Mapping[Any, int] | pd.Series,
    stability: StabilityResult | None,
    separation: pd.DataFrame | None,
    *,
    min_share: float = 0.02,
    distinction: pd.DataFrame | None = None,
) -> list[SegmentWarning]:
    """Turn size, stability and separation results into warnings.

    Warnings, in this order:

    - ``too_small``: a segment's share of customers is below ``min_share``;
    - ``unstable`` / ``doubtful``: the segment's bootstrap verdict;
    - ``no_separating_feature``: no feature is flagged ``separating``;
    - ``not_distinguished``: a pair of segments that no feature tells apart
      (only when ``distinction`` from :func:`segment_distinction` is given).

    Parameters
    ----------
    sizes
        Segment -> number of customers. Negative labels (unassigned customers)
        count in the total but are not checked as a segment.
    stability
        Result of :func:`bootstrap_stability`, or None to skip.
    separation
        Result of :func:`separation_tests`, or None to skip.
    min_share
        Smallest acceptable share of a segment.
    distinction
        Result of :func:`segment_distinction`, or None to skip.

    Returns
    -------
    list of SegmentWarning
        Empty when nothing is wrong.

    Raises
    ------
    UserInputError
        If the sizes are empty, negative or sum to zero.

    Examples
    --------
    >>> [w.code for w in segment_warnings({0: 990, 1: 10}, None, None)]
    ['too_small']
    """
    counts = {_plain(s): int(c) for s, c in sizes.items()}
    total = sum(counts.values())
    if not counts or total <= 0 or min(counts.values()) < 0:
        raise UserInputError("segment sizes must be non-negative and not all zero", where="sizes")

    out: list[SegmentWarning] = []
    for seg in sorted(counts, key=lambda s: (isinstance(s, str), s)):
        if isinstance(seg, int) and seg < 0:
            continue
        share = counts[seg] / total
        if share < min_share:
            out.append(
                SegmentWarning(
                    WarningCode.TOO_SMALL,
                    f"segment {seg} holds {share:.1%} of customers ({counts[seg]:,}), below "
                    f"the {min_share:.1%} minimum; merge it into another or choose fewer "
                    "segments",
                    (seg,),
                    share,
                )
            )
    if stability is not None:
        out.extend(_stability_warnings(stability))
    if separation is not None and len(separation) and not bool(separation["separating"].any()):
        out.append(
            SegmentWarning(
                WarningCode.NO_SEPARATING_FEATURE,
                "no feature separates the segments (Kruskal-Wallis p < "
                f"{SEPARATION_ALPHA} with epsilon-squared >= {SEPARATION_MIN_EFFECT}); "
                "the segments may reflect noise rather than real differences",
            )
        )
    if distinction is not None:
        for row in distinction.itertuples(index=False):
            if bool(row.distinguished):
                continue
            delta = float(row.cliffs_delta)  # type: ignore[arg-type]
            detail = (
                "no feature has data for both"
                if math.isnan(delta)
                else f"largest |Cliff's delta| {abs(delta):.2f} on '{row.feature}'"
            )
            a, b = _plain(row.segment_a), _plain(row.segment_b)
            out.append(
                SegmentWarning(
                    WarningCode.NOT_DISTINGUISHED,
                    f"segments {a} and {b} are not distinguished by any feature ({detail}; "
                    f"needs >= {DISTINCTION_MIN_DELTA}); consider merging them",
                    (a, b),
                    None if math.isnan(delta) else abs(delta),
                )
            )
    for w in out:
        logger.info("segment warning [%s]: %s", w.code, w.message)
    return out


def _stability_warnings(stability: StabilityResult) -> list[SegmentWarning]:
    out = []
    for s in stability.segments:
        if s.verdict == "unstable":
            jaccard = "never drawn" if math.isnan(s.mean_jaccard) else f"{s.mean_jaccard:.2f}"
            out.append(
                SegmentWarning(
                    WarningCode.UNSTABLE,
                    f"segment {s.segment} is unstable under resampling (mean Jaccard {jaccard}, "
                    f"below {DOUBTFUL_JACCARD}; dissolved in {_pct(s.dissolved_rate)} of "
                    f"{stability.n_boot} bootstrap runs); do not act on it",
                    (s.segment,),
                    None if math.isnan(s.mean_jaccard) else s.mean_jaccard,
                )
            )
        elif s.verdict == "doubtful":
            out.append(
                SegmentWarning(
                    WarningCode.DOUBTFUL,
                    f"segment {s.segment} is doubtful under resampling (mean Jaccard "
                    f"{s.mean_jaccard:.2f}; stable needs >= {STABLE_JACCARD}); treat it with care",
                    (s.segment,),
                    s.mean_jaccard,
                )
            )
    return out


# ======================================================================= helpers
def _check_k(k: int) -> None:
    if int(k) != k or k < 2:
        raise UserInputError(f"k must be an integer of at least 2, got {k}", where="k")


def _label(value: Any) -> int:
    """A segment label predicted by an estimator, as a plain int."""
    try:
        return int(value)
    except (TypeError, ValueError) as e:
        raise UserInputError(f"segment labels must be integers, got {value!r}") from e


def _plain(value: Any) -> int | str:
    """A segment label as a plain int when it is integer-like, else as a string."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return str(value)


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.0%}"


def _json_float(value: Any) -> float | None:
    v = float(value)
    return None if math.isnan(v) or math.isinf(v) else v
