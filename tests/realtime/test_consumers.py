"""Stream consumers: Redis Streams against a real redis-server, Kafka against a fake consumer.

No Kafka broker can run here, so :class:`FakeKafkaConsumer` models one: per-partition
logs, a consume position per partition, committed offsets kept by the "broker" and
shared by every consumer of the group (a new consumer after a crash resumes from them).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson
import pytest
import redis
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.errors import SegmintError, UserInputError
from segmint.realtime.consumers import (
    Backoff,
    ConsumeStats,
    KafkaConsumer,
    RedisStreamConsumer,
    make_kafka_consumer,
)
from segmint.realtime.events import IngestOutcome, Rejection
from tests.realtime.redis_server import RedisServer, redis_server_fixture

redis_server = redis_server_fixture(scope="module")

WAIT_S = 20.0  # upper bound for background loops to get somewhere; never a timing assertion


def message(message_id: str, event: str = "Product Viewed") -> bytes:
    return orjson.dumps({"type": "track", "messageId": message_id, "userId": "u1", "event": event})


class SinkDown(Exception):
    """The sink's database failed."""


class MemorySink:
    """An in-memory EventSink: stores messages once per messageId, dead-letters the rest.

    ``fail_before_commit`` / ``fail_after_commit`` make the next calls raise before
    storing anything, or after storing everything (a crash between commit and ack).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[bytes]]] = []
        self.stored: dict[str, bytes] = {}
        self.dead_letters: list[bytes] = []
        self.fail_before_commit = 0
        self.fail_after_commit = 0
        self.on_call: Callable[[Sequence[bytes]], None] | None = None

    def ingest_raw(self, payloads: Sequence[bytes], *, source: str) -> IngestOutcome:
        self.calls.append((source, list(payloads)))
        if self.on_call is not None:
            self.on_call(payloads)
        if self.fail_before_commit:
            self.fail_before_commit -= 1
            raise SinkDown("database unavailable")
        outcome = IngestOutcome()
        for index, raw in enumerate(payloads):
            try:
                body = orjson.loads(raw)
                message_id = body["messageId"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                self.dead_letters.append(raw)
                outcome.rejected.append(Rejection("invalid", "not a message", raw, index))
                continue
            if message_id in self.stored:
                outcome.duplicate += 1
            else:
                self.stored[message_id] = raw
                outcome.accepted += 1
        if self.fail_after_commit:
            self.fail_after_commit -= 1
            raise SinkDown("crashed after commit")
        return outcome


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


# -- Redis -----------------------------------------------------------------------


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
    return f"events-{uuid.uuid4().hex[:8]}"


def add(client: Any, stream: str, *payloads: bytes, field: str = "data") -> list[bytes]:
    return [client.xadd(stream, {field: payload}) for payload in payloads]


def pending(client: Any, stream: str, group: str = "g") -> int:
    return int(client.xpending(stream, group)["pending"])


def make_consumer(
    client: Any, stream: str, sink: MemorySink, **options: Any
) -> RedisStreamConsumer:
    options.setdefault("consumer", "c1")
    options.setdefault("block_ms", 0)
    return RedisStreamConsumer(client, stream, "g", sink, **options)


def test_new_group_reads_the_backlog_then_new_entries(client: Any, stream: str) -> None:
    add(client, stream, message("m1"), message("m2"), message("m3"))
    sink = MemorySink()
    consumer = make_consumer(client, stream, sink)

    assert consumer.poll_once() == 3
    add(client, stream, message("m4"))
    assert consumer.poll_once() == 1
    assert consumer.poll_once() == 0

    assert list(sink.stored) == ["m1", "m2", "m3", "m4"]
    assert {source for source, _ in sink.calls} == {f"redis:{stream}"}
    assert pending(client, stream) == 0
    assert consumer.stats.messages == 4 and consumer.stats.accepted == 4


def test_existing_group_is_reused(client: Any, stream: str) -> None:
    add(client, stream, message("m1"))
    first = make_consumer(client, stream, MemorySink())
    assert first.poll_once() == 1
    add(client, stream, message("m2"))

    sink = MemorySink()
    second = make_consumer(client, stream, sink, consumer="c2")
    assert second.poll_once() == 1  # BUSYGROUP ignored: the group's position is kept
    assert list(sink.stored) == ["m2"]


def test_entries_are_acknowledged_only_after_the_sink_returned(client: Any, stream: str) -> None:
    add(client, stream, message("m1"), message("m2"))
    sink = MemorySink()
    seen_pending: list[int] = []
    sink.on_call = lambda payloads: seen_pending.append(pending(client, stream))
    consumer = make_consumer(client, stream, sink)

    consumer.poll_once()

    assert seen_pending == [2]  # still unacknowledged while the sink was committing
    assert pending(client, stream) == 0


def test_failing_sink_leaves_entries_pending_for_the_next_poll(
    client: Any, stream: str, caplog: pytest.LogCaptureFixture
) -> None:
    add(client, stream, message("m1"), message("m2"), message("m3"))
    sink = MemorySink()
    sink.fail_before_commit = 1
    consumer = make_consumer(client, stream, sink)

    with caplog.at_level(logging.ERROR), pytest.raises(SinkDown):
        consumer.poll_once()
    assert pending(client, stream) == 3
    assert sink.stored == {}
    assert "left unacknowledged" in caplog.text

    assert consumer.poll_once() == 3  # the same entries, from this consumer's pending list
    assert list(sink.stored) == ["m1", "m2", "m3"]
    assert pending(client, stream) == 0


def test_another_consumer_takes_over_entries_of_a_dead_one(client: Any, stream: str) -> None:
    add(client, stream, message("m1"), message("m2"))
    dying_sink = MemorySink()
    dying_sink.fail_before_commit = 1
    dead = make_consumer(client, stream, dying_sink, consumer="dead")
    with pytest.raises(SinkDown):
        dead.poll_once()

    sink = MemorySink()
    patient = make_consumer(client, stream, sink, consumer="patient", claim_idle_ms=3_600_000)
    assert patient.poll_once() == 0  # not idle long enough: the owner may still be alive

    rescuer = make_consumer(client, stream, sink, consumer="rescuer", claim_idle_ms=0)
    assert rescuer.poll_once() == 2
    assert list(sink.stored) == ["m1", "m2"]
    assert pending(client, stream) == 0


def test_entries_without_the_field_are_passed_on_not_dropped(client: Any, stream: str) -> None:
    client.xadd(stream, {"payload": message("m1"), "note": "wrong field"})
    add(client, stream, b"{not json", message("m2"))
    sink = MemorySink()
    consumer = make_consumer(client, stream, sink)

    assert consumer.poll_once() == 3

    ((_, payloads),) = sink.calls
    assert orjson.loads(payloads[0]) == {"payload": message("m1").decode(), "note": "wrong field"}
    assert payloads[1] == b"{not json"
    assert sink.dead_letters == payloads[:2]
    assert consumer.stats.rejected == 2 and consumer.stats.accepted == 1
    assert pending(client, stream) == 0


def test_custom_field_and_decoded_responses(server: RedisServer, client: Any, stream: str) -> None:
    add(client, stream, message("m1"), field="json")
    sink = MemorySink()
    text_client = server.client(decode_responses=True)
    consumer = make_consumer(text_client, stream, sink, field="json")

    assert consumer.poll_once() == 1
    assert sink.stored == {"m1": message("m1")}
    text_client.close()


def test_resp3_client(server: RedisServer, client: Any, stream: str) -> None:
    add(client, stream, message("m1"), message("m2"))
    sink = MemorySink()
    resp3 = server.client(protocol=3)
    consumer = make_consumer(resp3, stream, sink)

    assert consumer.poll_once() == 2
    assert list(sink.stored) == ["m1", "m2"]
    resp3.close()


def test_commit_then_crash_counts_each_message_once(client: Any, stream: str) -> None:
    add(client, stream, message("m1"), message("m2"), message("m3"))
    sink = MemorySink()
    sink.fail_after_commit = 1  # committed, then died before XACK
    consumer = make_consumer(client, stream, sink)

    with pytest.raises(SinkDown):
        consumer.poll_once()
    assert pending(client, stream) == 3

    assert consumer.poll_once() == 3  # redelivered ...
    assert consumer.stats.duplicate == 3  # ... and recognised as duplicates
    assert list(sink.stored) == ["m1", "m2", "m3"]
    assert pending(client, stream) == 0


class FlakyAcks:
    """A Redis client whose XACK fails on chosen calls (the reply is lost)."""

    def __init__(self, client: Any, failing_calls: set[int]) -> None:
        self._client = client
        self._failing_calls = failing_calls
        self._calls = itertools.count()

    def xack(self, *args: Any) -> Any:
        if next(self._calls) in self._failing_calls:
            raise redis.ConnectionError("connection lost during XACK")
        return self._client.xack(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_failed_xack_redelivers_and_the_sink_dedupes(client: Any, stream: str) -> None:
    add(client, stream, message("m1"), message("m2"))
    sink = MemorySink()
    consumer = make_consumer(FlakyAcks(client, {0}), stream, sink)

    with pytest.raises(redis.ConnectionError):
        consumer.poll_once()
    assert consumer.poll_once() == 2
    assert consumer.stats.duplicate == 2
    assert list(sink.stored) == ["m1", "m2"]
    assert pending(client, stream) == 0


def test_entries_deleted_while_pending_are_acknowledged(client: Any, stream: str) -> None:
    ids = add(client, stream, message("m1"), message("m2"))
    sink = MemorySink()
    sink.fail_before_commit = 1
    consumer = make_consumer(client, stream, sink)
    with pytest.raises(SinkDown):
        consumer.poll_once()
    client.xdel(stream, ids[0])

    assert consumer.poll_once() == 1
    assert list(sink.stored) == ["m2"]
    assert pending(client, stream) == 0


def test_group_is_recreated_when_the_stream_vanishes(client: Any, stream: str) -> None:
    sink = MemorySink()
    consumer = make_consumer(client, stream, sink)
    add(client, stream, message("m1"))
    assert consumer.poll_once() == 1
    client.delete(stream)

    assert consumer.poll_once() == 0  # NOGROUP: recreated on the next poll
    add(client, stream, message("m2"))
    assert consumer.poll_once() == 1
    assert list(sink.stored) == ["m1", "m2"]


def test_a_key_that_is_not_a_stream_is_a_user_error(client: Any, stream: str) -> None:
    client.set(stream, "oops")
    consumer = make_consumer(client, stream, MemorySink())
    with pytest.raises(UserInputError, match="not a stream"):
        consumer.poll_once()


def test_batch_size_bounds_each_sink_call(client: Any, stream: str) -> None:
    add(client, stream, *(message(f"m{i}") for i in range(7)))
    sink = MemorySink()
    consumer = make_consumer(client, stream, sink, batch_size=3)

    counts = [consumer.poll_once() for _ in range(4)]

    assert counts == [3, 3, 1, 0]
    assert len(sink.stored) == 7


def test_default_consumer_name_is_host_and_pid(client: Any, stream: str) -> None:
    consumer = RedisStreamConsumer(client, stream, "g", MemorySink())
    assert consumer.consumer.endswith(f"-{os.getpid()}")


@pytest.mark.parametrize(
    "options",
    [{"batch_size": 0}, {"block_ms": -1}, {"claim_idle_ms": -5}, {"field": ""}],
)
def test_invalid_options_are_user_errors(options: dict[str, Any]) -> None:
    with pytest.raises(UserInputError):
        RedisStreamConsumer(redis.Redis(), "s", "g", MemorySink(), **options)


def test_run_returns_its_counts_when_stopped(client: Any, stream: str) -> None:
    add(client, stream, *(message(f"m{i}") for i in range(5)), b"junk")
    sink = MemorySink()
    stop = threading.Event()
    consumer = make_consumer(client, stream, sink, batch_size=2, block_ms=50)

    def stop_when_done(_payloads: Sequence[bytes]) -> None:
        if len(sink.calls) == 3:
            stop.set()

    sink.on_call = stop_when_done
    stats = consumer.run(stop)

    assert stats == ConsumeStats(messages=6, accepted=5, rejected=1, batches=3)
    assert pending(client, stream) == 0


def test_run_ends_promptly_in_a_thread(client: Any, stream: str) -> None:
    sink = MemorySink()
    stop = threading.Event()
    consumer = make_consumer(client, stream, sink, block_ms=50)
    results: list[ConsumeStats] = []
    worker = threading.Thread(target=lambda: results.append(consumer.run(stop)))
    worker.start()
    add(client, stream, message("m1"))
    wait_until(lambda: "m1" in sink.stored, "the consumer to store m1")
    stop.set()
    worker.join(WAIT_S)

    assert not worker.is_alive()
    assert results[0].messages == 1


def test_run_waits_out_a_redis_restart(server: RedisServer, stream: str) -> None:
    sink = MemorySink()
    stop = threading.Event()
    client = server.client()
    consumer = make_consumer(client, stream, sink, block_ms=50)
    server.stop()
    results: list[ConsumeStats] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            results.append(consumer.run(stop, backoff=Backoff(initial_s=0.01, max_s=0.05)))
        except BaseException as e:  # surfaced by the assertions below
            errors.append(e)

    worker = threading.Thread(target=work)
    worker.start()
    try:
        wait_until(lambda: consumer.stats.retries >= 2, "connection failures")
        server.start()  # empty: stream and group are created again
        add(server.client(), stream, message("m1"))
        wait_until(lambda: "m1" in sink.stored or bool(errors), "m1 after the restart")
    finally:
        stop.set()
        worker.join(WAIT_S)
        server.start()
    assert not errors
    assert results[0].retries >= 2 and results[0].accepted == 1


def test_run_gives_up_after_max_failures(server: RedisServer, stream: str) -> None:
    consumer = make_consumer(server.client(), stream, MemorySink())
    server.stop()
    try:
        with pytest.raises(SegmintError, match="gave up after 3 connection failures"):
            consumer.run(
                threading.Event(), backoff=Backoff(initial_s=0.001, max_s=0.001), max_failures=2
            )
    finally:
        server.start()


def test_sink_errors_end_run(client: Any, stream: str) -> None:
    add(client, stream, message("m1"))
    sink = MemorySink()
    sink.fail_before_commit = 1
    with pytest.raises(SinkDown):
        make_consumer(client, stream, sink).run(threading.Event())
    assert pending(client, stream) == 1


# Crash points of one poll: the sink fails before or after committing, or XACK fails.
STEPS = st.sampled_from(["ok", "ok", "before", "after", "ack"])


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    ids=st.lists(st.sampled_from([f"m{i}" for i in range(12)]), min_size=1, max_size=25),
    schedule=st.lists(STEPS, max_size=12),
    batch_size=st.integers(1, 6),
    switch_consumer=st.booleans(),
)
def test_each_message_counts_once_whatever_fails(
    server: RedisServer,
    ids: list[str],
    schedule: list[str],
    batch_size: int,
    switch_consumer: bool,
) -> None:
    """At-least-once delivery plus messageId dedupe: every message stored exactly once."""
    client = server.client()
    stream = f"prop-{uuid.uuid4().hex}"
    # Producers may resend: the stream itself may hold the same messageId twice.
    add(client, stream, *(message(i) for i in ids))
    sink = MemorySink()
    failing_acks = {n for n, step in enumerate(schedule) if step == "ack"}
    consumers = [
        make_consumer(
            FlakyAcks(client, failing_acks),
            stream,
            sink,
            consumer=name,
            batch_size=batch_size,
            claim_idle_ms=0,
        )
        for name in ("a", "b")
    ]
    steps = iter(schedule)
    for poll in range(200):
        step = next(steps, "ok")
        sink.fail_before_commit = int(step == "before")
        sink.fail_after_commit = int(step == "after")
        consumer = consumers[poll % 2 if switch_consumer else 0]
        try:
            consumer.poll_once()
        except (SinkDown, redis.ConnectionError):
            continue
        if pending(client, stream) == 0 and client.xinfo_groups(stream)[0]["lag"] == 0:
            break
    assert sorted(sink.stored) == sorted(set(ids))
    assert pending(client, stream) == 0
    client.delete(stream)
    client.close()


# -- Backoff ---------------------------------------------------------------------


@given(
    initial=st.floats(0.001, 1.0),
    ratio=st.floats(1.0, 100.0),
    factor=st.floats(1.0, 4.0),
    jitter=st.floats(0.0, 0.99),
    n=st.integers(1, 80),
)
def test_backoff_stays_within_its_bounds(
    initial: float, ratio: float, factor: float, jitter: float, n: int
) -> None:
    backoff = Backoff(initial_s=initial, max_s=initial * ratio, factor=factor, jitter=jitter)
    delays = [backoff.next_delay() for _ in range(n)]
    assert all(initial * (1 - jitter) * 0.999 <= d <= initial * ratio * 1.001 for d in delays)
    backoff.reset()
    assert backoff.next_delay() <= initial * 1.001


def test_backoff_grows_to_its_cap_without_jitter() -> None:
    backoff = Backoff(initial_s=1.0, max_s=5.0, factor=2.0, jitter=0.0)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


@pytest.mark.parametrize(
    "options", [{"initial_s": 0}, {"initial_s": 2, "max_s": 1}, {"factor": 0.5}, {"jitter": 1}]
)
def test_invalid_backoff_is_a_user_error(options: dict[str, float]) -> None:
    with pytest.raises(UserInputError):
        Backoff(**options)


# -- Kafka -----------------------------------------------------------------------


class FakeMessage:
    """Has the accessors of confluent_kafka.Message that the consumer uses."""

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        value: bytes | None,
        error: KafkaError | None = None,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._value, self._error = value, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> KafkaError | None:
        return self._error


class FakeBroker:
    """Partition logs and the group's committed offsets."""

    def __init__(self, logs: dict[tuple[str, int], list[bytes | None]]) -> None:
        self.logs = logs
        self.committed: dict[tuple[str, int], int] = {}


