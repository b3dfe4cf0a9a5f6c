"""The audit log: one row per privacy action (who, when, what), never personal values."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from segmint.data.privacy.tables import ensure_privacy_tables
from segmint.engine import Warehouse


def utcnow() -> datetime:
    """The current time as naive UTC, the warehouse's convention."""
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class AuditEntry:
    """One row of ``audit_log``."""

    audit_id: str
    at: datetime
    actor: str
    action: str
    details: dict[str, Any]


def record_audit(
    wh: Warehouse, *, actor: str, action: str, details: dict[str, Any], at: datetime | None = None
) -> str:
    """Append an entry to ``audit_log`` and return its id.

    Callers pass counts, table names and request ids in ``details`` -- never the
    personal values an action was about.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> audit_id = record_audit(wh, actor="ops", action="retention", details={"events": 3})
    >>> [e.details for e in audit_entries(wh)]
    [{'events': 3}]
    """
    ensure_privacy_tables(wh)
    audit_id = uuid.uuid4().hex[:16]
    wh.execute(
        "INSERT INTO audit_log VALUES (?, ?, ?, ?, ?)",
        [audit_id, at or utcnow(), actor, action, json.dumps(details, sort_keys=True, default=str)],
    )
    return audit_id


def audit_entries(wh: Warehouse, action: str | None = None) -> list[AuditEntry]:
    """Entries of ``audit_log``, oldest first, optionally of one action only.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> audit_entries(wh)
    []
    """
    ensure_privacy_tables(wh)
    where, params = ("WHERE action = ?", [action]) if action else ("", [])
    rows = wh.fetchall(
        f'SELECT audit_id, "at", actor, action, CAST(details AS VARCHAR) FROM audit_log {where} '
        'ORDER BY "at", rowid',
        params,
    )
    return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4]) if r[4] else {}) for r in rows]
