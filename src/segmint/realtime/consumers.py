"""Stream consumers: feed Segment messages from Redis Streams or Kafka into the event sink.

Both consumers give the same contract, *at-least-once delivery, each event counted
once*:

1. read a batch of messages from the stream;
2. hand their raw bytes to :meth:`EventSink.ingest_raw`, which returns only after
   everything is durably committed (accepted events stored, duplicates counted,
   undecodable or invalid messages written to ``failed_events``);
3. only then acknowledge the batch (Redis ``XACK``, Kafka offset commit).

A crash between 2 and 3 makes the stream deliver the batch again; the sink drops the
repeats by ``messageId``, so every event still counts once. A sink that raises
leaves the batch unacknowledged: it is read again by the next poll.

The Redis consumer is tested against a real ``redis-server``. No Kafka broker can run
where segmint is tested, so the Kafka consumer's logic (commit only after ingest,
partition EOF ignored, message errors logged, redelivery after a failed ingest) is
tested against a fake consumer with the methods of :class:`confluent_kafka.Consumer`;
:func:`make_kafka_consumer` builds the real one but is not exercised against a broker.

``redis`` and ``confluent-kafka`` are imported only when a consumer is built.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from segmint.errors import SegmintError, UserInputError
from segmint.realtime.events import IngestOutcome

if TYPE_CHECKING:
    import redis

__all__ = [
    "Backoff",
    "ConsumeStats",
    "EventSink",
    "KafkaConsumer",
    "RedisStreamConsumer",
    "make_kafka_consumer",
    "transient_redis_errors",
]

logger = logging.getLogger(__name__)


class EventSink(Protocol):
    """Where consumers deliver messages: the real-time service's intake.

    ``ingest_raw`` receives the JSON bytes of one Segment message per payload
    (or bytes that are not valid JSON, which the sink dead-letters) and returns
    only after everything is durably committed.
    """

    def ingest_raw(self, payloads: Sequence[bytes], *, source: str) -> IngestOutcome:
        """Commit ``payloads``; return what happened to each."""
        ...


@dataclass
class ConsumeStats:
    """Counts of a consumer's work.

    Attributes
    ----------
    messages
        Messages handed to the sink and then acknowledged.
    accepted, duplicate, rejected
        What the sink reported for them.
    batches
        Calls to the sink.
    retries
        Connection failures that were waited out.

    Examples
    --------
    >>> stats = ConsumeStats()
    >>> stats.add(IngestOutcome(accepted=2, duplicate=1), 3)
    >>> (stats.messages, stats.accepted, stats.duplicate, stats.batches)
    (3, 2, 1, 1)
    """

    messages: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    batches: int = 0
    retries: int = 0

    def add(self, outcome: IngestOutcome, messages: int) -> None:
        """Count one sink call that took ``messages`` messages."""
        self.messages += messages
        self.accepted += outcome.accepted
        self.duplicate += outcome.duplicate
        self.rejected += len(outcome.rejected)
        self.batches += 1


@dataclass
class Backoff:
    """Growing, jittered, bounded waits between retries of an unreachable service.

    The n-th consecutive wait is ``min(max_s, initial_s * factor**n)``, of which a
    random fraction up to ``jitter`` is taken off, so that many clients that lost
    the same server do not come back in lock-step.

    Parameters
    ----------
    initial_s
        First wait in seconds.
    max_s
        Longest wait in seconds.
    factor
        Growth per consecutive failure.
    jitter
        Largest fraction of a wait removed at random (0 for fixed waits).

    Examples
    --------
    >>> backoff = Backoff(initial_s=0.1, max_s=0.3, jitter=0.0)
    >>> [backoff.next_delay() for _ in range(4)]
    [0.1, 0.2, 0.3, 0.3]
    >>> backoff.reset()
    >>> backoff.next_delay()
    0.1
    """

    initial_s: float = 0.1
    max_s: float = 10.0
    factor: float = 2.0
    jitter: float = 0.5
    _attempt: int = field(default=0, init=False, repr=False)
    _random: random.Random = field(default_factory=random.Random, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise UserInputError(
                f"backoff needs 0 < initial_s <= max_s, got {self.initial_s} and {self.max_s}"
            )
        if self.factor < 1:
            raise UserInputError(f"backoff factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise UserInputError(f"backoff jitter must be in [0, 1), got {self.jitter}")

    def next_delay(self) -> float:
        """The wait before the next attempt; each call counts one more failure."""
        # Bounding the exponent keeps the power finite however long the outage lasts.
        exponent = min(self._attempt, 64)
        self._attempt += 1
        delay = min(self.max_s, self.initial_s * self.factor**exponent)
        return delay * (1.0 - self.jitter * self._random.random())

    def reset(self) -> None:
        """Start again from ``initial_s`` (after a success)."""
        self._attempt = 0


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as e:  # pragma: no cover - exercised only without the package
        raise ImportError(
            "the Redis stream adapters need the 'redis' package: pip install redis"
        ) from e
    return redis


def _import_confluent_kafka() -> Any:
    try:
        import confluent_kafka
    except ImportError as e:  # pragma: no cover - exercised only without the package
        raise ImportError(
            "the Kafka consumer needs the 'confluent-kafka' package: pip install confluent-kafka"
        ) from e
    return confluent_kafka


def transient_redis_errors() -> tuple[type[Exception], ...]:
    """The Redis client errors that mean "server unreachable, try again later".

    Examples
    --------
    >>> import redis
    >>> redis.ConnectionError in transient_redis_errors()
    True
    """
    redis_module = _import_redis()
    return (redis_module.ConnectionError, redis_module.TimeoutError)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else value


def _default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _check_positive(name: str, value: int) -> None:
    if value < 1:
        raise UserInputError(f"{name} must be at least 1, got {value}")


def _wait_or_give_up(
    stop: threading.Event,
    backoff: Backoff,
    failures: int,
    max_failures: int | None,
    error: Exception,
    what: str,
) -> None:
    """Wait out one connection failure, or raise once ``max_failures`` is exceeded."""
    if max_failures is not None and failures > max_failures:
        message = f"{what}: gave up after {failures} connection failures: {error}"
        raise SegmintError(message) from error
    delay = backoff.next_delay()
    logger.warning("%s: %s (failure %d); retrying in %.2f s", what, error, failures, delay)
    stop.wait(delay)


class RedisStreamConsumer:
    """Read Segment messages from a Redis stream through a consumer group.

    Each stream entry carries one message as JSON bytes in the field ``field``.
    A poll delivers one batch to the sink and acknowledges it (``XACK``) only after
    the sink returned, so an entry is never acknowledged before it is committed.

    The group is created when missing with start id ``"0"`` (``XGROUP CREATE ...
    MKSTREAM``), so a new group reads the backlog already in the stream instead of
    only what arrives after it was created; an existing group (``BUSYGROUP``) is
    used as it is. If the stream or the group disappears (``NOGROUP``), it is
    created again on the next poll.

    Each poll takes its batch from the first of these that has entries:

    1. this consumer's own pending entries (``XREADGROUP ... 0``): delivered but
       not acknowledged, because the sink failed or the process stopped before
       ``XACK``;
    2. entries other consumers left pending for longer than ``claim_idle_ms``
       (``XAUTOCLAIM``): those consumers are presumed dead (a restarted process
       has a new default consumer name, so its old entries come back this way);
    3. new entries (``XREADGROUP ... >``), waiting up to ``block_ms`` for them.

    Parameters
    ----------
    client
        A ``redis.Redis`` client. Its own retry policy applies to each command
        first; its ``socket_timeout`` must exceed ``block_ms``.
    stream
        Stream key.
    group
        Consumer group name.
    sink
        Where messages go (see :class:`EventSink`).
    consumer
        Consumer name within the group; defaults to ``<hostname>-<pid>``. Two live
        consumers must never share a name.
    batch_size
        Most entries per poll.
    block_ms
        How long a poll waits for new entries; 0 does not wait. This bounds how
        long :meth:`run` takes to notice its stop flag.
    field
        The entry field that holds the message.
    claim_idle_ms
        Idle time after which another consumer's pending entry is taken over.

    Notes
    -----
    An entry without ``field`` is not dropped: its whole field map is serialised
    as a JSON object and handed to the sink, which rejects it as an invalid message
    into ``failed_events``. Entries deleted from the stream while pending have no
    content left; they are acknowledged and logged.

    Examples
    --------
    >>> import redis  # doctest: +SKIP
    >>> consumer = RedisStreamConsumer(redis.Redis(), "events", "segmint", sink)  # doctest: +SKIP
    >>> consumer.poll_once()  # doctest: +SKIP
    42
    """

    def __init__(
        self,
        client: redis.Redis,
        stream: str,
        group: str,
        sink: EventSink,
        *,
        consumer: str | None = None,
        batch_size: int = 500,
        block_ms: int = 1000,
        field: str = "data",
        claim_idle_ms: int = 60_000,
    ) -> None:
        _check_positive("batch_size", batch_size)
        if block_ms < 0:
            raise UserInputError(f"block_ms must not be negative, got {block_ms}")
        if claim_idle_ms < 0:
            raise UserInputError(f"claim_idle_ms must not be negative, got {claim_idle_ms}")
        if not stream or not group or not field:
            raise UserInputError("stream, group and field must be non-empty")
        self._redis = _import_redis()
        self.client = client
        self.stream = stream
        self.group = group
        self.sink = sink
        self.consumer = consumer or _default_consumer_name()
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.field = field
        self.claim_idle_ms = claim_idle_ms
        self.source = f"redis:{stream}"
        self.stats = ConsumeStats()
        self._group_ready = False
        # Until an empty read proves otherwise, this consumer may own pending entries.
        self._own_pending = True
        self._claim_cursor = "0-0"
        self._next_claim_at = 0.0

    # -- group -------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the stream and the consumer group if they do not exist yet.

        Examples
        --------
        >>> consumer.ensure_group()  # doctest: +SKIP
        """
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._redis.ResponseError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise self._refused(e) from e
        else:
            logger.info(
                "created consumer group %r on stream %r (reads the existing backlog)",
                self.group,
                self.stream,
            )
        self._group_ready = True

    def _refused(self, error: Exception) -> SegmintError:
        if str(error).startswith("WRONGTYPE"):
            return UserInputError(f"redis key is not a stream: {error}", where=self.stream)
        return SegmintError(f"redis refused a command on stream {self.stream!r}: {error}")

    # -- reading -----------------------------------------------------------------

    def _entries(self, response: Any) -> list[tuple[Any, Mapping[Any, Any]]]:
        """The entries of an XREADGROUP reply (RESP2 list or RESP3 dict) for our stream."""
        if not response:
            return []
        pairs = response.items() if isinstance(response, dict) else response
        entries: list[tuple[Any, Mapping[Any, Any]]] = []
        for _name, value in pairs:
            # RESP3 wraps each stream's entry list in one more list.
            batch = value[0] if value and isinstance(value[0], list) else value
            entries.extend(batch or [])
        return entries

    def _read(self, start: str, block: int | None) -> list[tuple[Any, Mapping[Any, Any]]]:
        response = self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.stream: start},
            count=self.batch_size,
            block=block,
        )
        return self._entries(response)

    def _claim(self) -> list[tuple[Any, Mapping[Any, Any]]]:
        now = time.monotonic()
        if self._claim_cursor == "0-0" and now < self._next_claim_at:
            return []
        reply: Any = self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._claim_cursor,
            count=self.batch_size,
        )
        cursor, claimed = reply[0], reply[1]
        deleted = reply[2] if len(reply) > 2 else []
        self._claim_cursor = _text(cursor)
        if self._claim_cursor == "0-0":
            # A full pass over the pending list is done. The next pass waits half the
            # idle time (at most 5 s): an abandoned entry is taken over at most that
            # much later than allowed, and idle consumers do not scan on every poll.
            self._next_claim_at = now + min(self.claim_idle_ms / 2000.0, 5.0)
        if deleted:
            logger.warning(
                "%d pending entries of stream %r were deleted before being processed; "
                "redis dropped them from group %r",
                len(deleted),
                self.stream,
                self.group,
            )
        entries = [(entry_id, fields) for entry_id, fields in claimed if entry_id is not None]
        if entries:
            logger.warning(
                "consumer %r took over %d entries of stream %r idle for over %d ms",
                self.consumer,
                len(entries),
                self.stream,
                self.claim_idle_ms,
            )
        return entries

    def _next_batch(self) -> list[tuple[Any, Mapping[Any, Any]]]:
        if self._own_pending:
            entries = self._read("0", None)
            if entries:
                return entries
            self._own_pending = False
        entries = self._claim()
        if entries:
            return entries
        return self._read(">", self.block_ms or None)

    def _payload(self, entry_id: Any, fields: Mapping[Any, Any]) -> bytes:
        value = fields.get(self.field.encode())
        if value is None:
            value = fields.get(self.field)
        if value is not None:
            return value.encode() if isinstance(value, str) else bytes(value)
        logger.warning(
            "entry %s of stream %r has no field %r; passing its fields on to be dead-lettered",
            _text(entry_id),
            self.stream,
            self.field,
        )
        return orjson.dumps({_text(k): _text(v) for k, v in fields.items()})

    # -- polling -----------------------------------------------------------------

    def _poll(self) -> tuple[int, IngestOutcome | None]:
        try:
            return self._deliver_batch()
        except BaseException:
            # Entries may have been delivered to this consumer and not acknowledged
            # (a lost reply, a failed sink, a failed XACK): read them back first.
            self._own_pending = True
            raise

    def _deliver_batch(self) -> tuple[int, IngestOutcome | None]:
        if not self._group_ready:
            self.ensure_group()
        try:
            entries = self._next_batch()
        except self._redis.ResponseError as e:
            if str(e).startswith("NOGROUP"):
                logger.warning(
                    "stream %r or its group %r vanished; creating them again",
                    self.stream,
                    self.group,
                )
                self._group_ready = False
                return 0, None
            raise self._refused(e) from e
        if not entries:
            return 0, None
        ids = [entry_id for entry_id, _ in entries]
        # An empty field map is an entry deleted from the stream while it was pending.
        live = [(entry_id, fields) for entry_id, fields in entries if fields]
        if len(live) < len(entries):
            logger.warning(
                "%d pending entries of stream %r were deleted before being processed; "
                "acknowledging them",
                len(entries) - len(live),
                self.stream,
            )
        outcome: IngestOutcome | None = None
        if live:
            payloads = [self._payload(entry_id, fields) for entry_id, fields in live]
            try:
                outcome = self.sink.ingest_raw(payloads, source=self.source)
            except Exception as e:
                logger.error(
                    "sink failed on %d entries of stream %r (%s .. %s), left unacknowledged: %r",
                    len(live),
                    self.stream,
                    _text(ids[0]),
                    _text(ids[-1]),
                    e,
                )
                raise
            _check_outcome(outcome, len(payloads), self.source)
        # Should XACK fail, the committed batch is read again and the sink drops it
        # as duplicates.
        self.client.xack(self.stream, self.group, *ids)
        return len(live), outcome

    def poll_once(self) -> int:
        """Deliver one batch to the sink, then acknowledge it.

        Returns
        -------
        int
            The number of entries handed to the sink (0 when there was nothing to do).

        Raises
        ------
        redis.ConnectionError, redis.TimeoutError
            Redis is unreachable; nothing was acknowledged that was not committed.
        Exception
            Whatever the sink raised; the batch stays pending and is read again.
        SegmintError
            Redis refused a command (``UserInputError`` when the key is not a stream).

        Examples
        --------
        >>> consumer.poll_once()  # doctest: +SKIP
        500
        """
        count, outcome = self._poll()
        if outcome is not None:
            self.stats.add(outcome, count)
        return count

    def run(
        self,
        stop: threading.Event,
        *,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
    ) -> ConsumeStats:
        """Poll until ``stop`` is set; wait out Redis outages.

        Parameters
        ----------
        stop
            Set it (from another thread) to end the loop after the current poll.
        backoff
            Waits between attempts while Redis is unreachable (default
            :class:`Backoff`).
        max_failures
            Give up after this many consecutive connection failures (default: never).

        Returns
        -------
        ConsumeStats
            What this run did.

        Raises
        ------
        SegmintError
            ``max_failures`` was exceeded, or Redis refused a command.
        Exception
            Whatever the sink raised (the batch stays pending).

        Examples
        --------
        >>> stop = threading.Event()  # doctest: +SKIP
        >>> stats = consumer.run(stop)  # doctest: +SKIP
        """
        backoff = backoff or Backoff()
        stats = ConsumeStats()
        transient = transient_redis_errors()
        failures = 0
        while not stop.is_set():
            try:
                count, outcome = self._poll()
            except transient as e:
                failures += 1
                stats.retries += 1
                self.stats.retries += 1
                # The server may have restarted empty: check the group again.
                self._group_ready = False
                _wait_or_give_up(
                    stop, backoff, failures, max_failures, e, f"redis stream {self.stream!r}"
                )
                continue
            if failures:
                logger.info(
                    "redis stream %r reachable again after %d failures", self.stream, failures
                )
                failures = 0
                backoff.reset()
            if outcome is not None:
                stats.add(outcome, count)
                self.stats.add(outcome, count)
        return stats


