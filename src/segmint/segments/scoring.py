"""Fitted segment models as plain data, scored in numpy and compiled to SQL.

segmint fits a segmenter on an in-memory sample and scores **every** customer
inside the engine. This module is the bridge:

- :class:`ScoringSpec` holds everything a fitted model needs to label a row
  (centres, radii, mixture parameters, segment ids) as plain numbers, so a
  model is stored as JSON (:meth:`ScoringSpec.to_dict`), never pickled;
- :func:`spec_from_model` extracts it from any of the five estimators of
  :mod:`segmint.segments.estimators`;
- :meth:`ScoringSpec.score` / :meth:`ScoringSpec.predict` apply it in numpy
  (what the real-time path uses), equal to the estimator's ``predict``;
- :func:`compile_scoring_sql` renders it as one ``SELECT`` (DuckDB dialect,
  transpilable by SQLGlot) and :func:`score_in_engine` runs it as
  ``INSERT INTO segment_assignments ... SELECT`` without pulling rows into Python.

Scoring rules
-------------
``"centroid"`` (k-means, Ward, fuzzy c-means)
    The nearest centre by squared Euclidean distance ``sum_j (x_j - c_kj) ** 2``;
    ties go to the lowest index. ``distance`` is the Euclidean distance to that
    centre. For fuzzy c-means (``fuzzifier`` set) ``probability`` is the largest
    fuzzy membership, else NULL.
``"centroid_radius"`` (HDBSCAN / DBSCAN)
    The nearest centre as above, then :data:`UNASSIGNED` (``-1``) when the
    distance exceeds that centre's radius. ``distance`` is the distance to the
    nearest centre (also for unassigned rows).
``"gaussian_mixture"``
    The component maximising ``log(w_k) + log N(x | mu_k, Sigma_k)`` with
    ``log N = -0.5 * (d * log(2 pi) + sum_j z_kj ** 2) + log_det_k`` and
    ``z_k = (x - mu_k) @ P_k`` (``P_k`` the Cholesky factor of the precision);
    ties go to the lowest index. ``probability`` is the posterior of that
    component (a softmax computed with the maximum subtracted); ``distance`` is NULL.

Exactness
---------
The SQL performs the same floating-point operations in the same order as the
numpy code, so the engine reproduces the labels exactly, ties included: sums
of squares are added in numpy's pairwise-summation order, and numbers are
rendered with ``repr(float)`` in exponent form (``0.1e0``), which every engine
reads back as the identical double (a literal such as ``0.1`` would be a
DECIMAL in DuckDB and Spark). The numbers come from a model we fitted, never
from user input; user values (names, versions, timestamps) are bound as
parameters.

Missing values
--------------
The feature transformer is expected to fill missing values before scoring.
If an input is nonetheless NULL, NaN or infinite, the SQL yields a NULL
``segment_id``, ``distance`` and ``probability`` for that row rather than
silently picking a segment; :meth:`ScoringSpec.score` raises
:class:`~segmint.errors.DataValidationError` on such rows, as the estimators do.

Examples
--------
>>> import numpy as np
>>> from segmint.segments.estimators import KMeansSegmenter
>>> X = np.array([[0.0, 0.0], [0.2, 0.0], [6.0, 6.0], [6.2, 6.0]])
>>> model = KMeansSegmenter(n_clusters=2, random_state=0).fit(X)
>>> spec = spec_from_model(model, feature_names=["recency", "frequency"])
>>> bool((spec.predict(X)[0] == model.predict(X)).all())
True
>>> sql = compile_scoring_sql(spec, {"recency": '"r"', "frequency": '"f"'}, source="features")
>>> sql.startswith("WITH")
True
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
import sqlglot
import sqlglot.expressions as exp
from sklearn.exceptions import NotFittedError as SklearnNotFittedError
from sklearn.utils.validation import check_is_fitted

from segmint.data.schema import Column, Table, register_table
from segmint.engine.dialect import CANONICAL, quote
from segmint.engine.warehouse import Warehouse
from segmint.errors import DataValidationError, NotFittedError, UserInputError
from segmint.segments.estimators import (
    UNASSIGNED,
    DensitySegmenter,
    FuzzyCMeansSegmenter,
    GaussianMixtureSegmenter,
    KMeansSegmenter,
    WardSegmenter,
    fuzzy_memberships,
    nearest_centroid,
    squared_distances,
)
from segmint.segments.profiles import default_segment_name

logger = logging.getLogger(__name__)

__all__ = [
    "KINDS",
    "SEGMENT_ASSIGNMENTS",
    "Scores",
    "ScoringSpec",
    "compile_scoring_sql",
    "score_in_engine",
    "spec_from_model",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
_T = TypeVar("_T")

#: The scoring rules a :class:`ScoringSpec` can hold.
KINDS = ("centroid", "centroid_radius", "gaussian_mixture")
_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_SPEC_FORMAT = 1
_LOG_2PI = math.log(2.0 * math.pi)
# numpy's pairwise summation: 8 accumulators, blocks of at most 128 items.
_PAIRWISE_UNROLL = 8
_PAIRWISE_BLOCK = 128

SEGMENT_ASSIGNMENTS = Table(
    "segment_assignments",
    "Segment of every customer under every published model version (old versions are kept).",
    (
        Column("customer_id", "string", "Customer (person) scored.", pii=True),
        Column("model_version", "string", "Model version that assigned the segment (v0001, ...)."),
        Column(
            "segment_id",
            "integer",
            "Segment id; -1 is the unassigned segment; NULL when an input was missing.",
        ),
        Column("segment_name", "string", "Name of the segment at publication."),
        Column(
            "probability",
            "float",
            "Posterior (mixture) or largest fuzzy membership (fuzzy c-means); else NULL.",
        ),
        Column(
            "distance",
            "float",
            "Euclidean distance to the nearest centre (centroid models); else NULL.",
        ),
        Column("assigned_at", "timestamp", "When the assignment was computed (UTC)."),
    ),
    key=("customer_id", "model_version"),
    timestamp_column="assigned_at",
)
register_table(SEGMENT_ASSIGNMENTS)


# ------------------------------------------------------------------ the spec
class Scores(NamedTuple):
    """Result of :meth:`ScoringSpec.score`: one entry per row.

    ``distance`` and ``probability`` are NaN where the SQL column is NULL
    (a rule that does not define them).
    """

    segment_id: IntArray
    distance: FloatArray
    probability: FloatArray


def _floats(values: Any, name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise UserInputError("must contain finite numbers only", where=name)
    return out


def _matrix(values: Any, name: str) -> tuple[tuple[float, ...], ...]:
    return tuple(_floats(row, name) for row in values)


@dataclass(frozen=True)
class ScoringSpec:
    """A fitted segment model as plain, JSON-serialisable data.

    Build it with :func:`spec_from_model`; store it with :meth:`to_dict` and
    :meth:`from_dict`. Lists given to the constructor are turned into tuples.

    Parameters
    ----------
    kind
        ``"centroid"``, ``"centroid_radius"`` or ``"gaussian_mixture"``
        (see the module docstring for the rules).
    feature_names
        Transformed input features, in the order of the columns of ``centers``.
    centers
        One row per segment: the centroids, or the mixture means.
    segment_ids
        The segment id each centre stands for (distinct, non-negative);
        ``range(len(centers))`` from :func:`spec_from_model`.
    radius
        ``"centroid_radius"`` only: the largest Euclidean distance at which a
        row still belongs to each centre.
    fuzzifier
        ``"centroid"`` only, optional: the fuzzy c-means ``m``; when set,
        ``probability`` is the largest fuzzy membership.
    weights
        ``"gaussian_mixture"`` only: mixture weights.
    precisions_cholesky
        ``"gaussian_mixture"`` only: per component the ``d x d`` Cholesky
        factor ``P_k`` of the precision (``precision = P_k @ P_k.T``); tied,
        diagonal and spherical covariances are stored as the equivalent matrices.
    log_det
        ``"gaussian_mixture"`` only: per component ``log det(P_k)``.
    covariance_type
        ``"gaussian_mixture"`` only: the covariance type the model was fitted
        with (informational; scoring uses ``precisions_cholesky``).
    estimator
        Class name of the estimator the spec came from (informational).

    Examples
    --------
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",),
    ...                    centers=((0.0,), (10.0,)), segment_ids=(0, 1))
    >>> spec.predict(np.array([[4.0], [7.0]]))[0].tolist()
    [0, 1]
    >>> ScoringSpec.from_dict(spec.to_dict()) == spec
    True
    """

    kind: str
    feature_names: tuple[str, ...]
    centers: tuple[tuple[float, ...], ...]
    segment_ids: tuple[int, ...]
    radius: tuple[float, ...] | None = None
    fuzzifier: float | None = None
    weights: tuple[float, ...] | None = None
    precisions_cholesky: tuple[tuple[tuple[float, ...], ...], ...] | None = None
    log_det: tuple[float, ...] | None = None
    covariance_type: str | None = None
    estimator: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.kind not in KINDS:
            raise UserInputError(
                f"unknown scoring kind {self.kind!r}; expected one of {', '.join(KINDS)}",
                where="kind",
            )
        names = tuple(str(n) for n in self.feature_names)
        if not names:
            raise UserInputError("a scoring spec needs at least one feature", where="features")
        if len(set(names)) != len(names):
            raise UserInputError(f"duplicate feature names in {list(names)}", where="features")
        set_(self, "feature_names", names)
        centers = _matrix(self.centers, "centers")
        if any(len(row) != len(names) for row in centers):
            raise UserInputError(
                f"every centre needs {len(names)} coordinates (one per feature)", where="centers"
            )
        set_(self, "centers", centers)
        ids = tuple(self.segment_ids)
        if any(isinstance(i, bool) or not isinstance(i, int | np.integer) for i in ids):
            raise UserInputError("segment ids must be integers", where="segment_ids")
        ids = tuple(int(i) for i in ids)
        if len(ids) != len(centers) or len(set(ids)) != len(ids) or any(i < 0 for i in ids):
            raise UserInputError(
                f"need {len(centers)} distinct non-negative segment ids, got {list(ids)}",
                where="segment_ids",
            )
        set_(self, "segment_ids", ids)
        k = len(centers)
        self._check_kind_fields(k)
        if self.radius is not None:
            radius = _floats(self.radius, "radius")
            if len(radius) != k or any(r < 0 for r in radius):
                raise UserInputError(f"need {k} non-negative radii", where="radius")
            set_(self, "radius", radius)
        if self.fuzzifier is not None:
            m = float(self.fuzzifier)
            if not (math.isfinite(m) and m > 1.0):
                raise UserInputError(f"must be a number > 1, got {m!r}", where="fuzzifier")
            set_(self, "fuzzifier", m)
        if self.kind == "gaussian_mixture":
            self._normalise_mixture(k, len(names))

    def _check_kind_fields(self, k: int) -> None:
        mixture = (self.weights, self.precisions_cholesky, self.log_det, self.covariance_type)
        is_mixture = self.kind == "gaussian_mixture"
        if is_mixture and any(v is None for v in mixture):
            raise UserInputError(
                "a gaussian_mixture spec needs weights, precisions_cholesky, log_det and "
                "covariance_type",
                where="spec",
            )
        if not is_mixture and any(v is not None for v in mixture):
            raise UserInputError(f"a {self.kind} spec takes no mixture parameters", where="spec")
        if (self.kind == "centroid_radius") != (self.radius is not None):
            raise UserInputError(
                "radius is required by, and only by, centroid_radius", where="radius"
            )
        if self.fuzzifier is not None and self.kind != "centroid":
            raise UserInputError("fuzzifier only applies to centroid specs", where="fuzzifier")
        if k == 0 and self.kind != "centroid_radius":
            raise UserInputError(f"a {self.kind} spec needs at least one centre", where="centers")

    def _normalise_mixture(self, k: int, d: int) -> None:
        set_ = object.__setattr__
        if self.covariance_type not in _COVARIANCE_TYPES:
            raise UserInputError(
                f"must be one of {', '.join(_COVARIANCE_TYPES)}, got {self.covariance_type!r}",
                where="covariance_type",
            )
        weights = _floats(self.weights or (), "weights")
        log_det = _floats(self.log_det or (), "log_det")
        prec = tuple(_matrix(m, "precisions_cholesky") for m in self.precisions_cholesky or ())
        if len(weights) != k or any(w <= 0 for w in weights):
            raise UserInputError(f"need {k} positive mixture weights", where="weights")
        if len(log_det) != k:
            raise UserInputError(f"need {k} log-determinants", where="log_det")
        if len(prec) != k or any(len(m) != d or any(len(r) != d for r in m) for m in prec):
            raise UserInputError(
                f"need {k} precision Cholesky factors of shape ({d}, {d})",
                where="precisions_cholesky",
            )
        if any(m[j][j] <= 0 for m in prec for j in range(d)):
            raise UserInputError(
                "precision Cholesky factors need a positive diagonal", where="precisions_cholesky"
            )
        set_(self, "weights", weights)
        set_(self, "log_det", log_det)
        set_(self, "precisions_cholesky", prec)

    # ---------------------------------------------------------------- shape
    @property
    def n_features(self) -> int:
        """Number of input features."""
        return len(self.feature_names)

    @property
    def n_segments(self) -> int:
        """Number of segments (centres or components), not counting unassigned."""
        return len(self.centers)

    @property
    def possible_segment_ids(self) -> tuple[int, ...]:
        """Every id the rule can produce: ``segment_ids``, plus ``-1`` for radius rules."""
        extra = (UNASSIGNED,) if self.kind == "centroid_radius" else ()
        return self.segment_ids + extra

    # ---------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Return the spec as JSON-serialisable data (floats keep full precision).

        Examples
        --------
        >>> spec = ScoringSpec(kind="centroid", feature_names=("x",), centers=((0.1,),),
        ...                    segment_ids=(0,))
        >>> spec.to_dict()["centers"]
        [[0.1]]
        """
        out: dict[str, Any] = {
            "format": _SPEC_FORMAT,
            "kind": self.kind,
            "estimator": self.estimator,
            "feature_names": list(self.feature_names),
            "centers": [list(row) for row in self.centers],
            "segment_ids": list(self.segment_ids),
        }
        if self.radius is not None:
            out["radius"] = list(self.radius)
        if self.fuzzifier is not None:
            out["fuzzifier"] = self.fuzzifier
        if self.kind == "gaussian_mixture":
            out["covariance_type"] = self.covariance_type
            out["weights"] = list(self.weights or ())
            out["log_det"] = list(self.log_det or ())
            out["precisions_cholesky"] = [
                [list(r) for r in m] for m in self.precisions_cholesky or ()
            ]
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoringSpec:
        """Rebuild a spec from :meth:`to_dict` output (validated again).

        Raises
        ------
        UserInputError
            If the data is not a valid spec.
        """
        if not isinstance(data, Mapping):
            raise UserInputError("a scoring spec must be a JSON object", where="spec")
        if data.get("format") != _SPEC_FORMAT:
            raise UserInputError(
                f"unsupported scoring spec format {data.get('format')!r}", where="spec"
            )
        known = {
            "kind",
            "feature_names",
            "centers",
            "segment_ids",
            "radius",
            "fuzzifier",
            "weights",
            "precisions_cholesky",
            "log_det",
            "covariance_type",
            "estimator",
        }
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise UserInputError(f"unknown keys {unknown} in scoring spec", where="spec")
        try:
            return cls(**{key: data[key] for key in known if key in data})
        except TypeError as e:
            raise UserInputError(f"invalid scoring spec: {e}", where="spec") from e

    # -------------------------------------------------------------- scoring
    def _check_rows(self, X: Any) -> FloatArray:
        columns = getattr(X, "columns", None)
        if columns is not None:
            missing = [f for f in self.feature_names if f not in set(map(str, columns))]
            if missing:
                raise DataValidationError(f"missing feature columns {missing}", where="X")
            X = X[list(self.feature_names)]
        arr = np.asarray(X, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise DataValidationError(
                f"expected rows of {self.n_features} features, got shape {arr.shape}", where="X"
            )
        if not np.isfinite(arr).all():
            raise DataValidationError(
                "inputs contain NaN or infinite values; fill them before scoring", where="X"
            )
        return arr

    def score(self, X: Any) -> Scores:
        """Segment, distance and probability of every row, exactly as the SQL computes them.

        Parameters
        ----------
        X
            Rows of transformed features, shape ``(n_rows, n_features)``; a
            data frame is reordered by ``feature_names``.

        Returns
        -------
        Scores
            ``segment_id`` (``-1`` for unassigned), ``distance`` and
            ``probability`` (NaN where not defined by the rule).

        Raises
        ------
        DataValidationError
            If ``X`` has the wrong shape or non-finite values.

        Examples
        --------
        >>> spec = ScoringSpec(kind="centroid_radius", feature_names=("x",),
        ...                    centers=((0.0,),), segment_ids=(3,), radius=(1.0,))
        >>> spec.score(np.array([[0.5], [2.0]])).segment_id.tolist()
        [3, -1]
        """
        X = self._check_rows(X)
        n = X.shape[0]
        nan = np.full(n, np.nan)
        ids = np.asarray(self.segment_ids, dtype=np.int64)
        if self.kind == "gaussian_mixture":
            joint = self._joint_log_density(X)
            best = np.argmax(joint, axis=1).astype(np.int64)
            top = _fold([joint[:, k] for k in range(1, joint.shape[1])], np.maximum, joint[:, 0])
            total = _fold([np.exp(joint[:, k] - top) for k in range(joint.shape[1])], np.add)
            return Scores(ids[best], nan, 1.0 / total)
        centers = np.asarray(self.centers, dtype=np.float64).reshape(-1, self.n_features)
        if centers.shape[0] == 0:
            return Scores(np.full(n, UNASSIGNED, dtype=np.int64), nan, nan)
        best, d2 = nearest_centroid(X, centers)
        distance = np.sqrt(d2)
        labels = ids[best]
        if self.radius is not None:
            labels[distance > np.asarray(self.radius)[best]] = UNASSIGNED
        probability = nan
        if self.fuzzifier is not None:
            memberships = fuzzy_memberships(squared_distances(X, centers), self.fuzzifier)
            probability = memberships.max(axis=1, initial=0.0)
        return Scores(labels, distance, probability)

    def predict(self, X: Any) -> tuple[IntArray, FloatArray]:
        """Segment of every row and its score.

        The score is the Euclidean distance to the assigned (nearest) centre for
        centroid rules and the posterior probability of the assigned component
        for mixtures. Labels equal the fitted estimator's ``predict``.

        Examples
        --------
        >>> spec = ScoringSpec(kind="centroid", feature_names=("x",),
        ...                    centers=((0.0,), (10.0,)), segment_ids=(0, 1))
        >>> labels, distance = spec.predict(np.array([[4.0]]))
        >>> labels.tolist(), distance.tolist()
        ([0], [4.0])
        """
        scores = self.score(X)
        if self.kind == "gaussian_mixture":
            return scores.segment_id, scores.probability
        return scores.segment_id, scores.distance

    def _joint_log_density(self, X: FloatArray) -> FloatArray:
        """``log(w_k) + log N(x | mu_k, Sigma_k)``, in the operation order of the SQL."""
        d = self.n_features
        constant = d * _LOG_2PI
        weights = self.weights or ()
        log_det = self.log_det or ()
        out = np.empty((X.shape[0], self.n_segments), dtype=np.float64)
        for k, (mean, chol) in enumerate(
            zip(self.centers, self.precisions_cholesky or (), strict=True)
        ):
            diffs = [X[:, i] - mean[i] for i in range(d)]
            squares = []
            for j in range(d):
                z = _fold([diffs[i] * chol[i][j] for i in range(d) if chol[i][j] != 0.0], np.add)
                squares.append(z * z)
            maha = _fold(squares, np.add)
            out[:, k] = (-0.5 * (constant + maha) + log_det[k]) + math.log(weights[k])
        return out


# ------------------------------------------------------------ from a model
def _feature_names(model: Any, n_features: int, given: Sequence[str] | None) -> tuple[str, ...]:
    fitted = getattr(model, "feature_names_in_", None)
    if given is not None:
        names = tuple(str(n) for n in given)
        if len(names) != n_features:
            raise UserInputError(
                f"{len(names)} feature names given for a model of {n_features} features",
                where="feature_names",
            )
        if fitted is not None and tuple(map(str, fitted)) != names:
            raise UserInputError(
                f"feature names {list(names)} differ from the model's {list(fitted)}",
                where="feature_names",
            )
        return names
    if fitted is not None:
        return tuple(str(n) for n in fitted)
    return tuple(f"x{i}" for i in range(n_features))


def _mixture_parameters(model: GaussianMixtureSegmenter) -> dict[str, Any]:
    """Precision Cholesky factors as ``(k, d, d)`` matrices and their log-determinants."""
    means = np.asarray(model.means_, dtype=np.float64)
    k, d = means.shape
    prec = np.asarray(model.precisions_cholesky_, dtype=np.float64)
    kind = model.covariance_type
    # log-determinants exactly as scikit-learn's _compute_log_det_cholesky
    if kind == "full":
        log_det = np.sum(np.log(prec.reshape(k, -1)[:, :: d + 1]), 1)
        matrices = prec
    elif kind == "tied":
        log_det = np.full(k, np.sum(np.log(np.diag(prec))))
        matrices = np.broadcast_to(prec, (k, d, d))
    elif kind == "diag":
        log_det = np.sum(np.log(prec), axis=1)
        matrices = np.stack([np.diag(p) for p in prec])
    else:
        log_det = d * np.log(prec)
        matrices = np.stack([np.eye(d) * p for p in prec])
    return {
        "covariance_type": kind,
        "weights": np.asarray(model.weights_, dtype=np.float64).tolist(),
        "log_det": np.asarray(log_det, dtype=np.float64).tolist(),
        "precisions_cholesky": np.asarray(matrices).tolist(),
    }


def spec_from_model(model: Any, *, feature_names: Sequence[str] | None = None) -> ScoringSpec:
    """Extract the :class:`ScoringSpec` of a fitted segmenter.

    Parameters
    ----------
    model
        A fitted :class:`~segmint.segments.estimators.KMeansSegmenter`,
        :class:`~segmint.segments.estimators.WardSegmenter`,
        :class:`~segmint.segments.estimators.FuzzyCMeansSegmenter`,
        :class:`~segmint.segments.estimators.DensitySegmenter` or
        :class:`~segmint.segments.estimators.GaussianMixtureSegmenter`.
    feature_names
        Names of the transformed input features, in column order. Defaults to
        the names the model was fitted with (``feature_names_in_``), else
        ``x0, x1, ...``.

    Returns
    -------
    ScoringSpec
        Segment ids are the model's labels ``0 .. k-1``.

    Raises
    ------
    UserInputError
        For an estimator type that cannot be compiled, or mismatching names.
    NotFittedError
        If the model is not fitted.

    Examples
    --------
    >>> from segmint.segments.estimators import WardSegmenter
    >>> ward = WardSegmenter(n_clusters=2).fit(np.array([[0.0], [1.0], [9.0], [10.0]]))
    >>> spec = spec_from_model(ward)
    >>> spec.kind, spec.feature_names, spec.segment_ids
    ('centroid', ('x0',), (0, 1))
    """
    supported = (
        KMeansSegmenter,
        WardSegmenter,
        FuzzyCMeansSegmenter,
        DensitySegmenter,
        GaussianMixtureSegmenter,
    )
    if not isinstance(model, supported):
        raise UserInputError(
            f"cannot compile a {type(model).__name__} to SQL; supported: "
            f"{', '.join(c.__name__ for c in supported)}",
            where="model",
        )
    try:
        check_is_fitted(model)
    except SklearnNotFittedError as e:
        raise NotFittedError(f"{type(model).__name__} is not fitted; call fit first") from e
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    n_features = int(model.n_features_in_)
    common: dict[str, Any] = {
        "feature_names": _feature_names(model, n_features, feature_names),
        "centers": centers.reshape(-1, n_features).tolist(),
        "segment_ids": tuple(range(centers.shape[0])),
        "estimator": type(model).__name__,
    }
    if isinstance(model, GaussianMixtureSegmenter):
        return ScoringSpec(kind="gaussian_mixture", **common, **_mixture_parameters(model))
    if isinstance(model, DensitySegmenter):
        radius = np.asarray(model.cluster_radius_, dtype=np.float64).tolist()
        return ScoringSpec(kind="centroid_radius", radius=radius, **common)
    if isinstance(model, FuzzyCMeansSegmenter):
        return ScoringSpec(kind="centroid", fuzzifier=float(model.m), **common)
    return ScoringSpec(kind="centroid", **common)


# ------------------------------------------------------------- summation
def _fold(items: Sequence[_T], add: Callable[[_T, _T], _T], start: _T | None = None) -> _T:
    """Combine ``items`` with ``add`` in numpy's pairwise-summation order.

    For fewer than 8 items (or when ``start`` is given) it is a left fold;
    otherwise 8 interleaved accumulators per block of at most 128 items,
    combined as ``((r0+r1)+(r2+r3))+((r4+r5)+(r6+r7))`` plus the remainder,
    and larger inputs split in halves (numpy's ``pairwise_sum``). Applied to
    SQL strings it renders a sum that the engine evaluates in exactly the
    order numpy does, so sums agree to the last bit.
    """
    if start is not None:
        acc = start
        for item in items:
            acc = add(acc, item)
        return acc
    n = len(items)
    if n == 0:
        raise ValueError("nothing to fold")
    if n < _PAIRWISE_UNROLL:
        acc = items[0]
        for item in items[1:]:
            acc = add(acc, item)
        return acc
    if n <= _PAIRWISE_BLOCK:
        r = list(items[:_PAIRWISE_UNROLL])
        i = _PAIRWISE_UNROLL
        while i < n - n % _PAIRWISE_UNROLL:
            for j in range(_PAIRWISE_UNROLL):
                r[j] = add(r[j], items[i + j])
            i += _PAIRWISE_UNROLL
        acc = add(add(add(r[0], r[1]), add(r[2], r[3])), add(add(r[4], r[5]), add(r[6], r[7])))
        for item in items[i:]:
            acc = add(acc, item)
        return acc
    half = n // 2
    half -= half % _PAIRWISE_UNROLL
    return add(_fold(items[:half], add), _fold(items[half:], add))


# ----------------------------------------------------------------- SQL
def _lit(value: float) -> str:
    """A double literal that reads back as exactly ``value`` (exponent form)."""
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"cannot render {v!r} as a SQL literal")
    text = repr(v)
    if "e" not in text:
        text += "e0"
    return f"({text})" if v < 0 or text.startswith("-") else text


