"""Lifecycle stages by rules over tenure and recency, as SQL and in Python.

The stage is the first rule that holds, in this order (thresholds in days, all
configurable through :class:`LifecycleThresholds`):

============ =======================================================================
stage        rule
============ =======================================================================
``new``      ``tenure_days <= new_max_tenure_days`` (30), whether or not they bought
``active``   ``recency_days <= active_max_recency_days`` (90)
``at_risk``  ``recency_days <= at_risk_max_recency_days`` (180)
``dormant``  ``recency_days <= dormant_max_recency_days`` (365)
``churned``  ``recency_days`` above that, or never ordered and
             ``tenure_days > prospect_max_tenure_days`` (365)
``prospect`` never ordered, tenure unknown or at most ``prospect_max_tenure_days``
============ =======================================================================

The same rules are rendered as a SQL ``CASE`` (:func:`lifecycle_case`, for the
engine) and written in Python (:func:`lifecycle_stage`, for per-event updates);
both give the same stage for every input, ``NULL`` / ``None`` included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import sqlglot.expressions as exp

from segmint.engine.dialect import quote
from segmint.errors import UserInputError
from segmint.features.definitions import FeatureDefinition

__all__ = [
    "STAGES",
    "LifecycleThresholds",
    "lifecycle_case",
    "lifecycle_definition",
    "lifecycle_stage",
]

#: Every stage, in rule order.
STAGES: tuple[str, ...] = ("new", "active", "at_risk", "dormant", "churned", "prospect")


@dataclass(frozen=True)
class LifecycleThresholds:
    """Thresholds of the lifecycle rules, in days.

    Examples
    --------
    >>> LifecycleThresholds(active_max_recency_days=60).at_risk_max_recency_days
    180.0
    """

    new_max_tenure_days: float = 30.0
    active_max_recency_days: float = 90.0
    at_risk_max_recency_days: float = 180.0
    dormant_max_recency_days: float = 365.0
    prospect_max_tenure_days: float = 365.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserInputError(f"must be a number of days, not {value!r}", where=f.name)
            if not math.isfinite(value) or value < 0:
                raise UserInputError(f"must be a finite number >= 0, not {value}", where=f.name)
            object.__setattr__(self, f.name, float(value))
        if not (
            self.active_max_recency_days
            <= self.at_risk_max_recency_days
            <= self.dormant_max_recency_days
        ):
            raise UserInputError(
                "recency thresholds must increase: active <= at_risk <= dormant",
                where="lifecycle",
            )


def _number(value: float) -> str:
    return exp.Literal.number(repr(float(value))).sql()


def lifecycle_case(
    thresholds: LifecycleThresholds | None = None,
    *,
    tenure: str = quote("tenure_days"),
    recency: str = quote("recency_days"),
) -> str:
    """The lifecycle rules as a SQL ``CASE`` expression over two SQL expressions.

    Thresholds are validated numbers rendered as numeric literals.

    Examples
    --------
    >>> print(lifecycle_case(LifecycleThresholds(), tenure="t", recency="r"))  # doctest: +ELLIPSIS
    CASE WHEN t <= 30.0 THEN 'new' WHEN r <= 90.0 THEN 'active' ...
    """
    t = thresholds or LifecycleThresholds()
    return (
        f"CASE WHEN {tenure} <= {_number(t.new_max_tenure_days)} THEN 'new'"
        f" WHEN {recency} <= {_number(t.active_max_recency_days)} THEN 'active'"
        f" WHEN {recency} <= {_number(t.at_risk_max_recency_days)} THEN 'at_risk'"
        f" WHEN {recency} <= {_number(t.dormant_max_recency_days)} THEN 'dormant'"
        f" WHEN {recency} IS NOT NULL THEN 'churned'"
        f" WHEN {tenure} > {_number(t.prospect_max_tenure_days)} THEN 'churned'"
        " ELSE 'prospect' END"
    )


def lifecycle_stage(
    tenure_days: float | None,
    recency_days: float | None,
    thresholds: LifecycleThresholds | None = None,
) -> str:
    """The lifecycle stage in Python, exactly as :func:`lifecycle_case` decides it.

    ``None`` and NaN mean unknown (SQL ``NULL``).

    Examples
    --------
    >>> lifecycle_stage(400.0, 120.0)
    'at_risk'
    >>> lifecycle_stage(10.0, None)
    'new'
    >>> lifecycle_stage(None, None)
    'prospect'
    """
    t = thresholds or LifecycleThresholds()
    tenure = None if tenure_days is None or math.isnan(tenure_days) else tenure_days
    recency = None if recency_days is None or math.isnan(recency_days) else recency_days
    if tenure is not None and tenure <= t.new_max_tenure_days:
        return "new"
    if recency is not None:
        if recency <= t.active_max_recency_days:
            return "active"
        if recency <= t.at_risk_max_recency_days:
            return "at_risk"
        if recency <= t.dormant_max_recency_days:
            return "dormant"
        return "churned"
    if tenure is not None and tenure > t.prospect_max_tenure_days:
        return "churned"
    return "prospect"


def lifecycle_definition(thresholds: LifecycleThresholds | None = None) -> FeatureDefinition:
    """The categorical feature ``lifecycle_stage``, derived from tenure and recency.

    Examples
    --------
    >>> d = lifecycle_definition()
    >>> d.kind, d.inputs
    ('categorical', ('tenure_days', 'recency_days'))
    """
    t = thresholds or LifecycleThresholds()
    return FeatureDefinition(
        "lifecycle_stage",
        "Lifecycle stage (new, active, at_risk, dormant, churned, prospect) from tenure_days "
        f"and recency_days; thresholds {t}.",
        lifecycle_case(t),
        ("customers", "orders"),
        kind="categorical",
        transform="onehot",
        unit=None,
        inputs=("tenure_days", "recency_days"),
    )
