"""Explanations of segments: a surrogate rule tree and "why is this customer here".

**Surrogate tree.** :func:`fit_surrogate_tree` fits a shallow scikit-learn
``DecisionTreeClassifier`` on the *raw* features to predict the segment the
model gave each row. Its ``fidelity_`` says how well the tree mimics the model
(accuracy, and precision/recall per segment, on the rows it was fitted on), and
its ``rules_`` give each segment's readable rule set: one conjunction per leaf
predicting that segment, with the leaf's support (training rows) and purity
(share of those rows the model put in the segment).

Thresholds are shown rounded: each split's threshold is replaced by the
"roundest" number (fewest significant digits) that still separates the
training rows at that node in the same way, so ``frequency <= 8`` rather than
``frequency <= 8.5`` on integer data, and the readable rules classify the
training rows exactly as the tree does. :meth:`SurrogateTree.predict`,
:meth:`SurrogateTree.to_sql` and :attr:`Rule.sql` use the exact thresholds.

**Missing values.** Before fitting, a missing value (NULL in the engine, NaN in
memory; NaN in the engine counts as missing too) is replaced by the training
median of its feature (0 if the feature was never observed), recorded in
``fill_values_``. ``predict`` and the SQL (``COALESCE``) apply the same
constants, and both compare in double precision with ``<=`` going left, so
they agree on every row.

**Why this customer.** :func:`why_segment` compares a customer's (transformed)
feature vector with the centroid of its own segment and of the next-nearest
one. Feature ``j`` contributes
``(x_j - c_next_j) ** 2 - (x_j - c_own_j) ** 2``: positive when it pulls the
customer towards its own segment. The contributions add up to the margin
``|x - c_next|^2 - |x - c_own|^2``.

Examples
--------
>>> import pandas as pd
>>> frame = pd.DataFrame({"frequency": [1, 2, 3, 9, 10, 12]})
>>> tree = fit_surrogate_tree(frame, [0, 0, 0, 1, 1, 1], features=["frequency"])
>>> tree.rules_[1][0].text
'frequency > 5'
>>> tree.fidelity_.accuracy
1.0
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlglot.expressions as exp
from sklearn.metrics import precision_recall_fscore_support
from sklearn.tree import DecisionTreeClassifier

from segmint.engine.dialect import CANONICAL, quote
from segmint.errors import UserInputError
from segmint.segments.profiles import as_label_array, numeric_features

logger = logging.getLogger(__name__)

__all__ = [
    "Condition",
    "Contribution",
    "Explanation",
    "Fidelity",
    "Rule",
    "SurrogateTree",
    "fit_surrogate_tree",
    "why_segment",
]

_LEAF = -1  # scikit-learn's TREE_LEAF


# ======================================================================= rules
@dataclass(frozen=True)
class Condition:
    """One comparison of a rule: ``feature <= threshold`` or ``feature > threshold``.

    Attributes
    ----------
    feature
        Raw feature name.
    op
        ``"<="`` or ``">"``.
    threshold
        Exact threshold of the tree (used in SQL and ``predict``).
    display
        Rounded threshold shown to people (same split of the training rows).

    Examples
    --------
    >>> Condition("recency_days", "<=", 30.5, 30.0).text
    'recency_days <= 30'
    """

    feature: str
    op: str
    threshold: float
    display: float

    @property
    def text(self) -> str:
        """The readable condition, with the rounded threshold."""
        return f"{_field(self.feature)} {self.op} {_fmt_threshold(self.display)}"


@dataclass(frozen=True)
class Rule:
    """A conjunction of conditions describing one leaf of the surrogate tree.

    Attributes
    ----------
    segment
        Segment the leaf predicts.
    conditions
        The conditions on the path to the leaf, at most one lower and one
        upper bound per feature.
    support
        Training rows reaching the leaf.
    purity
        Share of those rows the model put in ``segment``.
    coverage
        Share of the segment's training rows that reach this leaf.
    sql
        The conjunction with exact thresholds and NULL handling, as SQL.

    Examples
    --------
    >>> r = Rule(1, (Condition("frequency", ">", 8.5, 8.0),), 40, 0.95, 0.8, "...")
    >>> r.text
    'frequency > 8'
    """

    segment: int
    conditions: tuple[Condition, ...]
    support: int
    purity: float
    coverage: float
    sql: str

    @property
    def text(self) -> str:
        """Readable rule: conditions joined by ``AND`` (``TRUE`` for no condition)."""
        if not self.conditions:
            return "TRUE"
        return " AND ".join(c.text for c in self.conditions)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "segment": int(self.segment),
            "text": self.text,
            "sql": self.sql,
            "support": int(self.support),
            "purity": float(self.purity),
            "coverage": float(self.coverage),
            "conditions": [
                {
                    "feature": c.feature,
                    "op": c.op,
                    "threshold": float(c.threshold),
                    "display": float(c.display),
                }
                for c in self.conditions
            ],
        }


@dataclass(frozen=True, eq=False)
class Fidelity:
    """How well the surrogate tree reproduces the model's segments.

    Attributes
    ----------
    accuracy
        Share of training rows where the tree predicts the model's segment.
    per_segment
        Indexed by ``segment_id``: ``precision`` and ``recall`` of the tree for
        each segment, and ``support`` (rows the model put in it).

    Examples
    --------
    >>> Fidelity(1.0, pd.DataFrame()).accuracy
    1.0
    """

    accuracy: float
    per_segment: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "accuracy": float(self.accuracy),
            "segments": [
                {
                    "segment_id": int(seg),
                    "precision": float(precision),
                    "recall": float(recall),
                    "support": int(support),
                }
                for seg, precision, recall, support in zip(
                    self.per_segment.index.to_numpy(),
                    self.per_segment["precision"].to_numpy(),
                    self.per_segment["recall"].to_numpy(),
                    self.per_segment["support"].to_numpy(),
                    strict=True,
                )
            ],
        }


# ======================================================================= tree
class SurrogateTree:
    """A fitted surrogate decision tree over raw features (see :func:`fit_surrogate_tree`).

    Attributes
    ----------
    features_
        Feature names, in column order.
    max_depth
        Depth limit used when fitting.
    random_state
        Seed used when fitting.
    estimator_
        The fitted ``sklearn.tree.DecisionTreeClassifier``.
    classes_
        Segment ids the tree knows, ascending.
    fill_values_
        Feature -> constant replacing missing values.
    fidelity_
        :class:`Fidelity` against the model's labels on the training rows.
    rules_
        Segment id -> rules (one per leaf predicting it), largest support first.
        Segments predicted by no leaf have an empty list.
    n_rows_
        Training rows.

    Examples
    --------
    >>> import pandas as pd
    >>> tree = fit_surrogate_tree(pd.DataFrame({"x": [1.0, 2.0, 8.0, 9.0]}), [0, 0, 1, 1],
    ...                           features=["x"])
    >>> tree.fill_values_, tree.predict(pd.DataFrame({"x": [0.0, None, 10.0]})).tolist()
    ({'x': 5.0}, [0, 0, 1])
    """

    def __init__(
        self,
        *,
        features: list[str],
        max_depth: int,
        random_state: int,
        estimator: DecisionTreeClassifier,
        fill_values: dict[str, float],
        X: np.ndarray,
        labels: np.ndarray,
    ) -> None:
        self.features_ = list(features)
        self.max_depth = max_depth
        self.random_state = random_state
        self.estimator_ = estimator
        self.fill_values_ = dict(fill_values)
        self.n_rows_ = int(len(labels))
        tree = estimator.tree_
        self._left = tree.children_left.astype(np.int64)
        self._right = tree.children_right.astype(np.int64)
        self._feature = tree.feature.astype(np.int64)
        self._threshold = tree.threshold.astype(np.float64)
        self.classes_ = np.asarray(estimator.classes_, dtype=np.int64)
        self._leaf_class = self.classes_[np.argmax(tree.value[:, 0, :], axis=1)]
        self._fill = np.array([self.fill_values_[f] for f in self.features_], dtype=np.float64)

        pred = self._predict_matrix(X)
        self.fidelity_ = _fidelity(labels, pred, self.classes_)
        self.rules_ = self._rules(X, labels)

    # ---------------------------------------------------------------- predict
    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Segment of each row, by the exact tree (missing values filled).

        Parameters
        ----------
        X
            A frame with the feature columns, or a 2-D array with the features
            in ``features_`` order.

        Returns
        -------
        numpy.ndarray
            int64 segment ids.
        """
        if isinstance(X, pd.DataFrame):
            matrix = numeric_features(X, self.features_)
        else:
            matrix = np.asarray(X, dtype=np.float64)
            if matrix.ndim != 2 or matrix.shape[1] != len(self.features_):
                raise UserInputError(
                    f"expected a 2-D array with {len(self.features_)} columns, "
                    f"got shape {matrix.shape}",
                    where="X",
                )
        return self._predict_matrix(matrix)

    def _predict_matrix(self, X: np.ndarray) -> np.ndarray:
        return self._leaf_class[self._apply(X)]

    def _apply(self, X: np.ndarray) -> np.ndarray:
        """Leaf index of each row (rows with NaN take the fill values)."""
        filled = np.where(np.isnan(X), self._fill, X)
        node = np.zeros(len(filled), dtype=np.int64)
        rows = np.arange(len(filled))
        while True:
            inner = self._left[node] != _LEAF
            if not inner.any():
                return node
            r, n = rows[inner], node[inner]
            go_left = filled[r, self._feature[n]] <= self._threshold[n]
            node[r] = np.where(go_left, self._left[n], self._right[n])

    # ---------------------------------------------------------------- SQL
    def to_sql(self, table_alias: str | None = None) -> str:
        """The tree as a nested SQL ``CASE WHEN`` returning the segment id.

        Columns are quoted (and prefixed with ``table_alias`` when given);
        missing values take ``fill_values_`` through ``COALESCE``; thresholds
        are exact, so the result equals :meth:`predict` on the same rows.

        Examples
        --------
        >>> import pandas as pd
        >>> tree = fit_surrogate_tree(pd.DataFrame({"x": [1.0, 3.0]}), [0, 1], features=["x"])
        >>> print(tree.to_sql())  # doctest: +NORMALIZE_WHITESPACE
        CASE WHEN COALESCE(NULLIF(CAST("x" AS DOUBLE), CAST('NaN' AS DOUBLE)),
        CAST('2.0' AS DOUBLE)) <= CAST('2.0' AS DOUBLE) THEN 0 ELSE 1 END
        """
        return self._node_sql(0, table_alias)

    def _node_sql(self, node: int, alias: str | None) -> str:
        if self._left[node] == _LEAF:
            return str(int(self._leaf_class[node]))
        value = self._value_sql(int(self._feature[node]), alias)
        threshold = _double(float(self._threshold[node]))
        left = self._node_sql(int(self._left[node]), alias)
        right = self._node_sql(int(self._right[node]), alias)
        return f"CASE WHEN {value} <= {threshold} THEN {left} ELSE {right} END"

    def _value_sql(self, j: int, alias: str | None) -> str:
        column = quote(self.features_[j])
        if alias:
            column = f"{quote(alias)}.{column}"
        return (
            f"COALESCE(NULLIF(CAST({column} AS DOUBLE), CAST('NaN' AS DOUBLE)), "
            f"{_double(float(self._fill[j]))})"
        )

    # ---------------------------------------------------------------- rules
    def _rules(self, X: np.ndarray, labels: np.ndarray) -> dict[int, list[Rule]]:
        filled = np.where(np.isnan(X), self._fill, X)
        segment_sizes = {int(c): int((labels == c).sum()) for c in self.classes_}
        found: list[tuple[int, int, Rule]] = []

        def walk(
            node: int,
            rows: np.ndarray,
            path: list[Condition],
            sql: list[tuple[str, str, float]],
        ) -> None:
            if self._left[node] == _LEAF:
                seg = int(self._leaf_class[node])
                support = len(rows)
                hits = int((labels[rows] == seg).sum())
                rule = Rule(
                    segment=seg,
                    conditions=_merge(path),
                    support=support,
                    purity=hits / support if support else 0.0,
                    coverage=hits / segment_sizes[seg] if segment_sizes[seg] else 0.0,
                    sql=" AND ".join(_merge_sql(sql)) if sql else "TRUE",
                )
                found.append((seg, node, rule))
                return
            j = int(self._feature[node])
            t = float(self._threshold[node])
            values = filled[rows, j]
            go_left = values <= t
            display = _round_threshold(values[go_left], values[~go_left], t)
            name = self.features_[j]
            value_sql = self._value_sql(j, None)
            walk(
                int(self._left[node]),
                rows[go_left],
                [*path, Condition(name, "<=", t, display)],
                [*sql, (value_sql, "<=", t)],
            )
            walk(
                int(self._right[node]),
                rows[~go_left],
                [*path, Condition(name, ">", t, display)],
                [*sql, (value_sql, ">", t)],
            )

        walk(0, np.arange(len(filled)), [], [])
        rules: dict[int, list[Rule]] = {int(c): [] for c in self.classes_}
        for seg, _node, rule in sorted(found, key=lambda item: (-item[2].support, item[1])):
            rules[seg].append(rule)
        return rules

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict: rules, fidelity, fill values and SQL."""
        return {
            "features": list(self.features_),
            "max_depth": int(self.max_depth),
            "random_state": int(self.random_state),
            "n_rows": self.n_rows_,
            "fill_values": {f: float(v) for f, v in self.fill_values_.items()},
            "fidelity": self.fidelity_.to_dict(),
            "rules": {str(seg): [r.to_dict() for r in rules] for seg, rules in self.rules_.items()},
            "sql": self.to_sql(),
        }

    def __repr__(self) -> str:
        return (
            f"SurrogateTree(features={len(self.features_)}, depth={self.estimator_.get_depth()}, "
            f"leaves={self.estimator_.get_n_leaves()}, fidelity={self.fidelity_.accuracy:.3f})"
        )


def fit_surrogate_tree(
    frame: pd.DataFrame,
    labels: Any,
    *,
    features: Sequence[str],
    max_depth: int = 4,
    random_state: int = 0,
    min_samples_leaf: int | float = 0.005,
) -> SurrogateTree:
    """Fit a shallow decision tree on raw features that mimics the model's segments.

    Parameters
    ----------
    frame
        Training rows with the raw feature columns (missing values allowed).
    labels
        The model's segment of each row (``-1`` = unassigned is a segment too).
    features
        Raw features the tree may split on.
    max_depth
        Depth limit; 4 or less keeps rules readable.
    random_state
        Seed of the tree (ties between equally good splits).
    min_samples_leaf
        Smallest leaf, as a row count or a fraction of the rows (default
        0.5%), so that no rule describes a handful of customers.

    Returns
    -------
    SurrogateTree

    Raises
    ------
    UserInputError
        On empty input, missing or non-numeric features, infinite values,
        invalid labels or an invalid depth.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"recency_days": [5, 10, 200, 300], "frequency": [9, 12, 1, 2]})
    >>> tree = fit_surrogate_tree(frame, [0, 0, 1, 1], features=["recency_days", "frequency"])
    >>> [r.text for r in tree.rules_[1]]
    ['frequency <= 5']
    """
    if isinstance(features, str):
        raise UserInputError("features must be a list of column names", where="features")
    features = [str(f) for f in features]
    if len(set(features)) != len(features):
        raise UserInputError(f"duplicate features in {features}", where="features")
    if not features:
        raise UserInputError("the surrogate tree needs at least one feature", where="features")
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise UserInputError(
            f"max_depth must be a positive integer, got {max_depth!r}", where="max_depth"
        )
    if len(frame) == 0:
        raise UserInputError("there are no rows to fit the surrogate tree on", where="frame")
    codes = as_label_array(labels, len(frame))
    X = numeric_features(frame, features)
    if np.isinf(X).any():
        raise UserInputError("features hold infinite values", where="frame")
    fill = {}
    for j, f in enumerate(features):
        column = X[:, j]
        observed = column[~np.isnan(column)]
        fill[f] = float(np.median(observed)) if len(observed) else 0.0
    fill_vector = np.array([fill[f] for f in features])
    filled = np.where(np.isnan(X), fill_vector, X)

    estimator = DecisionTreeClassifier(
        max_depth=max_depth, min_samples_leaf=min_samples_leaf, random_state=random_state
    )
    try:
        estimator.fit(filled, codes)
    except ValueError as e:  # e.g. values beyond float32, a bad min_samples_leaf
        raise UserInputError(f"cannot fit the surrogate tree: {e}") from e
    tree = SurrogateTree(
        features=features,
        max_depth=max_depth,
        random_state=random_state,
        estimator=estimator,
        fill_values=fill,
        X=X,
        labels=codes,
    )
    logger.info(
        "surrogate tree: depth %d, %d leaves, fidelity %.3f",
        estimator.get_depth(),
        estimator.get_n_leaves(),
        tree.fidelity_.accuracy,
    )
    return tree


def _fidelity(labels: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> Fidelity:
    precision, recall, _, _ = precision_recall_fscore_support(
        labels, pred, labels=classes, zero_division=0.0
    )
    per_segment = pd.DataFrame(
        {
            "precision": np.asarray(precision, dtype=np.float64),
            "recall": np.asarray(recall, dtype=np.float64),
            "support": np.array([(labels == c).sum() for c in classes], dtype=np.int64),
        },
        index=pd.Index(classes, name="segment_id"),
    )
    return Fidelity(float(np.mean(labels == pred)), per_segment)


def _merge(path: list[Condition]) -> tuple[Condition, ...]:
    """Keep the tightest lower and upper bound per feature, in order of first use."""
    order: list[str] = []
    upper: dict[str, Condition] = {}
    lower: dict[str, Condition] = {}
    for c in path:
        if c.feature not in order:
            order.append(c.feature)
        if c.op == "<=":
            if c.feature not in upper or c.threshold < upper[c.feature].threshold:
                upper[c.feature] = c
        elif c.feature not in lower or c.threshold > lower[c.feature].threshold:
            lower[c.feature] = c
    out: list[Condition] = []
    for f in order:
        out += [c for c in (lower.get(f), upper.get(f)) if c is not None]
    return tuple(out)


def _merge_sql(path: list[tuple[str, str, float]]) -> list[str]:
    """Exact SQL of the merged conditions (same tightening as :func:`_merge`)."""
    bounds: dict[tuple[str, str], float] = {}
    for value, op, t in path:
        key = (value, op)
        if key not in bounds:
            bounds[key] = t
        else:
            bounds[key] = min(bounds[key], t) if op == "<=" else max(bounds[key], t)
    order = list(dict.fromkeys(value for value, _, _ in path))
    out = []
    for value in order:
        for op in (">", "<="):
            if (value, op) in bounds:
                out.append(f"{value} {op} {_double(bounds[(value, op)])}")
    return out


def _round_threshold(left: np.ndarray, right: np.ndarray, exact: float) -> float:
    """The roundest number r with max(left) <= r < min(right); ``exact`` if none."""
    if len(left) == 0 or len(right) == 0:
        return exact
    lo, hi = float(left.max()), float(right.min())
    if not lo < hi:
        return exact
    top = math.floor(math.log10(max(abs(lo), abs(hi)))) + 1 if max(abs(lo), abs(hi)) > 0 else 0
    bottom = max(math.floor(math.log10(hi - lo)) - 1, -300)
    for k in range(top, bottom - 1, -1):
        for mult in (1, 5):
            step = mult * 10.0 ** (k if mult == 1 else k - 1)
            decimals = max(0, -(k if mult == 1 else k - 1))
            r = round(math.ceil(lo / step) * step, decimals) + 0.0
            if lo <= r < hi:
                return r
    return exact


def _fmt_threshold(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return format(value, ".12g")


def _double(value: float) -> str:
    """An exact DOUBLE literal.

    ``repr`` round-trips, and a string cast to DOUBLE is correctly rounded. A
    bare literal such as ``0.0026755`` would not do: DuckDB reads it as a
    DECIMAL, whose conversion to DOUBLE can be one unit in the last place off.
    """
    return f"CAST('{value!r}' AS DOUBLE)"


_SIMPLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _field(name: str) -> str:
    """A field name for rule text: bare when it is a plain identifier, else quoted."""
    if _SIMPLE.match(name):
        return name
    return exp.to_identifier(name, quoted=True).sql(dialect=CANONICAL)


# ======================================================================= why
@dataclass(frozen=True)
class Contribution:
    """How much one feature pulls a customer towards its own segment.

    Attributes
    ----------
    feature
        Feature name.
    contribution
        ``(x - c_next) ** 2 - (x - c_own) ** 2`` (transformed space); positive
        pulls towards the own segment.
    direction
        ``"high"`` or ``"low"``: where the value sits relative to the two
        centroids on the side it leans to; ``"neutral"`` when the centroids agree.
    value
        The transformed value.
    raw_value
        The raw value, when given.
    text
        Plain-language sentence.

    Examples
    --------
    >>> Contribution("frequency", 3.0, "high", 1.5, 14.0, "frequency is high (14)").feature
    'frequency'
    """

    feature: str
    contribution: float
    direction: str
    value: float
    raw_value: float | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "feature": self.feature,
            "contribution": float(self.contribution),
            "direction": self.direction,
            "value": float(self.value),
            "raw_value": None if self.raw_value is None else float(self.raw_value),
            "text": self.text,
        }


@dataclass(frozen=True, eq=False)
class Explanation:
    """Why a customer is in its segment rather than the next-nearest one.

    Attributes
    ----------
    segment
        The customer's segment (index of its centroid).
    runner_up
        The next-nearest segment, or None when there is only one.
    distance, runner_up_distance
        Euclidean distances to the two centroids (transformed space).
    margin
        ``runner_up_distance ** 2 - distance ** 2``: the sum of all contributions.
    contributions
        The ``top`` features, largest contribution first.
    all_contributions
        Every feature's contribution, in feature order.
    text
        A plain-language summary.

    Examples
    --------
    >>> import numpy as np
    >>> e = why_segment(np.array([0.9, 0.0]), np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "b"])
    >>> e.segment, e.runner_up, round(e.margin, 2)
    (0, 1, 0.8)
    """

    segment: int
    runner_up: int | None
    distance: float
    runner_up_distance: float | None
    margin: float | None
    contributions: tuple[Contribution, ...]
    all_contributions: pd.Series
    text: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "segment": int(self.segment),
            "runner_up": None if self.runner_up is None else int(self.runner_up),
            "distance": float(self.distance),
            "runner_up_distance": (
                None if self.runner_up_distance is None else float(self.runner_up_distance)
            ),
            "margin": None if self.margin is None else float(self.margin),
            "contributions": [c.to_dict() for c in self.contributions],
            "text": self.text,
        }


def why_segment(
    x_transformed: np.ndarray,
    centers: np.ndarray,
    feature_names: Sequence[str],
    *,
    raw_values: Mapping[str, Any] | None = None,
    top: int = 5,
    segment: int | None = None,
    segment_names: Mapping[int, str] | None = None,
) -> Explanation:
    """Explain why a customer is in its segment rather than the next-nearest one.

    Parameters
    ----------
    x_transformed
        The customer's transformed features, shape ``(p,)`` or ``(1, p)``.
    centers
        Segment centroids in the same space, shape ``(k, p)``; row ``s`` is segment ``s``.
    feature_names
        The ``p`` feature names.
    raw_values
        Raw feature values of the customer, shown in the text.
    top
        Number of contributions returned (largest first).
    segment
        The customer's segment when it is not simply the nearest centroid
        (e.g. a mixture model); default: the nearest centroid (ties: lowest index).
    segment_names
        Display names of segments.

    Returns
    -------
    Explanation

    Examples
    --------
    >>> import numpy as np
    >>> e = why_segment(np.array([2.0, 0.5]), np.array([[2.0, 0.0], [0.0, 1.0]]),
    ...                 ["frequency", "recency_days"], raw_values={"frequency": 14},
    ...                 segment_names={0: "Champions", 1: "Hibernating"})
    >>> e.contributions[0].text
    'frequency is high (14), typical of Champions rather than Hibernating'
    """
    x = np.asarray(x_transformed, dtype=np.float64)
    if x.ndim == 2 and x.shape[0] == 1:
        x = x[0]
    c = np.asarray(centers, dtype=np.float64)
    names = [str(f) for f in feature_names]
    if x.ndim != 1:
        raise UserInputError(f"expected one row, got shape {x.shape}", where="x_transformed")
    if c.ndim != 2 or c.shape[0] == 0 or c.shape[1] != len(x):
        raise UserInputError(f"centers must be (k, {len(x)}), got shape {c.shape}", where="centers")
    if len(names) != len(x):
        raise UserInputError(
            f"{len(names)} feature names for {len(x)} features", where="feature_names"
        )
    if not (np.isfinite(x).all() and np.isfinite(c).all()):
        raise UserInputError("values must be finite (impute and transform first)")
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise UserInputError(f"top must be a positive integer, got {top!r}", where="top")

    sq = ((x - c) ** 2).sum(axis=1)
    if segment is None:
        own = int(np.argmin(sq))
    else:
        own = int(segment)
        if not 0 <= own < len(c):
            raise UserInputError(f"segment {own} has no centroid", where="segment")
    others = [s for s in range(len(c)) if s != own]
    label = _namer(segment_names)
    raw = dict(raw_values or {})
    if not others:
        zero = pd.Series(np.zeros(len(names)), index=names, dtype=np.float64)
        return Explanation(
            segment=own,
            runner_up=None,
            distance=float(math.sqrt(sq[own])),
            runner_up_distance=None,
            margin=None,
            contributions=(),
            all_contributions=zero,
            text=f"There is only one segment, {label(own)}.",
        )
    runner_up = min(others, key=lambda s: (sq[s], s))
    own_c, next_c = c[own], c[runner_up]
    contrib = (x - next_c) ** 2 - (x - own_c) ** 2
    order = sorted(range(len(names)), key=lambda j: (-contrib[j], j))[:top]
    items = tuple(
        _contribution(
            names[j],
            float(contrib[j]),
            x[j],
            own_c[j],
            next_c[j],
            raw.get(names[j]),
            label(own),
            label(runner_up),
        )
        for j in order
    )
    margin = float(sq[runner_up] - sq[own])
    reasons = [i.text for i in items if i.contribution > 0][:3]
    text = f"In {label(own)} rather than {label(runner_up)}"
    text += f": {'; '.join(reasons)}." if reasons else "."
    return Explanation(
        segment=own,
        runner_up=runner_up,
        distance=float(math.sqrt(sq[own])),
        runner_up_distance=float(math.sqrt(sq[runner_up])),
        margin=margin,
        contributions=items,
        all_contributions=pd.Series(contrib, index=names, dtype=np.float64),
        text=text,
    )


def _contribution(
    feature: str,
    value: float,
    x: float,
    own: float,
    runner_up: float,
    raw: Any,
    own_name: str,
    runner_up_name: str,
) -> Contribution:
    raw_value = _as_float(raw)
    shown = _fmt_value(raw_value if raw_value is not None else x)
    if own == runner_up:
        return Contribution(
            feature,
            value,
            "neutral",
            float(x),
            raw_value,
            f"{feature} ({shown}) does not tell {own_name} and {runner_up_name} apart",
        )
    if value == 0:
        return Contribution(
            feature,
            value,
            "neutral",
            float(x),
            raw_value,
            f"{feature} ({shown}) is halfway between {own_name} and {runner_up_name}",
        )
    if value > 0:
        direction = "high" if own > runner_up else "low"
        text = f"{feature} is {direction} ({shown}), typical of {own_name} rather than "
        text += runner_up_name
    else:
        direction = "high" if runner_up > own else "low"
        text = f"{feature} is {direction} ({shown}), more like {runner_up_name}"
    return Contribution(feature, value, direction, float(x), raw_value, text)


def _namer(names: Mapping[int, str] | None) -> Any:
    def label(segment: int) -> str:
        if names and segment in names:
            return str(names[segment])
        return f"segment {segment}"

    return label


def _as_float(value: Any) -> float | None:
    """A raw value as a float, or None when it is missing or not a number."""
    if value is None or isinstance(value, bool | str):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _fmt_value(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"
