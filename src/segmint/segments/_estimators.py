"""Clustering estimators with the scikit-learn API, shaped for SQL scoring.

Every estimator here is fitted in memory (on a bounded sample of customers)
and then scored *everywhere* by a rule simple enough to compile to SQL:

- :class:`KMeansSegmenter`, :class:`WardSegmenter`,
  :class:`FuzzyCMeansSegmenter`: nearest centroid by Euclidean distance;
- :class:`DensitySegmenter`: nearest centroid, then ``-1`` (unassigned) when the
  row lies farther from that centroid than the cluster's radius;
- :class:`GaussianMixtureSegmenter`: the component maximising
  ``log(weights_[k]) + component_log_density(X)[:, k]``.

The nearest-centroid rule is always the same: squared Euclidean distance
``sum_j (x_j - c_kj) ** 2`` to every centre, smallest wins, ties go to the
lowest cluster index. ``labels_`` of the training rows is that same rule
applied to the training rows, so scoring the training data in the engine
reproduces ``labels_`` exactly (up to floating-point ties).

All estimators follow scikit-learn's contract: keyword-only hyper-parameters
stored as-is in ``__init__``; validation in ``fit``; fitted state with a
trailing underscore; ``fit`` returns ``self``. Invalid hyper-parameters and
too few rows raise :class:`SegmenterValueError`, which is both a
:class:`ValueError` (what scikit-learn expects) and a
:class:`~segmint.errors.UserInputError` (what the CLI reports cleanly).
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    ClusterMixin,
    TransformerMixin,
)
from sklearn.cluster import (
    DBSCAN,
    HDBSCAN,
    AgglomerativeClustering,
    KMeans,
    MiniBatchKMeans,
    kmeans_plusplus,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted, validate_data

from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Label of rows that belong to no segment (density noise); reported as the
#: explicit "unassigned" segment.
UNASSIGNED: int = -1

# Upper bound on the number of float64 temporaries (rows x centres x features)
# materialised at once when computing distances (16 MiB).
_DISTANCE_BLOCK_ELEMENTS = 1 << 21

_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_DENSITY_METHODS = ("hdbscan", "dbscan")
# Smallest cluster size a fractional ``min_cluster_size`` resolves to
# (scikit-learn's HDBSCAN default).
_MIN_CLUSTER_SIZE_FLOOR = 5


class SegmenterValueError(UserInputError, ValueError):
    """A hyper-parameter or the training data of a segmenter is invalid.

    It is a :class:`ValueError`, as scikit-learn requires of estimators, and a
    :class:`~segmint.errors.UserInputError`, so the CLI reports it cleanly.

    Examples
    --------
    >>> err = SegmenterValueError("must be > 1, got 1.0", where="m")
    >>> isinstance(err, ValueError), str(err)
    (True, 'm: must be > 1, got 1.0')
    """


# --------------------------------------------------------------------- helpers
def _check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise SegmenterValueError(f"must be an integer >= {low}, got {value!r}", where=name)
    return int(value)


def _check_real(
    name: str,
    value: Any,
    *,
    low: float,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    ok = (
        not isinstance(value, bool)
        and isinstance(value, numbers.Real)
        and math.isfinite(float(value))
    )
    if ok:
        v = float(value)
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise SegmenterValueError(
            f"must be a number in {left}{low}, {high}{right}, got {value!r}", where=name
        )
    return float(value)


def _check_enough_samples(n_samples: int, n_clusters: int, name: str = "n_clusters") -> None:
    if n_samples < n_clusters:
        raise SegmenterValueError(f"n_samples={n_samples} should be >= {name}={n_clusters}.")


def _fit_input(estimator: BaseEstimator, X: Any, *, ensure_min_samples: int = 1) -> FloatArray:
    """Validate training data; sets ``n_features_in_`` and ``feature_names_in_``."""
    out: FloatArray = validate_data(
        estimator, X, dtype=np.float64, ensure_min_samples=ensure_min_samples
    )
    return out


def _predict_input(estimator: BaseEstimator, X: Any) -> FloatArray:
    """Check the estimator is fitted and validate new data against the training data."""
    check_is_fitted(estimator)
    out: FloatArray = validate_data(estimator, X, dtype=np.float64, reset=False)
    return out


def _sample_indices(n_samples: int, sample_size: int, random_state: Any) -> IntArray:
    """Sorted indices of a uniform random sample of at most ``sample_size`` rows."""
    if n_samples <= sample_size:
        return np.arange(n_samples, dtype=np.int64)
    rng = check_random_state(random_state)
    chosen = rng.choice(n_samples, size=sample_size, replace=False)
    return np.sort(chosen).astype(np.int64)


def squared_distances(X: FloatArray, centers: FloatArray) -> FloatArray:
    """Squared Euclidean distance of every row to every centre.

    Computed as ``sum_j (x_j - c_kj) ** 2`` (not through the dot-product
    expansion), row by row independently, so the result of a row never depends
    on the other rows and matches the SQL ``SUM(POWER(x - c, 2))``.

    Parameters
    ----------
    X
        Rows, shape ``(n_samples, n_features)``.
    centers
        Centres, shape ``(n_centers, n_features)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_samples, n_centers)``.

    Examples
    --------
    >>> squared_distances(np.array([[0.0, 0.0]]), np.array([[3.0, 4.0], [1.0, 0.0]]))
    array([[25.,  1.]])
    """
    n_samples, n_features = X.shape
    n_centers = centers.shape[0]
    out = np.empty((n_samples, n_centers), dtype=np.float64)
    if n_samples == 0 or n_centers == 0:
        return out
    step = max(1, _DISTANCE_BLOCK_ELEMENTS // max(1, n_centers * n_features))
    for start in range(0, n_samples, step):
        diff = X[start : start + step, None, :] - centers[None, :, :]
        out[start : start + step] = np.square(diff).sum(axis=2)
    return out


def nearest_centroid(X: FloatArray, centers: FloatArray) -> tuple[IntArray, FloatArray]:
    """Index of the nearest centre of every row and the squared distance to it.

    Ties go to the lowest index. With no centres every row gets
    :data:`UNASSIGNED` and an infinite distance.

    Examples
    --------
    >>> labels, d2 = nearest_centroid(np.array([[0.0], [4.0]]), np.array([[1.0], [3.0]]))
    >>> labels.tolist(), d2.tolist()
    ([0, 1], [1.0, 1.0])
    """
    n_samples = X.shape[0]
    if centers.shape[0] == 0:
        return np.full(n_samples, UNASSIGNED, dtype=np.int64), np.full(n_samples, np.inf)
    d2 = squared_distances(X, centers)
    labels = np.argmin(d2, axis=1).astype(np.int64)
    return labels, d2[np.arange(n_samples), labels]


def _radius_labels(X: FloatArray, centers: FloatArray, radius: FloatArray) -> IntArray:
    """Nearest centroid, or ``UNASSIGNED`` when farther than that cluster's radius."""
    labels, d2 = nearest_centroid(X, centers)
    if centers.shape[0] == 0:
        return labels
    outside = np.sqrt(d2) > radius[labels]
    labels[outside] = UNASSIGNED
    return labels


