"""CLV features: BG/NBD and Gamma-Gamma fitted on a bounded sample, added to a snapshot.

The per-customer summary (repeat purchase days, recency, age, mean repeat-day spend) is
computed in the engine with the convention of :func:`segmint.features.clv.rfm_summary`,
in days. The models are fitted on at most ``sample_size`` customers; their predictions are
vectorised numpy over every customer and written back to the ``features`` table as
``expected_purchases_<h>d``, ``probability_alive``, ``expected_spend`` and ``clv_<h>d``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.features.clv import BetaGeoModel, GammaGammaModel

logger = logging.getLogger(__name__)

MIN_CUSTOMERS = 20  # below this the models are not identifiable; columns stay NULL

_SUMMARY = """
WITH days AS (
    SELECT customer_id, CAST(ordered_at AS DATE) AS day, sum(amount) AS value
    FROM orders
    WHERE ordered_at <= $as_of AND coalesce(lower(status), 'completed') = 'completed'
    GROUP BY 1, 2
), firsts AS (
    SELECT customer_id, min(day) AS first_day FROM days GROUP BY 1
)
SELECT d.customer_id,
       count(*) - 1 AS frequency,
       CAST(datediff('day', f.first_day, max(d.day)) AS DOUBLE) AS recency,
       CAST(datediff('day', f.first_day, CAST($as_of AS DATE)) AS DOUBLE) AS age,
       avg(d.value) FILTER (WHERE d.day > f.first_day) AS repeat_value
FROM days d JOIN firsts f USING (customer_id)
GROUP BY d.customer_id, f.first_day
"""


@dataclass(frozen=True)
class ClvResult:
    bgnbd: dict[str, float] | None
    gamma_gamma: dict[str, float] | None
    customers: int
    columns: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "bgnbd": self.bgnbd,
            "gamma_gamma": self.gamma_gamma,
            "customers": self.customers,
            "columns": list(self.columns),
        }


def clv_columns(horizon_days: int) -> tuple[str, ...]:
    return (
        f"expected_purchases_{horizon_days}d",
        "probability_alive",
        "expected_spend",
        f"clv_{horizon_days}d",
    )


def add_clv_features(
    wh: Warehouse,
    *,
    snapshot_id: str,
    as_of: datetime,
    horizon_days: int = 90,
    sample_size: int = 200_000,
    seed: int = 0,
) -> ClvResult:
    """Fit the CLV models and add their predictions to a feature snapshot."""
    columns = clv_columns(horizon_days)
    for column in columns:
        wh.execute(f"ALTER TABLE features ADD COLUMN IF NOT EXISTS {quote(column)} DOUBLE")
    summary = wh.arrow(_SUMMARY, {"as_of": as_of})
    n = summary.num_rows
    if n < MIN_CUSTOMERS:
        logger.warning("CLV skipped: only %d customers with orders", n)
        return ClvResult(None, None, n, columns)
    x = summary.column("frequency").to_numpy().astype(float)
    t_x = summary.column("recency").to_numpy().astype(float)
    age = summary.column("age").to_numpy().astype(float)
    value = summary.column("repeat_value").to_numpy(zero_copy_only=False).astype(float)
    rng = np.random.default_rng(seed)
    fit_rows = rng.choice(n, size=min(n, sample_size), replace=False)
    bgnbd = BetaGeoModel().fit(x[fit_rows], t_x[fit_rows], age[fit_rows])
    purchases = bgnbd.expected_purchases(float(horizon_days), x, t_x, age)
    alive = bgnbd.probability_alive(x, t_x, age)
    repeaters = fit_rows[(x[fit_rows] > 0) & (value[fit_rows] > 0)]
    spend = np.full(n, np.nan)
    gg_params = None
    if len(repeaters) >= MIN_CUSTOMERS:
        gamma_gamma = GammaGammaModel().fit(x[repeaters], value[repeaters])
        gg_params = dict(gamma_gamma.params_)
        has_value = (x > 0) & (value > 0)
        spend[has_value] = gamma_gamma.conditional_expected_average_profit(
            x[has_value], value[has_value]
        )
        population_mean = gamma_gamma.conditional_expected_average_profit(
            np.array([0.0]), np.array([1.0])
        )
        spend[~has_value] = float(population_mean[0])
    values = pa.table(
        {
            "customer_id": summary.column("customer_id"),
            "purchases": pa.array(purchases, pa.float64()),
            "alive": pa.array(alive, pa.float64()),
            "spend": pa.array(spend, pa.float64(), from_pandas=True),
        }
    )
    wh.register("_clv_values", values)
    try:
        wh.execute(
            f"UPDATE features SET {quote(columns[0])} = v.purchases, "
            f"{quote(columns[1])} = v.alive, {quote(columns[2])} = v.spend, "
            f"{quote(columns[3])} = v.purchases * v.spend "
            f"FROM _clv_values v WHERE features.customer_id = v.customer_id "
            f"AND features.snapshot_id = ?",
            [snapshot_id],
        )
        # Customers who never ordered: no expected purchases from the model's view of them.
        wh.execute(
            f"UPDATE features SET {quote(columns[0])} = 0, {quote(columns[3])} = 0 "
            f"WHERE snapshot_id = ? AND {quote(columns[0])} IS NULL",
            [snapshot_id],
        )
    finally:
        wh.unregister("_clv_values")
    return ClvResult(dict(bgnbd.params_), gg_params, n, columns)
