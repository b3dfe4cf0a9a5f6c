"""The Segment tracking API parser: request limits, per-message rules, clock skew, SDK payloads."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.errors import UserInputError
from segmint.realtime.events import Event, EventType, Rejection
from segmint.realtime.spec import (
    REASONS,
    Limits,
    RequestRejected,
    parse_batch,
    parse_call,
    parse_message,
)

RECEIVED = datetime(2026, 3, 1, 12, 0, 0)


def track(**fields: Any) -> dict[str, Any]:
    """A valid track message, with fields replaced or (value None) removed."""
    message: dict[str, Any] = {
        "type": "track",
        "userId": "u1",
        "event": "Product Viewed",
        "messageId": "m-1",
    }
    for key, value in fields.items():
        if value is None:
            message.pop(key, None)
        else:
            message[key] = value
    return message


def accepted(message: Any, **kwargs: Any) -> Event:
    result = parse_message(message, received_at=RECEIVED, **kwargs)
    assert isinstance(result, Event), result
    return result


def rejected(message: Any, **kwargs: Any) -> Rejection:
    result = parse_message(message, received_at=RECEIVED, **kwargs)
    assert isinstance(result, Rejection), result
    assert result.reason in REASONS
    assert result.raw, "a rejection must keep what was sent"
    return result


def batch_body(items: list[Any], **envelope: Any) -> bytes:
    return orjson.dumps({"batch": items, **envelope})


# --- whole-request refusals ---------------------------------------------------------------


def refused(call: Any) -> RequestRejected:
    with pytest.raises(RequestRejected) as info:
        call()
    assert info.value.code in REASONS
    assert isinstance(info.value, UserInputError)
    return info.value


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b"\xff\xfe{}", 400, "invalid_json"),
        (b'{"userId": NaN}', 400, "invalid_json"),
        (b"[]", 400, "not_an_object"),
        (b'"track"', 400, "not_an_object"),
        (b"null", 400, "not_an_object"),
    ],
)
def test_single_call_unreadable_body_is_refused(body: bytes, status: int, code: str) -> None:
    error = refused(lambda: parse_call(body, EventType.track, received_at=RECEIVED))
    assert (error.status, error.code) == (status, code)


def test_single_call_over_the_event_limit_is_413() -> None:
    limits = Limits(max_event_bytes=100)
    body = orjson.dumps(track(properties={"pad": "x" * 100}))
    error = refused(lambda: parse_call(body, EventType.track, received_at=RECEIVED, limits=limits))
    assert (error.status, error.code) == (413, "event_too_large")


def test_single_call_exactly_at_the_event_limit_is_accepted() -> None:
    body = orjson.dumps(track())
    limits = Limits(max_event_bytes=len(body))
    event = parse_call(body, EventType.track, received_at=RECEIVED, limits=limits)
    assert isinstance(event, Event)


def test_byte_order_mark_is_tolerated_and_kept_in_raw() -> None:
    body = b"\xef\xbb\xbf" + orjson.dumps(track())
    event = parse_call(body, EventType.track, received_at=RECEIVED)
    assert isinstance(event, Event)
    assert event.raw == body


@pytest.mark.parametrize(
    ("body", "status", "code", "where"),
    [
        (b'{"batch": [', 400, "invalid_json", None),
        (b"[]", 400, "not_an_object", None),
        (b'{"sentAt": "2026-03-01T12:00:00Z"}', 400, "missing_batch", "batch"),
        (b'{"batch": {"type": "track"}}', 400, "batch_not_a_list", "batch"),
        (b'{"batch": null}', 400, "batch_not_a_list", "batch"),
        (b'{"batch": [], "context": ["x"]}', 400, "invalid_field", "context"),
        (b'{"batch": [], "sentAt": "yesterday"}', 400, "invalid_timestamp", None),
    ],
)
def test_batch_unreadable_envelope_is_refused(
    body: bytes, status: int, code: str, where: str | None
) -> None:
    error = refused(lambda: parse_batch(body, received_at=RECEIVED))
    assert (error.status, error.code, error.where) == (status, code, where)


def test_batch_over_the_byte_limit_is_413() -> None:
    body = batch_body([track(messageId=f"m{i}") for i in range(20)])
    limits = Limits(max_batch_bytes=len(body) - 1)
    error = refused(lambda: parse_batch(body, received_at=RECEIVED, limits=limits))
    assert (error.status, error.code) == (413, "body_too_large")
    # one byte more room and it is read
    events, _ = parse_batch(body, received_at=RECEIVED, limits=Limits(max_batch_bytes=len(body)))
    assert len(events) == 20


def test_batch_with_too_many_messages_is_413() -> None:
    items = [track(messageId=f"m{i}") for i in range(4)]
    limits = Limits(max_batch_events=3)
    error = refused(lambda: parse_batch(batch_body(items), received_at=RECEIVED, limits=limits))
    assert (error.status, error.code) == (413, "batch_too_large")
    events, rejections = parse_batch(batch_body(items[:3]), received_at=RECEIVED, limits=limits)
    assert (len(events), rejections) == (3, [])


def test_default_limits_are_segments() -> None:
    limits = Limits()
    assert limits.max_event_bytes == 32 * 1024
    assert limits.max_batch_bytes == 500 * 1024
    assert limits.max_batch_events == 2500
    assert limits.future_tolerance == timedelta(hours=1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_event_bytes": 0},
        {"max_batch_events": -1},
        {"max_batch_bytes": 1.5},
        {"future_tolerance": timedelta(seconds=-1)},
    ],
)
def test_nonsensical_limits_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(UserInputError):
        Limits(**kwargs)


# --- per-message rules -----------------------------------------------------------------------


REJECTED_MESSAGES: list[tuple[str, Any, str, str]] = [
    # (id, message, reason, the field the detail names)
    ("unknown type", track(type="purchase"), "unknown_type", "type"),
    ("type not a string", track(type=["track"]), "unknown_type", "type"),
    ("type upper case", track(type="TRACK"), "unknown_type", "type"),
    ("no type", track(type=None), "missing_type", "type"),
    ("null type", {**track(), "type": None}, "missing_type", "type"),
    ("no ids", track(userId=None), "missing_identity", "userId"),
    ("empty ids", track(userId="", anonymousId=""), "missing_identity", "anonymousId"),
    ("null ids", {**track(), "userId": None, "anonymousId": None}, "missing_identity", "userId"),
    ("userId bool", track(userId=True), "invalid_field", "userId"),
    ("userId object", track(userId={"id": 1}), "invalid_field", "userId"),
    ("userId too long", track(userId="u" * 256), "invalid_field", "userId"),
    ("userId NUL", track(userId="u\x001"), "invalid_field", "userId"),
    ("anonymousId list", track(anonymousId=["a"]), "invalid_field", "anonymousId"),
    ("anonymousId NUL", track(userId=None, anonymousId="\x00"), "invalid_field", "anonymousId"),
    ("messageId number", track(messageId=7), "invalid_field", "messageId"),
    ("messageId too long", track(messageId="m" * 256), "invalid_field", "messageId"),
    ("messageId NUL", track(messageId="m\x00"), "invalid_field", "messageId"),
    ("no event name", track(event=None), "missing_event_name", "event"),
    ("empty event name", track(event=""), "missing_event_name", "event"),
    ("blank event name", track(event="   "), "missing_event_name", "event"),
    ("event name number", track(event=12), "invalid_field", "event"),
    ("event name too long", track(event="e" * 201), "invalid_field", "event"),
    ("event name NUL", track(event="Viewed\x00"), "invalid_field", "event"),
    ("page name number", {"type": "page", "userId": "u", "name": 3}, "invalid_field", "name"),
    (
        "screen name NUL",
        {"type": "screen", "userId": "u", "name": "a\x00"},
        "invalid_field",
        "name",
    ),
    (
        "alias without previousId",
        {"type": "alias", "userId": "u"},
        "missing_previous_id",
        "previousId",
    ),
    (
        "alias previousId empty",
        {"type": "alias", "userId": "u", "previousId": ""},
        "missing_previous_id",
        "previousId",
    ),
    (
        "alias previousId object",
        {"type": "alias", "userId": "u", "previousId": {}},
        "invalid_field",
        "previousId",
    ),
    ("group without groupId", {"type": "group", "userId": "u"}, "missing_group_id", "groupId"),
    (
        "group groupId NUL",
        {"type": "group", "userId": "u", "groupId": "g\x00"},
        "invalid_field",
        "groupId",
    ),
    ("properties list", track(properties=[1, 2]), "invalid_field", "properties"),
    ("traits string", track(traits="vip"), "invalid_field", "traits"),
    ("context number", track(context=1), "invalid_field", "context"),
    ("integrations list", track(integrations=["All"]), "invalid_field", "integrations"),
    ("timestamp number", track(timestamp=1767225600), "invalid_timestamp", "timestamp"),
    ("timestamp garbage", track(timestamp="last tuesday"), "invalid_timestamp", "timestamp"),
    ("timestamp empty", track(timestamp=""), "invalid_timestamp", "timestamp"),
    ("timestamp 1969", track(timestamp="1969-12-31T23:59:59Z"), "invalid_timestamp", "timestamp"),
    ("timestamp 2263", track(timestamp="2263-01-01T00:00:00Z"), "invalid_timestamp", "timestamp"),
    (
        "timestamp year 1 east",
        track(timestamp="0001-01-01T00:00:00+01:00"),
        "invalid_timestamp",
        "timestamp",
    ),
    (
        "originalTimestamp bad",
        track(originalTimestamp="2026-13-01"),
        "invalid_timestamp",
        "originalTimestamp",
    ),
    ("sentAt bad", track(sentAt="2026-03-01T25:00:00Z"), "invalid_timestamp", "sentAt"),
    (
        "corrected timestamp out of range",
        track(timestamp="1971-01-01T00:00:00Z", sentAt="2200-01-01T00:00:00Z"),
        "invalid_timestamp",
        "timestamp",
    ),
]


@pytest.mark.parametrize(
    ("message", "reason", "field"),
    [case[1:] for case in REJECTED_MESSAGES],
    ids=[case[0] for case in REJECTED_MESSAGES],
)
def test_message_is_rejected_with_reason_naming_the_field(
    message: dict[str, Any], reason: str, field: str
) -> None:
    rejection = rejected(message)
    assert rejection.reason == reason
    assert field in rejection.detail.split(":")[0]
    assert rejection.raw == orjson.dumps(message)


def test_every_reason_code_is_exercised_by_the_tests() -> None:
    per_message = {case[2] for case in REJECTED_MESSAGES}
    other = {  # exercised by the request-level tests and the ones below
        "invalid_json",
        "not_an_object",
        "body_too_large",
        "batch_too_large",
        "missing_batch",
        "batch_not_a_list",
        "event_too_large",
        "type_mismatch",
        "invalid_gzip",  # the intake route (tests/api)
        "suppressed",  # the processor (tests/realtime/test_service.py)
    }
    assert per_message | other == set(REASONS)
    assert all(REASONS[code].strip() for code in REASONS)


def test_rejection_carries_message_id_when_readable() -> None:
    assert rejected(track(event=None)).message_id == "m-1"
    assert rejected(track(event=None, messageId=None)).message_id is None
    assert rejected(track(messageId="m" * 300)).message_id is None


@pytest.mark.parametrize("value", [[1, 2], "track", 3, None])
def test_non_object_message_is_rejected(value: Any) -> None:
    rejection = rejected(value)
    assert rejection.reason == "not_an_object"
    assert rejection.raw == orjson.dumps(value)


def test_message_that_cannot_be_json_is_rejected_not_raised() -> None:
    rejection = rejected({**track(), "properties": {"tags": {"a", "b"}}})
    assert rejection.reason == "invalid_json"
    assert b"tags" in rejection.raw


def test_oversized_message_is_rejected() -> None:
    message = track(properties={"pad": "x" * 200})
    rejection = rejected(message, limits=Limits(max_event_bytes=100), index=4)
    assert (rejection.reason, rejection.index, rejection.message_id) == (
        "event_too_large",
        4,
        "m-1",
    )


@pytest.mark.parametrize("kind", ["identify", "page", "screen", "group", "alias"])
def test_single_call_type_must_agree_with_endpoint(kind: str) -> None:
    body = orjson.dumps(track())  # says "track"
    rejection = parse_call(body, EventType(kind), received_at=RECEIVED)
    assert isinstance(rejection, Rejection)
    assert rejection.reason == "type_mismatch"
    assert rejection.detail.startswith("type:")
    assert f"/v1/{kind}" in rejection.detail
    assert rejection.raw == body
    assert rejection.index is None


def test_single_call_type_may_be_omitted() -> None:
    body = b'{"userId": "u1", "traits": {"email": "a@example.com"}}'
    event = parse_call(body, EventType.identify, received_at=RECEIVED)
    assert isinstance(event, Event)
    assert event.type is EventType.identify
    assert event.traits == {"email": "a@example.com"}
    assert event.raw == body


# --- accepted messages ----------------------------------------------------------------------


def test_track_is_normalised() -> None:
    message = track(
        properties={"price": 9.5},
        context={"ip": "10.0.0.1", "traits": {"plan": "pro"}},
        integrations={"All": True},
        timestamp="2026-03-01T11:59:00Z",
    )
    event = accepted(message)
    assert event.message_id == "m-1"
    assert event.type is EventType.track
    assert event.event == "Product Viewed"
    assert (event.user_id, event.anonymous_id) == ("u1", None)
    assert event.properties == {"price": 9.5}
    assert event.context == {"ip": "10.0.0.1", "traits": {"plan": "pro"}}
    assert event.traits == {}
    assert event.timestamp == datetime(2026, 3, 1, 11, 59)
    assert event.original_timestamp == datetime(2026, 3, 1, 11, 59)
    assert event.received_at == RECEIVED
    assert event.sent_at is None
    assert event.future is False
    assert event.raw == orjson.dumps(message)


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (42, "42"),
        (-7, "-7"),
        (42.0, "42"),
        (1.5, "1.5"),
        (2**63, "9223372036854775808"),
        ("0", "0"),
    ],
)
def test_numeric_ids_become_their_decimal_text(value: Any, text: str) -> None:
    event = accepted(track(userId=value, anonymousId=value))
    assert event.user_id == text
    assert event.anonymous_id == text


def test_nulls_count_as_absent() -> None:
    # what segment-analytics-python sends for a call with only a userId
    message = {
        **track(),
        "anonymousId": None,
        "properties": None,
        "context": None,
        "timestamp": None,
        "sentAt": None,
    }
    event = accepted(message)
    assert (event.anonymous_id, event.properties, event.context) == (None, {}, {})
    assert event.timestamp == RECEIVED


def test_empty_user_id_falls_back_to_anonymous_id() -> None:
    event = accepted(track(userId="", anonymousId="anon-1"))
    assert (event.user_id, event.anonymous_id) == (None, "anon-1")


def test_limits_on_ids_and_names_are_inclusive() -> None:
    event = accepted(track(userId="u" * 255, messageId="m" * 255, event="e" * 200))
    assert len(event.user_id or "") == 255


@pytest.mark.parametrize(("kind", "name"), [("page", "Home"), ("screen", "Settings")])
def test_page_and_screen_name_becomes_event(kind: str, name: str) -> None:
    event = accepted({"type": kind, "anonymousId": "a1", "name": name, "properties": {"path": "/"}})
    assert event.type is EventType(kind)
    assert event.event == name
    assert event.properties == {"path": "/"}
    assert accepted({"type": kind, "anonymousId": "a1"}).event is None


def test_alias_and_group_carry_their_ids() -> None:
    alias = accepted({"type": "alias", "userId": "u1", "previousId": 99})
    assert (alias.previous_id, alias.user_id) == ("99", "u1")
    group = accepted({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"size": 5}})
    assert (group.group_id, group.traits) == ("acme", {"size": 5})


def test_identify_keeps_traits() -> None:
    event = accepted({"type": "identify", "userId": "u1", "traits": {"email": "a@b.c"}})
    assert event.traits == {"email": "a@b.c"}
    assert event.event is None


def test_aware_received_at_is_converted_to_naive_utc() -> None:
    received = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    event = parse_message(track(), received_at=received)
    assert isinstance(event, Event)
    assert event.received_at == datetime(2026, 3, 1, 12, 0)
    assert event.received_at.tzinfo is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T10:00:00Z", datetime(2026, 3, 1, 10)),
        ("2026-03-01T10:00:00.250Z", datetime(2026, 3, 1, 10, 0, 0, 250000)),
        ("2026-03-01T12:30:00+02:30", datetime(2026, 3, 1, 10)),
        ("2026-03-01T05:00:00-05:00", datetime(2026, 3, 1, 10)),
        ("2026-03-01T10:00:00", datetime(2026, 3, 1, 10)),  # naive means UTC
        ("2026-03-01", datetime(2026, 3, 1)),
        ("1970-01-01T00:00:00Z", datetime(1970, 1, 1)),
    ],
)
def test_timestamps_become_naive_utc(text: str, expected: datetime) -> None:
    event = accepted(track(timestamp=text))
    assert event.timestamp == expected
    assert event.timestamp.tzinfo is None


# --- clock skew and the future flag -------------------------------------------------------


def test_clock_skew_is_corrected_worked_example() -> None:
    # The phone's clock runs 5 minutes fast. The user viewed a product at 11:55:00 real
    # time (the phone says 12:00:00), the app sent it 30 s later (phone: 12:00:30) and
    # segmint received it at 11:55:31 real time.
    # timestamp = receivedAt - (sentAt - originalTimestamp)
    #           = 11:55:31 - (12:00:30 - 12:00:00) = 11:55:01
    received = datetime(2026, 3, 1, 11, 55, 31)
    message = track(originalTimestamp="2026-03-01T12:00:00Z", sentAt="2026-03-01T12:00:30Z")
    event = parse_message(message, received_at=received)
    assert isinstance(event, Event)
    assert event.timestamp == datetime(2026, 3, 1, 11, 55, 1)
    assert event.original_timestamp == datetime(2026, 3, 1, 12, 0, 0)
    assert event.sent_at == datetime(2026, 3, 1, 12, 0, 30)
    assert event.future is False


def test_clock_skew_correction_across_time_zones() -> None:
    # same instants as above, written in the phone's local time (UTC+02:00)
    received = datetime(2026, 3, 1, 11, 55, 31)
    message = track(timestamp="2026-03-01T14:00:00+02:00", sentAt="2026-03-01T14:00:30+02:00")
    event = parse_message(message, received_at=received)
    assert isinstance(event, Event)
    assert event.timestamp == datetime(2026, 3, 1, 11, 55, 1)


def test_original_timestamp_wins_over_timestamp() -> None:
    # analytics.js sends originalTimestamp; a "timestamp" next to it is not the client clock
    message = track(
        timestamp="2026-03-01T09:00:00Z",
        originalTimestamp="2026-03-01T11:00:00Z",
        sentAt="2026-03-01T11:00:10Z",
    )
    event = accepted(message)
    assert event.original_timestamp == datetime(2026, 3, 1, 11)
    assert event.timestamp == RECEIVED - timedelta(seconds=10)


def test_without_sent_at_the_client_timestamp_is_used_as_is() -> None:
    event = accepted(track(timestamp="2026-03-01T08:00:00Z"))
    assert event.timestamp == datetime(2026, 3, 1, 8)


def test_without_any_timestamp_received_at_is_used() -> None:
    event = accepted(track(sentAt="2026-03-01T08:00:00Z"))
    assert event.timestamp == RECEIVED
    assert event.original_timestamp is None
    assert event.sent_at == datetime(2026, 3, 1, 8)


def test_batch_sent_at_argument_applies_when_message_has_none() -> None:
    message = track(timestamp="2026-03-01T10:00:00Z")
    event = accepted(message, batch_sent_at=datetime(2026, 3, 1, 10, 0, 20))
    assert event.timestamp == RECEIVED - timedelta(seconds=20)
    own = accepted(
        track(timestamp="2026-03-01T10:00:00Z", sentAt="2026-03-01T10:00:05Z"),
        batch_sent_at=datetime(2026, 3, 1, 10, 0, 20),
    )
    assert own.timestamp == RECEIVED - timedelta(seconds=5)


@pytest.mark.parametrize(
    ("ahead", "future"),
    [
        (timedelta(minutes=59), False),
        (timedelta(hours=1), False),
        (timedelta(hours=1, seconds=1), True),
        (timedelta(days=3), True),
    ],
)
def test_future_flag(ahead: timedelta, future: bool) -> None:
    stamp = (RECEIVED + ahead).isoformat() + "Z"
    event = accepted(track(timestamp=stamp))
    assert event.future is future
    assert event.timestamp == RECEIVED + ahead  # accepted as sent, only flagged


def test_future_flag_after_correction_and_custom_tolerance() -> None:
    # the client says it sent the message before it happened: corrected into the future
    message = track(timestamp="2026-03-01T12:10:00Z", sentAt="2026-03-01T12:00:00Z")
    event = accepted(message, limits=Limits(future_tolerance=timedelta(minutes=5)))
    assert event.timestamp == RECEIVED + timedelta(minutes=10)
    assert event.future is True
    assert accepted(message).future is False  # default tolerance: one hour


# --- generated message ids ----------------------------------------------------------------


def test_generated_message_id_is_deterministic() -> None:
    message = track(messageId=None, properties={"a": 1, "b": [1, 2]})
    first = accepted(message).message_id
    assert first.startswith("seg-")
    assert len(first) == 4 + 64
    assert accepted(dict(reversed(list(message.items())))).message_id == first  # key order
    assert accepted({**message, "messageId": None}).message_id == first
    assert accepted({**message, "messageId": ""}).message_id == first
    # a retry stamps a new sentAt: still the same message
    assert accepted({**message, "sentAt": "2026-03-01T11:59:59Z"}).message_id == first
    assert accepted(track(messageId=None, properties={"a": 2, "b": [1, 2]})).message_id != first


def test_generated_message_id_is_sha256_of_canonical_json() -> None:
    message = {"userId": "u1", "type": "identify", "traits": {"z": 1, "a": None}}
    canonical = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
    expected = "seg-" + hashlib.sha256(canonical).hexdigest()
    assert accepted(message).message_id == expected


def test_generated_message_id_is_the_same_for_single_call_and_batch() -> None:
    message = track(messageId=None)
    single = parse_call(orjson.dumps(message), EventType.track, received_at=RECEIVED)
    (in_batch,), _ = parse_batch(batch_body([message]), received_at=RECEIVED)
    assert isinstance(single, Event)
    assert single.message_id == in_batch.message_id


def test_client_message_id_is_kept() -> None:
    assert accepted(track(messageId="abc-123")).message_id == "abc-123"


# --- batches --------------------------------------------------------------------------------


def test_batch_keeps_order_and_indexes_rejections() -> None:
    items: list[Any] = [
        track(messageId="a"),
        "not an object",
        track(messageId="c", event=None),
        {"type": "identify", "userId": "u2", "messageId": "d"},
        track(messageId="e", type=None),
    ]
    events, rejections = parse_batch(batch_body(items), received_at=RECEIVED)
    assert [e.message_id for e in events] == ["a", "d"]
    assert [(r.index, r.reason, r.message_id) for r in rejections] == [
        (1, "not_an_object", None),
        (2, "missing_event_name", "c"),
        (4, "missing_type", "e"),
    ]
    assert rejections[0].raw == b'"not an object"'
    assert rejections[1].raw == orjson.dumps(items[2])
    assert events[0].raw == orjson.dumps(items[0])


def test_batch_item_over_the_event_limit_is_rejected_alone() -> None:
    big = track(messageId="big", properties={"pad": "x" * 300})
    small = track(messageId="small")
    limits = Limits(max_event_bytes=len(orjson.dumps(big)) - 1)
    events, rejections = parse_batch(batch_body([small, big]), received_at=RECEIVED, limits=limits)
    assert [e.message_id for e in events] == ["small"]
    assert [(r.index, r.reason, r.message_id) for r in rejections] == [
        (1, "event_too_large", "big")
    ]
    assert rejections[0].raw == orjson.dumps(big)


def test_empty_batch_is_fine() -> None:
    assert parse_batch(b'{"batch": []}', received_at=RECEIVED) == ([], [])


def test_batch_sent_at_applies_to_items_without_their_own() -> None:
    items = [
        track(messageId="inherits", timestamp="2026-03-01T10:00:00Z"),
        track(messageId="own", timestamp="2026-03-01T10:00:00Z", sentAt="2026-03-01T10:00:05Z"),
    ]
    body = batch_body(items, sentAt="2026-03-01T10:00:20Z")
    (inherits, own), rejections = parse_batch(body, received_at=RECEIVED)
    assert rejections == []
    assert inherits.sent_at == datetime(2026, 3, 1, 10, 0, 20)
    assert inherits.timestamp == RECEIVED - timedelta(seconds=20)
    assert own.sent_at == datetime(2026, 3, 1, 10, 0, 5)
    assert own.timestamp == RECEIVED - timedelta(seconds=5)


def test_batch_context_is_merged_with_item_context_item_wins() -> None:
    shared = {"library": {"name": "analytics-ios"}, "ip": "1.1.1.1"}
    items = [
        track(messageId="plain"),
        track(messageId="own", context={"ip": "2.2.2.2", "locale": "fr-FR"}),
    ]
    (plain, own), _ = parse_batch(batch_body(items, context=shared), received_at=RECEIVED)
    assert plain.context == shared
    assert own.context == {"library": {"name": "analytics-ios"}, "ip": "2.2.2.2", "locale": "fr-FR"}


def test_inherited_fields_are_in_raw_so_reprocessing_gives_the_same_event() -> None:
    items = [track(messageId=None, timestamp="2026-03-01T10:00:00Z")]
    body = batch_body(items, sentAt="2026-03-01T10:00:20Z", context={"ip": "1.1.1.1"})
    (event,), _ = parse_batch(body, received_at=RECEIVED)
    stored = orjson.loads(event.raw)
    assert stored["sentAt"] == "2026-03-01T10:00:20Z"
    assert stored["context"] == {"ip": "1.1.1.1"}
    assert parse_message(stored, received_at=RECEIVED) == event


def test_reprocessing_a_rejection_after_fixing_it_is_accepted() -> None:
    body = batch_body([track(event=None)], sentAt="2026-03-01T11:59:00Z")
    _, (rejection,) = parse_batch(body, received_at=RECEIVED)
    fixed = {**orjson.loads(rejection.raw), "event": "Product Viewed"}
    event = accepted(fixed)
    assert event.sent_at == datetime(2026, 3, 1, 11, 59)


def test_batch_write_key_in_body_is_ignored() -> None:
    body = batch_body([track()], writeKey="wk_123")
    events, rejections = parse_batch(body, received_at=RECEIVED)
    assert (len(events), rejections) == (1, [])


# --- a real payload from segment-analytics-python --------------------------------------------


class _Captured:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> Any:
        self.requests.append({"url": url, **kwargs})

        class _Response:
            status_code = 200

        return _Response()


@pytest.fixture
def sdk(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, _Captured]:
    """A segment-analytics-python client whose HTTP posts are captured, not sent."""
    pytest.importorskip("segment.analytics", reason="needs segment-analytics-python")
    from segment.analytics import request as sdk_request
    from segment.analytics.client import Client

    captured = _Captured()
    monkeypatch.setattr(sdk_request._session, "post", captured.post)
    client = Client("wk_test", host="http://segmint.invalid", sync_mode=True)
    return client, captured


def test_payloads_of_segment_analytics_python_are_accepted(sdk: tuple[Any, _Captured]) -> None:
    client, captured = sdk
    when = datetime(2026, 3, 1, 11, 58, 30, tzinfo=UTC)
    client.identify("user-1", {"email": "a@example.com", "plan": "pro"}, timestamp=when)
    client.track(
        "user-1",
        "Order Completed",
        {"revenue": 42.5, "products": [{"id": "p1"}]},
        context={"ip": "10.0.0.1"},
        timestamp=when,
    )
    client.track(anonymous_id=12345, event="Product Viewed", properties={"id": "p2"})
    client.page("user-1", "Docs", "Quickstart", {"url": "https://example.com/docs"})
    client.screen("user-1", name="Settings")
    client.group("user-1", "acme-inc", {"employees": 50})
    client.alias("anon-9", "user-1")

    assert len(captured.requests) == 7
    events: list[Event] = []
    for request in captured.requests:
        assert request["url"] == "http://segmint.invalid/v1/batch"
        body = request["data"].encode()
        received = datetime.now(UTC).replace(tzinfo=None)
        batch_events, rejections = parse_batch(body, received_at=received)
        assert rejections == []
        assert len(batch_events) == 1
        events.extend(batch_events)

    identify, order, viewed, page, screen, group, alias = events
    assert [e.type.value for e in events] == [
        "identify", "track", "track", "page", "screen", "group", "alias",
    ]  # fmt: skip
    assert identify.traits == {"email": "a@example.com", "plan": "pro"}
    assert identify.user_id == "user-1"
    assert identify.anonymous_id is None  # the SDK sends "anonymousId": null
    assert order.event == "Order Completed"
    assert order.properties == {"revenue": 42.5, "products": [{"id": "p1"}]}
    assert order.context["ip"] == "10.0.0.1"
    assert order.context["library"]["name"] == "analytics-python"
    assert order.original_timestamp == datetime(2026, 3, 1, 11, 58, 30)
    assert order.sent_at is not None  # the SDK stamps sentAt at send time
    # sent and received within moments on the same clock: the correction barely moves it
    assert abs(order.timestamp - datetime(2026, 3, 1, 11, 58, 30)) < timedelta(seconds=5)
    assert viewed.anonymous_id == "12345"
    assert viewed.user_id is None
    assert page.event == "Quickstart"
    assert screen.event == "Settings"
    assert group.group_id == "acme-inc"
    assert group.traits == {"employees": 50}
    assert (alias.previous_id, alias.user_id) == ("anon-9", "user-1")
    assert all(len(e.message_id) == 36 for e in events)  # the SDK's uuid4 messageIds
    assert len({e.message_id for e in events}) == 7


def test_multi_message_batch_of_segment_analytics_python(sdk: tuple[Any, _Captured]) -> None:
    from segment.analytics import request as sdk_request
    from segment.analytics.client import Client

    _, captured = sdk
    offline = Client("wk_test", send=False, sync_mode=True)
    messages = [offline.track(f"user-{i}", "Product Viewed", {"i": i})[1] for i in range(50)]
    sdk_request.post("wk_test", host="http://segmint.invalid", batch=messages)
    (request,) = captured.requests
    received = datetime.now(UTC).replace(tzinfo=None)
    events, rejections = parse_batch(request["data"].encode(), received_at=received)
    assert rejections == []
    assert [e.properties["i"] for e in events] == list(range(50))
    assert all(e.sent_at is not None for e in events)


# --- properties -----------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
_offsets = st.none() | st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
_iso = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2400, 1, 1), timezones=_offsets
).map(lambda d: d.isoformat())
_recent_iso = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=_offsets
).map(lambda d: d.isoformat())
_ids = (
    st.text(max_size=12)
    | st.text(min_size=250, max_size=260)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _json
)
_messages = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from([t.value for t in EventType]) | _json,
        "userId": _ids,
        "anonymousId": _ids,
        "messageId": _ids,
        "previousId": _ids,
        "groupId": _ids,
        "event": _ids,
        "name": _ids,
        "properties": _json,
        "traits": _json,
        "context": _json,
        "integrations": _json,
        "timestamp": _iso | _json,
        "originalTimestamp": _iso | _json,
        "sentAt": _iso | _json,
    },
)
_objects = st.dictionaries(st.text(max_size=6), _json, max_size=3)
_valid_ids = st.text(min_size=1, max_size=12) | st.integers(min_value=0, max_value=2**64 - 1)
_plausible = st.fixed_dictionaries(
    {
        "type": st.sampled_from([t.value for t in EventType]),
        "event": st.text(min_size=1, max_size=20),
        "previousId": _valid_ids,
        "groupId": _valid_ids,
        "userId": _valid_ids,
    },
    optional={
        "anonymousId": _valid_ids,
        "messageId": st.none() | st.text(max_size=20),
        "name": st.none() | st.text(max_size=10),
        "properties": _objects,
        "traits": _objects,
        "context": _objects,
        "integrations": _objects,
        "timestamp": _recent_iso,
        "originalTimestamp": _recent_iso,
        "sentAt": _recent_iso,
    },
)
_anything = st.one_of(
    _plausible,
    _plausible,
    _messages,
    st.dictionaries(st.text(max_size=10), _json, max_size=4),
    _json,
)
_received = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(message=_anything, received=_received)
def test_any_json_yields_event_or_rejection(message: Any, received: datetime) -> None:
    result = parse_message(message, received_at=received)
    assert result.raw == orjson.dumps(message)
    if isinstance(result, Rejection):
        assert result.reason in REASONS
        assert result.detail
        return
    assert isinstance(result, Event)
    assert result.user_id or result.anonymous_id
    assert result.message_id
    assert result.timestamp.tzinfo is None
    assert datetime(1970, 1, 1) <= result.timestamp < datetime(2263, 1, 1)
    assert result.future == (result.timestamp > received + timedelta(hours=1))
    for text in (result.user_id, result.anonymous_id, result.message_id, result.event):
        assert text is None or "\x00" not in text
    # what is stored parses to the same event again (reprocessing is faithful)
    assert parse_message(orjson.loads(result.raw), received_at=received) == result


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=st.lists(_anything, max_size=6),
    sent_at=st.none() | _iso,
    context=st.none() | st.dictionaries(st.text(max_size=6), _json, max_size=3),
)
def test_any_batch_accounts_for_every_item(
    items: list[Any], sent_at: str | None, context: dict[str, Any] | None
) -> None:
    body = batch_body(items, sentAt=sent_at, context=context)
    try:
        events, rejections = parse_batch(body, received_at=RECEIVED)
    except RequestRejected as e:  # only the envelope may be refused
        assert (e.code, e.status) == ("invalid_timestamp", 400)
        return
    assert len(events) + len(rejections) == len(items)
    assert all(r.index is not None and 0 <= r.index < len(items) for r in rejections)
    for event in events:
        assert event.user_id or event.anonymous_id
        assert event.timestamp.tzinfo is None


@settings(max_examples=150)
@given(body=st.binary(max_size=64) | _anything.map(orjson.dumps), kind=st.sampled_from(EventType))
def test_any_single_call_body_is_answered_without_crashing(body: bytes, kind: EventType) -> None:
    try:
        result = parse_call(body, kind, received_at=RECEIVED)
    except RequestRejected as e:
        assert (e.status, e.code) in {(400, "invalid_json"), (400, "not_an_object")}
        return
    assert result.raw == body
    if isinstance(result, Event):
        assert result.type is kind