def _assign_dropping_empty(
    X: FloatArray, centers: FloatArray, radius: FloatArray, *, owner: str
) -> tuple[FloatArray, FloatArray, IntArray]:
    """Label ``X`` by the scoring rule, dropping centres that attract no row.

    The rule is the nearest centroid, unassigned beyond the cluster's radius
    (pass infinite radii for the plain nearest-centroid rule). A centre that no
    training row lands in would be a segment that never occurs; it is removed
    (with a warning in the log) and the rows labelled again, until every
    remaining centre has at least one row.
    """
    while True:
        labels = _radius_labels(X, centers, radius)
        counts = np.bincount(labels[labels >= 0], minlength=centers.shape[0])
        empty = counts == 0
        if not empty.any():
            return centers, radius, labels
        logger.warning(
            "%s: %d cluster(s) attract no training row under the scoring rule and are dropped",
            owner,
            int(empty.sum()),
        )
        centers = centers[~empty]
        radius = radius[~empty]


def _cluster_means(X: FloatArray, labels: IntArray, n_clusters: int) -> FloatArray:
    centers = np.empty((n_clusters, X.shape[1]), dtype=np.float64)
    for k in range(n_clusters):
        centers[k] = X[labels == k].mean(axis=0)
    return centers


def _consecutive_labels(labels: IntArray) -> tuple[IntArray, int]:
    """Renumber non-negative labels as 0..k-1 in order of first value; keep -1."""
    out = np.full(labels.shape, UNASSIGNED, dtype=np.int64)
    kept = np.unique(labels[labels >= 0])
    for new, old in enumerate(kept):
        out[labels == old] = new
    return out, int(kept.size)


