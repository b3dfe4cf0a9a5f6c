"""Per-feature transforms for clustering, chosen by a documented rule and compilable to SQL.

:class:`FeatureTransformer` follows the scikit-learn transformer contract and
decides, for every input column, what to do:

numeric columns
    1. *Fill*: a missing value (NaN / SQL ``NULL``) becomes the column's median at fit
       time (0 when the column has no value at all).
    2. *log1p*: ``log(1 + max(x, 0))`` when the hint is ``log1p``, or when the hint is
       ``auto`` and the observed values are non-negative with a skewness (Fisher-Pearson,
       biased) above ``skew_threshold`` (1.0): counts and money. Never when the column
       has a negative value at fit time. Values below 0 met later are clipped to 0 first.
    3. *Scaling*: ``robust`` (default) subtracts the median and divides by the
       inter-quartile range; ``standard`` uses the mean and the population standard
       deviation; ``none`` leaves the value. A zero scale falls back to the standard
       deviation, then to 1.
categorical columns
    (non-numeric columns of a data frame, names in ``categorical``, or hint ``onehot``)
    One-hot columns ``<feature>_<level>`` for every level when there are at most
    ``max_categories`` (10); otherwise for the ``max_categories`` most frequent levels
    (ties by level). A missing, unseen or left-out level gives a row of zeros. Levels
    are text: booleans become ``true`` / ``false``, as SQL casts them.

Every choice is recorded in ``transforms_`` (feature -> ``{"transform":
"log1p+robust", "fill": .., "center": .., "scale": .., ...}``), and
:meth:`FeatureTransformer.to_sql` renders the fitted transform as one SQL
expression per output column, so that a fitted model can be scored inside the
engine. The SQL and :meth:`FeatureTransformer.transform` compute the same
floating-point operations in the same order, so they agree to rounding.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import sqlglot
import sqlglot.expressions as exp
from scipy.stats import skew
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted, validate_data

from segmint.engine.dialect import CANONICAL, quote

__all__ = ["FeatureTransformer"]

logger = logging.getLogger(__name__)

SCALINGS = ("robust", "standard", "none")
HINTS = ("auto", "log1p", "none", "onehot")

FloatArray = npt.NDArray[np.float64]


def _literal(value: float) -> str:
    """A float as an unambiguous SQL DOUBLE literal (round-trips exactly)."""
    text = repr(float(value))
    if "e" not in text:
        text += "e0"
    return f"({text})"


def _levels_of(values: pd.Series) -> pd.Series:
    """Values as text levels (None when missing), the way SQL casts them to VARCHAR."""
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.map(lambda v: None if pd.isna(v) else ("true" if v else "false"))

    def level(v: Any) -> str | None:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None
        if isinstance(v, bool | np.bool_):
            return "true" if v else "false"
        return str(v)

    return values.map(level).astype(object)


class FeatureTransformer(TransformerMixin, BaseEstimator):
    """Fill, log-transform, scale and one-hot encode features, by a recorded rule.

    Parameters
    ----------
    scaling
        ``robust`` (median / IQR), ``standard`` (mean / standard deviation) or ``none``.
    skew_threshold
        With hint ``auto``, a non-negative column more skewed than this gets ``log1p``.
    max_categories
        Largest number of one-hot columns per categorical feature.
    hints
        Feature name -> ``auto`` | ``log1p`` | ``none`` | ``onehot`` (e.g.
        ``FeatureSet.transform_hints``); features not listed use ``auto``.
    categorical
        Feature names to one-hot encode even if numeric.

    Attributes
    ----------
    transforms_ : dict
        Feature -> the recorded choice: ``kind``, ``transform`` (e.g. ``log1p+robust``),
        ``reason``, and ``fill``, ``log1p``, ``center``, ``scale``, ``skewness``
        (numeric) or ``levels``, ``n_levels`` (categorical).
    n_features_in_ : int
    feature_names_in_ : ndarray
        Only when fitted on a data frame with string column names.

    Examples
    --------
    >>> import pandas as pd
    >>> X = pd.DataFrame({"monetary": [0.0, 10.0, 20.0, 1000.0, None],
    ...                   "stage": ["new", "active", "new", None, "active"]})
    >>> t = FeatureTransformer().fit(X)
    >>> t.transforms_["monetary"]["transform"], t.transforms_["stage"]["transform"]
    ('log1p+robust', 'onehot')
    >>> list(t.get_feature_names_out())
    ['monetary', 'stage_active', 'stage_new']
    >>> sorted(t.to_sql())
    ['monetary', 'stage_active', 'stage_new']
    """

    def __init__(
        self,
        *,
        scaling: str = "robust",
        skew_threshold: float = 1.0,
        max_categories: int = 10,
        hints: Mapping[str, str] | None = None,
        categorical: Sequence[str] | None = None,
    ) -> None:
        self.scaling = scaling
        self.skew_threshold = skew_threshold
        self.max_categories = max_categories
        self.hints = hints
        self.categorical = categorical

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags

    # ------------------------------------------------------------------ input

    def _frame(self, X: Any, *, reset: bool) -> pd.DataFrame:
        """The input as a data frame with the fitted (or generated) column names."""
        if isinstance(X, pd.DataFrame):
            validate_data(self, X, reset=reset, skip_check_array=True)
            if X.shape[1] != self.n_features_in_:  # validate_data skips this for frames
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input."
                )
            if X.shape[0] == 0:
                raise ValueError("Found array with 0 sample(s) while a minimum of 1 is required.")
            frame = X.copy()
        else:
            array = validate_data(
                self, X, reset=reset, dtype="numeric", ensure_all_finite="allow-nan"
            )
            frame = pd.DataFrame(np.asarray(array, dtype=np.float64))
        if hasattr(self, "feature_names_in_"):
            frame.columns = list(self.feature_names_in_)
        else:
            frame.columns = [f"x{i}" for i in range(frame.shape[1])]
        return frame

    def _check_params(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, not {self.scaling!r}")
        threshold = self.skew_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise ValueError(f"skew_threshold must be a number, not {threshold!r}")
        if not math.isfinite(threshold):
            raise ValueError("skew_threshold must be finite")
        k = self.max_categories
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"max_categories must be an integer >= 1, not {k!r}")
        for name, hint in (self.hints or {}).items():
            if hint not in HINTS:
                raise ValueError(f"hint for {name!r} must be one of {HINTS}, not {hint!r}")

    def _is_categorical(self, name: str, values: pd.Series) -> bool:
        if name in set(self.categorical or ()) or (self.hints or {}).get(name) == "onehot":
            return True
        dtype = values.dtype
        return not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)

    @staticmethod
    def _numeric(name: str, values: pd.Series) -> FloatArray:
        try:
            array = pd.to_numeric(values, errors="raise").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        except (TypeError, ValueError) as e:
            raise ValueError(f"feature {name!r} is not numeric: {e}") from e
        if np.isinf(array).any():
            raise ValueError(f"Input contains infinity in feature {name!r}.")
        return array

    # ------------------------------------------------------------------ fit

    def fit(self, X: Any, y: Any = None) -> FeatureTransformer:
        """Choose and record a transform per feature.

        Parameters
        ----------
        X
            Data frame (numeric and categorical columns) or 2-D numeric array; NaN is
            missing.
        y
            Ignored.

        Returns
        -------
        FeatureTransformer
            ``self``.
        """
        self._check_params()
        frame = self._frame(X, reset=True)
        transforms: dict[str, dict[str, Any]] = {}
        for name in frame.columns:
            values = frame[name]
            if self._is_categorical(name, values):
                transforms[name] = self._fit_categorical(values)
            else:
                transforms[name] = self._fit_numeric(name, self._numeric(name, values))
            logger.debug("transform of %s: %s", name, transforms[name]["transform"])
        self.transforms_ = transforms
        return self

    def _fit_numeric(self, name: str, values: FloatArray) -> dict[str, Any]:
        observed = values[~np.isnan(values)]
        fill = float(np.median(observed)) if observed.size else 0.0
        filled = np.where(np.isnan(values), fill, values)
        skewness = 0.0
        if observed.size >= 3 and np.ptp(observed) > 0:
            skewness = float(skew(observed, bias=True))
            if not math.isfinite(skewness):
                skewness = 0.0
        hint = (self.hints or {}).get(name, "auto")
        non_negative = bool(filled.size == 0 or filled.min() >= 0)
        if hint == "log1p":
            log = non_negative
            reason = "hint log1p" if log else "hint log1p, but negative values: no log1p"
        elif hint == "none":
            log, reason = False, "hint none"
        else:
            log = non_negative and skewness > self.skew_threshold
            reason = f"skewness {skewness:.3g} {'>' if log else '<='} {self.skew_threshold}" + (
                "" if non_negative else ", negative values"
            )
        transformed = np.log(1.0 + np.maximum(filled, 0.0)) if log else filled
        center, scale = self._scale(transformed)
        steps = (["log1p"] if log else []) + ([self.scaling] if self.scaling != "none" else [])
        return {
            "kind": "numeric",
            "transform": "+".join(steps) or "identity",
            "reason": reason,
            "fill": fill,
            "log1p": log,
            "center": center,
            "scale": scale,
            "skewness": skewness,
        }

    def _scale(self, values: FloatArray) -> tuple[float, float]:
        if self.scaling == "none" or values.size == 0:
            return 0.0, 1.0
        if self.scaling == "robust":
            center = float(np.median(values))
            q1, q3 = np.percentile(values, [25.0, 75.0])
            scale = float(q3 - q1)
        else:
            center = float(np.mean(values))
            scale = float(np.std(values))
        if not scale > 0:
            scale = float(np.std(values))
        if not (scale > 0 and math.isfinite(scale)):
            scale = 1.0
        return center, scale

    def _fit_categorical(self, values: pd.Series) -> dict[str, Any]:
        levels = _levels_of(values).dropna()
        counts = levels.value_counts()
        ranked = sorted(
            ((str(level), int(n)) for level, n in counts.items()), key=lambda kv: (-kv[1], kv[0])
        )
        kept = sorted(level for level, _ in ranked[: self.max_categories])
        if len(ranked) > self.max_categories:
            transform = f"onehot(top {self.max_categories} of {len(ranked)})"
            reason = f"{len(ranked)} levels > max_categories {self.max_categories}"
        else:
            transform, reason = "onehot", f"{len(ranked)} levels"
        return {
            "kind": "categorical",
            "transform": transform,
            "reason": reason,
            "levels": kept,
            "n_levels": len(ranked),
        }

    # ------------------------------------------------------------------ transform

    def _output_names(self, names: Sequence[str]) -> list[str]:
        out: list[str] = []
        for name, spec in zip(names, self.transforms_.values(), strict=True):
            if spec["kind"] == "numeric":
                out.append(name)
            else:
                out.extend(f"{name}_{level}" for level in spec["levels"])
        if len(set(out)) != len(out):
            repeated = sorted({n for n in out if out.count(n) > 1})
            raise ValueError(f"output column names collide: {repeated}")
        return out

    def get_feature_names_out(self, input_features: Any = None) -> npt.NDArray[np.object_]:
        """Output column names: numeric features keep their name, one-hot ones add ``_<level>``."""
        check_is_fitted(self, "transforms_")
        names = [str(n) for n in _check_feature_names_in(self, input_features)]
        return np.asarray(self._output_names(names), dtype=object)

    def transform(self, X: Any) -> FloatArray:
        """Apply the recorded transforms.

        Parameters
        ----------
        X
            Same columns as in :meth:`fit`.

        Returns
        -------
        ndarray of shape (n_samples, n_output_columns)
        """
        check_is_fitted(self, "transforms_")
        frame = self._frame(X, reset=False)
        columns: list[FloatArray] = []
        for name, spec in self.transforms_.items():
            values = frame[name]
            if spec["kind"] == "numeric":
                array = self._numeric(name, values)
                filled = np.where(np.isnan(array), spec["fill"], array)
                if spec["log1p"]:
                    filled = np.log(1.0 + np.maximum(filled, 0.0))
                columns.append((filled - spec["center"]) / spec["scale"])
            else:
                levels = _levels_of(values)
                for level in spec["levels"]:
                    columns.append((levels == level).to_numpy(dtype=np.float64))
        if not columns:
            return np.empty((len(frame), 0), dtype=np.float64)
        return np.column_stack(columns).astype(np.float64, copy=False)

    # ------------------------------------------------------------------ SQL

    def to_sql(
        self, column_exprs: Mapping[str, str] | None = None, *, dialect: str = CANONICAL
    ) -> dict[str, str]:
        """The fitted transforms as SQL: output column name -> expression.

        Parameters
        ----------
        column_exprs
            Feature name -> SQL expression reading it (default: the quoted name).
        dialect
            SQL dialect of the expressions (SQLGlot name).

        Returns
        -------
        dict
            In output column order; a missing value is filled exactly as in
            :meth:`transform`.

        Examples
        --------
        >>> import numpy as np
        >>> t = FeatureTransformer(scaling="none").fit(np.array([[1.0], [2.0], [3.0]]))
        >>> t.to_sql({"x0": "f.recency_days"})
        {'x0': 'COALESCE((f.recency_days), (2.0e0))'}
        """
        check_is_fitted(self, "transforms_")
        exprs = dict(column_exprs or {})
        names = list(self.transforms_)
        outputs = self._output_names(names)
        sql: list[str] = []
        for name, spec in self.transforms_.items():
            source = f"({exprs.get(name, quote(name))})"
            if spec["kind"] == "numeric":
                value = f"coalesce({source}, {_literal(spec['fill'])})"
                if spec["log1p"]:
                    value = f"ln(1.0e0 + greatest({value}, 0.0e0))"
                if spec["center"] != 0.0 or spec["scale"] != 1.0:
                    value = f"(({value}) - {_literal(spec['center'])}) / {_literal(spec['scale'])}"
                sql.append(value)
            else:
                text = f"CAST({source} AS VARCHAR)"
                for level in spec["levels"]:
                    literal = exp.Literal.string(level).sql(dialect=CANONICAL)
                    sql.append(f"CASE WHEN {text} = {literal} THEN 1.0e0 ELSE 0.0e0 END")
        return {
            out: sqlglot.parse_one(expr, read=CANONICAL).sql(dialect=dialect)
            for out, expr in zip(outputs, sql, strict=True)
        }
