"""The outbox relay against a real redis-server, with an in-memory outbox."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmint.errors import DataValidationError, SegmintError, UserInputError
from segmint.realtime.consumers import Backoff
from segmint.realtime.relay import OutboxEntry, OutboxRelay
from tests.realtime.redis_server import RedisServer, redis_server_fixture

redis_server = redis_server_fixture(scope="module")

WAIT_S = 20.0  # upper bound for background loops to get somewhere; never a timing assertion
T0 = datetime(2026, 3, 1, 12, 0, 0)


class MarkFailed(Exception):
    """The warehouse failed while marking entries published."""


class MemoryOutbox:
    """Unpublished entries come out lowest id first; marking can be made to fail."""

    def __init__(self, entries: Sequence[OutboxEntry] = ()) -> None:
        self.entries = {entry.id: entry for entry in entries}
        self.published: set[int] = set()
        self.fetches = 0
        self.failing_marks = 0

    def fetch(self, limit: int) -> list[OutboxEntry]:
        self.fetches += 1
        unpublished = sorted(i for i in self.entries if i not in self.published)
        return [self.entries[i] for i in unpublished[:limit]]

    def mark_published(self, ids: Sequence[int]) -> None:
        if self.failing_marks:
            self.failing_marks -= 1
            raise MarkFailed("warehouse unavailable")
        self.published.update(ids)

    @property
    def unpublished(self) -> list[int]:
        return sorted(set(self.entries) - self.published)


def entry(i: int, change: str = "entered", expires: bool = False) -> OutboxEntry:
    return OutboxEntry(
        id=i,
        person_id=f"p{i}",
        segment="cart_abandoners",
        change=change,
        source="trigger",
        reason="abandoned_cart: minutes_since_last_event < 30",
        at=T0 + timedelta(seconds=i),
        expires_at=T0 + timedelta(days=1) if expires else None,
    )


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    redis_server.start()  # a test may have left it stopped
    return redis_server


@pytest.fixture
def client(server: RedisServer) -> Any:
    c = server.client()
    c.flushall()
    yield c
    c.close()


@pytest.fixture
def stream() -> str:
    return f"memberships-{uuid.uuid4().hex[:8]}"


def published(client: Any, stream: str) -> list[OutboxEntry]:
    return [OutboxEntry.from_fields(fields) for _, fields in client.xrange(stream)]


def make_relay(outbox: MemoryOutbox, client: Any, stream: str, **options: Any) -> OutboxRelay:
    return OutboxRelay(outbox.fetch, outbox.mark_published, client, stream, **options)


def test_publishes_in_id_order_and_marks_published(client: Any, stream: str) -> None:
    entries = [entry(3, "exited"), entry(1, expires=True), entry(2)]
    outbox = MemoryOutbox(entries)
    # A fetch that returns rows out of order is put right by the relay.
    relay = OutboxRelay(lambda n: entries, outbox.mark_published, client, stream)

    assert relay.run_once() == 3

    assert [e.id for e in published(client, stream)] == [1, 2, 3]
    assert published(client, stream) == sorted(entries, key=lambda e: e.id)
    assert outbox.published == {1, 2, 3}


def test_stream_fields_are_plain_strings(client: Any, stream: str) -> None:
    outbox = MemoryOutbox([entry(1, expires=True), entry(2, "exited")])
    make_relay(outbox, client, stream).run_once()

    (_, first), (_, second) = client.xrange(stream)
    assert first == {
        b"id": b"1",
        b"person_id": b"p1",
        b"segment": b"cart_abandoners",
        b"change": b"entered",
        b"source": b"trigger",
        b"reason": b"abandoned_cart: minutes_since_last_event < 30",
        b"at": b"2026-03-01T12:00:01.000000Z",
        b"expires_at": b"2026-03-02T12:00:00.000000Z",
    }
    assert second[b"change"] == b"exited" and second[b"expires_at"] == b""


def test_batches_follow_one_another_until_the_outbox_is_empty(client: Any, stream: str) -> None:
    outbox = MemoryOutbox([entry(i) for i in range(1, 6)])
    relay = make_relay(outbox, client, stream, batch_size=2)

    assert [relay.run_once() for _ in range(4)] == [2, 2, 1, 0]
    assert [e.id for e in published(client, stream)] == [1, 2, 3, 4, 5]
    assert relay.published == 5


def test_failed_marking_republishes_and_readers_dedupe_by_id(client: Any, stream: str) -> None:
    outbox = MemoryOutbox([entry(1), entry(2)])
    outbox.failing_marks = 1
    relay = make_relay(outbox, client, stream)

    with pytest.raises(MarkFailed):
        relay.run_once()
    assert outbox.unpublished == [1, 2]
    assert relay.run_once() == 2

    ids = [e.id for e in published(client, stream)]
    assert ids == [1, 2, 1, 2]  # at least once ...
    assert list(dict.fromkeys(ids)) == [1, 2]  # ... and in order once deduped by id
    assert outbox.unpublished == []


def test_redis_outage_leaves_entries_unpublished(server: RedisServer, stream: str) -> None:
    import redis

    outbox = MemoryOutbox([entry(1), entry(2)])
    relay = make_relay(outbox, server.client(), stream)
    server.stop()
    try:
        with pytest.raises(redis.ConnectionError):
            relay.run_once()
        assert outbox.unpublished == [1, 2]
    finally:
        server.start()
    assert relay.run_once() == 2
    assert outbox.unpublished == []


def test_run_publishes_after_redis_comes_back(server: RedisServer, stream: str) -> None:
    outbox = MemoryOutbox([entry(i) for i in range(1, 4)])
    relay = make_relay(outbox, server.client(), stream)
    stop = threading.Event()
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(relay.run(stop, 0.01, backoff=Backoff(initial_s=0.01, max_s=0.05)))
        except BaseException as e:  # surfaced by the assertions below
            errors.append(e)

    server.stop()
    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_until(lambda: outbox.fetches >= 3 or bool(errors), "attempts during the outage")
        assert outbox.unpublished == [1, 2, 3]
        server.start()
        outbox.entries[4] = entry(4)  # a change made while the relay runs
        wait_until(lambda: not outbox.unpublished or bool(errors), "publication after restart")
    finally:
        stop.set()
        worker.join(WAIT_S)
        server.start()
    assert not errors and not worker.is_alive()
    assert results == [4]
    client = server.client()
    assert [e.id for e in published(client, stream)] == [1, 2, 3, 4]
    client.close()


def test_run_gives_up_after_max_failures(server: RedisServer, stream: str) -> None:
    outbox = MemoryOutbox([entry(1)])
    relay = make_relay(outbox, server.client(), stream)
    server.stop()
    try:
        with pytest.raises(SegmintError, match="gave up after 2 connection failures"):
            relay.run(
                threading.Event(), backoff=Backoff(initial_s=0.001, max_s=0.001), max_failures=1
            )
    finally:
        server.start()
    assert outbox.unpublished == [1]


def test_run_stops_when_the_flag_is_set(client: Any, stream: str) -> None:
    stop = threading.Event()
    outbox = MemoryOutbox([entry(1)])

    def fetch(limit: int) -> list[OutboxEntry]:
        if outbox.fetches == 1:  # the second look finds nothing new: stop there
            stop.set()
        return outbox.fetch(limit)

    relay = OutboxRelay(fetch, outbox.mark_published, client, stream)
    assert relay.run(stop, 0.01) == 1
    assert outbox.fetches == 2


def test_maxlen_trims_the_stream_approximately(client: Any, stream: str) -> None:
    outbox = MemoryOutbox([entry(i) for i in range(1, 1001)])
    make_relay(outbox, client, stream, batch_size=1000, maxlen=10).run_once()
    trimmed = client.xlen(stream)

    other = f"{stream}-untrimmed"
    untrimmed = MemoryOutbox([entry(i) for i in range(1, 1001)])
    make_relay(untrimmed, client, other, batch_size=1000, maxlen=None).run_once()

    assert 10 <= trimmed < 1000
    assert client.xlen(other) == 1000
    assert published(client, stream)[-1].id == 1000  # trimming drops the oldest


def test_a_key_that_is_not_a_stream_is_a_user_error(client: Any, stream: str) -> None:
    client.set(stream, "oops")
    outbox = MemoryOutbox([entry(1)])
    with pytest.raises(UserInputError, match="not a stream"):
        make_relay(outbox, client, stream).run_once()
    assert outbox.unpublished == [1]


@pytest.mark.parametrize("options", [{"batch_size": 0}, {"maxlen": 0}, {"stream": ""}])
def test_invalid_options_are_user_errors(client: Any, options: dict[str, Any]) -> None:
    outbox = MemoryOutbox()
    settings = {"stream": "s", **options}
    stream = settings.pop("stream")
    with pytest.raises(UserInputError):
        make_relay(outbox, client, stream, **settings)


# -- the message format ----------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
NAIVE = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1))
ENTRIES = st.builds(
    OutboxEntry,
    id=st.integers(1, 2**63 - 1),
    person_id=TEXT,
    segment=TEXT,
    change=st.sampled_from(["entered", "exited"]),
    source=TEXT,
    reason=TEXT,
    at=NAIVE,
    expires_at=st.none() | NAIVE,
)


@given(ENTRIES)
def test_fields_round_trip(original: OutboxEntry) -> None:
    fields = original.to_fields()
    assert all(isinstance(v, str) for v in fields.values())
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}
    assert OutboxEntry.from_fields(fields) == original
    assert OutboxEntry.from_fields(as_bytes) == original


@given(NAIVE, st.integers(-12 * 60, 14 * 60))
def test_aware_times_are_published_in_utc(moment: datetime, offset_minutes: int) -> None:
    zone = timezone(timedelta(minutes=offset_minutes))
    aware = moment.replace(tzinfo=UTC).astimezone(zone)
    e = OutboxEntry(1, "p", "s", "entered", "rule", "r", aware, None)
    assert e.to_fields()["at"] == moment.isoformat(timespec="microseconds") + "Z"
    assert OutboxEntry.from_fields(e.to_fields()).at == moment


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": "x"}, "not an integer"),
        ({"change": "joined"}, "must be one of"),
        ({"at": "yesterday"}, "not an ISO-8601 time"),
        ({"expires_at": "soon"}, "not an ISO-8601 time"),
    ],
)
def test_malformed_fields_are_rejected(change: dict[str, str], message: str) -> None:
    fields = {**entry(1).to_fields(), **change}
    with pytest.raises(DataValidationError, match=message):
        OutboxEntry.from_fields(fields)


def test_missing_fields_are_rejected() -> None:
    fields = entry(1).to_fields()
    del fields["reason"]
    with pytest.raises(DataValidationError, match="reason"):
        OutboxEntry.from_fields(fields)