def fuzzy_memberships(sq_distances: FloatArray, m: float) -> FloatArray:
    """Fuzzy c-means memberships from squared distances (Bezdek, 1981).

    ``u_ik = d_ik ** (-2 / (m - 1)) / sum_j d_ij ** (-2 / (m - 1))`` with
    ``d`` the Euclidean distance; computed in log space for stability. A row
    lying exactly on one or more centres belongs to them in equal shares.

    Parameters
    ----------
    sq_distances
        Squared distances, shape ``(n_samples, n_clusters)``.
    m
        Fuzzifier, ``m > 1``.

    Returns
    -------
    numpy.ndarray
        Memberships, shape ``(n_samples, n_clusters)``; every row sums to 1.

    Examples
    --------
    >>> fuzzy_memberships(np.array([[1.0, 9.0]]), 2.0).round(3).tolist()
    [[0.9, 0.1]]
    """
    zero = sq_distances <= 0.0
    on_centre = zero.any(axis=1)
    with np.errstate(divide="ignore"):
        logits = -np.log(sq_distances) / (m - 1.0)
    out = np.empty_like(sq_distances, dtype=np.float64)
    regular = ~on_centre
    if regular.any():
        z = logits[regular]
        z = z - z.max(axis=1, keepdims=True)
        w = np.exp(z)
        out[regular] = w / w.sum(axis=1, keepdims=True)
    if on_centre.any():
        hits = zero[on_centre].astype(np.float64)
        out[on_centre] = hits / hits.sum(axis=1, keepdims=True)
    return out