class FakeKafkaConsumer:
    """A consumer of one group on a FakeBroker, with confluent_kafka.Consumer's methods."""

    def __init__(self, broker: FakeBroker, journal: list[tuple[str, Any]] | None = None) -> None:
        self.broker = broker
        self.journal = journal if journal is not None else []
        self.positions: dict[tuple[str, int], int] = {}
        self.injected: list[FakeMessage] = []  # error notices delivered before the data
        self.failing_commits = 0
        self.closed = False

    def subscribe(self, topics: list[str]) -> None:
        self.journal.append(("subscribe", topics))
        for key in self.broker.logs:
            if key[0] in topics:
                self.positions[key] = self.broker.committed.get(key, 0)

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        batch, self.injected = self.injected[:num_messages], self.injected[num_messages:]
        for key in sorted(self.positions):
            log = self.broker.logs[key]
            while len(batch) < num_messages and self.positions[key] < len(log):
                offset = self.positions[key]
                batch.append(FakeMessage(key[0], key[1], offset, log[offset]))
                self.positions[key] += 1
        return batch

    def seek(self, partition: TopicPartition) -> None:
        self.journal.append(("seek", (partition.topic, partition.partition, partition.offset)))
        self.positions[(partition.topic, partition.partition)] = partition.offset

    def commit(
        self, offsets: list[TopicPartition] | None = None, asynchronous: bool = True
    ) -> list[TopicPartition]:
        assert asynchronous is False and offsets
        if self.failing_commits:
            self.failing_commits -= 1
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        committed = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        self.journal.append(("commit", committed))
        self.broker.committed.update(committed)
        return offsets

    def close(self) -> None:
        self.closed = True


