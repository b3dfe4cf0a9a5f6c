"""Deterministic identity resolution on hand-made records: links, guards, stable ids, merges."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Iterator, Sequence
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.data.identity import (
    ResolveLimits,
    list_review,
    merge_persons,
    person_of,
    resolve_identities,
    show_person,
    unmerge,
)
from segmint.data.identity import review as review_mod
from segmint.data.identity.graph import DEFAULT_BLOCKED_VALUES, iter_history
from segmint.data.store import ensure_tables
from segmint.engine.warehouse import Warehouse
from segmint.errors import UserInputError

CUSTOMER_COLUMNS = ("customer_id", "email", "phone", "loyalty_id", "signup_at")
EVENT_COLUMNS = (
    "message_id",
    "type",
    "user_id",
    "anonymous_id",
    "timestamp",
    "traits",
    "properties",
)


# ---------------------------------------------------------------- helpers
@pytest.fixture
def wh() -> Iterator[Warehouse]:
    warehouse = Warehouse(":memory:")
    ensure_tables(warehouse)
    yield warehouse
    warehouse.close()


def add_customers(wh: Warehouse, *rows: Sequence[Any]) -> None:
    """Rows of (customer_id, email, phone, loyalty_id, signup_at); short rows padded."""
    for row in rows:
        values = list(row) + [None] * (len(CUSTOMER_COLUMNS) - len(row))
        wh.execute(
            f"INSERT INTO customers ({', '.join(CUSTOMER_COLUMNS)}) VALUES (?, ?, ?, ?, ?)", values
        )


def add_events(wh: Warehouse, *rows: Sequence[Any]) -> None:
    """Rows of (message_id, type, user_id, anonymous_id, timestamp, traits, properties)."""
    for row in rows:
        values = list(row) + [None] * (len(EVENT_COLUMNS) - len(row))
        for i in (5, 6):
            if isinstance(values[i], dict):
                values[i] = json.dumps(values[i])
        wh.execute(
            f"INSERT INTO events ({', '.join(EVENT_COLUMNS)}) VALUES (?, ?, ?, ?, ?, ?, ?)", values
        )


def persons(wh: Warehouse) -> dict[tuple[str, str], str | None]:
    rows = wh.fetchall("SELECT identifier_type, identifier_value, person_id FROM identities")
    return {(t, v): p for t, v, p in rows}


def partition(wh: Warehouse) -> set[frozenset[tuple[str, str]]]:
    groups: dict[str, set[tuple[str, str]]] = {}
    for key, person in persons(wh).items():
        if person is not None:
            groups.setdefault(person, set()).add(key)
    return {frozenset(g) for g in groups.values()}


def same_person(wh: Warehouse, *identifiers: tuple[str, str]) -> bool:
    found = {person_of(wh, t, v) for t, v in identifiers}
    return len(found) == 1 and None not in found


def snapshot(wh: Warehouse) -> pd.DataFrame:
    return wh.df("SELECT * FROM identities ORDER BY identifier_type, identifier_value")


C = "customer_id"
T0 = dt.datetime(2024, 1, 1)


def at(days: int) -> dt.datetime:
    return T0 + dt.timedelta(days=days)


# ---------------------------------------------------------------- linking
def test_identifiers_of_a_customer_record_are_one_person(wh: Warehouse) -> None:
    add_customers(wh, ("c1", " Ada@Mail.org ", "+14155550101", "L-1"))
    result = resolve_identities(wh)
    assert result.persons == 1
    assert same_person(
        wh, (C, "c1"), ("email", "ada@mail.org"), ("phone", "+14155550101"), ("loyalty_id", "L-1")
    )
    rules = {r[0] for r in wh.fetchall("SELECT rule FROM identity_links")}
    assert rules == {"customer record"}


def test_chain_of_shared_identifiers_joins_into_one_person(wh: Warehouse) -> None:
    # customer c1 -e-mail- anonymous a1 (identify traits) -phone- anonymous a2.
    add_customers(wh, ("c1", "ada@mail.org"))
    add_events(
        wh,
        (
            "m1",
            "identify",
            None,
            "a1",
            at(1),
            {"email": "ADA@mail.org", "phone": "+1 415 555 0199"},
        ),
        ("m2", "identify", None, "a2", at(2), {"phone": "+14155550199"}),
        ("m3", "track", None, "a3", at(3)),
    )
    resolve_identities(wh)
    assert same_person(
        wh,
        (C, "c1"),
        ("email", "ada@mail.org"),
        ("anonymous_id", "a1"),
        ("phone", "+14155550199"),
        ("anonymous_id", "a2"),
    )
    # An anonymous visitor with no link is a person of their own.
    assert person_of(wh, "anonymous_id", "a3") not in (None, person_of(wh, C, "c1"))


def test_shared_identifiers_never_chain_crm_customers(wh: Warehouse) -> None:
    # A -e-mail- B -phone- C are three CRM records: kept apart, both values reported.
    add_customers(
        wh,
        ("A", "shared@mail.org", None),
        ("B", "shared@mail.org", "+14155550123"),
        ("C", None, "+14155550123"),
    )
    result = resolve_identities(wh)
    assert result.persons == 3
    assert person_of(wh, "email", "shared@mail.org") is None
    assert person_of(wh, "phone", "+14155550123") is None
    reported = {(c.identifier_type, c.reason, len(c.person_ids)) for c in result.conflicts}
    assert reported == {
        ("email", "shared by several persons", 2),
        ("phone", "shared by several persons", 2),
    }
    stored = wh.fetchall("SELECT identifier_value, person_ids FROM identity_conflicts ORDER BY 1")
    assert [v for v, _ in stored] == ["+14155550123", "shared@mail.org"]
    assert sorted(stored[1][1]) == sorted({person_of(wh, C, "A"), person_of(wh, C, "B")})


def test_two_crm_ids_sharing_an_email_are_a_reported_conflict(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "family@mail.org"), ("c2", "family@mail.org"), ("c3", "own@mail.org"))
    result = resolve_identities(wh)
    assert not same_person(wh, (C, "c1"), (C, "c2"))
    assert same_person(wh, (C, "c3"), ("email", "own@mail.org"))
    (conflict,) = result.conflicts
    assert conflict.identifier_value == "family@mail.org"
    assert conflict.reason == "shared by several persons"
    assert set(conflict.person_ids) == {person_of(wh, C, "c1"), person_of(wh, C, "c2")}
    assert result.ambiguous == 1


def test_blocked_values_never_link(wh: Warehouse) -> None:
    add_customers(
        wh,
        ("c1", "test@test.com", "+10000000000"),
        ("c2", "TEST@test.com", "+10000000000"),
        ("c3", "noreply@shop.com"),
    )
    add_events(
        wh,
        ("m1", "identify", "c1", "undefined", at(1)),
        ("m2", "identify", "c2", "undefined", at(2)),
    )
    result = resolve_identities(wh)
    assert result.persons == 3
    known = persons(wh)
    for blocked in (
        ("email", "test@test.com"),
        ("phone", "+10000000000"),
        ("email", "noreply@shop.com"),
        ("anonymous_id", "undefined"),
    ):
        assert blocked not in known
    blocked_rows = {(c.identifier_value, c.links) for c in result.conflicts}
    assert ("test@test.com", 2) in blocked_rows and ("undefined", 2) in blocked_rows
    assert {c.reason for c in result.conflicts} == {"blocked value"}
    assert not wh.scalar(
        "SELECT count(*) FROM identity_links WHERE value_a = 'test@test.com' "
        "OR value_b = 'test@test.com'"
    )


def test_blocked_values_are_configurable(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "ops@corp.example"), ("c2", "test@test.com"), ("c3", "test@test.com"))
    result = resolve_identities(wh, blocked_values={"email": ("*@corp.example",)})
    assert ("email", "ops@corp.example") not in persons(wh)
    # The default list was replaced: test@test.com is now an (ambiguous) identifier.
    assert ("email", "test@test.com") in persons(wh)
    assert {c.reason for c in result.conflicts} == {"blocked value", "shared by several persons"}
    extended = {**DEFAULT_BLOCKED_VALUES, "email": ("*@corp.example",)}
    resolve_identities(wh, blocked_values=extended)
    assert ("email", "ops@corp.example") not in persons(wh)
    with pytest.raises(UserInputError, match="customer ids cannot be blocked"):
        resolve_identities(wh, blocked_values={"customer_id": ("c1",)})
    with pytest.raises(UserInputError, match="unknown identifier type"):
        resolve_identities(wh, blocked_values={"fax": ("1",)})


def test_identify_and_alias_events_link_anonymous_ids_to_the_user(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "ada@mail.org"))
    add_events(
        wh,
        ("m1", "page", None, "a1", at(1)),
        ("m2", "identify", "c1", "a1", at(2)),
        ("m3", "track", None, "a2", at(3)),
        ("m4", "alias", "c1", None, at(4), None, {"previousId": "a2"}),
        ("m5", "identify", "u-old", "a3", at(5)),
        ("m6", "alias", "c1", None, at(6), {"previousId": "u-old"}),
    )
    resolve_identities(wh)
    assert same_person(
        wh,
        (C, "c1"),
        ("user_id", "c1"),
        ("anonymous_id", "a1"),
        ("anonymous_id", "a2"),
        ("user_id", "u-old"),
        ("anonymous_id", "a3"),
    )
    rules = dict(
        wh.fetchall(
            "SELECT value_a || '>' || value_b, rule FROM identity_links WHERE origin = 'data'"
        )
    )
    assert rules["c1>a1"] == "identify event"
    assert rules["a2>c1"] == "alias previousId"
    assert rules["u-old>c1"] == "alias previousId"
    assert rules["c1>c1"] == "user id = customer id"


def test_external_ids_and_event_types(wh: Warehouse) -> None:
    add_customers(wh, ("c1",))
    context = json.dumps({"externalIds": [{"id": "GA1.2.3", "type": "ga_client_id"}]})
    wh.execute(
        "INSERT INTO events (message_id, type, user_id, anonymous_id, timestamp, context) "
        "VALUES ('m1', 'identify', 'c1', NULL, ?, ?), ('m2', 'track', 'c1', 'a9', ?, NULL)",
        [at(1), context, at(2)],
    )
    resolve_identities(wh)
    assert same_person(wh, (C, "c1"), ("external", "ga_client_id:GA1.2.3"))
    assert not same_person(wh, (C, "c1"), ("anonymous_id", "a9"))  # track is not a default
    resolve_identities(wh, event_types=("identify", "track"))
    assert same_person(wh, (C, "c1"), ("anonymous_id", "a9"))
    resolve_identities(wh, link_traits=False, user_id_is_customer_id=False)
    assert not same_person(wh, (C, "c1"), ("user_id", "c1"))
    assert ("external", "ga_client_id:GA1.2.3") not in persons(wh)
    with pytest.raises(UserInputError, match="unknown event type"):
        resolve_identities(wh, event_types=("purchase",))


def test_a_shared_device_does_not_merge_two_users(wh: Warehouse) -> None:
    add_customers(wh, ("c1",), ("c2",))
    add_events(
        wh,
        ("m1", "identify", "c1", "family-laptop", at(1)),
        ("m2", "identify", "c2", "family-laptop", at(2)),
    )
    result = resolve_identities(wh)
    assert not same_person(wh, (C, "c1"), (C, "c2"))
    assert person_of(wh, "anonymous_id", "family-laptop") is None
    assert [c.identifier_value for c in result.conflicts] == ["family-laptop"]


def test_identifiers_only_linked_to_ambiguous_ones_are_reported(wh: Warehouse) -> None:
    # a1 gave an e-mail owned by c1 and a phone owned by c2: it links two persons.
    add_customers(wh, ("c1", "ada@mail.org"), ("c2", None, "+14155550123"))
    add_events(
        wh,
        ("m1", "identify", None, "a1", at(1), {"email": "ada@mail.org", "phone": "+14155550123"}),
    )
    result = resolve_identities(wh)
    assert person_of(wh, "anonymous_id", "a1") is None
    assert same_person(wh, (C, "c1"), ("email", "ada@mail.org"))
    assert same_person(wh, (C, "c2"), ("phone", "+14155550123"))
    (conflict,) = result.conflicts
    assert (conflict.identifier_value, conflict.reason) == ("a1", "links several persons")


def test_too_common_values_are_not_used(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "kiosk@shop.org"))
    add_events(
        wh,
        *[
            (f"m{i}", "identify", None, f"a{i}", at(i), {"email": "kiosk@shop.org"})
            for i in range(4)
        ],
    )
    resolve_identities(wh)
    assert same_person(wh, (C, "c1"), ("anonymous_id", "a0"), ("anonymous_id", "a3"))
    result = resolve_identities(wh, limits=ResolveLimits({"email": 3}))
    assert person_of(wh, "email", "kiosk@shop.org") is None
    assert not same_person(wh, (C, "c1"), ("anonymous_id", "a0"))
    too_common = [c for c in result.conflicts if c.reason == "too common"]
    assert [(c.identifier_value, c.links) for c in too_common] == [("kiosk@shop.org", 5)]
    with pytest.raises(UserInputError):
        ResolveLimits({"email": 0})


def test_customer_person_view_follows_the_identities(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "ada@mail.org"), ("c2",))
    add_events(wh, ("m1", "identify", "c1", "a1", at(1)))
    resolve_identities(wh)
    rows = dict(wh.fetchall("SELECT customer_id, person_id FROM customer_person"))
    assert rows == {"c1": person_of(wh, C, "c1"), "c2": person_of(wh, C, "c2")}
    assert person_of(wh, "email", "  ADA@mail.org") == rows["c1"]
    assert person_of(wh, "anonymous_id", "nope") is None
    with pytest.raises(UserInputError, match="unknown identifier type"):
        person_of(wh, "fax", "1")


# ---------------------------------------------------------------- stable ids
def test_person_ids_are_stable_across_runs_and_new_data(wh: Warehouse) -> None:
    add_customers(
        wh, ("c1", "ada@mail.org", None, None, at(0)), ("c2", "bob@mail.org", None, None, at(1))
    )
    first = resolve_identities(wh)
    before = persons(wh)
    again = resolve_identities(wh)
    assert persons(wh) == before
    assert (again.merges, again.splits, again.new_persons) == ((), (), 0)

    add_customers(wh, ("c3", "cy@mail.org", None, None, at(2)))
    add_events(wh, ("m1", "identify", "c1", "a-new", at(3)))
    later = resolve_identities(wh)
    after = persons(wh)
    for key, person in before.items():
        assert after[key] == person
    assert after[("anonymous_id", "a-new")] == before[(C, "c1")]
    assert later.new_persons == 1 and later.merges == () and later.splits == ()
    assert first.new_persons == 2

    # A rebuild from scratch gives the same ids (they derive from the founding identifier).
    wh.execute("DELETE FROM identities")
    resolve_identities(wh)
    assert persons(wh) == after


@pytest.mark.parametrize("older", ["c1", "c2"])
def test_merging_persons_keeps_the_older_id(wh: Warehouse, older: str) -> None:
    younger = "c2" if older == "c1" else "c1"
    add_customers(wh, (older, None, None, None, at(0)), (younger, None, None, None, at(100)))
    add_events(wh, ("m1", "identify", younger, "a1", at(101)))
    resolve_identities(wh)
    old_id, young_id = person_of(wh, C, older), person_of(wh, C, younger)

    add_events(wh, ("m2", "alias", older, None, at(102), None, {"previousId": younger}))
    result = resolve_identities(wh)
    assert same_person(wh, (C, older), (C, younger), ("anonymous_id", "a1"))
    assert person_of(wh, C, older) == old_id
    (merge,) = result.merges
    assert (merge.person_id, merge.other_person_ids) == (old_id, (young_id,))
    assert merge.origin == "resolve" and "alias previousId" in merge.rule
    moved = {(i.type, i.value, i.from_person, i.to_person) for i in merge.identifiers}
    assert moved == {
        (C, younger, young_id, old_id),
        ("user_id", younger, young_id, old_id),
        ("anonymous_id", "a1", young_id, old_id),
    }
    assert [m.merge_id for m in iter_history(wh)] == [merge.merge_id]


def test_an_anonymous_visitor_who_identifies_is_merged_and_recorded(wh: Warehouse) -> None:
    add_customers(wh, ("c1", None, None, None, at(10)))
    add_events(wh, ("m1", "page", None, "a1", at(1)))
    resolve_identities(wh)
    visitor, customer = person_of(wh, "anonymous_id", "a1"), person_of(wh, C, "c1")
    add_events(wh, ("m2", "identify", "c1", "a1", at(20)))
    result = resolve_identities(wh)
    # The visitor was seen first: the older person keeps its id.
    assert person_of(wh, C, "c1") == visitor
    (merge,) = result.merges
    assert merge.other_person_ids == (customer,)
    assert set(merge.rule.split(", ")) == {"identify event", "user id = customer id"}


def test_a_split_is_recorded_when_evidence_disappears(wh: Warehouse) -> None:
    add_customers(wh, ("c1",))
    add_events(wh, ("m1", "identify", "c1", "a1", at(1)))
    resolve_identities(wh)
    person = person_of(wh, C, "c1")
    wh.execute("DELETE FROM events")
    add_events(wh, ("m2", "track", None, "a1", at(2)))
    result = resolve_identities(wh)
    assert person_of(wh, C, "c1") == person
    assert person_of(wh, "anonymous_id", "a1") not in (None, person)
    (split,) = result.splits
    assert split.action == "split" and split.person_id == person
    assert split.other_person_ids == (person_of(wh, "anonymous_id", "a1"),)


# ---------------------------------------------------------------- manual merge / unmerge
def test_merge_then_unmerge_restores_the_identities_exactly(wh: Warehouse) -> None:
    add_customers(
        wh,
        ("c1", "ada@mail.org", None, None, at(0)),
        ("c2", "ada.l@mail.org", "+14155550101", None, at(5)),
    )
    add_events(wh, ("m1", "identify", "c2", "a2", at(6)))
    resolve_identities(wh)
    before = snapshot(wh)
    p1, p2 = person_of(wh, C, "c1"), person_of(wh, C, "c2")

    record = merge_persons(wh, "email:ADA.L@mail.org", p1, reason="same person (support ticket)")
    assert (record.person_id, record.other_person_ids) == (p1, (p2,))
    assert {(i.type, i.value) for i in record.identifiers} == {
        (C, "c2"),
        ("user_id", "c2"),
        ("email", "ada.l@mail.org"),
        ("phone", "+14155550101"),
        ("anonymous_id", "a2"),
    }
    assert same_person(wh, (C, "c1"), (C, "c2"), ("anonymous_id", "a2"))
    assert record.to_event()["person_id"] == p1 == record.partition_key

    # A later run keeps the merge (it is a hard, manual link).
    again = resolve_identities(wh)
    assert same_person(wh, (C, "c1"), (C, "c2"))
    assert again.merges == () and again.splits == ()

    result = unmerge(wh, record.merge_id)
    assert (result.restored, result.skipped, result.already_undone) == (5, 0, False)
    pd.testing.assert_frame_equal(snapshot(wh), before)

    # Undoing twice changes nothing.
    undone_at = wh.scalar(
        "SELECT undone_at FROM identity_merges WHERE merge_id = ?", [record.merge_id]
    )
    assert unmerge(wh, record.merge_id).already_undone
    pd.testing.assert_frame_equal(snapshot(wh), before)
    assert (
        wh.scalar("SELECT undone_at FROM identity_merges WHERE merge_id = ?", [record.merge_id])
        == undone_at
    )
    assert (
        wh.scalar(
            "SELECT count(*) FROM identity_links WHERE origin = 'manual' AND undone_at IS NULL"
        )
        == 0
    )

    # And a later run keeps them apart.
    resolve_identities(wh)
    assert not same_person(wh, (C, "c1"), (C, "c2"))
    assert persons(wh) == {k: p for k, p in persons(wh).items()}
    pd.testing.assert_frame_equal(
        snapshot(wh).drop(columns="assigned_at"), before.drop(columns="assigned_at")
    )


def test_an_undone_automatic_merge_stays_undone(wh: Warehouse) -> None:
    add_customers(wh, ("c1", None, None, None, at(0)))
    add_events(wh, ("m1", "page", None, "a1", at(1)))
    resolve_identities(wh)
    visitor = person_of(wh, "anonymous_id", "a1")
    add_events(wh, ("m2", "identify", "c1", "a1", at(2)))
    (merge,) = resolve_identities(wh).merges
    assert unmerge(wh, merge.merge_id).restored == 1
    assert person_of(wh, "anonymous_id", "a1") == visitor
    result = resolve_identities(wh)
    assert person_of(wh, "anonymous_id", "a1") == visitor != person_of(wh, C, "c1")
    assert result.merges == ()
    assert [(c.identifier_value, c.reason) for c in result.conflicts] == [
        ("a1", "linked to another person")
    ]
    # A manual merge joins them again.
    merge_persons(wh, visitor, "customer_id:c1", reason="confirmed")
    resolve_identities(wh)
    assert same_person(wh, ("anonymous_id", "a1"), (C, "c1"))


def test_unmerge_restores_through_later_merges(wh: Warehouse) -> None:
    add_customers(
        wh,
        ("c1", None, None, None, at(0)),
        ("c2", None, None, None, at(1)),
        ("c3", None, None, None, at(2)),
    )
    resolve_identities(wh)
    p1, p2, p3 = (person_of(wh, C, c) for c in ("c1", "c2", "c3"))
    first = merge_persons(wh, p2, p3, reason="one")  # p3 -> p2
    merge_persons(wh, p1, p2, reason="two")  # p2 (with c3) -> p1
    assert same_person(wh, (C, "c1"), (C, "c2"), (C, "c3"))
    assert unmerge(wh, first.merge_id).restored == 1
    assert person_of(wh, C, "c3") == p3
    assert same_person(wh, (C, "c1"), (C, "c2"))


def test_merge_refuses_bad_requests(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "ada@mail.org"), ("c2",))
    resolve_identities(wh)
    p1 = person_of(wh, C, "c1")
    with pytest.raises(UserInputError, match="already one person"):
        merge_persons(wh, p1, "email:ada@mail.org", reason="x")
    with pytest.raises(UserInputError, match="reason"):
        merge_persons(wh, p1, "customer_id:c2", reason=" ")
    with pytest.raises(UserInputError, match="no person or identifier"):
        merge_persons(wh, p1, "p_doesnotexist", reason="x")
    record = merge_persons(wh, p1, "customer_id:c2", reason="x")
    retired = record.other_person_ids[0]
    with pytest.raises(UserInputError, match="was merged into"):
        merge_persons(wh, retired, p1, reason="x")
    with pytest.raises(UserInputError, match="no merge"):
        unmerge(wh, "m_nope")
    add_events(wh, ("m1", "identify", "c1", "a1", at(1)))
    resolve_identities(wh)
    wh.execute("DELETE FROM events")
    add_events(wh, ("m2", "track", None, "a1", at(2)))
    (split,) = resolve_identities(wh).splits
    with pytest.raises(UserInputError, match="only merges can be undone"):
        unmerge(wh, split.merge_id)


# ---------------------------------------------------------------- show
def test_show_finds_a_person_by_any_identifier(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "ada@mail.org", "+14155550101"), ("c2", "bob@mail.org"))
    add_events(wh, ("m1", "identify", "c1", "a1", at(1)))
    resolve_identities(wh)
    person = person_of(wh, C, "c1")
    for query in (
        person,
        "customer_id:c1",
        "email:Ada@Mail.org",
        "ada@mail.org",
        "a1",
        "phone:+1 (415) 555-0101",
    ):
        view = show_person(wh, query)
        assert view.person_id == person, query
    assert {(i.type, i.value) for i in view.identifiers} == {
        (C, "c1"),
        ("user_id", "c1"),
        ("email", "ada@mail.org"),
        ("phone", "+14155550101"),
        ("anonymous_id", "a1"),
    }
    assert view.identifiers[0].type == C  # customer ids first
    assert {link.rule for link in view.links} == {
        "customer record",
        "identify event",
        "user id = customer id",
    }
    assert json.loads(json.dumps(view.to_dict()))["person_id"] == person


def test_show_explains_merges_ambiguity_and_redirects(wh: Warehouse) -> None:
    add_customers(wh, ("c1", "home@mail.org"), ("c2", "home@mail.org"), ("c3",))
    resolve_identities(wh)
    with pytest.raises(UserInputError, match="ambiguous"):
        show_person(wh, "email:home@mail.org")
    with pytest.raises(UserInputError, match="no person or identifier"):
        show_person(wh, "nobody")
    with pytest.raises(UserInputError, match="give a person id"):
        show_person(wh, "  ")
    view = show_person(wh, "c1")
    assert [c.reason for c in view.conflicts] == ["shared by several persons"]

    record = merge_persons(wh, "customer_id:c1", "customer_id:c3", reason="same")
    retired = record.other_person_ids[0]
    view = show_person(wh, retired)
    assert view.redirected_from == retired and view.person_id == record.person_id
    assert [(m.merge_id, m.reason) for m in view.history] == [(record.merge_id, "same")]
    assert any(link.rule == "manual merge" for link in view.links)


# ---------------------------------------------------------------- probabilistic step
def _pairs(*rows: tuple[str, str, float, float]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["id_l", "id_r", "match_probability", "match_weight"])
    frame["evidence"] = '{"prior": -10.0, "surname": ["exact", 8.0], "email": ["else", -1.5]}'
    return frame


@pytest.fixture
def scored(monkeypatch: pytest.MonkeyPatch) -> dict[str, pd.DataFrame]:
    """Replace the Splink scoring by fixed pairs (set ``matches`` / ``review``)."""
    pairs = {"matches": _pairs(), "review": _pairs()}
    monkeypatch.setattr(
        review_mod, "score_customers", lambda wh, config=None: (pairs["matches"], pairs["review"])
    )
    return pairs


def test_probabilistic_matches_link_and_review_pairs_wait(
    wh: Warehouse, scored: dict[str, pd.DataFrame]
) -> None:
    add_customers(
        wh, *[(c, None, None, None, at(i)) for i, c in enumerate(["c1", "c2", "c3", "c4"])]
    )
    scored["matches"] = _pairs(("c2", "c1", 0.99, 12.5))
    scored["review"] = _pairs(("c3", "c4", 0.7, 1.2), ("c1", "c2", 0.6, 0.5))
    result = resolve_identities(wh, probabilistic=True)
    assert same_person(wh, (C, "c1"), (C, "c2"))
    assert result.probabilistic_matches == 1 and result.review_pending == 1
    link = wh.fetchall(
        "SELECT rule, strength, origin, weight FROM identity_links WHERE origin = 'splink'"
    )
    assert link == [("splink match 0.990", "hard", "splink", 12.5)]
    (item,) = list_review(wh)
    assert (item.customer_id_l, item.customer_id_r, item.status) == ("c3", "c4", "pending")
    assert item.top_evidence(1) == [("surname", "exact", 8.0)]

    # A run without the probabilistic step keeps the probabilistic links.
    resolve_identities(wh)
    assert same_person(wh, (C, "c1"), (C, "c2"))

    decided, merge = review_mod.accept_review(wh, item.review_id, reason="same address")
    assert decided.status == "accepted" and merge is not None and merge.origin == "review"
    assert same_person(wh, (C, "c3"), (C, "c4"))
    resolve_identities(wh)
    assert same_person(wh, (C, "c3"), (C, "c4"))
    with pytest.raises(UserInputError, match="already accepted"):
        review_mod.accept_review(wh, item.review_id)

    unmerge(wh, merge.merge_id)
    assert not same_person(wh, (C, "c3"), (C, "c4"))
    assert list_review(wh, status="rejected")[0].reason == "merge undone"


def test_rejected_pairs_are_never_linked_by_score(
    wh: Warehouse, scored: dict[str, pd.DataFrame]
) -> None:
    add_customers(wh, ("c1",), ("c2",))
    scored["review"] = _pairs(("c1", "c2", 0.7, 1.2))
    resolve_identities(wh, probabilistic=True)
    (item,) = list_review(wh)
    rejected = review_mod.reject_review(wh, item.review_id, reason="twins")
    assert (rejected.status, rejected.reason) == ("rejected", "twins")
    scored["matches"], scored["review"] = _pairs(("c1", "c2", 0.95, 5.0)), _pairs()
    result = resolve_identities(wh, probabilistic=True)
    assert not same_person(wh, (C, "c1"), (C, "c2"))
    assert result.review_pending == 0 and list_review(wh) == []
    with pytest.raises(UserInputError, match="no review pair"):
        review_mod.reject_review(wh, "r_nope")


_GIVEN = (
    "james john robert michael william david richard joseph thomas charles mary patricia "
    "jennifer linda elizabeth barbara susan jessica sarah karen"
).split()
_SURNAMES = (
    "smith johnson williams brown jones garcia miller davis rodriguez martinez hernandez lopez "
    "gonzalez wilson anderson thomas taylor moore jackson martin lee perez thompson white harris"
).split()
_CITIES = ["abbotsford", "balmain", "carlton", "dubbo", "elwood", "fremantle", "glenelg", "hobart"]


@pytest.mark.slow
def test_splink_links_duplicate_records_that_share_no_identifier(wh: Warehouse) -> None:
    """Real matcher: re-keyed CRM duplicates (no e-mail, a typo) join their original."""
    rng = random.Random(7)
    names = rng.sample([(g, s) for g in _GIVEN for s in _SURNAMES], 150)  # distinct people
    for p, (first_name, surname) in enumerate(names):
        born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000))
        city = rng.choice(_CITIES)
        street = f"{rng.randrange(1, 200)} {rng.choice(['oak', 'elm', 'pine', 'bay'])} street"
        records = [(f"c{p}", f"{first_name}.{surname}{p}@mail.org", first_name)]
        if p < 40:
            typo = first_name[:2] + first_name[3:] if p % 2 else first_name
            records.append((f"d{p}", None, typo))
        for cid, email, first in records:
            wh.execute(
                "INSERT INTO customers (customer_id, email, first_name, last_name, birth_date, "
                "street, city, postcode) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [cid, email, first, surname, born, street, city, str(3000 + _CITIES.index(city))],
            )
    result = resolve_identities(wh, probabilistic=True)
    assert result.probabilistic_matches >= 36
    merged = sum(same_person(wh, (C, f"c{p}"), (C, f"d{p}")) for p in range(40))
    assert merged >= 36
    originals = {person_of(wh, C, f"c{p}") for p in range(150)}
    assert len(originals) == 150  # no two different people merged
    assert wh.scalar("SELECT count(*) FROM identity_links WHERE origin = 'splink'") == (
        result.probabilistic_matches
    )


# ---------------------------------------------------------------- invariants
_CUSTOMER_IDS = [f"c{i}" for i in range(6)]
_EMAILS = ["a@mail.org", "b@mail.org", "test@test.com", None]
_PHONES = ["+14155550101", "+14155550102", None]
_ANONYMOUS = ["a1", "a2", "a3", "undefined"]
_USERS = [*_CUSTOMER_IDS[:3], "u1", None]

customers_strategy = st.lists(
    st.tuples(
        st.sampled_from(_EMAILS), st.sampled_from(_PHONES), st.sampled_from(["L1", "L2", None])
    ),
    min_size=1,
    max_size=len(_CUSTOMER_IDS),
)
events_strategy = st.lists(
    st.tuples(
        st.sampled_from(["identify", "track", "alias"]),
        st.sampled_from(_USERS),
        st.sampled_from(_ANONYMOUS),
        st.sampled_from(_EMAILS),
        st.sampled_from([*_ANONYMOUS, "u1", "c4"]),
    ),
    max_size=8,
)


def _load(customers: list[tuple[Any, ...]], events: list[tuple[Any, ...]]) -> Warehouse:
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    for cid, email, phone, loyalty in customers:
        add_customers(wh, (cid, email, phone, loyalty, at(int(cid[1:]))))
    for mid, type_, user, anonymous, email, previous, day in events:
        traits = {"email": email} if email else None
        properties = {"previousId": previous} if type_ == "alias" else None
        add_events(wh, (mid, type_, user, anonymous, at(day), traits, properties))
    return wh


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    customers=customers_strategy, events=events_strategy, order=st.randoms(use_true_random=False)
)
def test_the_partition_does_not_depend_on_the_order_of_records(
    customers: list[tuple[Any, ...]], events: list[tuple[Any, ...]], order: Any
) -> None:
    rows = [(cid, *row) for cid, row in zip(_CUSTOMER_IDS, customers, strict=False)]
    messages = [(f"m{i}", *event, 10 + i) for i, event in enumerate(events)]
    shuffled_rows, shuffled_messages = rows[:], messages[:]
    order.shuffle(shuffled_rows)
    order.shuffle(shuffled_messages)
    one, two = _load(rows, messages), _load(shuffled_rows, shuffled_messages)
    try:
        resolve_identities(one)
        resolve_identities(two)
        assert persons(one) == persons(two)
        assert snapshot(one)[["identifier_type", "identifier_value", "person_id"]].equals(
            snapshot(two)[["identifier_type", "identifier_value", "person_id"]]
        )
        # Every customer is exactly one person; blocked values never become identifiers.
        found = persons(one)
        for cid, *_ in rows:
            assert found[(C, cid)] is not None
        assert ("email", "test@test.com") not in found
        assert ("anonymous_id", "undefined") not in found
        # Re-running changes nothing.
        before = persons(one)
        assert resolve_identities(one).merges == ()
        assert persons(one) == before
    finally:
        one.close()
        two.close()