def _check_outcome(outcome: IngestOutcome, sent: int, source: str) -> None:
    counted = outcome.accepted + outcome.duplicate + len(outcome.rejected)
    if counted != sent:
        logger.warning("sink accounted for %d of %d messages from %s", counted, sent, source)


# -- Kafka -----------------------------------------------------------------------


def make_kafka_consumer(bootstrap_servers: str, group: str, **config: Any) -> Any:
    """Build a ``confluent_kafka.Consumer`` configured for :class:`KafkaConsumer`.

    Offsets are committed by :class:`KafkaConsumer` after the sink returned, never
    automatically: ``enable.auto.commit`` and ``enable.auto.offset.store`` are off.
    A group without committed offsets starts at the earliest message
    (``auto.offset.reset=earliest``), like a new Redis consumer group.

    Parameters
    ----------
    bootstrap_servers
        ``host:port[,host:port...]`` of the brokers.
    group
        Consumer group id.
    **config
        Further librdkafka settings, e.g. ``**{"security.protocol": "SSL"}``.

    Raises
    ------
    UserInputError
        ``config`` tries to turn automatic commits or offset stores back on.

    Examples
    --------
    >>> consumer = make_kafka_consumer("localhost:9092", "segmint")  # doctest: +SKIP
    >>> KafkaConsumer(consumer, ["events"], sink).run(stop)  # doctest: +SKIP
    """
    for key in ("enable.auto.commit", "enable.auto.offset.store"):
        if key in config and str(config[key]).lower() not in ("false", "0"):
            raise UserInputError(
                "segmint commits Kafka offsets itself, after the events are stored", where=key
            )
    confluent_kafka = _import_confluent_kafka()
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group,
        "auto.offset.reset": "earliest",
        **config,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
    }
    return confluent_kafka.Consumer(settings)


