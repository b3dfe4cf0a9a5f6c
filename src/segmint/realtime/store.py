"""Tables of the real-time path: dead letters, memberships and their outbox.

Events go to the canonical ``events`` table, profiles to ``profiles``
(:mod:`segmint.realtime.profiles`), trigger timers to ``trigger_timers``
(:mod:`segmint.realtime.triggers`). Every table is in the data dictionary
(``segmint schema``).
"""

from __future__ import annotations

from segmint.data.schema import Column, Table, register_table
from segmint.engine import Warehouse

__all__ = [
    "FAILED_EVENTS",
    "MEMBERSHIPS",
    "MEMBERSHIP_OUTBOX",
    "SUPPRESSED_EVENTS",
    "ensure_realtime_tables",
]

FAILED_EVENTS = Table(
    "failed_events",
    "Dead letters: every message the intake or a stream consumer rejected, with its raw "
    "payload, until it is reprocessed.",
    (
        Column("failure_id", "string", "Identifier of the failure (f_...)."),
        Column("received_at", "timestamp", "When segmint received it (UTC)."),
        Column("source", "string", "Where it came from: api:<key id> or redis:<stream>, ..."),
        Column("reason", "string", "Reason code (see segmint.realtime.spec.REASONS)."),
        Column("detail", "string", "What is wrong, naming the field."),
        Column("message_id", "string", "messageId when it could be read."),
        Column(
            "payload",
            "string",
            "The message as received (text; bytes decoded as UTF-8 with replacement).",
            pii=True,
        ),
        Column("attempts", "integer", "Times it was processed (1 on arrival)."),
        Column("reprocessed_at", "timestamp", "When a reprocessing accepted it (NULL: pending)."),
    ),
    key=("failure_id",),
    timestamp_column="received_at",
)

MEMBERSHIPS = Table(
    "memberships",
    "Current real-time segment memberships: one row per person and segment.",
    (
        Column("person_id", "string", "The person (identity graph id or user id).", pii=True),
        Column("segment", "string", "Segment name."),
        Column("source", "string", "trigger | model | rule."),
        Column("source_name", "string", "The trigger, model version or rule that set it."),
        Column("reason", "string", "Why the person is in the segment (plain language)."),
        Column("since", "timestamp", "When the person entered (UTC)."),
        Column("expires_at", "timestamp", "When the membership ends (NULL: no TTL)."),
    ),
    key=("person_id", "segment"),
    timestamp_column="since",
)

MEMBERSHIP_OUTBOX = Table(
    "membership_outbox",
    "Membership changes, written in the same transaction as the change; destinations "
    "(the Redis stream relay, activation) read from here.",
    (
        Column("id", "integer", "Increasing id of the change; readers dedupe by it."),
        Column("person_id", "string", "The person.", pii=True),
        Column("segment", "string", "Segment name."),
        Column("change", "string", "entered | exited."),
        Column("source", "string", "trigger | model | rule | expiry."),
        Column("reason", "string", "Why (plain language)."),
        Column("at", "timestamp", "When the change happened (UTC)."),
        Column("expires_at", "timestamp", "End of the membership entered (NULL: no TTL)."),
        Column("published_at", "timestamp", "When it was published to the stream (NULL: not)."),
    ),
    key=("id",),
    timestamp_column="at",
)

SUPPRESSED_EVENTS = Table(
    "suppressed_events",
    "Counts of events blocked because they belong to an erased person (no payloads kept); "
    "one row per source and commit, to be summed.",
    (
        Column("day", "date", "UTC day."),
        Column("source", "string", "Where the events came from."),
        Column("events", "integer", "Events blocked."),
    ),
)

for _table in (FAILED_EVENTS, MEMBERSHIPS, MEMBERSHIP_OUTBOX, SUPPRESSED_EVENTS):
    register_table(_table)


def ensure_realtime_tables(wh: Warehouse) -> None:
    """Create the real-time tables (and the canonical ones) if missing.

    Examples
    --------
    >>> wh = Warehouse(":memory:")
    >>> ensure_realtime_tables(wh)
    >>> wh.fetchall("SELECT count(*) FROM memberships")
    [(0,)]
    """
    from segmint.data.store import ensure_tables

    ensure_tables(wh)
