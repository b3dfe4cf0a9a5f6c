"""Retention: delete behavioural events and quarantined rows older than a limit."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from segmint.data.privacy import compaction
from segmint.data.privacy.audit import record_audit, utcnow
from segmint.engine import Warehouse
from segmint.errors import UserInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionReport:
    """Rows deleted by one retention run and the cut-offs used (naive UTC)."""

    events_deleted: int
    quarantine_deleted: int
    events_cutoff: datetime | None
    quarantine_cutoff: datetime | None
    compacted: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "events_deleted": self.events_deleted,
            "quarantine_deleted": self.quarantine_deleted,
            "events_cutoff": self.events_cutoff.isoformat() if self.events_cutoff else None,
            "quarantine_cutoff": (
                self.quarantine_cutoff.isoformat() if self.quarantine_cutoff else None
            ),
            "compacted": self.compacted,
        }


def _cutoff(days: float | None, now: datetime, what: str) -> datetime | None:
    if days is None:
        return None
    if days < 0:
        raise UserInputError(f"the retention of {what} must be zero or more days, not {days}")
    return now - timedelta(days=days)


def _delete_before(wh: Warehouse, table: str, column: str, cutoff: datetime | None) -> int:
    if cutoff is None or not wh.has_table(table):
        return 0
    rows = wh.fetchall(f'DELETE FROM "{table}" WHERE "{column}" < ?', [cutoff])
    return int(rows[0][0]) if rows else 0


def apply_retention(
    wh: Warehouse,
    *,
    events_days: float | None = None,
    quarantine_days: float | None = None,
    now: datetime | None = None,
    actor: str = "cli",
    compact: bool = False,
) -> RetentionReport:
    """Delete events and quarantine rows older than the given number of days.

    Events are aged by when they happened (``timestamp``), quarantined rows by
    when they were quarantined. The run is one transaction and is recorded in
    ``audit_log``.

    Parameters
    ----------
    wh
        The warehouse.
    events_days, quarantine_days
        Keep this many days (``None``: keep everything of that kind).
    now
        The reference time (default: now, UTC).
    actor
        Who runs it (recorded in the audit log).
    compact
        Also rewrite the database file so the deleted rows leave its bytes
        (see :mod:`segmint.data.privacy.compaction`).

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> from segmint.data.store import ensure_tables
    >>> ensure_tables(wh)
    >>> wh.execute("INSERT INTO events (message_id, type, timestamp) VALUES "
    ...            "('old', 'track', DATE '2020-01-01'), ('new', 'track', DATE '2024-06-01')")
    >>> report = apply_retention(wh, events_days=90, now=datetime(2024, 7, 1))
    >>> report.events_deleted, wh.fetchall("SELECT message_id FROM events")
    (1, [('new',)])
    """
    if events_days is None and quarantine_days is None:
        raise UserInputError("give a retention period for events, quarantine or both")
    moment = now or utcnow()
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    events_cutoff = _cutoff(events_days, moment, "events")
    quarantine_cutoff = _cutoff(quarantine_days, moment, "quarantined rows")
    with wh.transaction():
        events = _delete_before(wh, "events", "timestamp", events_cutoff)
        quarantine = _delete_before(wh, "quarantine", "quarantined_at", quarantine_cutoff)
        record_audit(
            wh,
            actor=actor,
            action="retention",
            details={
                "events_days": events_days,
                "quarantine_days": quarantine_days,
                "events_cutoff": events_cutoff,
                "quarantine_cutoff": quarantine_cutoff,
                "rows_deleted": {"events": events, "quarantine": quarantine},
            },
        )
    logger.info("retention: %d events and %d quarantined rows deleted", events, quarantine)
    compacted = False
    if compact and (events or quarantine):
        compacted = compaction.compact_database(wh) is not None
    return RetentionReport(events, quarantine, events_cutoff, quarantine_cutoff, compacted)
