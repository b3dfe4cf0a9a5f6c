"""Identifier rows written by the real-time resolver: one row per identifier.

New identifiers are inserted without a DELETE; identifiers that already have a row
(moved by a merge, or left unassigned by the batch resolver) replace it.
"""

from __future__ import annotations

from datetime import datetime

from segmint.data.identity.graph import ensure_identity_tables
from segmint.engine import Warehouse
from segmint.realtime.events import Event, EventType
from segmint.realtime.identity import PersonResolver
from tests.realtime.recording import RecordingWarehouse

T0 = datetime(2026, 11, 23, 12, 0)


def _rows(wh: Warehouse) -> list[tuple[str, str, str | None]]:
    return wh.fetchall(
        "SELECT identifier_type, identifier_value, person_id FROM identities ORDER BY ALL"
    )


def _event(n: int, type_: EventType, **ids: str) -> Event:
    return Event(f"m{n}", type_, T0, T0, **ids)


def test_new_identifiers_are_inserted_without_a_delete() -> None:
    with RecordingWarehouse() as wh:
        ensure_identity_tables(wh)
        resolver = PersonResolver.load(wh)
        person, _ = resolver.resolve(_event(1, EventType.track, user_id="u1", anonymous_id="a1"))
        wh.statements.clear()
        resolver.flush(wh, T0)
        assert wh.deletes() == []
        assert _rows(wh) == [("anonymous_id", "a1", person), ("user_id", "u1", person)]


def test_a_merge_replaces_the_rows_of_the_merged_identifiers() -> None:
    with Warehouse(":memory:") as wh:
        ensure_identity_tables(wh)
        resolver = PersonResolver.load(wh)
        anonymous, _ = resolver.resolve(_event(1, EventType.page, anonymous_id="a1"))
        resolver.flush(wh, T0)
        known, merges = resolver.resolve(
            _event(2, EventType.identify, user_id="u1", anonymous_id="a1")
        )
        assert [m.merged for m in merges] == [anonymous]
        resolver.flush(wh, T0)
        assert _rows(wh) == [("anonymous_id", "a1", known), ("user_id", "u1", known)]
        reloaded = PersonResolver.load(wh)
        assert reloaded.person_of("a1") == known


def test_an_unassigned_identifier_row_is_replaced_not_duplicated() -> None:
    with Warehouse(":memory:") as wh:
        ensure_identity_tables(wh)
        wh.execute(
            "INSERT INTO identities (identifier_type, identifier_value, person_id) "
            "VALUES ('anonymous_id', 'a1', NULL)"
        )
        resolver = PersonResolver.load(wh)
        person, _ = resolver.resolve(_event(1, EventType.track, user_id="u1", anonymous_id="a1"))
        resolver.flush(wh, T0)
        assert _rows(wh) == [("anonymous_id", "a1", person), ("user_id", "u1", person)]