class JournalSink(MemorySink):
    def __init__(self, journal: list[tuple[str, Any]]) -> None:
        super().__init__()
        self.journal = journal

    def ingest_raw(self, payloads: Sequence[bytes], *, source: str) -> IngestOutcome:
        self.journal.append(("ingest", (source, len(payloads))))
        return super().ingest_raw(payloads, source=source)


def kafka_setup(
    logs: dict[tuple[str, int], list[bytes | None]], **options: Any
) -> tuple[FakeBroker, FakeKafkaConsumer, JournalSink, KafkaConsumer, list[tuple[str, Any]]]:
    journal: list[tuple[str, Any]] = []
    broker = FakeBroker(logs)
    fake = FakeKafkaConsumer(broker, journal)
    sink = JournalSink(journal)
    topics = sorted({topic for topic, _ in logs})
    return broker, fake, sink, KafkaConsumer(fake, topics, sink, **options), journal


def test_kafka_commits_next_offsets_only_after_ingest() -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {
        ("events", 0): [message("a0"), message("a1"), message("a2")],
        ("events", 1): [message("b0"), message("b1")],
    }
    broker, _fake, sink, consumer, journal = kafka_setup(logs)

    assert consumer.poll_once() == 5

    assert journal == [
        ("subscribe", ["events"]),
        ("ingest", ("kafka:events", 5)),
        ("commit", {("events", 0): 3, ("events", 1): 2}),
    ]
    assert broker.committed == {("events", 0): 3, ("events", 1): 2}
    assert consumer.poll_once() == 0
    assert len(journal) == 3  # nothing to ingest, nothing committed