def _sql_add(a: str, b: str) -> str:
    return f"({a} + {b})"


def _argbest(columns: Sequence[str], op: str) -> str:
    """Index of the smallest (``<=``) or largest (``>=``) column, ties to the lowest index.

    ``CASE WHEN c0 <= c1 AND c0 <= c2 THEN 0 WHEN c1 <= c2 THEN 1 ELSE 2 END``:
    branch ``i`` is reached only when every earlier column is strictly worse
    than some later one, so the first column equal to the best wins, as in
    ``numpy.argmin`` / ``numpy.argmax``.
    """
    k = len(columns)
    parts = [f"CASE WHEN {columns[0]} IS NULL THEN NULL"]
    for i in range(k - 1):
        cond = " AND ".join(f"{columns[i]} {op} {columns[j]}" for j in range(i + 1, k))
        parts.append(f"WHEN {cond} THEN {i}")
    parts.append(f"ELSE {k - 1} END")
    return " ".join(parts)


def _pick(index: str, values: Sequence[str]) -> str:
    """``values[index]`` as a CASE over the index column."""
    if len(values) == 1:
        return f"CASE WHEN {index} IS NULL THEN NULL ELSE {values[0]} END"
    whens = " ".join(f"WHEN {i} THEN {v}" for i, v in enumerate(values))
    return f"CASE {index} {whens} END"


