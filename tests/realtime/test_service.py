"""The real-time service end to end, without HTTP: timers, TTLs, the outbox, identity, erasure.

Every service here gets a :class:`Clock`: "now" only moves when a test moves it, so
absence timers and TTLs fire exactly when a test says. The writer thread reads the
clock at the start of each background tick; :meth:`Clock.settle` waits until it has
done so a few times after the last change, which proves that whole ticks ran at the
new time (used before asserting that something did *not* happen). Positive outcomes
are polled with a bounded wait; no test asserts on elapsed time.
"""

from __future__ import annotations

import itertools
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segmint.config import parse_project
from segmint.data.privacy.suppression import add_to_suppression
from segmint.engine import Warehouse
from segmint.errors import EngineError
from segmint.realtime.events import IngestOutcome
from segmint.realtime.rescoring import ModelScore
from segmint.realtime.service import RealtimeService, ReprocessResult
from tests.realtime.redis_server import RedisServer, redis_server_fixture

redis_server = redis_server_fixture(scope="module")

PROJECT_YAML = textwrap.dedent(
    """\
    warehouse: ./segmint.duckdb
    triggers:
      - name: cart_abandoned_fast
        on: [abandoned_cart]
        when: minutes_since_last_event < 30
        then: {enter: At-Risk, ttl_minutes: 1440}
      - name: checkout_abandoned
        on: [Checkout Started]
        unless: {event: Order Completed, within_minutes: 30}
        then: {enter: Checkout Abandoners, ttl_minutes: 60}
    """
)

T0 = datetime(2026, 11, 23, 12, 0)
ABANDONERS = "Checkout Abandoners"
AT_RISK = "At-Risk"
#: Upper bound for the writer's background work to get somewhere (a hang, never a timing).
WAIT_S = 20.0
#: Writer-thread clock reads after a change that prove whole ticks ran at the new time.
SETTLE_READS = 3

_ids = itertools.count()


# ---------------------------------------------------------------------- helpers