def test_kafka_partition_eof_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    _broker, fake, sink, consumer, _journal = kafka_setup({("events", 0): [message("a0")]})
    fake.injected = [FakeMessage("events", 0, -1, None, KafkaError(KafkaError._PARTITION_EOF))]

    with caplog.at_level(logging.WARNING):
        assert consumer.poll_once() == 1

    assert caplog.records == []
    assert list(sink.stored) == ["a0"]


def test_kafka_message_errors_are_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    broker, fake, sink, consumer, _journal = kafka_setup({("events", 0): [message("a0")]})
    fake.injected = [FakeMessage("events", 0, -1, None, KafkaError(KafkaError._TRANSPORT, "down"))]

    with caplog.at_level(logging.ERROR):
        assert consumer.poll_once() == 1

    assert "down" in caplog.text
    assert list(sink.stored) == ["a0"]
    assert broker.committed == {("events", 0): 1}


def test_kafka_fatal_error_raises_and_commits_nothing() -> None:
    broker, fake, sink, consumer, _journal = kafka_setup({("events", 0): [message("a0")]})
    fatal = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    fake.injected = [FakeMessage("events", 0, -1, None, fatal)]

    with pytest.raises(SegmintError, match="fatal"):
        consumer.poll_once()
    assert sink.calls == [] and broker.committed == {}