def _checked_expression(name: str, text: str) -> str:
    """Parse one input expression; reject anything that is not a single scalar expression."""
    if not isinstance(text, str) or not text.strip():
        raise UserInputError("must be a non-empty SQL expression", where=f"inputs.{name}")
    try:
        statements = sqlglot.parse(f"SELECT ({text})", read=CANONICAL)
    except sqlglot.errors.SqlglotError as e:
        raise UserInputError(f"not a valid SQL expression: {e}", where=f"inputs.{name}") from e
    select = statements[0] if len(statements) == 1 else None
    clauses = ("from", "where", "group", "having", "order", "limit", "with", "qualify")
    if (
        not isinstance(select, exp.Select)
        or len(select.expressions) != 1
        or any(select.args.get(c) for c in clauses)
        or not isinstance(select.expressions[0], exp.Paren)
    ):
        raise UserInputError("must be exactly one scalar SQL expression", where=f"inputs.{name}")
    inner = select.expressions[0].this
    if inner.find(exp.Query) is not None:
        raise UserInputError("sub-queries are not allowed in inputs", where=f"inputs.{name}")
    return inner.sql(dialect=CANONICAL)


def _check_inputs(spec: ScoringSpec, inputs: Mapping[str, str]) -> list[str]:
    names = list(inputs)
    if names != list(spec.feature_names):
        missing = [f for f in spec.feature_names if f not in inputs]
        extra = [f for f in names if f not in spec.feature_names]
        detail = (
            f"missing {missing}, unexpected {extra}"
            if missing or extra
            else f"order {names} differs from {list(spec.feature_names)}"
        )
        raise UserInputError(
            f"inputs must give the model's features in order ({detail})", where="inputs"
        )
    return [_checked_expression(name, inputs[name]) for name in names]