# ---------------------------------------------------------------------- KMeans
class KMeansSegmenter(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, ClusterMixin, BaseEstimator
):
    """K-means segmentation; mini-batch k-means on large data.

    Fits :class:`sklearn.cluster.KMeans` when the training data has at most
    ``minibatch_threshold`` rows, else :class:`sklearn.cluster.MiniBatchKMeans`.
    Rows are labelled by the nearest centroid (Euclidean), see
    :func:`nearest_centroid`.

    Parameters
    ----------
    n_clusters
        Number of segments.
    minibatch_threshold
        Above this many training rows, mini-batch k-means is used.
    n_init
        Number of k-means++ initialisations; the best is kept (``"auto"``:
        scikit-learn's rule, 1 for KMeans and 3 for MiniBatchKMeans). The default 10
        avoids the poor local optima a single start often finds on customer data.
    max_iter
        Maximum number of iterations (passes over the data for mini-batch).
    tol
        Relative tolerance of KMeans on the centre shift (KMeans only;
        mini-batch k-means stops when the inertia stops improving).
    batch_size
        Mini-batch size of MiniBatchKMeans.
    random_state
        Seed of the initialisation and the mini-batches.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,)
        Nearest centroid of every training row.
    inertia_ : float
        Sum of squared distances of the training rows to their centroid.
    n_iter_ : int
    estimator_ : KMeans or MiniBatchKMeans
        The fitted scikit-learn model.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when fitted on a DataFrame with string column names.

    Examples
    --------
    >>> X = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [5.1, 5.0]])
    >>> model = KMeansSegmenter(n_clusters=2, random_state=0).fit(X)
    >>> bool(model.labels_[0] == model.labels_[1] != model.labels_[2])
    True
    >>> model.transform(X).shape
    (4, 2)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        minibatch_threshold: int = 100_000,
        n_init: int | str = 10,
        max_iter: int = 300,
        tol: float = 1e-4,
        batch_size: int = 4096,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.minibatch_threshold = minibatch_threshold
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> KMeansSegmenter:
        """Fit the centroids on ``X``; ``y`` is ignored."""
        X = _fit_input(self, X)
        n_clusters = _check_int("n_clusters", self.n_clusters, low=1)
        threshold = _check_int("minibatch_threshold", self.minibatch_threshold, low=0)
        max_iter = _check_int("max_iter", self.max_iter, low=1)
        _check_enough_samples(X.shape[0], n_clusters)
        model: KMeans | MiniBatchKMeans
        if X.shape[0] > threshold:
            model = MiniBatchKMeans(
                n_clusters=n_clusters,
                n_init=self.n_init,
                max_iter=max_iter,
                batch_size=_check_int("batch_size", self.batch_size, low=1),
                compute_labels=False,
                random_state=self.random_state,
            )
        else:
            model = KMeans(
                n_clusters=n_clusters,
                n_init=self.n_init,
                max_iter=max_iter,
                tol=_check_real("tol", self.tol, low=0.0),
                random_state=self.random_state,
            )
        model.fit(X)
        logger.debug("%s fitted on %d rows", type(model).__name__, X.shape[0])
        self.estimator_ = model
        self.cluster_centers_ = np.asarray(model.cluster_centers_, dtype=np.float64)
        self.n_iter_ = int(model.n_iter_)
        labels, d2 = nearest_centroid(X, self.cluster_centers_)
        self.labels_ = labels
        self.inertia_ = float(d2.sum())
        return self

    def predict(self, X: Any) -> IntArray:
        """Nearest centroid (Euclidean) of every row."""
        X = _predict_input(self, X)
        return nearest_centroid(X, self.cluster_centers_)[0]

    def transform(self, X: Any) -> FloatArray:
        """Euclidean distance of every row to every centroid."""
        X = _predict_input(self, X)
        return np.sqrt(squared_distances(X, self.cluster_centers_))

    @property
    def _n_features_out(self) -> int:
        return int(self.cluster_centers_.shape[0])


# ------------------------------------------------------------ Gaussian mixture
class GaussianMixtureSegmenter(ClusterMixin, BaseEstimator):
    """Gaussian-mixture segmentation with soft membership.

    Wraps :class:`sklearn.mixture.GaussianMixture`. A row belongs to the
    component with the highest posterior probability; scoring that in SQL
    uses the decomposition

    ``predict(X) == argmax_k (log(weights_[k]) + component_log_density(X)[:, k])``

    where, with ``P_k`` the precision Cholesky factor (``precisions_cholesky_``,
    ``precision = P_k @ P_k.T``) and ``d`` the number of features,

    ``log N(x | mu_k, Sigma_k) = -0.5 * (d * log(2 pi) + ||(x - mu_k) @ P_k||^2)
    + sum(log(diag(P_k)))``.

    For ``covariance_type="tied"`` one ``P`` is shared; for ``"diag"``
    ``P_k`` is the vector of inverse standard deviations (elementwise
    product instead of matrix product, log-determinant ``sum(log(P_k))``);
    for ``"spherical"`` it is one inverse standard deviation per component
    (log-determinant ``d * log(P_k)``).

    Parameters
    ----------
    n_components
        Number of segments (mixture components).
    covariance_type
        ``"full"``, ``"tied"``, ``"diag"`` or ``"spherical"``.
    tol, reg_covar, max_iter, n_init, init_params
        As in :class:`sklearn.mixture.GaussianMixture`.
    random_state
        Seed of the initialisation.

    Attributes
    ----------
    means_, covariances_, precisions_cholesky_, weights_
        Fitted mixture parameters (see scikit-learn).
    cluster_centers_ : ndarray of shape (n_components, n_features)
        Same as ``means_``.
    labels_ : ndarray of shape (n_samples,)
        ``predict`` of the training rows.
    converged_ : bool
    n_iter_ : int
    estimator_ : GaussianMixture
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(0, 1, (50, 2)), rng.normal(8, 1, (50, 2))])
    >>> gmm = GaussianMixtureSegmenter(n_components=2, random_state=0).fit(X)
    >>> gmm.predict_proba(X[:1]).sum().round(6)
    np.float64(1.0)
    >>> joint = np.log(gmm.weights_) + gmm.component_log_density(X)
    >>> bool((joint.argmax(axis=1) == gmm.predict(X)).all())
    True
    """

    def __init__(
        self,
        n_components: int = 8,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> GaussianMixtureSegmenter:
        """Fit the mixture on ``X`` by EM; ``y`` is ignored."""
        X = _fit_input(self, X)
        n_components = _check_int("n_components", self.n_components, low=1)
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise SegmenterValueError(
                f"must be one of {', '.join(_COVARIANCE_TYPES)}, got {self.covariance_type!r}",
                where="covariance_type",
            )
        _check_enough_samples(X.shape[0], n_components, "n_components")
        model = GaussianMixture(
            n_components=n_components,
            covariance_type=self.covariance_type,
            tol=_check_real("tol", self.tol, low=0.0),
            reg_covar=_check_real("reg_covar", self.reg_covar, low=0.0),
            max_iter=_check_int("max_iter", self.max_iter, low=1),
            n_init=_check_int("n_init", self.n_init, low=1),
            init_params=self.init_params,
            random_state=self.random_state,
        )
        model.fit(X)
        self.estimator_ = model
        self.means_ = np.asarray(model.means_, dtype=np.float64)
        self.covariances_ = np.asarray(model.covariances_, dtype=np.float64)
        self.precisions_cholesky_ = np.asarray(model.precisions_cholesky_, dtype=np.float64)
        self.weights_ = np.asarray(model.weights_, dtype=np.float64)
        self.cluster_centers_ = self.means_
        self.converged_ = bool(model.converged_)
        self.n_iter_ = int(model.n_iter_)
        self.labels_ = model.predict(X).astype(np.int64)
        return self

    def predict(self, X: Any) -> IntArray:
        """Most probable component of every row."""
        X = _predict_input(self, X)
        return np.asarray(self.estimator_.predict(X), dtype=np.int64)

    def predict_proba(self, X: Any) -> FloatArray:
        """Posterior probability of every component; rows sum to 1."""
        X = _predict_input(self, X)
        return np.asarray(self.estimator_.predict_proba(X), dtype=np.float64)

    def score_samples(self, X: Any) -> FloatArray:
        """Log-likelihood of every row under the mixture."""
        X = _predict_input(self, X)
        return np.asarray(self.estimator_.score_samples(X), dtype=np.float64)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion of the model on ``X`` (lower is better)."""
        X = _predict_input(self, X)
        return float(self.estimator_.bic(X))

    def aic(self, X: Any) -> float:
        """Akaike information criterion of the model on ``X`` (lower is better)."""
        X = _predict_input(self, X)
        return float(self.estimator_.aic(X))

    def component_log_density(self, X: Any) -> FloatArray:
        """Log density of every row under every component, ``log N(x | mu_k, Sigma_k)``.

        The formula, per covariance type, is in the class docstring; it uses
        only ``means_`` and ``precisions_cholesky_``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_samples, n_components)``.
        """
        X = _predict_input(self, X)
        n_features = X.shape[1]
        means = self.means_
        prec = self.precisions_cholesky_
        n_components = means.shape[0]
        maha = np.empty((X.shape[0], n_components), dtype=np.float64)
        if self.covariance_type == "full":
            log_det = np.array([np.log(np.diag(prec[k])).sum() for k in range(n_components)])
            for k in range(n_components):
                y = (X - means[k]) @ prec[k]
                maha[:, k] = np.square(y).sum(axis=1)
        elif self.covariance_type == "tied":
            log_det = np.full(n_components, np.log(np.diag(prec)).sum())
            for k in range(n_components):
                y = (X - means[k]) @ prec
                maha[:, k] = np.square(y).sum(axis=1)
        elif self.covariance_type == "diag":
            log_det = np.log(prec).sum(axis=1)
            for k in range(n_components):
                maha[:, k] = np.square((X - means[k]) * prec[k]).sum(axis=1)
        else:  # spherical
            log_det = n_features * np.log(prec)
            maha = squared_distances(X, means) * np.square(prec)[None, :]
        out: FloatArray = -0.5 * (n_features * np.log(2.0 * np.pi) + maha) + log_det[None, :]
        return out


