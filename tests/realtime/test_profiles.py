"""Real-time profiles: hand-checked fields, cart, traits, windows, persistence, merge.

The central property: streaming events one by one through :class:`Profiles`, in any
arrival order, gives for every person exactly what :func:`profiles_sql` computes in
DuckDB from the same events, NULLs included (floats within a tolerance). It is
checked on random event sequences (hypothesis) and on a small synthetic data set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.data.store import ensure_tables
from segmint.engine.warehouse import Warehouse
from segmint.errors import DataValidationError, UserInputError
from segmint.realtime import profiles as profiles_module
from segmint.realtime.events import Event, EventType, event_key
from segmint.realtime.profiles import (
    MAX_QUANTITY,
    PROFILE_FIELD_TYPES,
    Profile,
    Profiles,
    compact_profiles,
    delete_profiles,
    ensure_profiles_table,
    journal_profiles,
    journal_seq,
    load_profiles,
    profiles_sql,
    save_profiles,
)
from segmint.segments.rules import FieldType, parse_rule

T0 = datetime(2026, 3, 1, 12, 0)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def track(
    mid: str,
    name: str,
    minutes: float,
    props: dict[str, Any] | None = None,
    *,
    user: str | None = "u1",
    anon: str | None = None,
) -> Event:
    ts = at(minutes)
    return Event(
        mid,
        EventType.track,
        ts,
        ts,
        event=name,
        user_id=user,
        anonymous_id=anon,
        properties=props or {},
    )


def call(
    mid: str,
    kind: EventType,
    minutes: float,
    *,
    user: str | None = "u1",
    anon: str | None = None,
    traits: dict[str, Any] | None = None,
    name: str | None = None,
) -> Event:
    ts = at(minutes)
    return Event(
        mid, kind, ts, ts, event=name, user_id=user, anonymous_id=anon, traits=traits or {}
    )


def profile_of(events: Iterable[Event], windows: dict[str, timedelta] | None = None) -> Profile:
    profile = Profile("p", windows)
    for event in events:
        profile.apply(event)
    return profile


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Deep equality, floats within a tolerance."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), (path, a, b)
        assert not isinstance(a, bool) and not isinstance(b, bool), (path, a, b)
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6), (path, a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, a, b)
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b and type(a) is type(b), (path, a, b)


# --------------------------------------------------------------------------- fields


def test_fields_of_a_hand_checked_session():
    events = [
        call("m01", EventType.identify, 0, traits={"plan": "free"}),
        call("m02", EventType.page, 1, user=None, anon="a1", name="Home"),
        call("m03", EventType.screen, 2, name="Cart"),
        track("m04", "Product Viewed", 3, {"product_id": "P1"}),
        track("m05", "Product Viewed", 4, {"product_id": "P2"}),
        track("m06", "Product Added", 5, {"product_id": "P1", "price": 10.0, "quantity": 2}),
        track("m07", "Product Added", 6, {"sku": "S9", "price": 5.5}),
        track("m08", "Product Removed", 7, {"product_id": "P1"}),
        track("m09", "Checkout Started", 8),
        track("m10", "Email Opened", 9),
        call("m11", EventType.group, 9.5),
    ]
    p = profile_of(events)
    assert p.field_values() == {
        "event_count": 11,
        "page_views": 2,
        "product_views": 2,
        "cart_adds": 2,
        "cart_removes": 1,
        "checkouts_started": 1,
        "order_count": 0,
        "email_opens": 1,
        "revenue_total": 0.0,
        "cart_items": 2,
        "cart_value": 15.5,
        "checkout_open": True,
        "identified": True,
        "first_seen_at": at(0),
        "last_seen_at": at(9.5),
        "last_order_at": None,
    }
    assert p.cart() == [("P1", 1, 10.0), ("S9", 1, 5.5)]

    p.apply(track("m12", "Order Completed", 10, {"revenue": 25.5, "total": 30}))
    values = p.field_values()
    assert (values["order_count"], values["revenue_total"]) == (1, 25.5)
    assert (values["cart_items"], values["cart_value"], values["checkout_open"]) == (0, 0.0, False)
    assert values["last_order_at"] == at(10)
    # revenue that is not a number falls back to total; neither a number: order counted only
    p.apply(track("m13", "Order Completed", 11, {"revenue": "12", "total": 7}))
    p.apply(track("m14", "Order Completed", 12, {"revenue": True, "total": "9.5"}))
    p.apply(track("m15", "Order Completed", 13, {"revenue": float("nan"), "total": None}))
    values = p.field_values()
    assert (values["order_count"], values["revenue_total"]) == (4, 32.5)


def test_field_values_match_their_declared_types_and_work_in_rules():
    p = profile_of([track("m1", "Product Added", 1, {"product_id": "P", "price": 3.0})])
    values = p.field_values()
    assert values.keys() == PROFILE_FIELD_TYPES.keys()
    python_types = {
        FieldType.NUMBER: (int, float),
        FieldType.BOOLEAN: (bool,),
        FieldType.TIMESTAMP: (datetime, type(None)),
    }
    for name, field_type in PROFILE_FIELD_TYPES.items():
        assert isinstance(values[name], python_types[field_type]), name
    rule = parse_rule(
        "cart_value >= 3 AND NOT checkout_open AND order_count = 0", PROFILE_FIELD_TYPES
    )
    assert rule.matches(values)


def test_anonymous_only_person_is_not_identified_and_keeps_its_identifiers():
    p = profile_of(
        [
            call("m1", EventType.page, 0, user=None, anon="a1"),
            call("m2", EventType.page, 5, user=None, anon="a2"),
            call("m3", EventType.page, 2, user=None, anon="a1"),
        ]
    )
    assert p.identified is False
    view = p.to_dict()
    assert view["anonymous_ids"] == ["a2", "a1"]  # most recently seen first
    assert view["user_ids"] == []
    assert view["events"] == {"page": {"count": 3, "last_at": at(5).isoformat()}}


def test_event_counts_follow_event_key_and_last_event_at():
    events = [
        track("m1", "Signed Up", 3),
        track("m2", "Signed Up", 1),
        call("m3", EventType.page, 2, name="Home"),
        track("m4", "page", 4),  # a track call named "page" shares the key, not page_views
    ]
    p = profile_of(events)
    assert p.event_counts() == {event_key(e): n for e, n in [(events[0], 2), (events[2], 2)]}
    assert p.page_views == 1
    assert p.last_event_at("Signed Up") == at(3)
    assert p.last_event_at("page") == at(4)
    assert p.last_event_at() == at(4)
    assert p.last_event_at("Order Completed") is None


# --------------------------------------------------------------------------- cart


def test_cart_add_remove_and_order():
    p = profile_of(
        [
            track("m1", "Product Added", 1, {"product_id": "A", "price": 4.0, "quantity": 3}),
            track("m2", "Product Removed", 2, {"product_id": "A", "quantity": 5}),
            track("m3", "Product Added", 3, {"product_id": "B", "price": 2.5}),
        ]
    )
    assert p.cart() == [("B", 1, 2.5)]  # A: max(0, 3 - 5) = 0, not listed
    assert p.field_values()["cart_items"] == 1
    p.apply(track("m4", "Product Added", 4, {"product_id": "A", "price": 6.0}))
    assert p.cart() == [("B", 1, 2.5)]  # 4 - 5 still below zero
    p.apply(track("m5", "Product Added", 5, {"product_id": "A", "price": 6.0, "quantity": 2}))
    assert p.cart() == [("A", 1, 6.0), ("B", 1, 2.5)]
    assert p.field_values()["cart_value"] == 8.5
    p.apply(track("m6", "Order Completed", 6, {"revenue": 8.5}))
    assert p.cart() == []
    p.apply(track("m7", "Product Added", 7, {"product_id": "C", "price": 1.0}))
    assert p.cart() == [("C", 1, 1.0)]


def test_late_order_is_placed_by_its_time():
    p = profile_of(
        [
            track("m1", "Product Added", 1, {"product_id": "A", "price": 1.0}),
            track("m2", "Product Added", 5, {"product_id": "B", "price": 2.0}),
            track("m3", "Checkout Started", 2),
        ]
    )
    p.apply(track("m4", "Order Completed", 3, {"total": 1.0}))  # arrives late
    assert p.cart() == [("B", 1, 2.0)]
    assert p.field_values()["checkout_open"] is False
    # an add that happened before the order, arriving after it, stays out of the cart
    p.apply(track("m5", "Product Added", 2.5, {"product_id": "C", "price": 9.0}))
    # an add at the very instant of the order belongs to that order
    p.apply(track("m6", "Product Added", 3, {"product_id": "D", "price": 9.0}))
    assert p.cart() == [("B", 1, 2.0)]
    # an older order changes nothing
    p.apply(track("m7", "Order Completed", 0.5, {"total": 3.0}))
    assert p.cart() == [("B", 1, 2.0)]
    assert p.last_order_at == at(3)
    assert p.order_count == 2


def test_cart_price_is_that_of_the_latest_add_by_time_then_message_id():
    p = profile_of(
        [
            track("m2", "Product Added", 5, {"product_id": "A", "price": 7.0}),
            track("m1", "Product Added", 1, {"product_id": "A", "price": 3.0}),
            track("m3", "Product Added", 5, {"product_id": "B", "price": 1.0}),
            track("m9", "Product Added", 5, {"product_id": "B", "price": 2.0}),
            track("m4", "Product Added", 6, {"product_id": "C", "price": 8.0}),
            track("m5", "Product Added", 7, {"product_id": "C"}),  # latest add has no price
        ]
    )
    assert p.cart() == [("A", 2, 7.0), ("B", 2, 2.0), ("C", 2, None)]
    assert p.field_values()["cart_value"] == 2 * 7.0 + 2 * 2.0  # NULL price counts as 0


@pytest.mark.parametrize(
    ("quantity", "units"),
    [
        (3, 3),
        (0, 0),
        (MAX_QUANTITY, MAX_QUANTITY),
        (MAX_QUANTITY + 1, 1),
        (-2, 1),
        (2.0, 1),
        ("2", 1),
        (True, 1),
        (None, 1),
    ],
)
def test_quantity_property(quantity, units):
    p = profile_of([track("m1", "Product Added", 1, {"product_id": "A", "quantity": quantity})])
    assert p.field_values()["cart_items"] == units


def test_product_identity_product_id_then_sku():
    p = profile_of(
        [
            track("m1", "Product Added", 1, {"product_id": 7, "price": 1.0}),
            track("m2", "Product Added", 2, {"product_id": "7", "price": 1.0}),
            track("m3", "Product Added", 3, {"product_id": "", "sku": "S", "price": 2.0}),
            track("m4", "Product Added", 4, {"product_id": 1.5, "sku": True, "price": 3.0}),
            track("m5", "Product Removed", 5, {"sku": "S"}),
        ]
    )
    assert p.cart() == [(None, 1, 3.0), ("7", 2, 1.0)]


def test_checkout_open_needs_a_checkout_strictly_after_the_last_order():
    checkout_then_order_same_instant = [
        track("m1", "Checkout Started", 5),
        track("m2", "Order Completed", 5),
    ]
    assert profile_of(checkout_then_order_same_instant).checkout_open is False
    p = profile_of([track("m1", "Order Completed", 5), track("m2", "Checkout Started", 6)])
    assert p.checkout_open is True
    p.apply(track("m3", "Order Completed", 7))
    assert p.checkout_open is False


def test_many_cart_events_without_an_order_stay_exact_in_time_order(monkeypatch):
    monkeypatch.setattr(profiles_module, "MAX_CART_EVENTS", 10)
    events = [
        track(f"m{i:03d}", "Product Added", i, {"product_id": f"P{i % 3}", "price": float(i)})
        for i in range(40)
    ]
    events += [track("r1", "Product Removed", 41, {"product_id": "P0", "quantity": 4})]
    p = profile_of(events)
    assert len(p._cart) <= 10
    assert p.cart() == [("P0", 14 - 4, 39.0), ("P1", 13, 37.0), ("P2", 13, 38.0)]
    # an order later than every folded event: exact (folded totals go, later events stay)
    assert p._cart_compacted_to == at(34)
    p.apply(track("o1", "Order Completed", 36))
    assert p.cart() == [("P1", 1, 37.0), ("P2", 1, 38.0)]  # P0: 1 added at 39, 4 removed
    p.apply(track("o2", "Order Completed", 50))
    assert p.cart() == [] and not p._cart_base


# --------------------------------------------------------------------------- traits


def test_traits_latest_identify_wins_per_key_even_out_of_order():
    p = profile_of(
        [
            call("m5", EventType.identify, 5, traits={"plan": "pro", "age": 30}),
            call("m1", EventType.identify, 1, traits={"plan": "free", "city": "Oslo"}),
            call("m2", EventType.identify, 5, traits={"age": 31}),  # same time, smaller id
            call("m9", EventType.identify, 5, traits={"city": None}),  # null is a value
            call("m7", EventType.group, 9, traits={"plan": "enterprise"}),  # group traits
            track("m8", "Signed Up", 9),
        ]
    )
    assert p.traits == {"plan": "pro", "age": 30, "city": None}
    assert p.to_dict()["traits"] == {"plan": "pro", "age": 30, "city": None}


# --------------------------------------------------------------------------- windows


def test_count_between_over_a_window():
    windows = {"Product Viewed": timedelta(hours=1)}
    p = profile_of([track(f"v{i}", "Product Viewed", m) for i, m in enumerate([0, 10, 30, 30])])
    with pytest.raises(UserInputError, match="no history is kept"):
        p.count_between("Product Viewed", at(0), at(60))
    p = Profile("p", windows)
    for i, minutes in enumerate([0, 10, 30, 30, 59]):
        p.apply(track(f"v{i}", "Product Viewed", minutes))
    assert p.count_between("Product Viewed", at(0), at(30)) == 3  # start excluded, end included
    assert p.count_between("Product Viewed", at(-1), at(60)) == 5
    assert p.count_between("Product Viewed", at(30), at(10)) == 0
    p.apply(track("late", "Product Viewed", 20))  # out of order, inside the window
    assert p.count_between("Product Viewed", at(15), at(25)) == 1
    with pytest.raises(UserInputError, match="Product Added"):
        p.count_between("Product Added", at(0), at(60))


def test_window_history_is_trimmed_to_the_window():
    p = Profile("p", {"page": timedelta(minutes=30)})
    for i in range(500):
        p.apply(call(f"m{i:03d}", EventType.page, i))
    # kept: times later than latest - 30 min
    assert p._history["page"] == [at(m) for m in range(470, 500)]
    assert p.count_between("page", at(499) - timedelta(minutes=30), at(499)) == 30
    p.apply(call("old", EventType.page, 100))  # older than the horizon: not kept
    assert len(p._history["page"]) == 30
    assert p.event_count == 501


def test_window_history_is_capped(monkeypatch):
    monkeypatch.setattr(profiles_module, "MAX_HISTORY", 5)
    p = Profile("p", {"page": timedelta(days=1)})
    for i in range(20):
        p.apply(call(f"m{i:02d}", EventType.page, i))
    assert p._history["page"] == [at(m) for m in range(15, 20)]


@pytest.mark.parametrize(
    "windows", [{"page": timedelta(0)}, {"page": 60}, {"": timedelta(minutes=1)}]
)
def test_invalid_windows_are_rejected(windows):
    with pytest.raises(UserInputError):
        Profiles(windows)


# --------------------------------------------------------------------------- round trip


def rich_events() -> list[Event]:
    return [
        call("m01", EventType.identify, 0, anon="a1", traits={"plan": "pro", "tags": ["x", 1]}),
        call("m02", EventType.page, 1, user=None, anon="a2", name="Home"),
        track("m03", "Product Viewed", 2, {"product_id": "P1"}),
        track("m04", "Product Added", 3, {"product_id": "P1", "price": 2.25, "quantity": 2}),
        track("m05", "Order Completed", 4, {"revenue": 4.5}),
        track("m06", "Product Added", 5, {"sku": 12, "price": 1.0}),
        track("m07", "Product Added", 6, {}),
        track("m08", "Product Removed", 7, {"product_id": "P9"}),
        track("m09", "Checkout Started", 8),
        track("m10", "Product Viewed", 9, {"product_id": "P2"}),
        track("m11", "Email Opened", 10),
    ]


def test_to_row_from_row_round_trip_keeps_everything(monkeypatch):
    monkeypatch.setattr(profiles_module, "MAX_CART_EVENTS", 2)  # exercise the folded cart too
    windows = {"Product Viewed": timedelta(minutes=30), "page": timedelta(hours=2)}
    original = profile_of(rich_events(), windows)
    assert original._cart_base
    row = original.to_row()
    assert set(row) == {"person_id", *PROFILE_FIELD_TYPES, "traits", "state"}
    assert orjson.loads(row["traits"]) == {"plan": "pro", "tags": ["x", 1]}
    restored = Profile.from_row(row, windows)
    assert restored.to_dict() == original.to_dict()
    assert restored.field_values() == original.field_values()
    assert restored._history == original._history
    assert restored.count_between("Product Viewed", at(0), at(10)) == 2
    # both go on identically, late events included
    more = [
        track("n1", "Order Completed", 5.5, {"total": 1.0}),
        track("n2", "Product Added", 11, {"product_id": "P3", "price": 3.0}),
        call("n3", EventType.identify, -1, traits={"plan": "old", "vip": True}),
    ]
    for event in more:
        original.apply(event)
        restored.apply(event)
    assert restored.to_dict() == original.to_dict()


def test_from_row_keeps_history_only_for_current_windows():
    windows = {"Product Viewed": timedelta(minutes=30)}
    row = profile_of(rich_events(), windows).to_row()
    restored = Profile.from_row(row, {"page": timedelta(minutes=5)})
    assert restored._history == {}
    with pytest.raises(UserInputError):
        restored.count_between("Product Viewed", at(0), at(10))
    assert restored.count_between("page", at(0), at(10)) == 0


def test_traits_json_cannot_hold_do_not_break_saving():
    """Only events built in code carry these; the row must still be written."""
    p = profile_of([call("m1", EventType.identify, 0, traits={"big": 2**70, "map": {1: "x"}})])
    row = p.to_row()
    assert orjson.loads(row["traits"]) == {"big": float(2**70), "map": {"1": "x"}}
    assert Profile.from_row(row).traits == {"big": float(2**70), "map": {"1": "x"}}


@pytest.mark.parametrize("state", [b"not json", b'{"v": 1}', b"[]", b'{"v": 2}'])
def test_from_row_rejects_unreadable_state(state):
    with pytest.raises(DataValidationError, match="unreadable profile state"):
        Profile.from_row({"person_id": "p", "state": state})


# --------------------------------------------------------------------------- warehouse


@pytest.fixture
def wh() -> Iterable[Warehouse]:
    warehouse = Warehouse(":memory:")
    yield warehouse
    warehouse.close()


def test_save_and_load_through_the_warehouse(wh):
    windows = {"Product Viewed": timedelta(minutes=30)}
    store = Profiles(windows)
    for event in rich_events():
        store.apply("u1", event)
    store.apply("u2", call("x1", EventType.page, 3, user="u2"))
    ensure_profiles_table(wh)
    ensure_profiles_table(wh)  # idempotent
    with wh.transaction():
        assert save_profiles(wh, [store.get(p) for p in sorted(store.dirty())]) == 2
    store.mark_clean()
    loaded = load_profiles(wh, windows)
    assert sorted(loaded) == ["u1", "u2"]
    assert loaded.dirty() == set()
    for person_id in store:
        assert loaded.get(person_id).to_dict() == store.get(person_id).to_dict()
        assert loaded.get(person_id)._history == store.get(person_id)._history
    # the fields are queryable columns, the traits JSON
    rows = wh.fetchall(
        "SELECT person_id, cart_items, cart_value, checkout_open, last_order_at, "
        "traits->>'$.plan', updated_at IS NOT NULL FROM profiles ORDER BY person_id"
    )
    assert rows == [
        ("u1", 2, 1.0, True, at(4), "pro", True),  # after the order: sku 12 at 1.0, one unpriced
        ("u2", 0, 0.0, False, None, None, True),
    ]


def test_save_is_an_upsert_inside_the_callers_transaction(wh):
    ensure_profiles_table(wh)
    store = Profiles()
    store.apply("u1", track("m1", "Order Completed", 1, {"revenue": 5}))
    with wh.transaction():
        save_profiles(wh, store.values())
        store.apply("u1", track("m2", "Order Completed", 2, {"revenue": 6}))
        save_profiles(wh, store.values())  # same person twice in one transaction
    assert wh.fetchall("SELECT person_id, order_count, revenue_total FROM profiles") == [
        ("u1", 2, 11.0)
    ]
    store.apply("u1", track("m3", "Order Completed", 3, {"revenue": 1}))
    with pytest.raises(RuntimeError), wh.transaction():
        save_profiles(wh, store.values())
        raise RuntimeError("the writer failed before commit")
    assert wh.scalar("SELECT order_count FROM profiles") == 2  # rolled back with the caller
    assert save_profiles(wh, []) == 0


def test_save_writes_thousands_of_profiles_in_one_call(wh):
    ensure_profiles_table(wh)
    store = Profiles()
    for i in range(3000):
        store.apply(
            f"u{i}", track(f"m{i}", "Product Added", i % 50, {"product_id": "A", "price": 2.0})
        )
    with wh.transaction():
        assert save_profiles(wh, store.values()) == 3000
    assert wh.fetchall("SELECT count(*), sum(cart_value) FROM profiles") == [(3000, 6000.0)]
    assert len(load_profiles(wh)) == 3000


def test_delete_profiles_and_empty_or_foreign_tables(wh):
    assert len(load_profiles(wh)) == 0  # no table yet
    ensure_profiles_table(wh)
    store = Profiles()
    for person in ("a", "b"):
        store.apply(person, call(f"m-{person}", EventType.page, 1, user=person))
    save_profiles(wh, store.values())
    assert delete_profiles(wh, ["a", "zz"]) == 2
    assert delete_profiles(wh, []) == 0
    assert wh.fetchall("SELECT person_id FROM profiles") == [("b",)]
    wh.execute("DROP TABLE profiles")
    wh.execute("CREATE TABLE profiles (person_id VARCHAR)")
    with pytest.raises(DataValidationError, match="another version"):
        ensure_profiles_table(wh)


# --------------------------------------------------------------------------- merge


def test_merge_folds_the_merged_profile_into_the_survivor():
    windows = {"Product Viewed": timedelta(minutes=30)}
    anonymous = [
        call("a1", EventType.page, 1, user=None, anon="dev1"),
        track("a2", "Product Viewed", 2, {"product_id": "P"}, user=None, anon="dev1"),
        track("a3", "Product Added", 3, {"product_id": "P", "price": 5.0}, user=None, anon="dev1"),
        call("a4", EventType.identify, 9, user=None, anon="dev1", traits={"plan": "trial"}),
    ]
    known = [
        call("k1", EventType.identify, 4, traits={"plan": "pro", "email": "x@example.com"}),
        track("k2", "Order Completed", 2.5, {"revenue": 10.0}),
        track("k3", "Product Added", 6, {"product_id": "Q", "price": 1.0}),
        track("k4", "Product Viewed", 20, {"product_id": "Q"}),
    ]
    store = Profiles(windows)
    for event in anonymous:
        store.apply("anon", event)
    for event in known:
        store.apply("u1", event)
    store.mark_clean()
    merged = store.merge("u1", "anon")
    assert merged is store.get("u1") and "anon" not in store and len(store) == 1
    assert store.dirty() == {"u1"} and store.removed() == {"anon"}
    assert_same(
        merged.to_dict(), profile_of(anonymous + known, windows).to_dict() | {"person_id": "u1"}
    )
    values = merged.field_values()
    assert (values["event_count"], values["first_seen_at"], values["last_seen_at"]) == (
        8,
        at(1),
        at(20),
    )
    assert merged.cart() == [("P", 1, 5.0), ("Q", 1, 1.0)]  # the add at 3 is after the order at 2.5
    assert merged.traits == {"plan": "trial", "email": "x@example.com"}
    assert merged.count_between("Product Viewed", at(0), at(20)) == 2
    # merging an unknown or the same person changes nothing
    before = merged.to_dict()
    assert store.merge("u1", "nobody").to_dict() == before
    assert store.merge("u1", "u1").to_dict() == before
    store.mark_clean(["u1"])
    assert store.dirty() == set() and store.removed() == {"anon"}
    store.apply("anon", call("a5", EventType.page, 30, user=None, anon="dev1"))
    assert store.removed() == set()  # the person is back


# --------------------------------------------------------------------------- properties

NAMES = [
    "Product Viewed",
    "Product Added",
    "Product Added",
    "Product Added",
    "Product Removed",
    "Product Removed",
    "Checkout Started",
    "Order Completed",
    "Order Completed",
    "Email Opened",
    "Signed Up",
    "page",
    "",
    None,
]
NUMBERS = st.one_of(
    st.floats(-1000, 1000),
    st.integers(-1000, 1000),
    st.sampled_from([math.nan, math.inf, -math.inf, True, False, "12.5", None, [1]]),
)
IDS = st.one_of(
    st.sampled_from(["A", "B", "", "é"]),
    st.integers(-1, 3),
    st.sampled_from([None, True, 1.5, 2**64 - 1, {"id": "A"}]),
)
QUANTITIES = st.one_of(
    st.integers(-2, 5),
    st.sampled_from([MAX_QUANTITY, MAX_QUANTITY + 1, 2**63, 2**64 - 1, -(2**63)]),
    st.sampled_from([2.0, 0.5, "3", None, True]),
)
PROPERTIES = st.fixed_dictionaries(
    {},
    optional={
        "product_id": IDS,
        "sku": IDS,
        "quantity": QUANTITIES,
        "price": NUMBERS,
        "revenue": NUMBERS,
        "total": NUMBERS,
    },
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(-1e6, 1e6),
    st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), max_size=5),
)
TRAIT_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("xy"), inner),
    max_leaves=4,
)
TRAITS = st.dictionaries(st.sampled_from(["plan", "email", "age", "weird key.$"]), TRAIT_VALUES)
TYPES = [EventType.track] * 6 + list(EventType)


@st.composite
def event_streams(draw: st.DrawFn, max_size: int = 40) -> list[tuple[str, Event]]:
    """Events of a few persons with colliding times, unique message ids, any order."""
    count = draw(st.integers(0, max_size))
    stream = []
    for i in range(count):
        kind = draw(st.sampled_from(TYPES))
        ts = at(draw(st.integers(0, 6)) * 5)
        mid = draw(st.sampled_from("abc")) + str(i)
        name = draw(st.sampled_from(NAMES)) if kind in (EventType.track, EventType.page) else None
        event = Event(
            mid,
            kind,
            ts,
            ts,
            event=name,
            user_id=draw(st.sampled_from([None, "u1", "u2"])),
            anonymous_id=draw(st.sampled_from([None, "a1"])),
            properties=draw(PROPERTIES) if kind is EventType.track else {},
            traits=draw(TRAITS) if kind in (EventType.identify, EventType.group) else {},
        )
        stream.append((draw(st.sampled_from(["p1", "p2"])), event))
    return stream


EVENT_COLUMNS = ["message_id", "type", "event", "user_id", "anonymous_id", "timestamp"]


def load_events(wh: Warehouse, stream: Sequence[tuple[str, Event]]) -> None:
    """Replace the events (and their persons) in the warehouse."""
    wh.execute("DELETE FROM events")
    wh.execute("DELETE FROM event_person")
    batch = pa.table(
        {
            "person_id": [p for p, _ in stream],
            "message_id": [e.message_id for _, e in stream],
            "type": [e.type.value for _, e in stream],
            "event": [e.event for _, e in stream],
            "user_id": [e.user_id for _, e in stream],
            "anonymous_id": [e.anonymous_id for _, e in stream],
            "timestamp": pa.array([e.timestamp for _, e in stream], pa.timestamp("us")),
            "properties": [orjson.dumps(e.properties).decode() for _, e in stream],
            "traits": [orjson.dumps(e.traits).decode() for _, e in stream],
        }
    )
    wh.register("incoming", batch)
    columns = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    wh.execute(
        f"INSERT INTO events ({columns}, properties, traits) "
        f"SELECT {columns}, properties::JSON, traits::JSON FROM incoming"
    )
    wh.execute("INSERT INTO event_person SELECT message_id, person_id FROM incoming")
    wh.unregister("incoming")


def batch_profiles(wh: Warehouse) -> dict[str, dict[str, Any]]:
    table = wh.arrow(profiles_sql("events_by_person"))
    result = {}
    for row in table.to_pylist():
        row["traits"] = {} if row["traits"] is None else orjson.loads(row["traits"])
        result[row.pop("person_id")] = row
    return result


def streamed_profiles(stream: Iterable[tuple[str, Event]]) -> dict[str, dict[str, Any]]:
    store = Profiles()
    for person_id, event in stream:
        store.apply(person_id, event)
    return {
        p.person_id: p.field_values() | {"traits": p.traits, "cart": p.to_dict()["cart"]}
        for p in store.values()
    }


@pytest.fixture(scope="module")
def events_wh() -> Iterable[Warehouse]:
    warehouse = Warehouse(":memory:")
    ensure_tables(warehouse)
    warehouse.execute("CREATE TABLE event_person (message_id VARCHAR, person_id VARCHAR)")
    warehouse.execute(
        "CREATE VIEW events_by_person AS "
        "SELECT e.*, p.person_id FROM events e JOIN event_person p USING (message_id)"
    )
    yield warehouse
    warehouse.close()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=event_streams())
def test_streaming_equals_batch_sql(events_wh, stream):
    load_events(events_wh, stream)
    assert_same(streamed_profiles(stream), batch_profiles(events_wh))


@settings(max_examples=60, deadline=None)
@given(stream=event_streams(max_size=25), data=st.data())
def test_arrival_order_does_not_matter(stream, data):
    windows = {"Product Viewed": timedelta(minutes=20), "page": timedelta(minutes=15)}
    events = [e for _, e in stream]
    shuffled = data.draw(st.permutations(events))
    a, b = profile_of(events, windows), profile_of(shuffled, windows)
    assert_same(a.to_dict(), b.to_dict())
    for key in windows:
        end = a.last_event_at(key) or T0
        assert a.count_between(key, end - windows[key], end) == b.count_between(
            key, end - windows[key], end
        )


@settings(max_examples=60, deadline=None)
@given(stream=event_streams(max_size=25), sides=st.lists(st.booleans(), min_size=25, max_size=25))
def test_merge_equals_one_profile_of_all_events(stream, sides):
    windows = {"Product Viewed": timedelta(minutes=20), "Product Added": timedelta(minutes=10)}
    events = [e for _, e in stream]
    left = profile_of([e for e, s in zip(events, sides, strict=False) if s], windows)
    right = profile_of([e for e, s in zip(events, sides, strict=False) if not s], windows)
    left.merge_from(right)
    whole = profile_of(events, windows)
    assert_same(left.to_dict() | {"person_id": "p"}, whole.to_dict())
    assert left._history == whole._history
    restored = Profile.from_row(left.to_row(), windows)
    assert_same(restored.to_dict(), whole.to_dict())


# --------------------------------------------------------------------------- synthetic data


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC).replace(tzinfo=None)


@pytest.fixture(scope="module")
def synthetic_stream(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Event]]:
    from segmint.data.synthetic import generate

    out: Path = tmp_path_factory.mktemp("synthetic")
    generated = generate(out, customers=40, seed=7, dirty=False)
    stream = []
    for line in generated.files["events"].read_bytes().splitlines():
        m = orjson.loads(line)
        received = _time(m["receivedAt"])
        timestamp = received - (_time(m["sentAt"]) - _time(m["timestamp"]))
        event = Event(
            m["messageId"],
            EventType(m["type"]),
            timestamp,
            received,
            event=m.get("event") or m.get("name"),
            user_id=m.get("userId"),
            anonymous_id=m.get("anonymousId"),
            properties=m.get("properties") or {},
            traits=m.get("traits") or {},
        )
        stream.append((m.get("userId") or m["anonymousId"], event))
    return stream


def test_streaming_a_synthetic_data_set_equals_batch_sql(events_wh, synthetic_stream):
    names = {event_key(e) for _, e in synthetic_stream}
    assert {"Product Added", "Order Completed", "Checkout Started", "identify"} <= names
    load_events(events_wh, synthetic_stream)
    batch = batch_profiles(events_wh)
    streamed = streamed_profiles(synthetic_stream)
    assert_same(streamed, batch)
    # the data set exercises the interesting cases
    assert any(v["cart_items"] > 0 for v in batch.values())
    assert any(v["checkout_open"] for v in batch.values())
    assert sum(v["order_count"] for v in batch.values()) > 40
    assert any(v["traits"] for v in batch.values())


def test_profiles_sql_takes_only_finite_json_numbers(events_wh):
    """JSON text that orjson would refuse (1e400) or reads as a float (2**64) behaves alike."""
    load_events(events_wh, [])
    rows = [
        ("o1", "Order Completed", 1, '{"revenue": 1e400, "total": 5}'),
        ("o2", "Order Completed", 2, '{"revenue": "7", "total": null}'),
        ("c1", "Product Added", 3, '{"product_id": 1.0, "quantity": 18446744073709551616}'),
        ("c2", "Product Added", 4, '{"sku": "S", "quantity": 2, "price": -1e400}'),
        ("c3", "Product Added", 5, '{"sku": "T", "quantity": 3, "price": 1.5e2}'),
    ]
    for mid, name, minutes, properties in rows:
        events_wh.execute(
            "INSERT INTO events (message_id, type, event, user_id, timestamp, properties) "
            "VALUES (?, 'track', ?, 'u', ?, ?::JSON)",
            [mid, name, at(minutes), properties],
        )
        events_wh.execute("INSERT INTO event_person VALUES (?, 'u')", [mid])
    values = batch_profiles(events_wh)["u"]
    assert (values["order_count"], values["revenue_total"]) == (2, 5.0)
    assert values["cart"] == [
        {"product_id": None, "quantity": 1, "price": None},
        {"product_id": "S", "quantity": 2, "price": None},
        {"product_id": "T", "quantity": 3, "price": 150.0},
    ]
    assert (values["cart_items"], values["cart_value"]) == (6, 450.0)


def test_profiles_sql_rejects_anything_but_a_relation_name():
    for bad in ["events; DROP TABLE events", "(SELECT 1)", "a.b.c.d", "", 'x"y']:
        with pytest.raises(UserInputError):
            profiles_sql(bad)
    assert '"main"."events_by_person"' in profiles_sql("main.events_by_person")


def test_the_journal_overrides_the_table_until_compaction_folds_it_in(wh):
    ensure_profiles_table(wh)
    store = Profiles()
    for person in ("a", "b", "c"):
        store.apply(person, call(f"m-{person}", EventType.page, 1, user=person))
    with wh.transaction():
        save_profiles(wh, store.values())
    store.mark_clean()
    # two commits: "a" twice (the later one counts); "b" journaled, then merged into "d"
    store.apply("b", call("m-b2", EventType.page, 2, user="b"))
    with wh.transaction():
        assert journal_profiles(wh, 1, [store.get("a"), store.get("b")]) == 2
    store.apply("a", call("m-a3", EventType.page, 3, user="a"))
    store.merge("d", "b")
    with wh.transaction():
        assert journal_profiles(wh, 2, [store.get("a"), store.get("d")], removed=["b"]) == 3
    assert journal_seq(wh) == 2

    loaded = load_profiles(wh)
    assert sorted(loaded) == ["a", "c", "d"]
    assert loaded.get("a").page_views == 2 and loaded.get("d").page_views == 2
    assert loaded.dirty() == {"a", "d"} and loaded.removed() == {"b"}
    # the table itself is unchanged until the journal is folded in
    assert wh.fetchall("SELECT person_id, page_views FROM profiles ORDER BY 1") == [
        ("a", 1),
        ("b", 1),
        ("c", 1),
    ]
    with wh.transaction():
        assert compact_profiles(wh, loaded, ["a"]) == 1  # a step: the journal stays
    assert wh.scalar("SELECT count(*) FROM profile_journal") == 5
    assert load_profiles(wh).get("a").page_views == 2
    with wh.transaction():
        assert compact_profiles(wh, loaded, ["b", "d"], through_seq=2) == 2
    assert wh.fetchall("SELECT person_id, page_views FROM profiles ORDER BY 1") == [
        ("a", 2),
        ("c", 1),
        ("d", 2),
    ]
    assert wh.scalar("SELECT count(*) FROM profile_journal") == 0
    assert journal_seq(wh) == 0
    assert {p: load_profiles(wh).get(p).to_dict() for p in "acd"} == {
        p: store.get(p).to_dict() for p in "acd"
    }


def test_a_journal_append_rolls_back_with_the_callers_transaction(wh):
    ensure_profiles_table(wh)
    store = Profiles()
    store.apply("u1", call("m1", EventType.page, 1, user="u1"))
    with pytest.raises(RuntimeError), wh.transaction():
        journal_profiles(wh, 1, store.values())
        raise RuntimeError("the writer failed before commit")
    assert len(load_profiles(wh)) == 0