def compile_scoring_sql(
    spec: ScoringSpec,
    inputs: Mapping[str, str],
    *,
    source: str,
    id_column: str = "customer_id",
) -> str:
    """Render the spec as one ``SELECT`` that scores every row of ``source``.

    Parameters
    ----------
    spec
        The fitted model.
    inputs
        ``{feature name: SQL expression over the columns of source}`` giving
        the transformed features, in the order of ``spec.feature_names``
        (DuckDB dialect; each must be one scalar expression).
    source
        Table (or view) to score; quoted as one identifier.
    id_column
        Column of ``source`` identifying the row; returned under the same name.

    Returns
    -------
    str
        ``SELECT`` (DuckDB dialect) with columns ``<id_column>``, ``segment_id``
        (BIGINT, ``-1`` unassigned, NULL when an input is NULL/NaN/infinite),
        ``distance`` and ``probability`` (DOUBLE or NULL, see the module docstring).
        :func:`segmint.engine.dialect.transpile` renders it for other engines.

    Raises
    ------
    UserInputError
        If ``inputs`` does not match the spec's features or an input is not a
        single scalar expression.

    Examples
    --------
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",),
    ...                    centers=((0.0,), (10.0,)), segment_ids=(0, 1))
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE f AS SELECT * FROM (VALUES ('a', 1.0), ('b', 8.0)) t(id, v)")
    >>> wh.fetchall(compile_scoring_sql(spec, {"x": "v"}, source="f", id_column="id")
    ...             + " ORDER BY id")
    [('a', 0, 1.0, None), ('b', 1, 2.0, None)]
    """
    expressions = _check_inputs(spec, inputs)
    d = spec.n_features
    raw = [f'"__r{j}"' for j in range(d)]
    xs = [f'"__x{j}"' for j in range(d)]
    finite_max = _lit(np.finfo(np.float64).max)
    ctes = [
        # the inputs once, as doubles
        '"__raw" AS (SELECT {id} AS "__id", {cols} FROM {src})'.format(
            id=quote(id_column),
            cols=", ".join(
                f"CAST(({e}) AS DOUBLE) AS {r}" for e, r in zip(expressions, raw, strict=True)
            ),
            src=quote(source),
        ),
        # NULL, NaN and infinities become NULL (NaN compares above every number)
        '"__x" AS (SELECT "__id", {cols} FROM "__raw")'.format(
            cols=", ".join(
                f"CASE WHEN ABS({r}) <= {finite_max} THEN {r} END AS {x}"
                for r, x in zip(raw, xs, strict=True)
            )
        ),
    ]
    if spec.kind == "gaussian_mixture":
        ctes += _mixture_ctes(spec, xs)
        select = _mixture_select(spec, id_column)
    else:
        ctes += _centroid_ctes(spec, xs)
        select = _centroid_select(spec, id_column, xs)
    return "WITH " + ",\n".join(ctes) + "\n" + select


