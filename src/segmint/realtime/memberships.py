"""Real-time segment memberships with a time-to-live, and their outbox.

:class:`MembershipBook` is the in-memory view of ``memberships`` that the
processor changes and the read API serves. Every change (entered / exited) is
queued as an outbox row; :meth:`MembershipBook.flush` writes the memberships and
the outbox rows in the caller's transaction, so a change and its announcement
commit together or not at all.

A membership with ``expires_at <= now`` is never served (:meth:`current` checks
at read time) and is removed by :meth:`expire`, which the service runs in the
background, announcing an ``exited`` change with source ``expiry``.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime

import pyarrow as pa

from segmint.engine import RowWriter, Warehouse

__all__ = ["Change", "Membership", "MembershipBook"]

_TS = pa.timestamp("us")
_MEMBERSHIP_SCHEMA = pa.schema(
    [
        ("person_id", pa.string()),
        ("segment", pa.string()),
        ("source", pa.string()),
        ("source_name", pa.string()),
        ("reason", pa.string()),
        ("since", _TS),
        ("expires_at", _TS),
    ]
)
_OUTBOX_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("person_id", pa.string()),
        ("segment", pa.string()),
        ("change", pa.string()),
        ("source", pa.string()),
        ("reason", pa.string()),
        ("at", _TS),
        ("expires_at", _TS),
    ]
)


@dataclass(frozen=True)
class Membership:
    """One person in one segment."""

    person_id: str
    segment: str
    source: str  # trigger | model | rule
    source_name: str
    reason: str
    since: datetime
    expires_at: datetime | None = None

    def live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


@dataclass(frozen=True)
class Change:
    """An outbox row: a person entered or exited a segment."""

    id: int
    person_id: str
    segment: str
    change: str  # entered | exited
    source: str
    reason: str
    at: datetime
    expires_at: datetime | None


class MembershipBook:
    """Current memberships in memory, with pending writes (see the module docstring).

    Examples
    --------
    >>> from datetime import datetime, timedelta
    >>> book = MembershipBook()
    >>> t = datetime(2026, 1, 1)
    >>> m = Membership("p1", "At-Risk", "trigger", "cart", "abandoned cart", t,
    ...                t + timedelta(hours=1))
    >>> book.enter(m)
    True
    >>> [x.segment for x in book.current("p1", t)], book.current("p1", t + timedelta(hours=2))
    (['At-Risk'], [])
    >>> [c.change for c in book.expire(t + timedelta(hours=2))]
    ['exited']
    """

    def __init__(self, next_id: int = 1) -> None:
        self._by_person: dict[str, dict[str, Membership]] = {}
        self._expiry: list[tuple[datetime, str, str]] = []
        self._lock = threading.Lock()
        self._next_id = next_id
        self._upserts: dict[tuple[str, str], Membership] = {}
        self._deletes: set[tuple[str, str]] = set()
        # Keys changed since the last flush that have a table row: only these need a
        # DELETE before the new rows go in (a person entering afresh needs none).
        self._stored: set[tuple[str, str]] = set()
        self._outbox: list[Change] = []

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, wh: Warehouse) -> MembershipBook:
        next_id = wh.scalar("SELECT coalesce(max(id), 0) + 1 FROM membership_outbox")
        book = cls(int(next_id))
        rows = wh.fetchall(
            "SELECT person_id, segment, source, source_name, reason, since, expires_at "
            "FROM memberships"
        )
        for row in rows:
            book._put(Membership(*row))
        return book

    def _put(self, membership: Membership) -> None:
        self._by_person.setdefault(membership.person_id, {})[membership.segment] = membership
        if membership.expires_at is not None:
            heapq.heappush(
                self._expiry, (membership.expires_at, membership.person_id, membership.segment)
            )

    # ------------------------------------------------------------------ changes

    def _touch(self, key: tuple[str, str], held: bool) -> None:
        """Note whether a key has a table row, on its first change since the last flush."""
        if held and key not in self._upserts and key not in self._deletes:
            self._stored.add(key)

    def _announce(self, m: Membership, change: str, source: str, reason: str, at: datetime) -> None:
        self._outbox.append(
            Change(
                self._next_id,
                m.person_id,
                m.segment,
                change,
                source,
                reason,
                at,
                m.expires_at if change == "entered" else None,
            )
        )
        self._next_id += 1

    def enter(self, membership: Membership) -> bool:
        """Put a person in a segment; returns whether it is a change (not a TTL refresh).

        Entering again after the previous membership expired (before the background
        expiry removed it) announces that exit first, so destinations see both.
        """
        key = (membership.person_id, membership.segment)
        with self._lock:
            current = self._by_person.get(membership.person_id, {}).get(membership.segment)
            self._touch(key, current is not None)
            if current is not None and not current.live(membership.since):
                assert current.expires_at is not None
                self._announce(
                    current, "exited", "expiry", _expired(current.expires_at), current.expires_at
                )
                current = None
            is_change = current is None
            if current is not None:
                membership = replace(membership, since=current.since)
            self._put(membership)
            self._upserts[key] = membership
            self._deletes.discard(key)
            if is_change:
                self._announce(
                    membership, "entered", membership.source, membership.reason, membership.since
                )
        return is_change

    def exit(self, person_id: str, segment: str, *, source: str, reason: str, at: datetime) -> bool:
        """Take a person out of a segment; returns whether they were in it."""
        with self._lock:
            current = self._by_person.get(person_id, {}).pop(segment, None)
            if current is None:
                return False
            key = (person_id, segment)
            self._touch(key, True)
            self._upserts.pop(key, None)
            self._deletes.add(key)
            self._announce(current, "exited", source, reason, at)
        return True

    def move(self, survivor: str, merged: str, at: datetime) -> None:
        """An identity merge: the merged person leaves its segments (announced) and the
        survivor enters those it was not in."""
        with self._lock:
            moved = self._by_person.pop(merged, {})
            for segment, m in moved.items():
                self._touch((merged, segment), True)
                self._upserts.pop((merged, segment), None)
                self._deletes.add((merged, segment))
                self._announce(m, "exited", "merge", f"merged into {survivor}", at)
        for segment, m in moved.items():
            if m.live(at) and not self.holds(survivor, segment, at):
                self.enter(replace(m, person_id=survivor, since=at))

    def expire(self, now: datetime) -> list[Change]:
        """End the memberships whose TTL has passed; returns the exits announced."""
        before = len(self._outbox)
        while self._expiry and self._expiry[0][0] <= now:
            expires_at, person, segment = heapq.heappop(self._expiry)
            current = self._by_person.get(person, {}).get(segment)
            if current is not None and current.expires_at == expires_at:
                self.exit(
                    person, segment, source="expiry", reason=_expired(expires_at), at=expires_at
                )
        return self._outbox[before:]

    def next_expiry(self) -> datetime | None:
        return self._expiry[0][0] if self._expiry else None

    # ------------------------------------------------------------------ reading

    def current(self, person_id: str, now: datetime) -> list[Membership]:
        """The person's live memberships (expired ones are never served)."""
        with self._lock:
            held = list(self._by_person.get(person_id, {}).values())
        return sorted((m for m in held if m.live(now)), key=lambda m: m.segment)

    def has_person(self, person_id: str) -> bool:
        return bool(self._by_person.get(person_id))

    def holds(self, person_id: str, segment: str, now: datetime) -> bool:
        m = self._by_person.get(person_id, {}).get(segment)
        return m is not None and m.live(now)

    def sizes(self, now: datetime) -> dict[str, int]:
        with self._lock:
            everyone = [m for held in self._by_person.values() for m in held.values()]
        sizes: dict[str, int] = {}
        for m in everyone:
            if m.live(now):
                sizes[m.segment] = sizes.get(m.segment, 0) + 1
        return sizes

    def members(
        self, segment: str, now: datetime, *, after: str | None, limit: int
    ) -> list[Membership]:
        """One page of a segment's live members, ordered by person id after ``after``."""
        with self._lock:
            found = [
                held[segment]
                for person, held in self._by_person.items()
                if segment in held and (after is None or person > after)
            ]
        live = sorted((m for m in found if m.live(now)), key=lambda m: m.person_id)
        return live[:limit]

    def __iter__(self) -> Iterator[Membership]:
        with self._lock:
            everyone = [m for held in self._by_person.values() for m in held.values()]
        return iter(everyone)

    # ------------------------------------------------------------------ writing

    def pending_count(self) -> int:
        """Changes announced since the last flush."""
        return len(self._outbox)

    def pending_changes(self, start: int = 0) -> list[Change]:
        """Changes announced since the last flush, from the ``start``-th on."""
        with self._lock:
            return self._outbox[start:]

    def flush(self, wh: RowWriter) -> list[Change]:
        """Write pending memberships and outbox rows (inside the caller's transaction)."""
        with self._lock:
            upserts = list(self._upserts.values())
            stored = [key for key in (*self._deletes, *self._upserts) if key in self._stored]
            outbox = list(self._outbox)
        wh.delete_rows("memberships", ["person_id", "segment"], stored)
        wh.insert_rows(
            "memberships",
            ["person_id", "segment", "source", "source_name", "reason", "since", "expires_at"],
            [
                (m.person_id, m.segment, m.source, m.source_name, m.reason, m.since, m.expires_at)
                for m in upserts
            ],
            schema=_MEMBERSHIP_SCHEMA,
        )
        wh.insert_rows(
            "membership_outbox",
            ["id", "person_id", "segment", "change", "source", "reason", "at", "expires_at"],
            [
                (c.id, c.person_id, c.segment, c.change, c.source, c.reason, c.at, c.expires_at)
                for c in outbox
            ],
            schema=_OUTBOX_SCHEMA,
        )
        self.mark_flushed()
        return outbox

    def mark_flushed(self) -> None:
        with self._lock:
            self._upserts.clear()
            self._deletes.clear()
            self._stored.clear()
            self._outbox.clear()


def _expired(at: datetime) -> str:
    return f"expired at {at.isoformat(timespec='seconds')}"
