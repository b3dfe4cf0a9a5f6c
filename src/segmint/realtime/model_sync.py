"""Batch model segments as real-time memberships.

When the service starts, the assignments of the active model version
(``segment_assignments``, written by ``segmint run``) are reconciled with the
memberships of source ``model``: customers who moved get an ``exited`` and an
``entered`` outbox row, new ones an ``entered`` row, and the read API and the
outbox serve batch and real-time segments alike. From then on the re-scorer
keeps them current as events arrive.

A customer's person is its resolved ``person_id`` (``identities``), else the id
the real-time resolver gives an unknown user id (:func:`seed_sql` equals
:func:`segmint.data.identity.graph.seed_person_id` for a ``user_id``).
"""

from __future__ import annotations

import logging
from datetime import datetime

from segmint.engine import Warehouse
from segmint.segments import registry

__all__ = ["seed_sql", "sync_model_memberships"]

logger = logging.getLogger(__name__)

_TARGET = "_rt_model_target"


def seed_sql(column: str) -> str:
    """SQL giving the real-time person id of an unresolved user id held in ``column``."""
    return f"'p_' || substr(sha256('user_id' || chr(31) || {column}), 1, 16)"


def sync_model_memberships(wh: Warehouse, now: datetime) -> tuple[int, int]:
    """Make the ``model`` memberships equal the active version's assignments.

    Only when that version is not served yet: once it is, the re-scorer's updates are
    newer than the batch assignments and are kept. Runs inside the caller's transaction;
    writes the changes to ``memberships`` and ``membership_outbox``. Returns (entered,
    exited).
    """
    if not wh.has_table("models") or not wh.has_table("segment_assignments"):
        return 0, 0
    version = registry.active_version(wh)
    if version is None:
        return 0, 0
    reason = f"model {version.version}: batch run"
    synced = wh.scalar(
        "SELECT count(*) FROM memberships WHERE source = 'model' AND source_name = ?",
        [version.version],
    )
    if synced:
        return 0, 0  # already served; real-time re-scoring has kept them current since
    wh.execute(
        f"CREATE OR REPLACE TEMP TABLE {_TARGET} AS "
        f"SELECT DISTINCT coalesce(i.person_id, {seed_sql('a.customer_id')}) AS person_id, "
        "a.segment_name AS segment FROM segment_assignments a "
        "LEFT JOIN (SELECT identifier_value, min(person_id) AS person_id FROM identities "
        "WHERE identifier_type IN ('customer_id', 'user_id') AND person_id IS NOT NULL "
        "GROUP BY identifier_value) i ON i.identifier_value = a.customer_id "
        "WHERE a.model_version = ? AND a.segment_name IS NOT NULL",
        [version.version],
    )
    try:
        next_id = int(wh.scalar("SELECT coalesce(max(id), 0) FROM membership_outbox") or 0)
        exited = wh.fetchall(
            "INSERT INTO membership_outbox (id, person_id, segment, change, source, reason, "
            '"at") SELECT ? + row_number() OVER (ORDER BY m.person_id, m.segment), '
            "m.person_id, m.segment, 'exited', 'model', ?, ? FROM memberships m "
            f"WHERE m.source = 'model' AND NOT EXISTS (SELECT 1 FROM {_TARGET} t "
            "WHERE t.person_id = m.person_id AND t.segment = m.segment)",
            [next_id, f"model {version.version}: moved to another segment", now],
        )
        n_exited = int(exited[0][0]) if exited else 0
        wh.execute(
            "DELETE FROM memberships m WHERE m.source = 'model' AND NOT EXISTS "
            f"(SELECT 1 FROM {_TARGET} t WHERE t.person_id = m.person_id "
            "AND t.segment = m.segment)"
        )
        entered = wh.fetchall(
            "INSERT INTO membership_outbox (id, person_id, segment, change, source, reason, "
            '"at") SELECT ? + row_number() OVER (ORDER BY t.person_id, t.segment), '
            f"t.person_id, t.segment, 'entered', 'model', ?, ? FROM {_TARGET} t "
            "WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.person_id = t.person_id "
            "AND m.segment = t.segment)",
            [next_id + n_exited, reason, now],
        )
        n_entered = int(entered[0][0]) if entered else 0
        wh.execute(
            "INSERT INTO memberships (person_id, segment, source, source_name, reason, since) "
            f"SELECT t.person_id, t.segment, 'model', ?, ?, ? FROM {_TARGET} t "
            "WHERE NOT EXISTS (SELECT 1 FROM memberships m WHERE m.person_id = t.person_id "
            "AND m.segment = t.segment)",
            [version.version, reason, now],
        )
    finally:
        wh.execute(f"DROP TABLE IF EXISTS {_TARGET}")
    if n_entered or n_exited:
        logger.info("model %s: %d entered, %d exited", version.version, n_entered, n_exited)
    return n_entered, n_exited