def _centroid_ctes(spec: ScoringSpec, xs: list[str]) -> list[str]:
    k = spec.n_segments
    if k == 0:
        return []
    dist = [f'"__d{i}"' for i in range(k)]
    sums = []
    for center in spec.centers:
        terms = [
            f"(({x} - {_lit(c)}) * ({x} - {_lit(c)}))" for x, c in zip(xs, center, strict=True)
        ]
        sums.append(_fold(terms, _sql_add))
    cols = ", ".join(f"{s} AS {name}" for s, name in zip(sums, dist, strict=True))
    return [
        f'"__d" AS (SELECT "__id", {cols} FROM "__x")',
        '"__n" AS (SELECT *, {best} AS "__k" FROM "__d")'.format(best=_argbest(dist, "<=")),
        '"__m" AS (SELECT *, {dmin} AS "__dmin" FROM "__n")'.format(dmin=_pick('"__k"', dist)),
    ]


def _centroid_select(spec: ScoringSpec, id_column: str, xs: list[str]) -> str:
    k = spec.n_segments
    out_id = f'"__id" AS {quote(id_column)}'
    if k == 0:
        missing = " OR ".join(f"{x} IS NULL" for x in xs)
        return (
            f"SELECT {out_id}, CAST(CASE WHEN {missing} THEN NULL ELSE {UNASSIGNED} END AS BIGINT)"
            ' AS "segment_id", CAST(NULL AS DOUBLE) AS "distance",'
            ' CAST(NULL AS DOUBLE) AS "probability" FROM "__x"'
        )
    segment = _pick('"__k"', [str(i) for i in spec.segment_ids])
    if spec.radius is not None:
        radius = _pick('"__k"', [_lit(r) for r in spec.radius])
        segment = (
            f'CASE WHEN "__k" IS NULL THEN NULL WHEN SQRT("__dmin") > {radius} '
            f"THEN ({UNASSIGNED}) ELSE {segment} END"
        )
    probability = "CAST(NULL AS DOUBLE)"
    if spec.fuzzifier is not None:
        probability = _fuzzy_probability(k, 1.0 / (spec.fuzzifier - 1.0))
    return (
        f'SELECT {out_id}, CAST({segment} AS BIGINT) AS "segment_id", '
        f'SQRT("__dmin") AS "distance", {probability} AS "probability" FROM "__m"'
    )


