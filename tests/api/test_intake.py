"""The Segment tracking API: ``POST /v1/track | identify | page | screen | group | alias | batch``.

What a client relies on: every Segment call type is accepted as Segment's own SDKs
send it; the answer counts accepted, duplicate and rejected messages with a reason per
rejected one; every rejected message is kept in ``failed_events`` with its raw payload;
the size limits of DESIGN §6 answer 413; unreadable bodies answer 400 with a JSON
error; a ``messageId`` seen before is stored once; timestamps are corrected for the
client's clock skew, and far-future ones are flagged but kept.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from segmint.api import create_app
from segmint.realtime.events import EventType
from tests.api.conftest import NOW, Api, Clock, add_keys, basic_auth, iso, open_service, uid

MAX_EVENT = 32 * 1024
MAX_BODY = 500 * 1024
MAX_EVENTS = 2500


def segment_call(call: str, user: str, message_id: str) -> dict[str, Any]:
    """A message of ``call`` as the Segment HTTP API documentation shows it."""
    common: dict[str, Any] = {
        "userId": user,
        "messageId": message_id,
        "timestamp": iso(NOW - timedelta(minutes=5)),
        "context": {"ip": "203.0.113.7", "library": {"name": "analytics.js", "version": "4.1"}},
        "integrations": {"All": True},
    }
    specific: dict[str, dict[str, Any]] = {
        "track": {"event": "Product Viewed", "properties": {"product_id": "p-1", "price": 9.5}},
        "identify": {"anonymousId": f"anon-{user}", "traits": {"email": f"{user}@example.com"}},
        "page": {"name": "Home", "properties": {"path": "/", "title": "Shop"}},
        "screen": {"name": "Cart", "properties": {"variation": "blue"}},
        "group": {"groupId": f"org-{user}", "traits": {"name": "Initech", "plan": "pro"}},
        "alias": {"previousId": f"anon-old-{user}"},
    }
    return {**common, **specific[call]}


def stored(api: Api, message_id: str) -> list[tuple[Any, ...]]:
    return api.rows(
        'SELECT type, event, user_id, anonymous_id, "timestamp", sent_at, received_at '
        "FROM events WHERE message_id = ?",
        [message_id],
    )


def dead_letters(api: Api, source_key: str = "ingest") -> dict[str, tuple[str, str]]:
    """message_id or payload -> (reason, payload) of the dead letters from that key."""
    rows = api.rows(
        "SELECT message_id, reason, payload FROM failed_events WHERE source = ?",
        [f"api:{api.key_ids[source_key]}"],
    )
    return {(m if m is not None else p): (r, p) for m, r, p in rows}


def counts(response: Any) -> tuple[int, int, int]:
    body = response.json()
    return body["accepted"], body["duplicate"], body["rejected"]


def event_count(api: Api) -> int:
    return int(api.scalar("SELECT count(*) FROM events"))


def sized(message: dict[str, Any], size: int) -> dict[str, Any]:
    """``message`` padded (in properties.pad) so that its JSON is exactly ``size`` bytes."""
    padded = {**message, "properties": {**message.get("properties", {}), "pad": ""}}
    missing = size - len(orjson.dumps(padded))
    assert missing >= 0
    padded["properties"]["pad"] = "x" * missing
    assert len(orjson.dumps(padded)) == size
    return padded


# ---------------------------------------------------------------------- every call type


@pytest.mark.parametrize("call", [t.value for t in EventType])
def test_each_single_call_accepts_a_segment_payload(api: Api, call: str) -> None:
    user, message_id = uid(), uid("m")
    response = api.post(f"/v1/{call}", segment_call(call, user, message_id))

    assert response.status_code == 200, response.text
    assert response.json() == {
        "success": True,
        "accepted": 1,
        "duplicate": 0,
        "rejected": 0,
        "errors": [],
    }
    [(kind, name, user_id, _anon, timestamp, _sent, received)] = stored(api, message_id)
    assert (kind, user_id, timestamp, received) == (call, user, NOW - timedelta(minutes=5), NOW)
    expected_name = {"track": "Product Viewed", "page": "Home", "screen": "Cart"}.get(call)
    assert name == expected_name


def test_a_type_field_may_repeat_the_endpoint_but_not_contradict_it(api: Api) -> None:
    user = uid()
    same = {**segment_call("track", user, uid("m")), "type": "track"}
    other = {**segment_call("track", user, uid("m")), "type": "identify"}

    assert api.post("/v1/track", same).status_code == 200
    response = api.post("/v1/track", other)

    assert response.status_code == 400
    body = response.json()
    assert counts(response) == (0, 0, 1) and body["success"] is False
    assert body["errors"] == [
        {
            "index": None,
            "messageId": other["messageId"],
            "reason": "type_mismatch",
            "detail": body["errors"][0]["detail"],
        }
    ]
    assert "/v1/track" in body["errors"][0]["detail"]
    assert stored(api, other["messageId"]) == []


def test_batch_accepts_every_call_type(api: Api) -> None:
    user = uid()
    messages = [
        {**segment_call(call.value, user, uid("m")), "type": call.value} for call in EventType
    ]
    response = api.post("/v1/batch", {"batch": messages, "sentAt": iso(NOW)})

    assert response.status_code == 200, response.text
    assert counts(response) == (6, 0, 0) and response.json()["success"] is True
    for message in messages:
        [row] = stored(api, message["messageId"])
        assert row[0] == message["type"]


def test_batch_counts_each_message_and_dead_letters_every_rejected_one(api: Api) -> None:
    user = uid()
    good = {"type": "track", "userId": user, "event": "Signed Up", "messageId": uid("m")}
    bad: list[tuple[Any, str]] = [
        ({"type": "track", "event": "Signed Up", "messageId": uid("m")}, "missing_identity"),
        ({"type": "track", "userId": user, "messageId": uid("m")}, "missing_event_name"),
        ({"type": "purchase", "userId": user, "messageId": uid("m")}, "unknown_type"),
        ({"userId": user, "event": "x", "messageId": uid("m")}, "missing_type"),
        ({"type": "alias", "userId": user, "messageId": uid("m")}, "missing_previous_id"),
        ({"type": "group", "userId": user, "messageId": uid("m")}, "missing_group_id"),
        (
            {"type": "page", "userId": user, "timestamp": "yesterday", "messageId": uid("m")},
            "invalid_timestamp",
        ),
        (
            {
                "type": "track",
                "userId": user,
                "event": "x",
                "properties": [1],
                "messageId": uid("m"),
            },
            "invalid_field",
        ),
        ([f"not an object {user}"], "not_an_object"),
    ]
    batch = [good, *(message for message, _ in bad), good]
    response = api.post("/v1/batch", {"batch": batch})

    assert response.status_code == 200
    body = response.json()
    assert counts(response) == (1, 1, len(bad)) and body["success"] is False
    reasons = [(e["index"], e["reason"]) for e in body["errors"]]
    assert reasons == [(i, reason) for i, (_, reason) in enumerate(bad, start=1)]
    for error, (message, _) in zip(body["errors"], bad, strict=True):
        expected_id = message.get("messageId") if isinstance(message, dict) else None
        assert error["messageId"] == expected_id
        assert error["detail"]

    letters = dead_letters(api)
    for message, reason in bad:
        key = message["messageId"] if isinstance(message, dict) else orjson.dumps(message).decode()
        assert key in letters, f"{reason} not dead-lettered"
        stored_reason, payload = letters[key]
        assert stored_reason == reason
        assert orjson.loads(payload) == message
    assert len(stored(api, good["messageId"])) == 1


def test_a_rejected_single_call_is_400_and_dead_lettered(api: Api) -> None:
    body = orjson.dumps({"userId": uid(), "messageId": uid("m"), "properties": {"a": 1}})
    response = api.post("/v1/track", content=body)

    assert response.status_code == 400
    payload = response.json()
    assert payload["success"] is False and counts(response) == (0, 0, 1)
    assert payload["errors"][0]["reason"] == "missing_event_name"
    message_id = orjson.loads(body)["messageId"]
    assert dead_letters(api)[message_id] == ("missing_event_name", body.decode())


# ---------------------------------------------------------------------- limits


def test_a_single_event_of_32_kb_is_accepted_and_one_byte_more_is_413(api: Api) -> None:
    user = uid()
    at_limit = sized({"userId": user, "event": "Big", "messageId": uid("m")}, MAX_EVENT)
    over = sized({"userId": user, "event": "Big", "messageId": uid("m")}, MAX_EVENT + 1)

    assert api.post("/v1/track", content=orjson.dumps(at_limit)).status_code == 200
    response = api.post("/v1/track", content=orjson.dumps(over))

    assert response.status_code == 413
    assert response.json()["success"] is False
    assert response.json()["code"] == "event_too_large"
    assert len(stored(api, at_limit["messageId"])) == 1
    assert stored(api, over["messageId"]) == []


def test_an_oversized_message_in_a_batch_is_one_rejected_item(api: Api) -> None:
    user = uid()
    small = {"type": "track", "userId": user, "event": "Small", "messageId": uid("m")}
    big = sized({"type": "track", "userId": user, "event": "Big", "messageId": uid("m")}, 40_000)
    response = api.post("/v1/batch", {"batch": [small, big]})

    assert response.status_code == 200
    assert counts(response) == (1, 0, 1)
    assert [(e["index"], e["reason"]) for e in response.json()["errors"]] == [
        (1, "event_too_large")
    ]
    reason, payload = dead_letters(api)[big["messageId"]]
    assert reason == "event_too_large" and orjson.loads(payload) == big
    assert stored(api, big["messageId"]) == []


def test_a_batch_body_over_500_kb_is_413_and_nothing_is_kept(api: Api) -> None:
    user = uid()
    messages = [
        sized({"type": "track", "userId": user, "event": "E", "messageId": uid("m")}, 30_000)
        for _ in range(20)
    ]
    body = orjson.dumps({"batch": messages})
    assert len(body) > MAX_BODY
    before = event_count(api), api.scalar("SELECT count(*) FROM failed_events")

    response = api.post("/v1/batch", content=body)

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"
    assert (event_count(api), api.scalar("SELECT count(*) FROM failed_events")) == before


def test_a_streamed_body_without_length_is_cut_off_at_the_limit(api: Api) -> None:
    chunk = b" " * 65_536

    def body() -> Iterator[bytes]:
        yield b'{"batch": ['
        for _ in range(12):  # 768 KB of whitespace: valid JSON, over the limit
            yield chunk
        yield b"]}"

    headers = {**api.headers("ingest"), "Content-Type": "application/json"}
    response = api.client.post("/v1/batch", content=body(), headers=headers)

    assert response.status_code == 413
    assert response.json()["code"] == "body_too_large"


def test_2500_events_are_accepted_and_2501_are_413(api: Api) -> None:
    user = uid()

    def batch(n: int) -> list[dict[str, Any]]:
        return [
            {"type": "page", "userId": user, "name": "P", "messageId": f"{user}-{n}-{i}"}
            for i in range(n)
        ]

    too_many = api.post("/v1/batch", {"batch": batch(MAX_EVENTS + 1)})
    assert too_many.status_code == 413
    assert too_many.json()["code"] == "batch_too_large"
    assert api.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user]) == 0

    at_limit = api.post("/v1/batch", {"batch": batch(MAX_EVENTS)})
    assert at_limit.status_code == 200
    assert counts(at_limit) == (MAX_EVENTS, 0, 0)
    assert api.scalar("SELECT count(*) FROM events WHERE user_id = ?", [user]) == MAX_EVENTS


# ---------------------------------------------------------------------- unreadable bodies


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/v1/track", b'{"userId": "u1", "event": ', "invalid_json"),
        ("/v1/identify", b"\xff\xfe not text", "invalid_json"),
        ("/v1/page", b"", "invalid_json"),
        ("/v1/track", b'["userId", "u1"]', "not_an_object"),
        ("/v1/batch", b'{"batch": [{"type": "track"', "invalid_json"),
        ("/v1/batch", b'{"messages": []}', "missing_batch"),
        ("/v1/batch", b'{"batch": {"type": "track"}}', "batch_not_a_list"),
        ("/v1/batch", b'{"batch": [], "sentAt": "soon"}', "invalid_timestamp"),
    ],
)
def test_an_unreadable_body_is_400_with_a_json_error(
    api: Api, path: str, body: bytes, code: str
) -> None:
    response = api.post(path, content=body)

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()
    assert error["success"] is False and error["code"] == code
    assert isinstance(error["message"], str) and error["message"]


def test_a_json_body_may_start_with_a_byte_order_mark(api: Api) -> None:
    message = {"userId": uid(), "event": "BOM", "messageId": uid("m")}
    response = api.post("/v1/track", content=b"\xef\xbb\xbf" + orjson.dumps(message))

    assert response.status_code == 200
    assert len(stored(api, message["messageId"])) == 1


def post_gzip(api: Api, path: str, body: bytes) -> Any:
    headers = {
        **api.headers("ingest"),
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    return api.client.post(path, content=body, headers=headers)


def test_a_gzip_body_is_accepted(api: Api) -> None:
    messages = [{"type": "track", "userId": uid(), "event": "Zipped", "messageId": uid("m")}]
    response = post_gzip(api, "/v1/batch", gzip.compress(orjson.dumps({"batch": messages})))

    assert response.status_code == 200 and counts(response) == (1, 0, 0)
    assert len(stored(api, messages[0]["messageId"])) == 1


def test_a_body_that_is_not_gzip_is_400(api: Api) -> None:
    response = post_gzip(api, "/v1/track", b"not gzip at all")

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_gzip"


@pytest.mark.parametrize(("path", "limit"), [("/v1/track", MAX_EVENT), ("/v1/batch", MAX_BODY)])
def test_the_limits_apply_to_the_inflated_body(api: Api, path: str, limit: int) -> None:
    """A small compressed body that inflates past the limit (a gzip bomb) is refused."""
    message = {"type": "track", "userId": uid(), "event": "Bomb", "messageId": uid("m")}
    message = sized(message, limit + 1)
    body = orjson.dumps({"batch": [message]} if path.endswith("batch") else message)
    compressed = gzip.compress(body)
    assert len(compressed) < limit // 10

    response = post_gzip(api, path, compressed)

    assert response.status_code == 413
    assert stored(api, message["messageId"]) == []


def metric_samples(api: Api) -> list[tuple[str, dict[str, str], float]]:
    text = api.get("/metrics", who="admin").text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_a_malformed_body_is_counted_and_dead_lettered(fresh_api: Api) -> None:
    """DESIGN §9: oversized or malformed input gets "a clear 4xx, counted, dead-lettered"."""
    body = b'{"userId": "u1", "event": "Signed Up", '
    response = fresh_api.post("/v1/track", content=body)
    assert response.status_code == 400

    rows = fresh_api.rows("SELECT reason, payload FROM failed_events")
    assert rows == [("invalid_json", body.decode())]
    counted = [
        value
        for name, labels, value in metric_samples(fresh_api)
        if name.endswith("_total") and "invalid_json" in labels.values()
    ]
    assert sum(counted) == 1, "no metric counts the refused request"


def test_an_oversized_body_is_counted(fresh_api: Api) -> None:
    """DESIGN §9: an oversized request is refused with 413 *and counted* in /metrics."""
    big = sized({"userId": "u1", "event": "Big"}, MAX_EVENT + 100)
    assert fresh_api.post("/v1/track", content=orjson.dumps(big)).status_code == 413

    counted = [
        value
        for _name, labels, value in metric_samples(fresh_api)
        if "event_too_large" in labels.values()
    ]
    assert sum(counted) >= 1, "no metric counts the refused request"


# ---------------------------------------------------------------------- duplicates


def test_a_message_id_sent_again_later_is_a_duplicate_and_stored_once(api: Api) -> None:
    user, message_id = uid(), uid("m")
    first = {"userId": user, "event": "Order Completed", "messageId": message_id}
    retry = {**first, "properties": {"revenue": 99}}  # Segment dedupes by messageId only

    assert counts(api.post("/v1/track", first)) == (1, 0, 0)
    again = api.post("/v1/track", retry)
    assert again.status_code == 200
    assert again.json()["success"] is True
    assert counts(again) == (0, 1, 0)
    in_batch = api.post("/v1/batch", {"batch": [{**first, "type": "track"}]})
    assert counts(in_batch) == (0, 1, 0)

    rows = api.rows("SELECT properties FROM events WHERE message_id = ?", [message_id])
    assert rows == [(None,)]  # the first version is the one kept
    profile = api.get(f"/v1/profiles/{user}", who="analyst").json()
    assert profile["fields"]["order_count"] == 1


def test_the_same_message_twice_in_one_batch_is_kept_once(api: Api) -> None:
    message = {"type": "track", "userId": uid(), "event": "Twice", "messageId": uid("m")}
    response = api.post("/v1/batch", {"batch": [message, message]})

    assert counts(response) == (1, 1, 0)
    assert len(stored(api, message["messageId"])) == 1


def test_a_retry_without_message_id_is_recognised_by_its_content(api: Api) -> None:
    """Without a messageId the id is derived from the content; only sentAt may differ."""
    message = {"userId": uid(), "event": "No Id", "timestamp": iso(NOW - timedelta(minutes=3))}

    first = api.post("/v1/track", {**message, "sentAt": iso(NOW)})
    retry = api.post("/v1/track", {**message, "sentAt": iso(NOW + timedelta(seconds=30))})
    different = api.post("/v1/track", {**message, "properties": {"n": 2}})

    assert [counts(r) for r in (first, retry, different)] == [(1, 0, 0), (0, 1, 0), (1, 0, 0)]
    user_events = "SELECT count(*) FROM events WHERE user_id = ?"
    assert api.scalar(user_events, [message["userId"]]) == 2


# ---------------------------------------------------------------------- clocks


def test_clock_skew_is_corrected_in_the_stored_timestamp(api: Api) -> None:
    skew = timedelta(hours=2, minutes=7)  # the client's clock is ahead
    happened = NOW - timedelta(minutes=10)
    message_id = uid("m")
    message = {
        "userId": uid(),
        "event": "Skewed",
        "messageId": message_id,
        "timestamp": iso(happened + skew),
        "sentAt": iso(NOW + skew),
    }
    assert counts(api.post("/v1/track", message)) == (1, 0, 0)

    [(_type, _event, _user, _anon, timestamp, sent_at, received_at)] = stored(api, message_id)
    assert received_at == NOW
    assert sent_at == NOW + skew
    # timestamp = receivedAt - (sentAt - originalTimestamp)
    assert timestamp == received_at - (sent_at - (happened + skew)) == happened


def test_batch_sent_at_and_original_timestamp_are_corrected_too(api: Api) -> None:
    skew = timedelta(minutes=-45)  # the client's clock is behind
    user = uid()
    from_batch = {
        "type": "track",
        "userId": user,
        "event": "A",
        "messageId": uid("m"),
        "timestamp": iso(NOW - timedelta(minutes=20) + skew),
    }
    original = {
        "type": "track",
        "userId": user,
        "event": "B",
        "messageId": uid("m"),
        "originalTimestamp": iso(NOW - timedelta(minutes=3) + skew),
        "sentAt": iso(NOW + skew),
    }
    body = {"batch": [from_batch, original], "sentAt": iso(NOW + skew)}
    assert counts(api.post("/v1/batch", body)) == (2, 0, 0)

    assert stored(api, from_batch["messageId"])[0][4] == NOW - timedelta(minutes=20)
    assert stored(api, original["messageId"])[0][4] == NOW - timedelta(minutes=3)


def test_without_sent_at_the_client_timestamp_is_kept(api: Api) -> None:
    message_id = uid("m")
    happened = NOW - timedelta(days=3, minutes=1)
    message = {
        "userId": uid(),
        "event": "Late",
        "messageId": message_id,
        "timestamp": iso(happened),
    }
    assert counts(api.post("/v1/track", message)) == (1, 0, 0)

    assert stored(api, message_id)[0][4] == happened
    no_time = {"userId": uid(), "event": "Now", "messageId": uid("m")}
    assert counts(api.post("/v1/track", no_time)) == (1, 0, 0)
    assert stored(api, no_time["messageId"])[0][4] == NOW  # received_at


@pytest.mark.parametrize(
    ("ahead", "flagged"),
    [(timedelta(minutes=59), False), (timedelta(minutes=61), True), (timedelta(days=400), True)],
)
def test_a_far_future_timestamp_is_flagged_and_still_accepted(
    api: Api, ahead: timedelta, flagged: bool
) -> None:
    """spec.py: beyond ``realtime.future_tolerance_minutes`` (60) an event is flagged
    ``future``; it is accepted and stored with its timestamp, not dropped or clamped."""
    message_id = uid("m")
    message = {"userId": uid(), "event": "Future", "messageId": message_id}
    message["timestamp"] = iso(NOW + ahead)
    body = orjson.dumps(message)

    parsed = api.service.parse(body, EventType.track)
    assert [e.future for e in parsed.events] == [flagged]
    response = api.post("/v1/track", content=body)

    assert response.status_code == 200 and counts(response) == (1, 0, 0)
    assert stored(api, message_id)[0][4] == NOW + ahead


def test_a_flagged_future_event_does_not_stop_the_persons_triggers(fresh_api: Api) -> None:
    """One event from a client with a wrong clock (no sentAt to correct it) must not
    disable the person's triggers. Here the person's real events then arrive as they
    happen, a product view and, 10 minutes later, an abandoned cart: the seed trigger
    must fire as it does for a person without the bogus event."""
    api, clock = fresh_api, fresh_api.clock
    user, control = uid(), uid()
    bogus = {"userId": user, "event": "Clock Wrong", "timestamp": iso(NOW + timedelta(days=400))}
    assert counts(api.post("/v1/track", bogus)) == (1, 0, 0)

    for minutes, event in ((1, "Product Viewed"), (11, "abandoned_cart")):
        clock.now = NOW + timedelta(minutes=minutes)
        for person in (user, control):
            message = {"userId": person, "event": event, "timestamp": iso(clock.now)}
            assert counts(api.post("/v1/track", message)) == (1, 0, 0)

    assert api.segments_of(control) == ["At-Risk"]
    assert api.segments_of(user) == ["At-Risk"]


def test_a_timestamp_beyond_the_supported_years_is_rejected(api: Api) -> None:
    message = {"userId": uid(), "event": "Y10K", "messageId": uid("m")}
    message["timestamp"] = "9999-01-01T00:00:00Z"
    response = api.post("/v1/track", message)

    assert response.status_code == 400
    assert response.json()["errors"][0]["reason"] == "invalid_timestamp"
    assert dead_letters(api)[message["messageId"]][0] == "invalid_timestamp"


# ---------------------------------------------------------------------- the service's life


def test_events_are_accepted_again_after_the_app_restarts(project_dir: Path) -> None:
    """Two app lifespans, one after the other, over one service (a TestClient per test,
    uvicorn restarting the app): the first lifespan stops the writer when it ends, the
    second starts the service again and must accept events, as /readyz says it does."""
    service = open_service(project_dir, clock=Clock())
    try:
        keys, _ids = add_keys(service)
        auth = basic_auth(keys["ingest"])
        app = create_app(service)
        for attempt in range(2):
            with TestClient(app, raise_server_exceptions=False) as client:
                message = {"userId": "u-restart", "event": "Visit", "messageId": f"m{attempt}"}
                response = client.post("/v1/track", json=message, headers=auth)
                assert client.get("/readyz").status_code == 200
                assert response.status_code == 200, f"lifespan {attempt + 1}: {response.text}"
        assert service.wh.scalar("SELECT count(*) FROM events") == 2
    finally:
        service.close()
