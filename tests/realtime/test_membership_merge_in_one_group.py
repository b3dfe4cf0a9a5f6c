"""A merge inside the group that created the merged person's membership (found by the bench).

``MembershipBook.move`` forgets the merged person's memberships in memory and queues
their deletion, but leaves their *pending upserts* in place: when the membership was
entered in the same group (not yet flushed), ``flush`` deletes the row and then inserts
it again. The ``memberships`` table then holds a person who no longer exists, which
comes back after a restart (segment sizes and members differ from before).
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import orjson

from segmint.engine import Warehouse
from segmint.realtime.memberships import Membership, MembershipBook
from segmint.realtime.service import RealtimeService
from segmint.realtime.store import ensure_realtime_tables

T0 = datetime(2026, 11, 23, 12, 0)
PROJECT_YAML = textwrap.dedent(
    """\
    warehouse: ./segmint.duckdb
    triggers:
      - name: cart_abandoned_fast
        on: [abandoned_cart]
        when: minutes_since_last_event < 30
        then: {enter: At-Risk, ttl_minutes: 1440}
    """
)


def test_a_merge_before_the_flush_leaves_no_row_for_the_merged_person() -> None:
    book = MembershipBook()
    book.enter(
        Membership("anon", "At-Risk", "trigger", "cart", "abandoned cart", T0, T0 + timedelta(1))
    )
    book.move("known", "anon", T0)
    wh = Warehouse(":memory:")
    ensure_realtime_tables(wh)
    book.flush(wh)
    assert {m.person_id for m in book} == {"known"}
    assert wh.fetchall("SELECT person_id, segment FROM memberships") == [("known", "At-Risk")]


def _message(call: str, n: int, minutes: float, **fields: str) -> bytes:
    at = T0 + timedelta(minutes=minutes)
    body = {"type": call, "messageId": f"m{n}", "timestamp": at.isoformat() + "Z", **fields}
    return orjson.dumps(body)


def test_memberships_after_a_restart_equal_those_before(tmp_path: Path) -> None:
    """Anonymous visitor enters At-Risk, then identifies, all in one stream read (one group)."""
    (tmp_path / "segmint.yaml").write_text(PROJECT_YAML, encoding="utf-8")
    clock = lambda: T0 + timedelta(minutes=5)  # noqa: E731
    with RealtimeService.open(tmp_path, clock=clock) as service:
        service.ingest_raw(
            [
                _message("page", 1, -20, userId="u2"),
                _message("page", 2, -5, anonymousId="a2"),
                _message("track", 3, 0, anonymousId="a2", event="abandoned_cart"),
                _message("identify", 4, 1, userId="u2", anonymousId="a2"),
            ],
            source="test",
        )
        survivor = service.person_of("u2")
        assert survivor is not None and service.person_of("a2") == survivor
        before = {(m.person_id, m.segment) for m in service.processor.memberships}
        assert before == {(survivor, "At-Risk")}
        service.flush()
        stored = set(service.wh.fetchall("SELECT person_id, segment FROM memberships"))
        assert stored == before
    with RealtimeService.open(tmp_path, clock=clock) as service:
        assert {(m.person_id, m.segment) for m in service.processor.memberships} == before
        assert service.segment_sizes() == {"At-Risk": 1}
