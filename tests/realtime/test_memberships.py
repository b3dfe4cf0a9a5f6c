"""The ``memberships`` table mirrors the in-memory book after every flush.

A flush deletes only the rows the table can hold (keys that were in the book before
their first change since the last flush), so this checks the book and the table
agree, with one row per person and segment, on random sequences of changes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.engine import Warehouse
from segmint.realtime.memberships import Membership, MembershipBook
from segmint.realtime.store import ensure_realtime_tables
from tests.realtime.recording import RecordingWarehouse

T0 = datetime(2026, 11, 23, 12, 0)
PERSONS = ("p1", "p2", "p3")
SEGMENTS = ("At-Risk", "Cart Builders")

_operation = st.one_of(
    st.tuples(
        st.just("enter"),
        st.sampled_from(PERSONS),
        st.sampled_from(SEGMENTS),
        st.integers(0, 30),
        st.one_of(st.none(), st.integers(1, 20)),
    ),
    st.tuples(st.just("exit"), st.sampled_from(PERSONS), st.sampled_from(SEGMENTS)),
    st.tuples(st.just("move"), st.sampled_from(PERSONS), st.sampled_from(PERSONS)),
    st.tuples(st.just("expire"), st.integers(0, 60)),
    st.just(("flush",)),
)


def _table(wh: Warehouse) -> list[tuple[object, ...]]:
    return wh.fetchall(
        "SELECT person_id, segment, source, source_name, reason, since, expires_at "
        "FROM memberships ORDER BY person_id, segment"
    )


def _book(book: MembershipBook) -> list[tuple[object, ...]]:
    return sorted(
        (m.person_id, m.segment, m.source, m.source_name, m.reason, m.since, m.expires_at)
        for m in book
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=st.lists(_operation, max_size=40))
def test_the_table_equals_the_book_after_every_flush(operations: list[tuple]) -> None:
    with Warehouse(":memory:") as wh:
        ensure_realtime_tables(wh)
        book = MembershipBook()
        for op in operations:
            kind = op[0]
            if kind == "enter":
                _, person, segment, minute, ttl = op
                since = T0 + timedelta(minutes=minute)
                expires = since + timedelta(minutes=ttl) if ttl is not None else None
                book.enter(Membership(person, segment, "trigger", "t", "why", since, expires))
            elif kind == "exit":
                _, person, segment = op
                book.exit(person, segment, source="trigger", reason="why", at=T0)
            elif kind == "move":
                _, survivor, merged = op
                if survivor != merged:
                    book.move(survivor, merged, T0)
            elif kind == "expire":
                book.expire(T0 + timedelta(minutes=op[1]))
            else:
                with wh.transaction():
                    book.flush(wh)
                assert _table(wh) == _book(book)
        with wh.transaction():
            book.flush(wh)
        assert _table(wh) == _book(book)
        assert _book(MembershipBook.load(wh)) == _book(book)


def test_entering_afresh_deletes_nothing() -> None:
    with RecordingWarehouse() as wh:
        ensure_realtime_tables(wh)
        book = MembershipBook()
        book.enter(Membership("p1", "At-Risk", "trigger", "t", "why", T0))
        wh.statements.clear()
        book.flush(wh)
        assert wh.deletes() == []
        book.exit("p1", "At-Risk", source="trigger", reason="why", at=T0)
        book.flush(wh)
        assert len(wh.deletes()) == 1
        assert _table(wh) == []
