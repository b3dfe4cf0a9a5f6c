"""Retention: only rows older than the limit go, and each run is audited."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from segmint.data.privacy import apply_retention, audit_entries
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError

NOW = datetime(2024, 7, 1, 12)


@pytest.fixture
def wh() -> Warehouse:
    warehouse = Warehouse(":memory:")
    ensure_tables(warehouse)
    for i, age in enumerate((1, 29, 31, 400)):
        warehouse.execute(
            "INSERT INTO events (message_id, type, timestamp) VALUES (?, 'track', ?)",
            [f"e{age}", NOW - timedelta(days=age)],
        )
        warehouse.execute(
            "INSERT INTO quarantine (load_id, raw, rule, quarantined_at) VALUES (?, ?, 'max', ?)",
            [f"l{i}", f"row {age}", NOW - timedelta(days=age)],
        )
    return warehouse


def test_only_rows_older_than_the_limit_are_deleted(wh):
    report = apply_retention(wh, events_days=30, quarantine_days=100, now=NOW, actor="ops")
    assert (report.events_deleted, report.quarantine_deleted) == (2, 1)
    assert report.events_cutoff == NOW - timedelta(days=30)
    assert sorted(r[0] for r in wh.fetchall("SELECT message_id FROM events")) == ["e1", "e29"]
    assert sorted(r[0] for r in wh.fetchall("SELECT raw FROM quarantine")) == [
        "row 1",
        "row 29",
        "row 31",
    ]
    [entry] = audit_entries(wh, "retention")
    assert entry.actor == "ops"
    assert entry.details["rows_deleted"] == {"events": 2, "quarantine": 1}
    assert entry.details["events_days"] == 30


def test_a_kind_without_a_limit_is_kept(wh):
    report = apply_retention(wh, quarantine_days=0, now=NOW)
    assert report.events_deleted == 0 and report.events_cutoff is None
    assert wh.scalar("SELECT count(*) FROM events") == 4
    assert wh.scalar("SELECT count(*) FROM quarantine") == 0
    again = apply_retention(wh, quarantine_days=0, now=NOW)
    assert again.quarantine_deleted == 0


def test_limits_are_checked(wh):
    with pytest.raises(UserInputError, match="events, quarantine or both"):
        apply_retention(wh, now=NOW)
    with pytest.raises(UserInputError, match="zero or more"):
        apply_retention(wh, events_days=-1, now=NOW)
    assert wh.scalar("SELECT count(*) FROM events") == 4


def test_compaction_drops_the_old_rows_from_the_file(tmp_path):
    path = tmp_path / "w.duckdb"
    wh = Warehouse(path)
    wh.execute("SET force_compression = 'uncompressed'")
    ensure_tables(wh)
    wh.execute(
        "INSERT INTO events (message_id, type, timestamp) VALUES "
        "('old-event-4711', 'track', TIMESTAMP '2020-01-01'), "
        "('new-event-4712', 'track', TIMESTAMP '2024-06-30')"
    )
    wh.checkpoint()
    report = apply_retention(wh, events_days=90, now=NOW, compact=True)
    assert report.compacted
    data = path.read_bytes()
    assert b"old-event-4711" not in data and b"new-event-4712" in data
    assert wh.scalar("SELECT count(*) FROM events") == 1
    wh.close()