def test_kafka_sink_failure_rewinds_and_the_next_poll_redelivers() -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {
        ("events", 0): [message("a0"), message("a1")],
        ("events", 1): [message("b0")],
    }
    broker, _fake, sink, consumer, journal = kafka_setup(logs)
    sink.fail_after_commit = 1

    with pytest.raises(SinkDown):
        consumer.poll_once()
    assert broker.committed == {}
    assert ("seek", ("events", 0, 0)) in journal and ("seek", ("events", 1, 0)) in journal

    assert consumer.poll_once() == 3
    assert consumer.stats.duplicate == 3
    assert sorted(sink.stored) == ["a0", "a1", "b0"]
    assert broker.committed == {("events", 0): 2, ("events", 1): 1}


def test_kafka_crash_before_commit_redelivers_to_the_next_consumer() -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {
        ("events", 0): [message("a0"), message("a1")]
    }
    broker, _fake, sink, consumer, journal = kafka_setup(logs)
    sink.fail_after_commit = 1
    with pytest.raises(SinkDown):
        consumer.poll_once()  # the process dies here

    successor = KafkaConsumer(FakeKafkaConsumer(broker, journal), ["events"], sink)
    assert successor.poll_once() == 2
    assert successor.stats.duplicate == 2
    assert list(sink.stored) == ["a0", "a1"]
    assert broker.committed == {("events", 0): 2}