class Clock:
    """A settable "now" (naive UTC) that counts the reads of other threads (the writer)."""

    def __init__(self, now: datetime = T0) -> None:
        self._now = now
        self._lock = threading.Lock()
        self._owner = threading.get_ident()
        self._background_reads = 0
        self._reads_at_change = 0

    def __call__(self) -> datetime:
        with self._lock:
            if threading.get_ident() != self._owner:
                self._background_reads += 1
            return self._now

    @property
    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, now: datetime) -> datetime:
        with self._lock:
            self._now = now
            self._reads_at_change = self._background_reads
        return now

    def advance(self, **delta: float) -> datetime:
        return self.set(self.now + timedelta(**delta))

    def settle(self) -> None:
        """Wait until the writer read the current time in several ticks since the last change.

        Each background tick reads the clock once, at its start, and the writer is one
        thread: after three reads at least two ticks ran (and finished) at this time.
        """
        with self._lock:
            target = self._reads_at_change + SETTLE_READS
        wait_until(lambda: self._background_reads >= target, "the writer's background ticks")


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition``; fail after :data:`WAIT_S` (a hang, not a timing)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def message(
    call: str = "track",
    *,
    at: datetime,
    user: str | None = None,
    anonymous: str | None = None,
    event: str | None = None,
    message_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A Segment message (a fresh messageId unless given)."""
    body: dict[str, Any] = {
        "type": call,
        "messageId": message_id or f"m-{next(_ids)}-{uuid.uuid4().hex[:8]}",
        "timestamp": iso(at),
    }
    if user is not None:
        body["userId"] = user
    if anonymous is not None:
        body["anonymousId"] = anonymous
    if event is not None:
        body["event"] = event
    body.update(extra)
    return body


def send(service: RealtimeService, *messages: dict[str, Any]) -> IngestOutcome:
    """Commit messages as one stream read (blocks until durably committed)."""
    return service.ingest_raw([orjson.dumps(m) for m in messages], source="test")


def rows(service: RealtimeService, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Read the service's warehouse once every acknowledged event is written to it."""
    service.flush()
    return [tuple(r) for r in service.wh.fetchall(sql, list(params))]


def segments_of(service: RealtimeService, identifier: str) -> list[str]:
    held = service.memberships_of(identifier)
    return [] if held is None else [m.segment for m in held]


def person(service: RealtimeService, identifier: str) -> str:
    found = service.person_of(identifier)
    assert found is not None, f"no person for {identifier!r}"
    return found


def outbox_of(service: RealtimeService, person_id: str) -> list[tuple[Any, ...]]:
    return rows(
        service,
        'SELECT segment, change, source, "at", expires_at FROM membership_outbox '
        "WHERE person_id = ? ORDER BY id",
        [person_id],
    )


def table_memberships(service: RealtimeService) -> set[tuple[str, str]]:
    return set(rows(service, "SELECT person_id, segment FROM memberships"))


def replayed_outbox(service: RealtimeService) -> set[tuple[str, str]]:
    """Who is in which segment according to the outbox alone (checks its consistency)."""
    members: set[tuple[str, str]] = set()
    ids = []
    for outbox_id, person_id, segment, change in rows(
        service, "SELECT id, person_id, segment, change FROM membership_outbox ORDER BY id"
    ):
        ids.append(outbox_id)
        key = (person_id, segment)
        if change == "entered":
            assert key not in members, f"outbox {outbox_id}: entered twice without an exit {key}"
            members.add(key)
        else:
            assert change == "exited", change
            assert key in members, f"outbox {outbox_id}: exited without having entered {key}"
            members.discard(key)
    assert ids == list(range(1, len(ids) + 1)), "outbox ids are not 1..n in commit order"
    return members


def write_project(directory: Path, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "segmint.yaml").write_text(PROJECT_YAML + extra, encoding="utf-8")
    return directory


@pytest.fixture
def project_dir(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


@contextmanager
def running(directory: Path, clock: Clock) -> Iterator[RealtimeService]:
    """The project's service, started, closed afterwards (warehouse included)."""
    service = RealtimeService.open(directory, clock=clock)
    try:
        yield service.start()
    finally:
        service.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(project_dir: Path, clock: Clock) -> Iterator[RealtimeService]:
    with running(project_dir, clock) as started:
        yield started


# ---------------------------------------------------------------------- absence triggers


def test_absence_trigger_fires_when_the_window_passes(
    service: RealtimeService, clock: Clock
) -> None:
    assert send(service, message(at=T0, user="u1", event="Checkout Started")).accepted == 1
    p = person(service, "u1")
    timer = service.processor.trigger_state.timer(p, "checkout_abandoned")
    assert timer is not None and timer.due_at == T0 + timedelta(minutes=30)

    clock.set(T0 + timedelta(minutes=29))
    clock.settle()
    assert segments_of(service, "u1") == []

    clock.set(T0 + timedelta(minutes=30))
    wait_until(lambda: segments_of(service, "u1") == [ABANDONERS], "the absence trigger")
    (membership,) = service.memberships_of("u1") or []
    assert membership.source == "trigger" and membership.source_name == "checkout_abandoned"
    assert membership.since == T0 + timedelta(minutes=30)
    assert membership.expires_at == T0 + timedelta(minutes=90)
    assert (
        membership.reason
        == "Checkout Started at 2026-11-23 12:00 and no Order Completed within 30 min"
    )
    assert rows(
        service, "SELECT segment, since, expires_at FROM memberships WHERE person_id = ?", [p]
    ) == [(ABANDONERS, T0 + timedelta(minutes=30), T0 + timedelta(minutes=90))]
    assert outbox_of(service, p) == [
        (ABANDONERS, "entered", "trigger", T0 + timedelta(minutes=30), T0 + timedelta(minutes=90))
    ]
    assert rows(service, "SELECT count(*) FROM trigger_timers") == [(0,)]


def test_absence_trigger_does_not_fire_when_the_awaited_event_arrives(
    service: RealtimeService, clock: Clock
) -> None:
    send(service, message(at=T0, user="u1", event="Checkout Started"))
    p = person(service, "u1")
    clock.set(T0 + timedelta(minutes=20))
    send(service, message(at=clock.now, user="u1", event="Order Completed"))
    assert service.processor.trigger_state.timer(p, "checkout_abandoned") is None
    assert rows(service, "SELECT count(*) FROM trigger_timers") == [(0,)]

    clock.set(T0 + timedelta(minutes=45))
    clock.settle()
    assert segments_of(service, "u1") == []
    assert outbox_of(service, p) == []
    assert rows(service, "SELECT count(*) FROM memberships") == [(0,)]


def test_ttl_expiry_removes_the_membership_in_the_background(
    service: RealtimeService, clock: Clock
) -> None:
    send(service, message(at=T0, user="u1", event="Checkout Started"))
    p = person(service, "u1")
    clock.set(T0 + timedelta(minutes=30))
    wait_until(lambda: bool(rows(service, "SELECT 1 FROM memberships")), "the membership")
    expires = T0 + timedelta(minutes=90)

    clock.set(expires - timedelta(minutes=1))
    clock.settle()
    assert rows(service, "SELECT person_id, segment FROM memberships") == [(p, ABANDONERS)]

    clock.set(expires)
    wait_until(lambda: not rows(service, "SELECT 1 FROM memberships"), "the expiry")
    assert segments_of(service, "u1") == []
    assert outbox_of(service, p) == [
        (ABANDONERS, "entered", "trigger", T0 + timedelta(minutes=30), expires),
        (ABANDONERS, "exited", "expiry", expires, None),
    ]
    (reason,) = rows(service, "SELECT reason FROM membership_outbox WHERE change = 'exited'")
    assert reason[0].startswith("expired at")


# ---------------------------------------------------------------------- the outbox


def test_every_membership_change_has_one_outbox_row(service: RealtimeService, clock: Clock) -> None:
    """Enters, TTL refreshes, timers and expiries: the outbox replays to the table."""
    for user in ("u1", "u2", "u3"):
        send(service, message(at=T0 - timedelta(minutes=5), user=user, event="Product Viewed"))
    send(
        service,
        message(at=T0, user="u1", event="abandoned_cart"),  # enters At-Risk
        message(at=T0, user="u2", event="abandoned_cart"),  # enters At-Risk
        message(at=T0, user="u1", event="Checkout Started"),
        message(at=T0, user="u3", event="Checkout Started"),
    )
    clock.set(T0 + timedelta(minutes=10))
    send(
        service,
        message(at=clock.now, user="u1", event="abandoned_cart"),  # a TTL refresh, no change
        message(at=clock.now, user="u3", event="Order Completed"),  # cancels u3's timer
    )
    assert replayed_outbox(service) == table_memberships(service)
    clock.set(T0 + timedelta(minutes=30))  # u1 enters Checkout Abandoners
    wait_until(lambda: segments_of(service, "u1") == [AT_RISK, ABANDONERS], "u1's timer")
    clock.set(T0 + timedelta(minutes=90))  # ... and leaves it
    wait_until(lambda: segments_of(service, "u1") == [AT_RISK], "the expiry")
    wait_until(
        lambda: (person(service, "u1"), ABANDONERS) not in table_memberships(service),
        "the expiry to be written",
    )

    members = replayed_outbox(service)
    assert members == table_memberships(service)
    assert members == {(person(service, "u1"), AT_RISK), (person(service, "u2"), AT_RISK)}
    changes = rows(service, "SELECT change, count(*) FROM membership_outbox GROUP BY 1 ORDER BY 1")
    assert changes == [("entered", 3), ("exited", 1)]
    # The in-memory book serves exactly what the table holds.
    in_memory = {(m.person_id, m.segment, m.expires_at) for m in service.processor.memberships}
    assert in_memory == set(rows(service, "SELECT person_id, segment, expires_at FROM memberships"))


def test_re_entering_after_the_ttl_announces_the_exit_first(
    service: RealtimeService, clock: Clock
) -> None:
    """A membership that expires as the person enters again: exited, then entered."""
    send(service, message(at=T0, user="u1", event="Checkout Started"))
    p = person(service, "u1")
    clock.set(T0 + timedelta(minutes=30))  # enters Checkout Abandoners until T0+90
    wait_until(lambda: segments_of(service, "u1") == [ABANDONERS], "the first firing")
    clock.set(T0 + timedelta(minutes=60))
    send(service, message(at=clock.now, user="u1", event="Checkout Started"))  # due at T0+90

    clock.set(T0 + timedelta(minutes=90))  # one tick: the expiry and the second firing
    wait_until(lambda: len(outbox_of(service, p)) >= 2, "the second firing")
    clock.settle()
    assert [r[:3] for r in outbox_of(service, p)] == [
        (ABANDONERS, "entered", "trigger"),
        (ABANDONERS, "exited", "expiry"),
        (ABANDONERS, "entered", "trigger"),
    ]
    assert replayed_outbox(service) == table_memberships(service) == {(p, ABANDONERS)}


def _fail_outbox_writes(service: RealtimeService, monkeypatch: pytest.MonkeyPatch) -> None:
    real_execute = service.wh.execute

    def failing_outbox(sql: str, params: Any = None) -> None:
        if sql.lstrip().upper().replace('"', "").startswith("INSERT INTO MEMBERSHIP_OUTBOX"):
            raise EngineError("simulated failure writing the outbox", sql=sql)
        real_execute(sql, params)

    monkeypatch.setattr(service.wh, "execute", failing_outbox)


def test_membership_and_outbox_row_are_written_together(
    service: RealtimeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An acknowledged event whose flush fails is kept (intake log) and written, with its
    membership and outbox row, by the next flush; the failed flush wrote none of them."""
    send(service, message(at=T0 - timedelta(minutes=5), user="u1", event="Product Viewed"))
    p = person(service, "u1")
    service.flush()
    cart = message(at=T0, user="u1", event="abandoned_cart")
    _fail_outbox_writes(service, monkeypatch)
    assert send(service, cart).accepted == 1
    with pytest.raises(EngineError, match="simulated failure"):
        service.flush()
    stored = service.wh.fetchall(
        "SELECT (SELECT count(*) FROM memberships), (SELECT count(*) FROM membership_outbox), "
        "(SELECT count(*) FROM events WHERE message_id = ?)",
        [cart["messageId"]],
    )
    assert stored == [(0, 0, 0)]
    assert segments_of(service, "u1") == [AT_RISK]  # reloaded, and the log replayed
    monkeypatch.undo()

    assert rows(service, "SELECT person_id, segment FROM memberships") == [(p, AT_RISK)]
    assert [r[:3] for r in outbox_of(service, p)] == [(AT_RISK, "entered", "trigger")]
    assert rows(
        service, "SELECT count(*) FROM events WHERE message_id = ?", [cart["messageId"]]
    ) == [(1,)]
    assert send(service, cart).duplicate == 1


def test_groups_are_answered_while_a_flush_is_writing(
    service: RealtimeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flusher thread writes to the warehouse; the writer does not wait for it to
    acknowledge the next events."""
    release = threading.Event()
    write = service.processor._write

    def held_write(prepared: Any) -> None:
        release.wait(WAIT_S)
        write(prepared)

    monkeypatch.setattr(service.processor, "_write", held_write)
    send(service, message(at=T0, user="u1", event="Product Viewed"))
    wait_until(lambda: service.processor.flushing, "a flush in the flusher thread")
    assert send(service, message(at=T0, user="u2", event="Product Viewed")).accepted == 1
    assert service.processor.flushing  # still held: the answer did not wait for it
    release.set()
    assert rows(service, "SELECT count(*) FROM events") == [(2,)]


def test_a_failed_background_flush_loses_nothing(
    service: RealtimeService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer reloads after a flush failed in the flusher thread (replaying the intake
    log); the next flush writes the event, its membership and outbox row, once."""
    send(service, message(at=T0 - timedelta(minutes=5), user="u1", event="Product Viewed"))
    p = person(service, "u1")
    service.flush()
    reloads = []
    load = service.processor.load

    def counted_load() -> None:
        reloads.append(1)
        load()

    monkeypatch.setattr(service.processor, "load", counted_load)
    _fail_outbox_writes(service, monkeypatch)
    cart = message(at=T0, user="u1", event="abandoned_cart")
    assert send(service, cart).accepted == 1
    wait_until(lambda: bool(reloads), "the writer to reload after the failed flush")
    monkeypatch.undo()

    assert segments_of(service, "u1") == [AT_RISK]
    assert [r[:3] for r in outbox_of(service, p)] == [(AT_RISK, "entered", "trigger")]
    assert rows(
        service, "SELECT count(*) FROM events WHERE message_id = ?", [cart["messageId"]]
    ) == [(1,)]


class FakeRescorer:
    """Puts every customer it is asked about in segment "Fans"; notes the scoring thread."""

    enabled = True
    version = None

    def __init__(self) -> None:
        self.threads: set[str] = set()
        self.scored: list[str] = []

    def score(self, customers: Any, as_of: datetime) -> list[ModelScore]:
        self.threads.add(threading.current_thread().name)
        self.scored.extend(sorted(customers))
        return [ModelScore(c, 1, "Fans", 0.5, "v0009") for c in sorted(customers)]


def test_model_segments_are_rescored_off_the_writer_thread(
    service: RealtimeService, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Persons whose events were written are scored in the flusher thread (the scoring
    reads the warehouse); the writer moves them to their segments at its next tick. A
    re-score that confirms the segment writes nothing."""
    rescorer = FakeRescorer()
    monkeypatch.setattr(service, "rescorer", rescorer)
    send(service, message(at=T0, user="u1", event="Product Viewed"))
    wait_until(lambda: "Fans" in segments_of(service, "u1"), "the re-scored model segment")
    (membership,) = [m for m in service.memberships_of("u1") or [] if m.source == "model"]
    assert membership.source_name == "v0009"
    assert membership.reason == "model v0009: nearest to segment 1 (re-scored in real time)"
    assert rescorer.threads and all(t.startswith("segmint-flush") for t in rescorer.threads)
    assert [r[:3] for r in outbox_of(service, person(service, "u1"))] == [
        ("Fans", "entered", "model")
    ]

    send(service, message(at=T0, user="u1", event="Product Viewed"))
    wait_until(lambda: rescorer.scored == ["u1", "u1"], "the second re-score")
    clock.settle()  # ticks ran after it: its scores were applied
    assert service.memberships_of("u1") == [membership]
    assert len(outbox_of(service, person(service, "u1"))) == 1


def test_without_intake_log_a_failed_commit_fails_the_request(
    project_dir: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``realtime.intake_log: false``: the group commits before it is answered, so a failed
    outbox write fails the request and rolls back the membership and the event."""
    write_project(project_dir, "realtime: {intake_log: false}\n")
    with running(project_dir, clock) as service:
        assert service.intake_log is None
        _commit_failure_rolls_back(service, monkeypatch)


def test_without_intake_log_timers_commit_when_they_fire(project_dir: Path, clock: Clock) -> None:
    write_project(project_dir, "realtime: {intake_log: false}\n")
    with running(project_dir, clock) as service:
        send(service, message(at=T0, user="u1", event="Checkout Started"))
        p = person(service, "u1")
        clock.set(T0 + timedelta(minutes=30))
        wait_until(lambda: segments_of(service, "u1") == [ABANDONERS], "the absence trigger")
        clock.settle()  # no flush needed: the tick committed the change
        assert service.wh.fetchall("SELECT person_id, segment FROM memberships") == [
            (p, ABANDONERS)
        ]
        assert service.wh.fetchall("SELECT count(*) FROM trigger_timers") == [(0,)]


def _commit_failure_rolls_back(service: RealtimeService, monkeypatch: pytest.MonkeyPatch) -> None:
    send(service, message(at=T0 - timedelta(minutes=5), user="u1", event="Product Viewed"))
    p = person(service, "u1")
    cart = message(at=T0, user="u1", event="abandoned_cart")
    _fail_outbox_writes(service, monkeypatch)
    with pytest.raises(EngineError, match="simulated failure"):
        send(service, cart)
    monkeypatch.undo()
    service.write(lambda _processor: None)  # the writer has reloaded its state by now

    assert rows(service, "SELECT count(*) FROM memberships") == [(0,)]
    assert rows(service, "SELECT count(*) FROM membership_outbox") == [(0,)]
    assert rows(
        service, "SELECT count(*) FROM events WHERE message_id = ?", [cart["messageId"]]
    ) == [(0,)]
    assert segments_of(service, "u1") == []  # the in-memory state was reloaded
    assert (service.profile("u1") or {})["fields"]["event_count"] == 1

    outcome = send(service, cart)  # not a duplicate: it was never committed
    assert (outcome.accepted, outcome.duplicate) == (1, 0)
    assert rows(service, "SELECT person_id, segment FROM memberships") == [(p, AT_RISK)]
    assert [r[:3] for r in outbox_of(service, p)] == [(AT_RISK, "entered", "trigger")]


_STEP = st.tuples(
    st.sampled_from(["u1", "u2"]),
    st.sampled_from(["page", "abandoned_cart", "Checkout Started", "Order Completed", "wait"]),
    st.integers(min_value=0, max_value=100),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(_STEP, min_size=1, max_size=12))
def test_outbox_replays_to_the_memberships_table(steps: list[tuple[str, str, int]]) -> None:
    """Whatever the events and however time moves, the outbox is a complete change log."""
    clock = Clock()
    service = RealtimeService(parse_project(PROJECT_YAML), Warehouse(":memory:"), clock=clock)
    service.start()
    try:
        for user, action, minutes in steps:
            clock.advance(minutes=minutes)
            if action == "wait":
                continue
            if action == "page":
                send(service, message("page", at=clock.now, user=user))
            else:
                send(service, message(at=clock.now, user=user, event=action))
        service.stop()  # the queued work and any tick in flight are done
        members = replayed_outbox(service)
        table = table_memberships(service)
        assert members == table
        in_memory = {(m.person_id, m.segment) for m in service.processor.memberships}
        assert in_memory == table
    finally:
        service.close()


def test_outbox_is_published_to_a_redis_stream(
    tmp_path: Path, redis_server: RedisServer, clock: Clock
) -> None:
    stream = f"segmint:test:{uuid.uuid4().hex[:8]}"
    directory = write_project(
        tmp_path / "project",
        f"realtime: {{redis_url: '{redis_server.url}', membership_stream: '{stream}'}}\n",
    )
    client = redis_server.client()
    with running(directory, clock) as service:
        send(service, message(at=T0 - timedelta(minutes=5), user="u1", event="Product Viewed"))
        send(service, message(at=T0, user="u1", event="abandoned_cart"))
        p = person(service, "u1")
        wait_until(lambda: client.xlen(stream) >= 1, "the stream entry")
        wait_until(
            lambda: (
                rows(service, "SELECT count(*) FROM membership_outbox WHERE published_at IS NULL")
                == [(0,)]
            ),
            "the outbox rows to be marked published",
        )
        ((_, fields),) = client.xrange(stream)
        entry = {k.decode(): v.decode() for k, v in fields.items()}
        assert entry["id"] == "1" and entry["person_id"] == p
        assert (entry["segment"], entry["change"], entry["source"]) == (
            AT_RISK,
            "entered",
            "trigger",
        )
        assert entry["at"] == T0.isoformat() + ".000000Z"
        assert entry["expires_at"] == (T0 + timedelta(days=1)).isoformat() + ".000000Z"
        ((published_at,),) = rows(service, "SELECT published_at FROM membership_outbox")
        assert published_at == clock.now

        clock.set(T0 + timedelta(days=1))  # the expiry is published too
        wait_until(lambda: client.xlen(stream) == 2, "the exit on the stream")
        ((_, last),) = client.xrevrange(stream, count=1)
        assert (last[b"change"], last[b"source"], last[b"id"]) == (b"exited", b"expiry", b"2")
    client.close()


# ---------------------------------------------------------------------- identity


def _anonymous_then_identified(service: RealtimeService) -> tuple[str, str]:
    """u1 has one event, anonymous a1 three; then identify links them. Returns both persons."""
    send(service, message(at=T0 - timedelta(minutes=10), user="u1", event="Product Viewed"))
    send(
        service,
        message("page", at=T0 - timedelta(minutes=9), anonymous="a1"),
        message("page", at=T0 - timedelta(minutes=8), anonymous="a1"),
        message(at=T0 - timedelta(minutes=7), anonymous="a1", event="Product Viewed"),
    )
    user, anonymous = person(service, "u1"), person(service, "a1")
    assert user != anonymous
    assert (service.profile("a1") or {})["fields"]["event_count"] == 3
    send(
        service,
        message(
            "identify",
            at=T0 - timedelta(minutes=6),
            user="u1",
            anonymous="a1",
            traits={"plan": "pro"},
        ),
    )
    return user, anonymous


def test_identify_merges_the_anonymous_profile_into_the_user(service: RealtimeService) -> None:
    user, anonymous = _anonymous_then_identified(service)
    assert person(service, "a1") == person(service, "u1") == user
    profile = service.profile("u1")
    assert profile is not None and service.profile("a1") == profile
    fields = profile["fields"]
    assert fields["event_count"] == 5  # 1 + 3 + the identify call
    assert (fields["page_views"], fields["product_views"], fields["identified"]) == (2, 2, True)
    assert fields["first_seen_at"] == (T0 - timedelta(minutes=10)).isoformat()
    assert fields["last_seen_at"] == (T0 - timedelta(minutes=6)).isoformat()
    assert profile["traits"] == {"plan": "pro"}
    assert {"type": "anonymous_id", "value": "a1"} in profile["identifiers"]
    assert service.profile(anonymous) is None  # the anonymous person is gone
    assert rows(
        service,
        "SELECT person_id FROM identities WHERE identifier_type = 'anonymous_id' "
        "AND identifier_value = 'a1'",
    ) == [(user,)]
    service.compact_profiles()
    ((event_count,),) = rows(
        service, "SELECT event_count FROM profiles WHERE person_id = ?", [user]
    )
    assert event_count == 5


def test_a_merged_away_profile_leaves_the_profiles_table(project_dir: Path, clock: Clock) -> None:
    """The merged person's saved row must go, or it comes back as a ghost after a restart."""
    with running(project_dir, clock) as service:
        user, anonymous = _anonymous_then_identified(service)
        service.compact_profiles()
        assert rows(service, "SELECT person_id FROM profiles ORDER BY person_id") == [(user,)]
    with running(project_dir, clock) as service:
        assert set(service.processor.profiles) == {user}


def test_profiles_survive_a_crash_before_the_profiles_table_is_refreshed(
    project_dir: Path, clock: Clock
) -> None:
    """Every commit journals the profiles; the table is refreshed later. A crash in between
    (no stop, so no compaction) loses nothing: the next start reads the journal."""
    service = RealtimeService.open(project_dir, clock=clock).start()
    user, _ = _anonymous_then_identified(service)
    served = service.profile("u1")
    assert rows(service, "SELECT count(*) FROM profiles") == [(0,)]  # not refreshed yet
    service.committer.stop()  # the writer is gone; the process dies without a stop
    service.wh.close()
    with running(project_dir, clock) as restarted:
        assert set(restarted.processor.profiles) == {user}
        assert restarted.profile("u1") == served
        assert restarted.compact_profiles() == 2  # the user, and the merged-away person
        assert rows(restarted, "SELECT person_id, event_count FROM profiles") == [(user, 5)]
        assert rows(restarted, "SELECT count(*) FROM profile_journal") == [(0,)]


def test_the_profiles_table_is_refreshed_in_bounded_steps(service: RealtimeService) -> None:
    for user in ("s1", "s2", "s3"):
        send(service, message(at=T0 - timedelta(minutes=5), user=user, event="Product Viewed"))
    service.flush()  # a flush writes the profile journal
    assert service.processor.uncompacted == 3
    assert service.write(lambda processor: processor.compact_profiles(limit=2)) == 2
    assert rows(service, "SELECT count(*) FROM profiles") == [(2,)]
    assert service.processor.uncompacted == 1 and service.processor.compacting
    send(service, message(at=T0 - timedelta(minutes=4), user="s4", event="Product Viewed"))
    service.flush()
    assert service.processor.uncompacted == 2  # the round's last person, and s4
    # the round's last step drops the journal rows of the round, not s4's
    assert service.write(lambda processor: processor.compact_profiles(limit=2)) == 1
    assert rows(service, "SELECT DISTINCT person_id FROM profile_journal") == [
        (person(service, "s4"),)
    ]
    assert service.compact_profiles() == 1
    assert rows(service, "SELECT count(*), sum(event_count) FROM profiles") == [(4, 4)]
    assert rows(service, "SELECT count(*) FROM profile_journal") == [(0,)]


def test_a_merge_announces_that_the_anonymous_person_left_its_segments(
    service: RealtimeService,
) -> None:
    """Destinations were told the anonymous person entered At-Risk; they must hear it left."""
    send(service, message("page", at=T0 - timedelta(minutes=20), user="u2"))
    send(
        service,
        message("page", at=T0 - timedelta(minutes=5), anonymous="a2"),
        message(at=T0, anonymous="a2", event="abandoned_cart"),
    )
    anonymous = person(service, "a2")
    assert segments_of(service, anonymous) == [AT_RISK]
    send(service, message("identify", at=T0 + timedelta(minutes=1), user="u2", anonymous="a2"))
    survivor = person(service, "u2")
    assert person(service, "a2") == survivor
    assert segments_of(service, "u2") == [AT_RISK]
    assert table_memberships(service) == {(survivor, AT_RISK)}
    assert [r[:2] for r in outbox_of(service, survivor)] == [(AT_RISK, "entered")]
    assert [r[:2] for r in outbox_of(service, anonymous)] == [
        (AT_RISK, "entered"),
        (AT_RISK, "exited"),
    ]
    assert replayed_outbox(service) == table_memberships(service)


# ---------------------------------------------------------------------- erasure


ERASED = "erased-customer-7731"


def test_events_of_an_erased_person_are_blocked_counted_and_not_kept(
    project_dir: Path, clock: Clock
) -> None:
    wh = Warehouse(project_dir / "segmint.duckdb")
    assert add_to_suppression(wh, [("customer_id", ERASED)]) == 1
    wh.close()
    with running(project_dir, clock) as service:
        outcome = send(
            service,
            message(at=T0, user=ERASED, event="Product Viewed"),
            message(at=T0, user="someone-else", event="Product Viewed"),
            message("identify", at=T0, user=ERASED, anonymous="device-1", traits={"x": 1}),
        )
        assert outcome.accepted == 1
        assert [r.reason for r in outcome.rejected] == ["suppressed", "suppressed"]
        assert all(ERASED.encode() not in r.raw for r in outcome.rejected)
        body = orjson.dumps({"batch": [message(at=T0, user=f" {ERASED} ", event="abandoned_cart")]})
        batch = service.ingest(body, None, source="api:test")
        assert batch.accepted == 0 and [r.reason for r in batch.rejected] == ["suppressed"]

        assert rows(service, "SELECT sum(events) FROM suppressed_events") == [(3,)]
        assert service.person_of(ERASED) is None and service.profile(ERASED) is None
        tables = [
            "events",
            "failed_events",
            "identities",
            "identity_links",
            "profiles",
            "memberships",
            "membership_outbox",
            "trigger_timers",
            "trigger_fires",
        ]
        for table in tables:
            assert rows(
                service,
                f"SELECT count(*) FROM {table} AS t WHERE contains(CAST(t AS VARCHAR), ?)",
                [ERASED],
            ) == [(0,)], table
        assert rows(service, "SELECT count(*) FROM events") == [(1,)]


# ---------------------------------------------------------------------- dead letters


def _insert_failed(service: RealtimeService, failure_id: str, payload: dict[str, Any]) -> None:
    """A dead letter whose payload is now valid (as if a bug in the intake was fixed)."""

    def insert(processor: Any) -> None:
        processor.wh.execute(
            "INSERT INTO failed_events (failure_id, received_at, source, reason, detail, "
            "message_id, payload, attempts) VALUES (?, ?, 'api:k1', 'invalid_field', "
            "'an old bug', ?, ?, 1)",
            [failure_id, T0, payload["messageId"], orjson.dumps(payload).decode()],
        )

    service.write(insert)


def test_reprocess_retries_dead_letters(service: RealtimeService, clock: Clock) -> None:
    accepted = message(at=T0, user="u1", event="Product Viewed")
    bad = message(at=T0, event="Product Viewed")  # no userId nor anonymousId
    outcome = service.ingest(orjson.dumps({"batch": [accepted, bad]}), None, source="api:k1")
    assert outcome.accepted == 1 and [r.reason for r in outcome.rejected] == ["missing_identity"]
    ((bad_id, payload),) = rows(service, "SELECT failure_id, payload FROM failed_events")
    assert orjson.loads(payload) == bad

    fixed = message(at=T0, user="u1", event="Order Completed", properties={"revenue": 12.5})
    _insert_failed(service, "f_fixed", fixed)
    _insert_failed(service, "f_again", accepted)  # accepted meanwhile: a duplicate

    clock.advance(minutes=5)
    result = service.reprocess_failed()
    assert result == ReprocessResult(retried=3, accepted=1, duplicate=1, still_failing=1)
    state = {
        r[0]: r[1:]
        for r in rows(
            service, "SELECT failure_id, reason, attempts, reprocessed_at FROM failed_events"
        )
    }
    assert state[bad_id] == ("missing_identity", 2, None)
    assert state["f_fixed"] == ("invalid_field", 2, clock.now)
    assert state["f_again"] == ("invalid_field", 2, clock.now)
    assert rows(
        service, "SELECT _source FROM events WHERE message_id = ?", [fixed["messageId"]]
    ) == [("reprocess:api:k1",)]
    assert rows(
        service, "SELECT count(*) FROM events WHERE message_id = ?", [accepted["messageId"]]
    ) == [(1,)]
    fields = (service.profile("u1") or {})["fields"]
    assert (fields["order_count"], fields["revenue_total"]) == (1, 12.5)

    # Reprocessed letters are done; the unfixable one keeps failing.
    assert service.reprocess_failed() == ReprocessResult(1, 0, 0, 1)
    assert rows(service, "SELECT attempts FROM failed_events WHERE failure_id = ?", [bad_id]) == [
        (3,)
    ]


def test_events_reprocess_command(project_dir: Path, clock: Clock, cli: Any) -> None:
    fixed = message(at=T0, user="u9", event="Product Viewed")
    with running(project_dir, clock) as service:
        service.ingest(orjson.dumps({"batch": [message(at=T0, event="x")]}), None, source="api:k")
        _insert_failed(service, "f_fixed", fixed)

    result = cli("events", "reprocess", "--project", project_dir)
    assert "retried 2: accepted 1, duplicate 0, still failing 1" in result.stdout

    wh = Warehouse(project_dir / "segmint.duckdb")
    try:
        assert wh.fetchall(
            "SELECT attempts, reprocessed_at IS NOT NULL FROM failed_events "
            "WHERE failure_id = 'f_fixed'"
        ) == [(2, True)]
        assert wh.fetchall(
            "SELECT count(*) FROM events WHERE message_id = ?", [fixed["messageId"]]
        ) == [(1,)]
    finally:
        wh.close()
    again = cli("events", "reprocess", "--project", project_dir)
    assert "retried 1: accepted 0, duplicate 0, still failing 1" in again.stdout


# ---------------------------------------------------------------------- restart


def test_a_restart_keeps_dedupe_profiles_memberships_and_timers(
    project_dir: Path, clock: Clock
) -> None:
    cart = message(at=T0, user="u1", event="abandoned_cart")
    with running(project_dir, clock) as service:
        send(service, message("page", at=T0 - timedelta(minutes=5), user="u1"))
        send(service, cart, message(at=T0, user="u1", event="Checkout Started"))
        p = person(service, "u1")
        before_profile = service.profile("u1")
        before = service.memberships_of("u1")
        assert [m.segment for m in before or []] == [AT_RISK]

    clock.set(T0 + timedelta(minutes=1))
    with running(project_dir, clock) as service:
        assert person(service, "u1") == p
        assert service.profile("u1") == before_profile
        assert service.memberships_of("u1") == before
        timer = service.processor.trigger_state.timer(p, "checkout_abandoned")
        assert timer is not None and timer.due_at == T0 + timedelta(minutes=30)

        outcome = send(service, cart)  # the same messageId after the restart
        assert (outcome.accepted, outcome.duplicate) == (0, 1)
        assert (service.profile("u1") or {})["fields"]["event_count"] == 3

        clock.set(T0 + timedelta(minutes=30))  # the timer started before the restart fires
        wait_until(lambda: ABANDONERS in segments_of(service, "u1"), "the restored timer")
        assert replayed_outbox(service) == table_memberships(service)
        assert rows(service, "SELECT count(*) FROM membership_outbox") == [(2,)]


def test_the_service_connection_uses_the_configured_engine_threads(
    tmp_path: Path, clock: Clock
) -> None:
    """Few-row group commits run fastest on one DuckDB thread; the project can ask for more."""
    with running(write_project(tmp_path / "one"), clock) as service:
        assert rows(service, "SELECT current_setting('threads')") == [(1,)]
    with running(write_project(tmp_path / "two", "realtime:\n  engine_threads: 2\n"), clock) as s:
        assert rows(s, "SELECT current_setting('threads')") == [(2,)]
