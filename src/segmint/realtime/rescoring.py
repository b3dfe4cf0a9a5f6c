"""Re-scoring model segments of persons whose data changed, with the batch model.

The active model version (``segmint models``) is applied to a handful of
customers exactly as the batch pipeline applies it to everyone: the same
feature SQL (:func:`segmint.features.definitions.render_query`), restricted to
those customers' rows, as of now; the same population rules (a customer who
never ordered or visited gets the snapshot's longest recency; the fallback rule
sends customers with too little data to the fallback segment); and the same
compiled scoring SQL (:func:`segmint.segments.scoring.compile_scoring_sql`).
So a customer's real-time model segment equals what a batch run over the same
data would give.

Models that use CLV or user-defined SQL features are not re-scored in real time
(their inputs need a population-level fit or arbitrary SQL); they change with
the next batch run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import sqlglot
import sqlglot.expressions as exp

from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.features.compute import default_definitions
from segmint.features.definitions import BUILTIN_DEFINITIONS, parameters_of, render_query
from segmint.segments import registry
from segmint.segments.population import FALLBACK_SEGMENT, NEVER_IS_LONGEST
from segmint.segments.rules import parse_rule

__all__ = ["ModelRescorer", "ModelScore"]

logger = logging.getLogger(__name__)

#: Canonical tables and the column that names the customer in each.
#: Canonical tables and the condition keeping the rows of the persons being scored.
_PERSON_FILTERS = {
    "customers": "customer_id IN (SELECT id FROM {ids})",
    "orders": "customer_id IN (SELECT id FROM {ids})",
    "events": "user_id IN (SELECT id FROM {ids}) OR anonymous_id IN (SELECT id FROM {ids})",
}
_PERSONS = "_rt_rescore_persons"
_IDS = "_rt_rescore_ids"
# Every identifier of the persons being scored: their customer ids and, after identity
# resolution, every identifier represented by the same customer id (see
# segmint.features.definitions, "The person key").
_IDS_SQL = f"""
CREATE OR REPLACE TEMP TABLE {_IDS} AS
WITH reps AS (
    SELECT coalesce(r.representative, w.customer_id) AS rep
    FROM {_PERSONS} w LEFT JOIN identifier_representative r
      ON r.identifier_value = w.customer_id AND r.identifier_type IN ('customer_id', 'user_id')
)
SELECT customer_id AS id FROM {_PERSONS}
UNION SELECT rep FROM reps
UNION SELECT identifier_value FROM identifier_representative
      WHERE representative IN (SELECT rep FROM reps)
"""
_FEATURES = "_rt_rescore_features"


@dataclass(frozen=True)
class ModelScore:
    """A customer's model segment."""

    customer_id: str
    segment_id: int
    segment: str
    distance: float | None
    version: str


def _restricted(query: str) -> str:
    """``query`` with every customer-keyed table cut down to the persons being scored."""

    def cut(node: exp.Expr) -> exp.Expr:
        if not isinstance(node, exp.Table) or node.name not in _PERSON_FILTERS:
            return node
        alias = node.alias or node.name
        condition = _PERSON_FILTERS[node.name].format(ids=_IDS)
        sub = sqlglot.parse_one(
            f"(SELECT * FROM {quote(node.name)} WHERE {condition})", dialect="duckdb"
        )
        return exp.Subquery(this=sub.unnest(), alias=exp.TableAlias(this=exp.to_identifier(alias)))

    tree = sqlglot.parse_one(query, dialect="duckdb")
    return tree.transform(cut).sql(dialect="duckdb")