def _fuzzy_probability(k: int, exponent: float) -> str:
    """Largest fuzzy membership ``1 / sum_k (dmin / d_k) ** (1 / (m - 1))``.

    A row on one or more centres belongs to them in equal shares.
    """
    dist = [f'"__d{i}"' for i in range(k)]
    on_centre = _fold([f"(CASE WHEN {d} = 0 THEN 1 ELSE 0 END)" for d in dist], _sql_add)
    ratios = _fold([f'POWER("__dmin" / {d}, {_lit(exponent)})' for d in dist], _sql_add)
    return (
        f'CASE WHEN "__dmin" IS NULL THEN NULL WHEN "__dmin" = 0 '
        f"THEN {_lit(1.0)} / {on_centre} ELSE {_lit(1.0)} / {ratios} END"
    )


def _mixture_ctes(spec: ScoringSpec, xs: list[str]) -> list[str]:
    d = spec.n_features
    constant = _lit(d * _LOG_2PI)
    weights = spec.weights or ()
    log_det = spec.log_det or ()
    z_cols: list[str] = []
    logits: list[str] = []
    for k, (mean, chol) in enumerate(
        zip(spec.centers, spec.precisions_cholesky or (), strict=True)
    ):
        squares = []
        for j in range(d):
            terms = [
                f"(({xs[i]} - {_lit(mean[i])}) * {_lit(chol[i][j])})"
                for i in range(d)
                if chol[i][j] != 0.0
            ]
            z_cols.append(f'{_fold(terms, _sql_add)} AS "__z{k}_{j}"')
            squares.append(f'("__z{k}_{j}" * "__z{k}_{j}")')
        maha = _fold(squares, _sql_add)
        logits.append(
            f"((({_lit(-0.5)} * ({constant} + {maha})) + {_lit(log_det[k])}) "
            f'+ {_lit(math.log(weights[k]))}) AS "__l{k}"'
        )
    ls = [f'"__l{k}"' for k in range(spec.n_segments)]
    top = _fold(ls[1:], lambda a, b: f"GREATEST({a}, {b})", ls[0])
    return [
        f'"__z" AS (SELECT "__id", {", ".join(z_cols)} FROM "__x")',
        f'"__l" AS (SELECT "__id", {", ".join(logits)} FROM "__z")',
        f'"__b" AS (SELECT *, {_argbest(ls, ">=")} AS "__k", {top} AS "__top" FROM "__l")',
    ]