# ------------------------------------------------------------------------ Ward
class WardSegmenter(ClusterMixin, BaseEstimator):
    """Ward hierarchical clustering on a sample, extended by nearest centroid.

    Ward's agglomerative clustering costs quadratic memory, so it is fitted
    on a uniform random sample of at most ``sample_size`` training rows
    (:class:`sklearn.cluster.AgglomerativeClustering` with
    ``linkage="ward"``). Each cluster's centroid is the mean of its sample
    rows. Every training row (sampled or not) and every new row is then
    labelled by the nearest centroid, so ``labels_ == predict(X)`` and the
    model scores in SQL like k-means. A centroid that no training row is
    nearest to is dropped (logged), so there may be fewer than
    ``n_clusters`` centroids in rare degenerate cases.

    Parameters
    ----------
    n_clusters
        Number of segments.
    sample_size
        Maximum number of rows the hierarchy is built on.
    random_state
        Seed of the sample (unused when the data has at most ``sample_size``
        rows).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters_, n_features)
    n_clusters_ : int
    labels_ : ndarray of shape (n_samples,)
        Nearest centroid of every training row.
    sample_indices_ : ndarray of int
        Positions (in the training data) of the rows the hierarchy was built on.
    estimator_ : AgglomerativeClustering
        The model fitted on the sample.
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> X = np.array([[0.0], [0.2], [0.4], [9.0], [9.2], [9.4]])
    >>> ward = WardSegmenter(n_clusters=2, sample_size=4, random_state=0).fit(X)
    >>> len(ward.sample_indices_), len(set(ward.labels_.tolist()))
    (4, 2)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        sample_size: int = 20_000,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.sample_size = sample_size
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> WardSegmenter:
        """Build the hierarchy on a sample of ``X`` and label all rows; ``y`` is ignored."""
        X = _fit_input(self, X, ensure_min_samples=2)
        n_clusters = _check_int("n_clusters", self.n_clusters, low=1)
        sample_size = _check_int("sample_size", self.sample_size, low=2)
        if sample_size < n_clusters:
            raise SegmenterValueError(
                f"sample_size={sample_size} should be >= n_clusters={n_clusters}.",
                where="sample_size",
            )
        _check_enough_samples(X.shape[0], n_clusters)
        idx = _sample_indices(X.shape[0], sample_size, self.random_state)
        sample = X[idx]
        model = AgglomerativeClustering(n_clusters=n_clusters, linkage="ward")
        sample_labels = np.asarray(model.fit_predict(sample), dtype=np.int64)
        centers = _cluster_means(sample, sample_labels, n_clusters)
        no_radius = np.full(n_clusters, np.inf)
        centers, _, labels = _assign_dropping_empty(X, centers, no_radius, owner="WardSegmenter")
        self.estimator_ = model
        self.sample_indices_ = idx
        self.cluster_centers_ = centers
        self.n_clusters_ = int(centers.shape[0])
        self.labels_ = labels
        return self

    def predict(self, X: Any) -> IntArray:
        """Nearest centroid (Euclidean) of every row."""
        X = _predict_input(self, X)
        return nearest_centroid(X, self.cluster_centers_)[0]


# --------------------------------------------------------------------- density
class DensitySegmenter(ClusterMixin, BaseEstimator):
    """Density-based segmentation (HDBSCAN or DBSCAN) with an explicit noise segment.

    The density clustering runs on a uniform random sample of at most
    ``sample_size`` rows. Its noise rows are discarded; each remaining
    cluster gets a centroid (mean of its sample members) and a radius (the
    ``radius_quantile`` quantile of its members' Euclidean distance to the
    centroid; 1.0 means the farthest member).

    Every row, training or new, is then labelled by a rule that compiles to
    SQL: take the nearest centroid ``k``; the row is in segment ``k`` when its
    Euclidean distance to that centroid is at most ``cluster_radius_[k]``,
    else it is :data:`UNASSIGNED` (``-1``), reported as the "unassigned"
    segment. ``labels_`` is that rule applied to the training rows. A
    cluster that no training row lands in under the rule is dropped (logged).
    The rule approximates every cluster by a ball, so strongly non-convex
    density clusters are only roughly reproduced.

    The fitted object keeps no training rows.

    Parameters
    ----------
    method
        ``"hdbscan"`` (:class:`sklearn.cluster.HDBSCAN`) or ``"dbscan"``
        (:class:`sklearn.cluster.DBSCAN`).
    min_cluster_size
        Smallest cluster: an integer >= 2, or a fraction in (0, 1] of the
        sample, resolved to ``max(5, ceil(fraction * n_sample))``. For DBSCAN,
        clusters smaller than this are turned into noise.
    min_samples
        Neighbourhood size that makes a point a core point; ``None`` means
        ``min_cluster_size`` for HDBSCAN and 5 for DBSCAN.
    eps
        Neighbourhood radius of DBSCAN (ignored by HDBSCAN).
    sample_size
        Maximum number of rows the density clustering runs on.
    radius_quantile
        Quantile in (0, 1] of the members' distances that sets each cluster's radius.
    random_state
        Seed of the sample.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters_, n_features)
    cluster_radius_ : ndarray of shape (n_clusters_,)
    n_clusters_ : int
        Number of clusters found (0 when everything is noise).
    labels_ : ndarray of shape (n_samples,)
        Segment of every training row, ``-1`` for unassigned.
    sample_indices_ : ndarray of int
        Positions of the rows the density clustering ran on.
    min_cluster_size_ : int
        Resolved ``min_cluster_size``.
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> rng = np.random.RandomState(0)
    >>> X = np.vstack([rng.normal(0, 0.3, (40, 2)), rng.normal(6, 0.3, (40, 2))])
    >>> model = DensitySegmenter(min_cluster_size=10, random_state=0).fit(X)
    >>> model.n_clusters_
    2
    >>> model.predict(np.array([[50.0, 50.0]])).tolist()
    [-1]
    """

    def __init__(
        self,
        *,
        method: str = "hdbscan",
        min_cluster_size: int | float = 0.01,
        min_samples: int | None = None,
        eps: float = 0.5,
        sample_size: int = 10_000,
        radius_quantile: float = 1.0,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.method = method
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.eps = eps
        self.sample_size = sample_size
        self.radius_quantile = radius_quantile
        self.random_state = random_state

    def _resolve_min_cluster_size(self, n_sample: int) -> int:
        value = self.min_cluster_size
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return _check_int("min_cluster_size", value, low=2)
        fraction = _check_real("min_cluster_size", value, low=0.0, high=1.0, low_open=True)
        return max(_MIN_CLUSTER_SIZE_FLOOR, math.ceil(fraction * n_sample))

    def fit(self, X: Any, y: Any = None) -> DensitySegmenter:
        """Cluster a sample of ``X`` by density and label all rows; ``y`` is ignored."""
        X = _fit_input(self, X)
        if self.method not in _DENSITY_METHODS:
            raise SegmenterValueError(
                f"must be one of {', '.join(_DENSITY_METHODS)}, got {self.method!r}",
                where="method",
            )
        sample_size = _check_int("sample_size", self.sample_size, low=2)
        quantile = _check_real("radius_quantile", self.radius_quantile, low=0.0, high=1.0)
        if quantile == 0.0:
            raise SegmenterValueError("must be in (0, 1], got 0.0", where="radius_quantile")
        idx = _sample_indices(X.shape[0], sample_size, self.random_state)
        sample = X[idx]
        min_cluster_size = self._resolve_min_cluster_size(sample.shape[0])
        _check_enough_samples(sample.shape[0], min_cluster_size, "min_cluster_size")
        min_samples = None
        if self.min_samples is not None:
            min_samples = _check_int("min_samples", self.min_samples, low=1)
            _check_enough_samples(sample.shape[0], min_samples, "min_samples")

        raw: IntArray
        if self.method == "hdbscan":
            hdb = HDBSCAN(min_cluster_size=min_cluster_size, min_samples=min_samples, copy=True)
            raw = np.asarray(hdb.fit_predict(sample), dtype=np.int64)
        else:
            eps = _check_real("eps", self.eps, low=0.0, low_open=True)
            db = DBSCAN(eps=eps, min_samples=5 if min_samples is None else min_samples)
            raw = np.asarray(db.fit_predict(sample), dtype=np.int64)
            sizes = np.bincount(raw[raw >= 0], minlength=1)
            raw = np.where((raw >= 0) & (sizes[np.maximum(raw, 0)] >= min_cluster_size), raw, -1)
        sample_labels, n_found = _consecutive_labels(raw)

        centers = _cluster_means(sample, sample_labels, n_found)
        radius = np.empty(n_found, dtype=np.float64)
        for k in range(n_found):
            members = sample[sample_labels == k]
            dist = np.sqrt(squared_distances(members, centers[k : k + 1])[:, 0])
            radius[k] = np.quantile(dist, quantile)
        if n_found == 0:
            logger.warning(
                "DensitySegmenter(%s) found no cluster in %d rows: every row is unassigned",
                self.method,
                sample.shape[0],
            )
        centers, radius, labels = _assign_dropping_empty(
            X, centers, radius, owner="DensitySegmenter"
        )
        self.sample_indices_ = idx
        self.min_cluster_size_ = min_cluster_size
        self.cluster_centers_ = centers
        self.cluster_radius_ = radius
        self.n_clusters_ = int(centers.shape[0])
        self.labels_ = labels
        return self

    def predict(self, X: Any) -> IntArray:
        """Nearest centroid when within that cluster's radius, else ``-1`` (unassigned)."""
        X = _predict_input(self, X)
        return _radius_labels(X, self.cluster_centers_, self.cluster_radius_)