class KafkaConsumer:
    """Read Segment messages from Kafka topics and commit offsets after the sink returned.

    Each message value is the JSON bytes of one Segment message. A poll takes up to
    ``batch_size`` messages, hands them to the sink (one call per topic, with source
    ``kafka:<topic>``) and then commits, synchronously, the offset after the last
    message of each partition. End-of-partition notices are not errors; other
    message errors are logged and skipped; a fatal error raises.

    If the sink raises, nothing is committed and each partition of the batch is
    rewound (``seek``) to the batch's first offset, so the next poll delivers the
    batch again; the sink drops the messages it had already committed by
    ``messageId``. A failed commit is logged and not retried: commits are
    cumulative, so the next one covers it, and a restart before then redelivers
    (and dedupes) the batch. A message without a value is handed on as empty bytes,
    which the sink dead-letters.

    Parameters
    ----------
    consumer
        A ``confluent_kafka.Consumer`` made by :func:`make_kafka_consumer`, or any
        object with its ``subscribe``, ``consume``, ``commit``, ``seek`` and
        ``close`` methods.
    topics
        Topics to subscribe to (on the first poll).
    sink
        Where messages go (see :class:`EventSink`).
    batch_size
        Most messages per poll.
    timeout_s
        How long a poll waits for messages; bounds how long :meth:`run` takes to
        notice its stop flag.

    Notes
    -----
    No broker runs where segmint is tested: this class is tested against a fake
    consumer that keeps per-partition logs, positions and committed offsets.

    Examples
    --------
    >>> kafka = KafkaConsumer(make_kafka_consumer("broker:9092", "segmint"), ["events"], sink)
    ... # doctest: +SKIP
    >>> kafka.poll_once()  # doctest: +SKIP
    500
    """

    def __init__(
        self,
        consumer: Any,
        topics: Sequence[str],
        sink: EventSink,
        *,
        batch_size: int = 500,
        timeout_s: float = 1.0,
    ) -> None:
        _check_positive("batch_size", batch_size)
        if timeout_s < 0:
            raise UserInputError(f"timeout_s must not be negative, got {timeout_s}")
        if isinstance(topics, str) or not topics:
            raise UserInputError("topics must be a non-empty list of topic names")
        self._kafka = _import_confluent_kafka()
        self.consumer = consumer
        self.topics = list(topics)
        self.sink = sink
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.stats = ConsumeStats()
        self._subscribed = False

    def _ingest(self, by_topic: Mapping[str, list[bytes]]) -> IngestOutcome:
        """One sink call per topic; the outcomes summed."""
        total = IngestOutcome()
        for topic, payloads in by_topic.items():
            source = f"kafka:{topic}"
            outcome = self.sink.ingest_raw(payloads, source=source)
            _check_outcome(outcome, len(payloads), source)
            total.accepted += outcome.accepted
            total.duplicate += outcome.duplicate
            total.rejected.extend(outcome.rejected)
        return total

    def _rewind(self, first_offsets: Mapping[tuple[str, int], int]) -> None:
        for (topic, partition), offset in first_offsets.items():
            try:
                self.consumer.seek(self._kafka.TopicPartition(topic, partition, offset))
            except self._kafka.KafkaException as e:
                # The partition was revoked: its new owner resumes from the committed offset.
                logger.warning("cannot rewind %s [%d] to %d: %s", topic, partition, offset, e)

    def _commit(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        offsets = [
            self._kafka.TopicPartition(topic, partition, offset)
            for (topic, partition), offset in next_offsets.items()
        ]
        try:
            results = self.consumer.commit(offsets=offsets, asynchronous=False)
        except self._kafka.KafkaException as e:
            logger.warning("offset commit failed (the next commit covers it): %s", e)
            return
        for result in results or []:
            if getattr(result, "error", None):
                logger.warning(
                    "offset commit failed for %s [%d]: %s",
                    result.topic,
                    result.partition,
                    result.error,
                )

    def _poll(self) -> tuple[int, IngestOutcome | None]:
        if not self._subscribed:
            self.consumer.subscribe(self.topics)
            self._subscribed = True
        try:
            messages = self.consumer.consume(num_messages=self.batch_size, timeout=self.timeout_s)
        except self._kafka.KafkaException as e:
            raise SegmintError(f"kafka consume failed: {e}") from e
        by_topic: dict[str, list[bytes]] = {}
        first_offsets: dict[tuple[str, int], int] = {}
        next_offsets: dict[tuple[str, int], int] = {}
        for message in messages or []:
            error = message.error()
            if error is not None:
                if error.code() == self._kafka.KafkaError._PARTITION_EOF:
                    logger.debug("reached the end of %s [%s]", message.topic(), message.partition())
                    continue
                if error.fatal():
                    raise SegmintError(f"fatal kafka error, nothing committed: {error}")
                logger.error(
                    "kafka error on %s [%s], skipped: %s",
                    message.topic(),
                    message.partition(),
                    error,
                )
                continue
            key = (message.topic(), message.partition())
            offset = message.offset()
            first_offsets[key] = min(first_offsets.get(key, offset), offset)
            next_offsets[key] = max(next_offsets.get(key, offset + 1), offset + 1)
            value = message.value()
            if value is None:
                logger.warning("message %s [%d] @%d has no value", key[0], key[1], offset)
            payload = b"" if value is None else value.encode() if isinstance(value, str) else value
            by_topic.setdefault(key[0], []).append(bytes(payload))
        if not by_topic:
            return 0, None
        count = sum(len(payloads) for payloads in by_topic.values())
        try:
            outcome = self._ingest(by_topic)
        except Exception as e:
            logger.error("sink failed on %d kafka messages, not committed: %r", count, e)
            self._rewind(first_offsets)
            raise
        self._commit(next_offsets)
        return count, outcome

    def poll_once(self) -> int:
        """Deliver one batch to the sink, then commit its offsets.

        Returns
        -------
        int
            The number of messages handed to the sink.

        Raises
        ------
        SegmintError
            Kafka reported a fatal error (nothing of the batch is committed).
        Exception
            Whatever the sink raised; the batch is delivered again by the next poll.

        Examples
        --------
        >>> kafka.poll_once()  # doctest: +SKIP
        12
        """
        count, outcome = self._poll()
        if outcome is not None:
            self.stats.add(outcome, count)
        return count

    def run(self, stop: threading.Event) -> ConsumeStats:
        """Poll until ``stop`` is set (librdkafka reconnects to brokers by itself).

        Returns
        -------
        ConsumeStats
            What this run did.

        Examples
        --------
        >>> stats = kafka.run(stop)  # doctest: +SKIP
        """
        stats = ConsumeStats()
        while not stop.is_set():
            count, outcome = self._poll()
            if outcome is not None:
                stats.add(outcome, count)
                self.stats.add(outcome, count)
        return stats

    def close(self) -> None:
        """Leave the consumer group and close the Kafka consumer.

        Examples
        --------
        >>> kafka.close()  # doctest: +SKIP
        """
        self.consumer.close()
