"""Rule segments (rule language over features) and their hierarchical sub-division.

A rule segment's members are found in the engine with the rule rendered to SQL. With
``subdivide: k`` the members are clustered again (k-means on the pipeline's transformed
features, fitted on a bounded sample) and every member is scored into a sub-segment in
the engine, named ``<rule segment> 1..k``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from segmint.config import RuleSegment
from segmint.data.schema import Column, Table, register_table
from segmint.engine import Warehouse
from segmint.engine.dialect import quote
from segmint.errors import UserInputError
from segmint.features.compute import FeatureSet
from segmint.segments.estimators import KMeansSegmenter
from segmint.segments.rules import FieldType, parse_rule
from segmint.segments.scoring import compile_scoring_sql, spec_from_model

SUBDIVIDE_SAMPLE = 50_000

RULE_SEGMENT_MEMBERS = Table(
    "rule_segment_members",
    "Members of rule segments (and their sub-segments) per feature snapshot.",
    (
        Column("customer_id", "string", "Customer in the segment.", pii=True),
        Column("segment", "string", "Rule segment (or sub-segment) name."),
        Column("parent", "string", "Rule segment a sub-segment divides; NULL at the top."),
        Column("snapshot_id", "string", "Feature snapshot the rule was evaluated on."),
        Column("assigned_at", "timestamp", "When (UTC)."),
    ),
)
register_table(RULE_SEGMENT_MEMBERS)

_FIELD_TYPES = {
    "VARCHAR": FieldType.STRING,
    "BOOLEAN": FieldType.BOOLEAN,
    "TIMESTAMP": FieldType.TIMESTAMP,
    "DATE": FieldType.TIMESTAMP,
}


@dataclass(frozen=True)
class RuleSegmentResult:
    sizes: dict[str, int]  # segment name -> members (sub-segments included)
    parents: dict[str, str | None]

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": self.sizes, "parents": self.parents}


def field_types(wh: Warehouse, table: str) -> dict[str, FieldType]:
    """Rule-language types of a table's columns (numbers unless text, boolean, time)."""
    rows = wh.fetchall(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = ?",
        [table],
    )
    return {
        name: _FIELD_TYPES.get(str(kind).split("(")[0], FieldType.NUMBER)
        for name, kind in rows
        if not name.startswith("_")
    }


def assign_rule_segments(
    wh: Warehouse,
    segments: Sequence[RuleSegment],
    features: FeatureSet,
    transformer: Any,
    columns: list[str],
    *,
    seed: int = 0,
) -> RuleSegmentResult:
    """Evaluate every rule segment on a snapshot and write ``rule_segment_members``."""
    wh.execute(RULE_SEGMENT_MEMBERS.ddl())
    fields = field_types(wh, features.table)
    rules = []
    for index, segment in enumerate(segments):
        try:
            rules.append((segment, parse_rule(segment.rule, fields)))
        except UserInputError as e:
            raise UserInputError(e.message, where=f"rule_segments[{index}] ({segment.name})") from e
    now = datetime.now(UTC).replace(tzinfo=None)
    sizes: dict[str, int] = {}
    parents: dict[str, str | None] = {}
    with wh.transaction():
        wh.execute("DELETE FROM rule_segment_members WHERE snapshot_id = ?", [features.snapshot_id])
        for segment, rule in rules:
            wh.execute(
                f"INSERT INTO rule_segment_members SELECT customer_id, ?, NULL, snapshot_id, ? "
                f"FROM {quote(features.table)} WHERE snapshot_id = ? AND ({rule.to_sql()})",
                [segment.name, now, features.snapshot_id],
            )
            sizes[segment.name] = int(
                wh.scalar(
                    "SELECT count(*) FROM rule_segment_members "
                    "WHERE snapshot_id = ? AND segment = ?",
                    [features.snapshot_id, segment.name],
                )
            )
            parents[segment.name] = None
            if segment.subdivide:
                for name, size in _subdivide(
                    wh, segment, rule.to_sql(), features, transformer, columns, seed, now
                ).items():
                    sizes[name] = size
                    parents[name] = segment.name
    return RuleSegmentResult(sizes, parents)


def _subdivide(
    wh: Warehouse,
    segment: RuleSegment,
    rule_sql: str,
    features: FeatureSet,
    transformer: Any,
    columns: list[str],
    seed: int,
    now: datetime,
) -> dict[str, int]:
    k = int(segment.subdivide or 0)
    members = f"_members_{abs(hash(segment.name)) % 10**8}"
    cols = ", ".join(quote(c) for c in columns)
    wh.execute(f"DROP TABLE IF EXISTS {members}")
    wh.execute(
        f"CREATE TEMP TABLE {members} AS SELECT customer_id, {cols} FROM "
        f"{quote(features.table)} WHERE snapshot_id = ? AND ({rule_sql})",
        [features.snapshot_id],
    )
    sample = wh.df(
        f"SELECT * FROM {members} USING SAMPLE reservoir({SUBDIVIDE_SAMPLE} ROWS) "
        f"REPEATABLE ({int(seed)})"
    )
    if len(sample) < k * 5:
        wh.execute(f"DROP TABLE {members}")
        return {}
    X = np.asarray(transformer.transform(sample[columns]), dtype=float)
    model = KMeansSegmenter(n_clusters=k, random_state=seed).fit(X)
    spec = spec_from_model(model, feature_names=list(transformer.get_feature_names_out()))
    scoring = compile_scoring_sql(
        spec, transformer.to_sql({c: quote(c) for c in columns}), source=members
    )
    names = [f"{segment.name} {i + 1}" for i in range(k)]
    wh.execute(
        f"INSERT INTO rule_segment_members SELECT s.customer_id, "
        f"list_extract(?::VARCHAR[], s.segment_id + 1), ?, ?, ? FROM ({scoring}) s "
        f"WHERE s.segment_id IS NOT NULL",
        [names, segment.name, features.snapshot_id, now],
    )
    wh.execute(f"DROP TABLE {members}")
    rows = wh.fetchall(
        "SELECT segment, count(*) FROM rule_segment_members WHERE snapshot_id = ? AND parent = ? "
        "GROUP BY 1",
        [features.snapshot_id, segment.name],
    )
    return {str(name): int(count) for name, count in rows}