# -------------------------------------------------------------- fuzzy c-means
class FuzzyCMeansSegmenter(ClusterMixin, BaseEstimator):
    """Fuzzy c-means (Bezdek) segmentation with soft membership.

    Minimises ``J_m = sum_i sum_k u_ik ** m * ||x_i - c_k|| ** 2`` by
    alternating the centre update ``c_k = sum_i u_ik ** m x_i / sum_i u_ik ** m``
    and the membership update of :func:`fuzzy_memberships`, starting from
    k-means++ centres drawn with ``random_state``. It stops when no
    membership changes by more than ``tol`` or after ``max_iter`` iterations
    (with a :class:`~sklearn.exceptions.ConvergenceWarning`).

    Memberships decrease with the distance to a centre, so the most probable
    cluster is the nearest centroid: ``predict`` is the nearest-centroid rule
    and equals ``predict_proba(X).argmax(axis=1)``.

    Parameters
    ----------
    n_clusters
        Number of segments.
    m
        Fuzzifier, ``> 1``; larger means softer memberships.
    max_iter
        Maximum number of iterations.
    tol
        Convergence threshold on the largest membership change.
    random_state
        Seed of the k-means++ initialisation.

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
    labels_ : ndarray of shape (n_samples,)
    objective_ : float
        Final value of ``J_m``.
    n_iter_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str

    Examples
    --------
    >>> X = np.array([[0.0], [0.0], [10.0], [10.0]])
    >>> fcm = FuzzyCMeansSegmenter(n_clusters=2, random_state=0).fit(X)
    >>> sorted(fcm.cluster_centers_.ravel().round(6).tolist())
    [0.0, 10.0]
    >>> fcm.predict_proba(np.array([[5.0]])).round(3).tolist()
    [[0.5, 0.5]]
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        m: float = 2.0,
        max_iter: int = 300,
        tol: float = 1e-5,
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_clusters = n_clusters
        self.m = m
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def fit(self, X: Any, y: Any = None) -> FuzzyCMeansSegmenter:
        """Fit the centres on ``X``; ``y`` is ignored."""
        X = _fit_input(self, X)
        n_clusters = _check_int("n_clusters", self.n_clusters, low=1)
        m = _check_real("m", self.m, low=1.0, low_open=True, high=1e6)
        max_iter = _check_int("max_iter", self.max_iter, low=1)
        tol = _check_real("tol", self.tol, low=0.0)
        _check_enough_samples(X.shape[0], n_clusters)
        rng = check_random_state(self.random_state)

        centers, _ = kmeans_plusplus(X, n_clusters, random_state=rng)
        centers = np.asarray(centers, dtype=np.float64)
        u = fuzzy_memberships(squared_distances(X, centers), m)
        n_iter = 0
        converged = False
        while not converged and n_iter < max_iter:
            n_iter += 1
            weights = u**m
            totals = weights.sum(axis=0)
            moved = totals > 0
            centers = centers.copy()
            centers[moved] = (weights.T @ X)[moved] / totals[moved, None]
            u_new = fuzzy_memberships(squared_distances(X, centers), m)
            converged = float(np.abs(u_new - u).max()) <= tol
            u = u_new
        if not converged:
            warnings.warn(
                f"FuzzyCMeansSegmenter did not converge in max_iter={max_iter} iterations; "
                "increase max_iter or tol.",
                ConvergenceWarning,
                stacklevel=2,
            )
        d2 = squared_distances(X, centers)
        if np.unique(centers, axis=0).shape[0] < n_clusters:
            logger.warning(
                "FuzzyCMeansSegmenter: fewer distinct centres than n_clusters=%d "
                "(the data has too few distinct rows)",
                n_clusters,
            )
        self.cluster_centers_ = centers
        self.n_iter_ = n_iter
        self.objective_ = float((u**m * d2).sum())
        self.labels_ = np.argmin(d2, axis=1).astype(np.int64)
        return self

    def predict(self, X: Any) -> IntArray:
        """Nearest centroid (= most probable cluster) of every row."""
        X = _predict_input(self, X)
        return nearest_centroid(X, self.cluster_centers_)[0]

    def predict_proba(self, X: Any) -> FloatArray:
        """Fuzzy membership of every row in every cluster; rows sum to 1."""
        X = _predict_input(self, X)
        return fuzzy_memberships(squared_distances(X, self.cluster_centers_), float(self.m))


# --------------------------------------------------------------------- factory
#: Algorithm name -> estimator class.
SEGMENTERS: dict[str, type[BaseEstimator]] = {
    "kmeans": KMeansSegmenter,
    "gmm": GaussianMixtureSegmenter,
    "ward": WardSegmenter,
    "hdbscan": DensitySegmenter,
    "dbscan": DensitySegmenter,
    "fcm": FuzzyCMeansSegmenter,
}


def make_segmenter(algorithm: str, n_clusters: int | None, random_state: int) -> BaseEstimator:
    """Build an unfitted segmenter by algorithm name.

    Parameters
    ----------
    algorithm
        One of the keys of :data:`SEGMENTERS` (case-insensitive).
    n_clusters
        Number of segments; ``None`` keeps the estimator's default. Must be
        ``None`` for ``"hdbscan"`` and ``"dbscan"``, which find the number of
        segments themselves.
    random_state
        Seed passed to the estimator.

    Returns
    -------
    BaseEstimator
        An unfitted estimator.

    Raises
    ------
    UserInputError
        For an unknown algorithm, or ``n_clusters`` given to a density method.

    Examples
    --------
    >>> make_segmenter("kmeans", 4, 42)
    KMeansSegmenter(n_clusters=4, random_state=42)
    >>> make_segmenter("dbscan", None, 0)
    DensitySegmenter(method='dbscan', random_state=0)
    """
    name = algorithm.strip().lower() if isinstance(algorithm, str) else algorithm
    if name not in SEGMENTERS:
        raise UserInputError(
            f"unknown clustering algorithm {algorithm!r}; choose one of "
            f"{', '.join(sorted(SEGMENTERS))}",
            where="algorithm",
        )
    cls = SEGMENTERS[name]
    if cls is DensitySegmenter:
        if n_clusters is not None:
            raise UserInputError(
                f"{name} finds the number of segments itself; do not set n_clusters",
                where="n_clusters",
            )
        return DensitySegmenter(method=name, random_state=random_state)
    if n_clusters is None:
        return cls(random_state=random_state)
    if cls is GaussianMixtureSegmenter:
        return GaussianMixtureSegmenter(n_components=n_clusters, random_state=random_state)
    return cls(n_clusters=n_clusters, random_state=random_state)
