"""Consent history and THE purpose check, in Python and in SQL, at different times."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.data.privacy import (
    DEFAULT_POLICY,
    PURPOSES,
    ConsentPolicy,
    add_to_suppression,
    consent_history,
    consent_state,
    may_use,
    permitted_persons,
    permitted_persons_sql,
    record_consent,
    sync_event_consents,
)
from segmint.data.schema import CONSENTS
from segmint.data.store import ensure_tables
from segmint.engine import Warehouse
from segmint.errors import UserInputError

T0 = datetime(2024, 1, 1)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


@pytest.fixture
def wh() -> Warehouse:
    warehouse = Warehouse(":memory:")
    ensure_tables(warehouse)
    return warehouse


def test_grant_withdraw_regrant_over_time(wh):
    record_consent(wh, "c1", "email_marketing", True, at=day(10), source="web_form")
    record_consent(wh, "c1", "email_marketing", False, at=day(20), source="unsubscribe link")
    record_consent(wh, "c1", "email_marketing", True, at=day(30), source="app")
    expected = {
        day(5): False,
        day(10): True,
        day(15): True,
        day(20): False,
        day(25): False,
        day(30): True,
        day(40): True,
    }
    for moment, allowed in expected.items():
        assert may_use(wh, "c1", "email_marketing", moment) is allowed, moment
        assert ("c1" in permitted_persons(wh, "email_marketing", moment)) is allowed, moment
    assert may_use(wh, "c1", "email_marketing") is True
    state = consent_state(wh, "c1", at=day(25))
    assert state["email_marketing"].granted is False
    assert state["email_marketing"].source == "unsubscribe link"
    assert [(c.at, c.granted) for c in consent_history(wh, "c1")] == [
        (day(10), True),
        (day(20), False),
        (day(30), True),
    ]


def test_analytics_is_allowed_unless_withdrawn_marketing_needs_a_grant(wh):
    assert may_use(wh, "nobody", "analytics") is True
    for purpose in ("personalization", "email_marketing", "advertising", "new_purpose"):
        assert may_use(wh, "nobody", purpose) is False
    record_consent(wh, "c1", "analytics", False, at=day(1))
    assert may_use(wh, "c1", "analytics") is False
    assert may_use(wh, "c1", "analytics", day(0)) is True


def test_a_withdrawal_at_the_same_instant_as_a_grant_wins(wh):
    record_consent(wh, "c1", "advertising", True, at=day(1))
    record_consent(wh, "c1", "advertising", False, at=day(1))
    assert may_use(wh, "c1", "advertising") is False
    assert permitted_persons(wh, "advertising") == []
    assert [c.granted for c in consent_history(wh, "c1")] == [True, False]


def test_time_zones_are_read_as_utc(wh):
    record_consent(wh, "c1", "advertising", True, at=datetime(2024, 1, 1, 12, tzinfo=UTC))
    plus_two = datetime(2024, 1, 1, 13, tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    assert may_use(wh, "c1", "advertising", plus_two) is True
    assert may_use(wh, "c1", "advertising", datetime(2024, 1, 1, 11)) is False


def test_purposes_are_normalised(wh):
    record_consent(wh, "c1", " Email_Marketing ", True, at=day(1))
    assert may_use(wh, "c1", "EMAIL_MARKETING") is True
    with pytest.raises(UserInputError):
        record_consent(wh, "c1", " ", True)
    with pytest.raises(UserInputError):
        record_consent(wh, "", "analytics", True)


def test_suppressed_persons_may_be_used_for_nothing(wh):
    record_consent(wh, "c1", "advertising", True, at=day(1))
    add_to_suppression(wh, [("customer_id", "c1")])
    assert may_use(wh, "c1", "advertising") is False
    assert may_use(wh, "c1", "analytics") is False


def test_the_policy_is_configurable():
    strict = ConsentPolicy(opt_out=frozenset(), opt_in=frozenset(PURPOSES))
    lenient = ConsentPolicy(unknown_needs_grant=False)
    wh = Warehouse(":memory:")
    ensure_tables(wh)
    assert may_use(wh, "c1", "analytics", policy=strict) is False
    assert may_use(wh, "c1", "surveys", policy=lenient) is True
    assert may_use(wh, "c1", "surveys") is False
    with pytest.raises(UserInputError, match="both"):
        ConsentPolicy(opt_out=frozenset({"ads"}), opt_in=frozenset({"ADS"}))
    with pytest.raises(AttributeError):
        DEFAULT_POLICY.unknown_needs_grant = False  # type: ignore[misc]


def test_permitted_persons_covers_customers_without_any_choice(wh):
    wh.execute("INSERT INTO customers (customer_id) VALUES ('c1'), ('c2')")
    record_consent(wh, "c3", "analytics", False, at=day(1))
    assert permitted_persons(wh, "analytics") == ["c1", "c2"]
    assert permitted_persons(wh, "advertising") == []


# --------------------------------------------------------------------------- SQL == Python

PEOPLE = ["p0", "p1", "p2", "p3"]
choices = st.tuples(
    st.sampled_from(PEOPLE),
    st.sampled_from([*PURPOSES, "surveys"]),
    st.booleans(),
    st.integers(0, 6),  # few distinct times: ties happen
)
policies = st.builds(
    lambda out, need: ConsentPolicy(
        opt_out=frozenset(out),
        opt_in=frozenset(set(PURPOSES) - set(out)),
        unknown_needs_grant=need,
    ),
    st.sets(st.sampled_from(PURPOSES)),
    st.booleans(),
)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(choices, max_size=25),
    customers=st.sets(st.sampled_from(PEOPLE)),
    at=st.one_of(st.none(), st.integers(-1, 7)),
    policy=policies,
)
def test_sql_and_python_agree_on_random_histories(history, customers, at, policy):
    wh = Warehouse(":memory:")
    wh.execute(CONSENTS.ddl())
    wh.execute("CREATE TABLE customers (customer_id VARCHAR)")
    wh.register("people", pa.table({"customer_id": pa.array(sorted(customers), pa.string())}))
    wh.execute("INSERT INTO customers SELECT customer_id FROM people")
    rows = [(p, purpose, granted, day(t)) for p, purpose, granted, t in history]
    wh.register(
        "choices",
        pa.table(
            {
                "customer_id": pa.array([r[0] for r in rows], pa.string()),
                "purpose": pa.array([r[1] for r in rows], pa.string()),
                "granted": pa.array([r[2] for r in rows], pa.bool_()),
                "at": pa.array([r[3] for r in rows], pa.timestamp("us")),
            }
        ),
    )
    wh.execute("INSERT INTO consents BY NAME SELECT * FROM choices")
    moment = None if at is None else day(at)
    universe = set(customers) | {h[0] for h in history}
    for purpose in [*PURPOSES, "surveys"]:
        sql_allowed = {
            r[0] for r in wh.fetchall(*permitted_persons_sql(purpose, moment, policy=policy))
        }
        python_allowed = {p for p in universe if may_use(wh, p, purpose, moment, policy=policy)}
        assert sql_allowed == python_allowed, purpose


# --------------------------------------------------------------------------- events


def _event(wh, message_id, user_id, when, prefs):
    context = {"ip": "10.0.0.1"}
    if prefs is not None:
        context["consent"] = {"categoryPreferences": prefs}
    wh.execute(
        "INSERT INTO events (message_id, type, user_id, anonymous_id, timestamp, context) "
        "VALUES (?, 'track', ?, 'dev', ?, ?)",
        [message_id, user_id, when, json.dumps(context)],
    )


def test_consent_carried_by_events_is_recorded_as_changes_only(wh):
    record_consent(wh, "c1", "advertising", False, at=day(0), source="crm")
    _event(wh, "e1", "c1", day(1), {"Advertising": True, "analytics": True})
    _event(wh, "e2", "c1", day(2), {"advertising": True, "analytics": True})
    _event(wh, "e3", "c1", day(3), {"advertising": False, "analytics": True, "x": "yes"})
    _event(wh, "e4", "c1", day(4), None)
    _event(wh, "e5", None, day(5), {"advertising": True})  # anonymous: no person to record
    assert sync_event_consents(wh) == 3
    assert sync_event_consents(wh) == 0  # idempotent
    history = [(c.purpose, c.granted, c.at, c.source) for c in consent_history(wh, "c1")]
    assert history == [
        ("advertising", False, day(0), "crm"),
        ("advertising", True, day(1), "event:e1"),
        ("analytics", True, day(1), "event:e1"),
        ("advertising", False, day(3), "event:e3"),
    ]
    assert may_use(wh, "c1", "advertising", day(2)) is True
    assert may_use(wh, "c1", "advertising") is False