def test_kafka_failed_commit_is_covered_by_the_next(caplog: pytest.LogCaptureFixture) -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {("events", 0): [message("a0")]}
    broker, fake, sink, consumer, _journal = kafka_setup(logs)
    fake.failing_commits = 1

    with caplog.at_level(logging.WARNING):
        assert consumer.poll_once() == 1
    assert "commit failed" in caplog.text
    assert broker.committed == {}

    broker.logs[("events", 0)].append(message("a1"))
    assert consumer.poll_once() == 1
    assert broker.committed == {("events", 0): 2}


def test_kafka_one_sink_call_per_topic_and_empty_values_dead_lettered() -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {
        ("clicks", 0): [message("c0"), None],
        ("orders", 0): [message("o0")],
    }
    _broker, _fake, sink, consumer, _journal = kafka_setup(logs)

    assert consumer.poll_once() == 3

    assert sink.calls == [
        ("kafka:clicks", [message("c0"), b""]),
        ("kafka:orders", [message("o0")]),
    ]
    assert sink.dead_letters == [b""]


def test_kafka_batch_size_and_run_until_stopped() -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {
        ("events", 0): [message(f"a{i}") for i in range(5)]
    }
    broker, fake, sink, consumer, _journal = kafka_setup(logs, batch_size=2, timeout_s=0)
    stop = threading.Event()
    sink.on_call = lambda _payloads: stop.set() if len(sink.calls) == 3 else None

    stats = consumer.run(stop)

    assert [len(payloads) for _, payloads in sink.calls] == [2, 2, 1]
    assert stats.messages == 5 and broker.committed == {("events", 0): 5}
    consumer.close()
    assert fake.closed


