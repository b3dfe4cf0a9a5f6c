"""Person look-up and linking for the real-time path.

The real-time processor keeps the identifiers it needs (user ids, customer ids,
anonymous ids) in memory, loaded from ``identities`` (written by
``segmint identity resolve``) and extended as events arrive:

* a known ``userId`` (or a CRM customer id: the Segment ``userId`` *is* the
  customer id) gives its person; an unknown one starts a new person whose id is
  seeded from the identifier exactly as the batch resolver seeds it;
* an ``anonymousId`` seen for the first time joins the person of the event's
  ``userId`` (else starts an anonymous person);
* ``identify`` (with both ids) and ``alias`` (``previousId`` -> ``userId``) calls
  link identifiers: an anonymous person (one with no user or customer id) is
  merged into the identified one. Two identified persons are never merged here
  (that needs the batch resolver's evidence rules); the link is recorded in
  ``identity_links`` for the next ``segmint identity resolve``.

New identifier rows and links are written in the caller's transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from segmint.data.identity.graph import ensure_identity_tables, seed_person_id
from segmint.engine import RowWriter, Warehouse
from segmint.realtime.events import Event, EventType

__all__ = ["Merge", "PersonResolver"]

_ANCHORS = ("user_id", "customer_id")
_TYPES = ("user_id", "customer_id", "anonymous_id")


@dataclass(frozen=True)
class Merge:
    """An anonymous person folded into an identified one by an identify/alias call."""

    survivor: str
    merged: str
    rule: str


class PersonResolver:
    """Identifier -> person map of the real-time path (see the module docstring)."""

    def __init__(self) -> None:
        self._person: dict[tuple[str, str], str] = {}
        self._anchored: set[str] = set()
        self._customer_of: dict[str, str] = {}
        self._identifiers: dict[str, list[tuple[str, str]]] = {}
        self._new_rows: list[tuple[str, str, str, datetime, str]] = []
        # Identifiers with a table row but no person (left unassigned by the batch resolver).
        self._unassigned: set[tuple[str, str]] = set()
        # Identifiers of the new rows that already have a table row, to be replaced.
        self._replaced: set[tuple[str, str]] = set()
        self._new_links: list[tuple[str, str, str, str, str, datetime, str]] = []

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(cls, wh: Warehouse) -> PersonResolver:
        """Read the user, customer and anonymous ids of ``identities``."""
        ensure_identity_tables(wh)
        resolver = cls()
        rows = wh.fetchall(
            "SELECT identifier_type, identifier_value, person_id FROM identities "
            "WHERE identifier_type IN (?, ?, ?)",
            list(_TYPES),
        )
        for type_, value, person in rows:
            if person is None:
                resolver._unassigned.add((type_, value))
            else:
                resolver._remember(type_, value, person)
        return resolver

    def _remember(self, type_: str, value: str, person: str) -> None:
        self._person[(type_, value)] = person
        self._identifiers.setdefault(person, []).append((type_, value))
        if type_ in _ANCHORS:
            self._anchored.add(person)
            self._customer_of.setdefault(person, value)

    # ------------------------------------------------------------------ queries

    def person_of(self, identifier: str) -> str | None:
        """The person of a user id, customer id, anonymous id or person id."""
        for type_ in _TYPES:
            person = self._person.get((type_, identifier))
            if person is not None:
                return person
        return identifier if identifier in self._identifiers else None

    def customer_of(self, person: str) -> str | None:
        """The customer (user) id of a person, when identified."""
        return self._customer_of.get(person)

    def identifiers_of(self, person: str) -> list[tuple[str, str]]:
        return list(self._identifiers.get(person, ()))

    def __len__(self) -> int:
        return len(self._identifiers)

    # ------------------------------------------------------------------ resolving

    def _anchor(self, user_id: str) -> str | None:
        return self._person.get(("user_id", user_id)) or self._person.get(("customer_id", user_id))

    def _new(self, type_: str, value: str, event: Event) -> str:
        person = seed_person_id(type_, value, 0)
        attempt = 0
        while person in self._identifiers:  # a seed collision: take the next attempt
            attempt += 1
            person = seed_person_id(type_, value, attempt)
        self._add(type_, value, person, event)
        return person

    def _add(self, type_: str, value: str, person: str, event: Event) -> None:
        key = (type_, value)
        if key in self._person or key in self._unassigned:
            self._replaced.add(key)
        self._remember(type_, value, person)
        self._new_rows.append((type_, value, person, event.timestamp, event.message_id))

    def resolve(self, event: Event) -> tuple[str, list[Merge]]:
        """The event's person, creating or linking identifiers; merges it caused."""
        merges: list[Merge] = []
        person = self._anchor(event.user_id) if event.user_id else None
        if event.user_id and person is None:
            person = self._new("user_id", event.user_id, event)
        linking = event.type in (EventType.identify, EventType.alias)
        for type_, value, rule in self._secondary(event):
            other = self._person.get((type_, value))
            if person is None:
                person = other if other is not None else self._new(type_, value, event)
                continue
            if other is None:
                self._add(type_, value, person, event)
            elif other != person and linking and other not in self._anchored:
                merges.append(self._merge(person, other, rule, event))
            if linking and event.user_id:
                self._new_links.append(
                    (
                        "user_id",
                        event.user_id,
                        type_,
                        value,
                        rule,
                        event.timestamp,
                        event.message_id,
                    )
                )
        assert person is not None  # the spec guarantees a user id or an anonymous id
        return person, merges

    def _secondary(self, event: Event) -> list[tuple[str, str, str]]:
        found = []
        if event.anonymous_id:
            found.append(("anonymous_id", event.anonymous_id, f"{event.type.value} event"))
        if event.type is EventType.alias and event.previous_id:
            # A previous id that is a known user id is one; else it is the anonymous id
            # analytics.js aliases by default.
            known_user = self._anchor(event.previous_id) is not None
            previous_type = "user_id" if known_user else "anonymous_id"
            found.append((previous_type, event.previous_id, "alias previousId"))
        return found

    def _merge(self, survivor: str, merged: str, rule: str, event: Event) -> Merge:
        for type_, value in self._identifiers.pop(merged, []):
            self._add(type_, value, survivor, event)
        return Merge(survivor, merged, rule)

    # ------------------------------------------------------------------ writing

    def flush(self, wh: RowWriter, now: datetime) -> int:
        """Write new identifier rows and links (inside the caller's transaction)."""
        rows, links = self._new_rows, self._new_links
        latest = {(t, v): (t, v, p, seen, f"realtime:{ref}") for t, v, p, seen, ref in rows}
        wh.delete_rows(
            "identities",
            ["identifier_type", "identifier_value"],
            [key for key in latest if key in self._replaced],
        )
        wh.insert_rows(
            "identities",
            [
                "identifier_type",
                "identifier_value",
                "person_id",
                "first_seen",
                "last_seen",
                "source",
                "assigned_at",
            ],
            [(t, v, p, seen, seen, source, now) for t, v, p, seen, source in latest.values()],
        )
        wh.insert_rows(
            "identity_links",
            [
                "type_a",
                "value_a",
                "type_b",
                "value_b",
                "rule",
                "strength",
                "origin",
                "ref",
                "observations",
                "first_seen",
                "last_seen",
                "created_at",
            ],
            [
                (
                    ta,
                    va,
                    tb,
                    vb,
                    rule,
                    "hard" if rule == "alias previousId" else "soft",
                    "data",
                    ref,
                    1,
                    seen,
                    seen,
                    now,
                )
                for ta, va, tb, vb, rule, seen, ref in links
            ],
        )
        written = len(rows)
        self.discard_pending()
        return written

    def discard_pending(self) -> None:
        self._unassigned -= self._replaced
        self._replaced.clear()
        self._new_rows.clear()
        self._new_links.clear()