class ModelRescorer:
    """Scores given customers with the active model version (see the module docstring)."""

    def __init__(self, wh: Warehouse, *, session_gap_minutes: float = 30.0) -> None:
        self.wh = wh
        self.session_gap_minutes = session_gap_minutes
        self.version: registry.ModelVersion | None = None
        # Built once per version: parsing them costs more Python time than the scoring.
        self._features_sql = ""
        self._parameters: set[str] = set()
        self._scoring_sql = ""
        self._longest: dict[str, Any] = {}
        self.refresh()

    def refresh(self) -> None:
        """Load the active model version (call after a batch run or a rollback)."""
        self.version = None
        if not self.wh.has_table("models"):
            return
        version = registry.active_version(self.wh)
        if version is None:
            return
        builtin = {d.name for d in BUILTIN_DEFINITIONS}
        used = sorted(version.lineage.features)
        unsupported = [name for name in used if name not in builtin]
        if unsupported:
            logger.warning(
                "model %s uses %s: not re-scored in real time",
                version.version,
                ", ".join(unsupported),
            )
            return
        fallback = str(version.lineage.parameters.get("fallback_rule") or "")
        fields_needed = set(used)
        fallback_sql = "FALSE"
        if fallback:
            fallback_rule = parse_rule(fallback, {d.name: "number" for d in default_definitions()})
            fields_needed |= set(fallback_rule.fields)
            fallback_sql = fallback_rule.to_sql()
        definitions = [d for d in default_definitions() if d.name in fields_needed]
        columns = [d.name for d in definitions]
        snapshot = (version.lineage.extra or {}).get("snapshot_id")
        never: dict[str, Any] = {}
        for column in NEVER_IS_LONGEST:
            if column in columns and snapshot is not None:
                never[column] = self.wh.scalar(
                    f"SELECT max({quote(column)}) FROM features WHERE snapshot_id = ?",
                    [snapshot],
                )
        # A customer who never ordered or visited gets the snapshot's longest recency.
        self._longest = {f"never_{i}": v for i, v in enumerate(never.values())}
        longest = ", ".join(
            f"coalesce({quote(c)}, CAST($never_{i} AS DOUBLE)) AS {quote(c)}"
            for i, c in enumerate(never)
        )
        star = f"* REPLACE ({longest})" if longest else "*"
        self._features_sql = (
            f"CREATE OR REPLACE TEMP TABLE {_FEATURES} AS SELECT *, "
            f"coalesce(({fallback_sql}), FALSE) AS _fallback "
            f"FROM (SELECT {star} FROM ({_restricted(render_query(definitions))}))"
        )
        self._parameters = set(
            parameters_of(
                self._features_sql, {"as_of": None, "session_gap_seconds": None, **self._longest}
            )
        )
        self._scoring_sql = (
            f"SELECT s.customer_id, s.segment_id, s.distance FROM "
            f"({version.scoring_sql(source=_FEATURES)}) AS s "
            f"JOIN {_FEATURES} f USING (customer_id) WHERE NOT f._fallback"
        )
        self.version = version

    @property
    def enabled(self) -> bool:
        return self.version is not None

    def score(self, customers: Iterable[str], as_of: datetime) -> list[ModelScore]:
        """The model segment of each customer (in ``customers``) as of ``as_of``."""
        version = self.version
        wanted = sorted(set(customers))
        if version is None or not wanted:
            return []
        wh = self.wh
        wh.register(_PERSONS, pa.table({"customer_id": pa.array(wanted, pa.string())}))
        try:
            wh.execute(_IDS_SQL)
            values = {
                "as_of": as_of,
                "session_gap_seconds": float(self.session_gap_minutes) * 60.0,
                **self._longest,
            }
            wh.execute(
                self._features_sql, {k: v for k, v in values.items() if k in self._parameters}
            )
            scored = wh.fetchall(self._scoring_sql)
            fallback = wh.fetchall(f"SELECT customer_id FROM {_FEATURES} WHERE _fallback")
        finally:
            wh.unregister(_PERSONS)
            wh.execute(f"DROP TABLE IF EXISTS {_IDS}")
            wh.execute(f"DROP TABLE IF EXISTS {_FEATURES}")
        results = [
            ModelScore(c, int(s), version.name_of(int(s)), d, version.version)
            for c, s, d in scored
            if s is not None
        ]
        results += [
            ModelScore(
                c, FALLBACK_SEGMENT, version.name_of(FALLBACK_SEGMENT), None, version.version
            )
            for (c,) in fallback
        ]
        return results
