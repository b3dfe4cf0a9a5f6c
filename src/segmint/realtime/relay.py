"""The outbox relay: publish membership changes from the outbox to a Redis stream.

The processor writes each membership change (a person entered or exited a segment,
and why) to the outbox in the same transaction as the change itself. The relay
reads unpublished outbox rows in ``id`` order, appends them to a Redis stream and
then marks them published.

Delivery is at least once: a crash or an outage between the ``XADD`` and the
marking publishes the same rows again later, so readers of the stream must drop
repeats by the ``id`` field (the outbox row id, unique and increasing). While Redis
is unreachable the rows simply stay unpublished; :meth:`OutboxRelay.run` retries
with backoff and publishes them once Redis is back.

Stream fields (all strings): ``id``, ``person_id``, ``segment``, ``change``
(``entered`` or ``exited``), ``source``, ``reason``, ``at`` and ``expires_at``
(ISO-8601 in UTC with a ``Z`` suffix; ``expires_at`` is empty when the membership
does not expire). :meth:`OutboxEntry.from_fields` reads them back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from segmint.errors import DataValidationError, SegmintError, UserInputError
from segmint.realtime.consumers import Backoff, _import_redis, transient_redis_errors

if TYPE_CHECKING:
    import redis

__all__ = ["CHANGES", "OutboxEntry", "OutboxRelay"]

logger = logging.getLogger(__name__)

#: The values of :attr:`OutboxEntry.change`.
CHANGES = ("entered", "exited")

_FIELDS = ("id", "person_id", "segment", "change", "source", "reason", "at", "expires_at")


def _iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``; naive datetimes are taken as UTC (warehouse convention)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def _parse_utc(text: str, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as e:
        raise DataValidationError(f"not an ISO-8601 time: {text!r}", where=name) from e
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


@dataclass(frozen=True)
class OutboxEntry:
    """One membership change waiting in (or read back from) the outbox.

    Attributes
    ----------
    id
        Outbox row id: unique, increasing in commit order; readers dedupe by it.
    person_id
        The person whose membership changed.
    segment
        The segment's name.
    change
        ``"entered"`` or ``"exited"``.
    source
        What decided it (e.g. ``"trigger"``, ``"rule"``, ``"ttl"``, ``"batch"``).
    reason
        Why, in words or as the rule that matched.
    at
        When the change happened (naive UTC).
    expires_at
        When an ``entered`` membership lapses, if it has a time-to-live.

    Examples
    --------
    >>> e = OutboxEntry(7, "p1", "cart_abandoners", "entered", "trigger",
    ...                 "abandoned_cart", datetime(2026, 1, 2, 3, 4, 5), None)
    >>> e.to_fields()["at"]
    '2026-01-02T03:04:05.000000Z'
    >>> OutboxEntry.from_fields(e.to_fields()) == e
    True
    """

    id: int
    person_id: str
    segment: str
    change: str
    source: str
    reason: str
    at: datetime
    expires_at: datetime | None

    def to_fields(self) -> dict[str, str]:
        """The entry as Redis stream fields (see the module docstring).

        Examples
        --------
        >>> OutboxEntry(1, "p", "s", "exited", "ttl", "expired",
        ...             datetime(2026, 1, 1), None).to_fields()["expires_at"]
        ''
        """
        return {
            "id": str(self.id),
            "person_id": self.person_id,
            "segment": self.segment,
            "change": self.change,
            "source": self.source,
            "reason": self.reason,
            "at": _iso_utc(self.at),
            "expires_at": "" if self.expires_at is None else _iso_utc(self.expires_at),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes] | Mapping[str, str]) -> OutboxEntry:
        """Read an entry back from stream fields (bytes or str keys and values).

        Raises
        ------
        DataValidationError
            A field is missing or malformed.

        Examples
        --------
        >>> OutboxEntry.from_fields({b"id": b"3", b"person_id": b"p", b"segment": b"vip",
        ...     b"change": b"entered", b"source": b"rule", b"reason": b"monetary >= 500",
        ...     b"at": b"2026-01-01T00:00:00.000000Z", b"expires_at": b""}).segment
        'vip'
        """
        text: dict[str, str] = {}
        try:
            for key, value in fields.items():
                k = key.decode() if isinstance(key, bytes) else key
                text[k] = value.decode() if isinstance(value, bytes) else value
        except UnicodeDecodeError as e:
            raise DataValidationError(f"outbox message is not UTF-8: {e}") from e
        missing = [name for name in _FIELDS if name not in text]
        if missing:
            raise DataValidationError(f"outbox message lacks fields {missing}")
        try:
            entry_id = int(text["id"])
        except ValueError as e:
            raise DataValidationError(f"not an integer: {text['id']!r}", where="id") from e
        if text["change"] not in CHANGES:
            raise DataValidationError(
                f"must be one of {list(CHANGES)}, got {text['change']!r}", where="change"
            )
        return cls(
            id=entry_id,
            person_id=text["person_id"],
            segment=text["segment"],
            change=text["change"],
            source=text["source"],
            reason=text["reason"],
            at=_parse_utc(text["at"], "at"),
            expires_at=_parse_utc(text["expires_at"], "expires_at") if text["expires_at"] else None,
        )


class OutboxRelay:
    """Publish outbox entries to a Redis stream, at least once, in ``id`` order.

    Parameters
    ----------
    fetch
        ``fetch(limit)`` returns up to ``limit`` unpublished entries, lowest ``id``
        first (the relay sorts them again to be safe).
    mark_published
        ``mark_published(ids)`` records that those entries are on the stream; it is
        called only after every ``XADD`` of the batch succeeded.
    client
        A ``redis.Redis`` client.
    stream
        The stream key membership changes go to.
    batch_size
        Most entries per round.
    maxlen
        Keep the stream at about this many entries (``XADD ... MAXLEN ~``); ``None``
        never trims. Trimming is approximate, so slightly more may remain.

    Examples
    --------
    >>> relay = OutboxRelay(outbox.fetch_unpublished, outbox.mark_published,
    ...                     redis.Redis(), "segmint:memberships")  # doctest: +SKIP
    >>> relay.run_once()  # doctest: +SKIP
    3
    """

    def __init__(
        self,
        fetch: Callable[[int], Sequence[OutboxEntry]],
        mark_published: Callable[[Sequence[int]], None],
        client: redis.Redis,
        stream: str,
        *,
        batch_size: int = 500,
        maxlen: int | None = 1_000_000,
    ) -> None:
        if batch_size < 1:
            raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
        if maxlen is not None and maxlen < 1:
            raise UserInputError(f"maxlen must be at least 1 or None, got {maxlen}")
        if not stream:
            raise UserInputError("stream must be non-empty")
        self._redis = _import_redis()
        self.fetch = fetch
        self.mark_published = mark_published
        self.client = client
        self.stream = stream
        self.batch_size = batch_size
        self.maxlen = maxlen
        self.published = 0

    def run_once(self) -> int:
        """Publish one batch of unpublished entries, then mark them published.

        Returns
        -------
        int
            The number of entries published.

        Raises
        ------
        redis.ConnectionError, redis.TimeoutError
            Redis is unreachable; the batch stays unpublished.
        SegmintError
            Redis refused an ``XADD`` (``UserInputError`` when the key is not a stream).

        Examples
        --------
        >>> relay.run_once()  # doctest: +SKIP
        0
        """
        entries = sorted(self.fetch(self.batch_size), key=lambda entry: entry.id)
        if not entries:
            return 0
        pipe: Any = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xadd(
                self.stream,
                entry.to_fields(),
                maxlen=self.maxlen,
                approximate=True,
            )
        try:
            pipe.execute()
        except self._redis.ResponseError as e:
            if "WRONGTYPE" in str(e):
                raise UserInputError(f"redis key is not a stream: {e}", where=self.stream) from e
            raise SegmintError(f"redis refused to publish to {self.stream!r}: {e}") from e
        ids = [entry.id for entry in entries]
        # A crash here republishes the batch later: readers dedupe by ``id``.
        self.mark_published(ids)
        self.published += len(ids)
        logger.debug("published outbox entries %d..%d to %r", ids[0], ids[-1], self.stream)
        return len(ids)

    def run(
        self,
        stop: threading.Event,
        interval_s: float = 0.05,
        *,
        backoff: Backoff | None = None,
        max_failures: int | None = None,
    ) -> int:
        """Publish until ``stop`` is set; wait out Redis outages.

        A full batch is followed at once by the next; otherwise the relay waits
        ``interval_s`` before looking again.

        Parameters
        ----------
        stop
            Set it (from another thread) to end the loop.
        interval_s
            Pause when the outbox had less than a full batch.
        backoff
            Waits while Redis is unreachable (default :class:`Backoff`).
        max_failures
            Give up after this many consecutive connection failures (default: never).

        Returns
        -------
        int
            Entries published by this run.

        Raises
        ------
        SegmintError
            ``max_failures`` was exceeded, or Redis refused a command.

        Examples
        --------
        >>> relay.run(stop)  # doctest: +SKIP
        """
        if interval_s < 0:
            raise UserInputError(f"interval_s must not be negative, got {interval_s}")
        backoff = backoff or Backoff()
        transient = transient_redis_errors()
        published = 0
        failures = 0
        while not stop.is_set():
            try:
                count = self.run_once()
            except transient as e:
                failures += 1
                if max_failures is not None and failures > max_failures:
                    message = f"outbox relay gave up after {failures} connection failures: {e}"
                    raise SegmintError(message) from e
                delay = backoff.next_delay()
                logger.warning(
                    "outbox relay cannot reach redis (%s, failure %d); entries stay "
                    "unpublished; retrying in %.2f s",
                    e,
                    failures,
                    delay,
                )
                stop.wait(delay)
                continue
            if failures:
                logger.info("outbox relay reached redis again after %d failures", failures)
                failures = 0
                backoff.reset()
            published += count
            if count < self.batch_size:
                stop.wait(interval_s)
        return published