def _mixture_select(spec: ScoringSpec, id_column: str) -> str:
    ls = [f'"__l{k}"' for k in range(spec.n_segments)]
    segment = _pick('"__k"', [str(i) for i in spec.segment_ids])
    total = _fold([f'EXP({lk} - "__top")' for lk in ls], _sql_add)
    return (
        f'SELECT "__id" AS {quote(id_column)}, CAST({segment} AS BIGINT) AS "segment_id", '
        f'CAST(NULL AS DOUBLE) AS "distance", {_lit(1.0)} / {total} AS "probability" FROM "__b"'
    )


# ------------------------------------------------------------ in the engine
def _naive_utc(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def score_in_engine(
    wh: Warehouse,
    spec: ScoringSpec,
    inputs: Mapping[str, str],
    *,
    source: str,
    model_version: str,
    names: Mapping[int, str] | None = None,
    id_column: str = "customer_id",
    assigned_at: datetime | None = None,
    atomic: bool = True,
) -> int:
    """Score every row of ``source`` in the engine into ``segment_assignments``.

    Runs ``INSERT INTO segment_assignments ... SELECT`` over the compiled model
    (no row is pulled into Python). Rows already stored for ``model_version``
    are replaced, so scoring the same version again is idempotent; other
    versions' assignments are never touched.

    Parameters
    ----------
    wh
        The warehouse; ``segment_assignments`` is created if missing.
    spec, inputs, source, id_column
        As in :func:`compile_scoring_sql`; ids are stored as text.
    model_version
        Version recorded with every row (bound as a parameter).
    names
        Segment id -> name stored with every row; ids without a name get
        "Segment <id>" and ``-1`` gets "Unassigned".
    assigned_at
        Timestamp recorded with every row (UTC; default now).
    atomic
        Replace and insert in one transaction. Pass ``False`` when already
        inside :meth:`Warehouse.transaction` (DuckDB cannot nest transactions).

    Returns
    -------
    int
        Number of rows written.

    Examples
    --------
    >>> spec = ScoringSpec(kind="centroid", feature_names=("x",),
    ...                    centers=((0.0,), (10.0,)), segment_ids=(0, 1))
    >>> from segmint.engine import Warehouse
    >>> wh = Warehouse(":memory:")
    >>> wh.execute("CREATE TABLE f AS SELECT * FROM (VALUES ('a', 1.0), ('b', 8.0)) t(id, v)")
    >>> score_in_engine(wh, spec, {"x": "v"}, source="f", id_column="id",
    ...                 model_version="v0001", names={1: "Big spenders"})
    2
    >>> wh.fetchall("SELECT customer_id, segment_name FROM segment_assignments ORDER BY 1")
    [('a', 'Segment 0'), ('b', 'Big spenders')]
    """
    select = compile_scoring_sql(spec, inputs, source=source, id_column=id_column)
    names = dict(names or {})
    table = quote(SEGMENT_ASSIGNMENTS.name)
    cases: list[str] = []
    params: list[Any] = [model_version]
    for segment_id in spec.possible_segment_ids:
        cases.append("WHEN ? THEN ?")
        params += [segment_id, names.get(segment_id) or default_segment_name(segment_id)]
    params.append(_naive_utc(assigned_at))
    columns = ", ".join(quote(c.name) for c in SEGMENT_ASSIGNMENTS.columns)
    name_case = f'CASE s."segment_id" {" ".join(cases)} END' if cases else "NULL"
    insert = (
        f"INSERT INTO {table} ({columns}) "
        f'SELECT CAST(s.{quote(id_column)} AS VARCHAR), CAST(? AS VARCHAR), s."segment_id", '
        f'{name_case}, s."probability", s."distance", CAST(? AS TIMESTAMP) '
        f"FROM ({select}) AS s"
    )

    def run() -> int:
        wh.execute(SEGMENT_ASSIGNMENTS.ddl())
        wh.execute(f'DELETE FROM {table} WHERE "model_version" = ?', [model_version])
        rows = wh.fetchall(insert, params)
        return int(rows[0][0]) if rows else 0

    if atomic:
        with wh.transaction():
            count = run()
    else:
        count = run()
    logger.info("scored %d rows of %s with model %s", count, source, model_version)
    return count