@pytest.mark.parametrize(
    "options", [{"batch_size": 0}, {"timeout_s": -1.0}], ids=["batch_size", "timeout"]
)
def test_kafka_invalid_options_are_user_errors(options: dict[str, Any]) -> None:
    broker = FakeBroker({})
    with pytest.raises(UserInputError):
        KafkaConsumer(FakeKafkaConsumer(broker), ["events"], MemorySink(), **options)
    with pytest.raises(UserInputError):
        KafkaConsumer(FakeKafkaConsumer(broker), "events", MemorySink())


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 8), min_size=1, max_size=3),
    schedule=st.lists(st.sampled_from(["ok", "before", "after", "crash", "commit"]), max_size=10),
    batch_size=st.integers(1, 5),
)
def test_kafka_each_message_counts_once_whatever_fails(
    sizes: list[int], schedule: list[str], batch_size: int
) -> None:
    logs: dict[tuple[str, int], list[bytes | None]] = {
        ("events", p): [message(f"p{p}-{o}") for o in range(n)] for p, n in enumerate(sizes)
    }
    broker = FakeBroker(logs)
    sink = MemorySink()
    fake = FakeKafkaConsumer(broker)
    consumer = KafkaConsumer(fake, ["events"], sink, batch_size=batch_size)
    steps = iter(schedule)
    for _ in range(200):
        step = next(steps, "ok")
        if step == "crash":  # a new process resumes from the committed offsets
            fake = FakeKafkaConsumer(broker)
            consumer = KafkaConsumer(fake, ["events"], sink, batch_size=batch_size)
            continue
        sink.fail_before_commit = int(step == "before")
        sink.fail_after_commit = int(step == "after")
        fake.failing_commits = int(step == "commit")
        try:
            delivered = consumer.poll_once()
        except SinkDown:
            delivered = -1
        # Never committed past what the sink has durably stored.
        for (topic, p), offset in broker.committed.items():
            assert all(f"p{p}-{o}" in sink.stored for o in range(offset)), (topic, p, offset)
        if delivered == 0 and step == "ok":
            break
    expected = {f"p{p}-{o}" for p, n in enumerate(sizes) for o in range(n)}
    assert set(sink.stored) == expected  # nothing lost; the sink keeps one per messageId


def test_make_kafka_consumer_turns_automatic_commits_off(monkeypatch: pytest.MonkeyPatch) -> None:
    import confluent_kafka

    built: list[dict[str, Any]] = []
    monkeypatch.setattr(confluent_kafka, "Consumer", lambda config: built.append(config) or "c")

    assert make_kafka_consumer("k1:9092", "segmint", **{"session.timeout.ms": 6000}) == "c"
    assert built == [
        {
            "bootstrap.servers": "k1:9092",
            "group.id": "segmint",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
        }
    ]


@pytest.mark.parametrize("key", ["enable.auto.commit", "enable.auto.offset.store"])
def test_make_kafka_consumer_refuses_automatic_commits(key: str) -> None:
    with pytest.raises(UserInputError, match="commits Kafka offsets itself"):
        make_kafka_consumer("k1:9092", "segmint", **{key: True})


def test_make_kafka_consumer_builds_a_real_consumer() -> None:
    # No broker: librdkafka only tries to connect in the background; close at once.
    consumer = make_kafka_consumer("127.0.0.1:9", "segmint", **{"enable.auto.commit": "false"})
    consumer.close()
