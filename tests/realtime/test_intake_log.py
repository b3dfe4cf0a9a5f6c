"""The intake log: records survive as written, a torn tail is cut off, a failed sync
leaves nothing behind, emptying a file never drops a group not yet written, and the
service replays what it acknowledged but never wrote (timer ticks included)."""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmint.engine import Warehouse
from segmint.realtime.events import Event, EventType, IngestRequest, Rejection
from segmint.realtime.intake_log import IntakeLog, LoggedGroup, applied_seq
from segmint.realtime.rescoring import ModelScore
from segmint.realtime.service import RealtimeService
from tests.realtime.test_service import (
    ABANDONERS,
    AT_RISK,
    T0,
    Clock,
    message,
    rows,
    running,
    segments_of,
    send,
    wait_until,
    write_project,
)

_times = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1))
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
_events = st.builds(
    Event,
    message_id=st.text(min_size=1, max_size=12),
    type=st.sampled_from(list(EventType)),
    timestamp=_times,
    received_at=_times,
    event=st.none() | st.text(max_size=10),
    user_id=st.none() | st.text(max_size=10),
    anonymous_id=st.none() | st.text(max_size=10),
    original_timestamp=st.none() | _times,
    sent_at=st.none() | _times,
    properties=st.dictionaries(st.text(max_size=5), _json, max_size=3),
    traits=st.dictionaries(st.text(max_size=5), _json, max_size=2),
    context=st.dictionaries(st.text(max_size=5), _json, max_size=2),
    previous_id=st.none() | st.text(max_size=6),
    group_id=st.none() | st.text(max_size=6),
    future=st.booleans(),
)


@given(
    seq=st.integers(1, 2**40),
    now=_times,
    events=st.lists(_events, max_size=4),
    source=st.text(max_size=10),
    tick=st.booleans(),
    scores=st.lists(
        st.builds(
            ModelScore,
            customer_id=st.text(max_size=8),
            segment_id=st.integers(-1, 20),
            segment=st.text(max_size=8),
            distance=st.none() | st.floats(0, 1e6),
            version=st.text(max_size=6),
        ),
        max_size=3,
    ),
)
def test_a_logged_group_decodes_to_the_requests_it_was_made_of(
    seq: int,
    now: datetime,
    events: list[Event],
    source: str,
    tick: bool,
    scores: list[ModelScore],
) -> None:
    rejection = Rejection("invalid_json", "bad", b'{"a": 1', 3, "m-9")
    request = IngestRequest(events, [rejection], source, list(range(len(events))))
    group = LoggedGroup(seq, now, [request], tick, scores)
    assert LoggedGroup.decode(group.encode()) == group


def _group(seq: int) -> LoggedGroup:
    event = Event(f"m{seq}", EventType.track, T0, T0, event="Viewed", user_id="u1")
    return LoggedGroup(seq, T0, [IngestRequest([event], [], "test", [None])])


def test_a_torn_tail_is_cut_off_and_the_complete_records_kept(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb.intake"
    log = IntakeLog(path)
    log.append(_group(1))
    log.append(_group(2))
    complete = log.size
    with open(path, "ab") as f:  # a crash in the middle of the third record
        f.write(_group(3).encode()[:7])
    log.close()

    reopened = IntakeLog(path)
    assert [g.seq for g in reopened.groups()] == [1, 2]
    assert path.stat().st_size == complete
    reopened.append(_group(3))
    assert [g.seq for g in reopened.groups()] == [1, 2, 3]
    reopened.clear_through(3)
    assert reopened.groups() == [] and path.stat().st_size == 0


@given(
    operations=st.lists(
        st.one_of(
            st.just(("append", 0)),
            st.just(("rotate", 0)),
            st.just(("reopen", 0)),
            st.tuples(st.just("clear"), st.integers(0, 40)),
        ),
        max_size=40,
    )
)
def test_the_log_keeps_every_group_after_the_last_one_written(
    tmp_path_factory: pytest.TempPathFactory, operations: list[tuple[str, int]]
) -> None:
    """Whatever the order of appends, file switches, reopening and emptying up to a
    written ``seq``, the log returns, oldest first, every group after that ``seq``."""
    path = tmp_path_factory.mktemp("log") / "w.duckdb.intake"
    log = IntakeLog(path)
    appended: list[int] = []
    written = 0
    for operation, argument in operations:
        if operation == "append":
            appended.append(len(appended) + 1)
            log.append(_group(appended[-1]))
        elif operation == "rotate":
            log.rotate()
        elif operation == "reopen":
            log.close()
            log = IntakeLog(path)
        else:
            written = max(written, min(argument, len(appended)))
            log.clear_through(written)
        kept = [g.seq for g in log.groups()]
        assert kept == sorted(kept)
        assert [seq for seq in kept if seq > written] == [s for s in appended if s > written]
        assert set(kept) <= set(appended)
    log.close()


def test_a_damaged_record_ends_the_log(tmp_path: Path) -> None:
    path = tmp_path / "w.duckdb.intake"
    log = IntakeLog(path)
    for seq in (1, 2, 3):
        log.append(_group(seq))
    first = len(_group(1).encode()) + 8
    with open(path, "r+b") as f:  # flip a byte of the second record's payload
        f.seek(first + 8 + 5)
        byte = f.read(1)
        f.seek(first + 8 + 5)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert [g.seq for g in log.groups()] == [1]


def test_a_failed_sync_leaves_the_log_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "w.duckdb.intake"
    log = IntakeLog(path)
    log.append(_group(1))
    size = log.size

    def failing_sync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdatasync", failing_sync)
    with pytest.raises(OSError, match="No space"):
        log.append(_group(2))
    monkeypatch.undo()
    assert path.stat().st_size == size == log.size
    assert [g.seq for g in log.groups()] == [1]


def _never_flushing(
    directory: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> RealtimeService:
    """The project's service, started, that never writes to the warehouse (only the log)."""
    service = RealtimeService.open(directory, clock=clock)
    monkeypatch.setattr(service.processor, "start_flush", lambda *_, **__: True)
    monkeypatch.setattr(service.processor, "flush_pending", lambda **_: [])
    return service.start()


def _crash(service: RealtimeService) -> None:
    """Stop the writer without its final flush and drop the connection (as kill -9 would)."""
    service.committer.stop()
    service.processor.close()
    service.wh.close()
    assert service.intake_log is not None
    service.intake_log.close()


def test_acknowledged_groups_not_yet_written_are_replayed_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = write_project(tmp_path / "project")
    clock = Clock()
    service = _never_flushing(directory, clock, monkeypatch)
    view = message(at=T0 - timedelta(minutes=5), user="u1", event="Product Viewed")
    cart = message(at=T0, user="u1", event="abandoned_cart")
    assert send(service, view).accepted == 1
    assert send(service, cart).accepted == 1
    assert segments_of(service, "u1") == [AT_RISK]
    profile = service.profile("u1")
    _crash(service)
    monkeypatch.undo()

    with Warehouse(directory / "segmint.duckdb") as wh:
        assert wh.scalar("SELECT count(*) FROM events") == 0  # only in the intake log
    with running(directory, clock) as restarted:
        assert restarted.processor.replayed_events == 2
        assert segments_of(restarted, "u1") == [AT_RISK]
        assert restarted.profile("u1") == profile
        assert send(restarted, cart).duplicate == 1
        assert rows(restarted, "SELECT count(*) FROM events") == [(2,)]
        assert rows(restarted, "SELECT segment, change FROM membership_outbox") == [
            (AT_RISK, "entered")
        ]
    assert (directory / "segmint.duckdb.intake").stat().st_size == 0
    assert (directory / "segmint.duckdb.intake.1").stat().st_size == 0


def test_a_timer_tick_is_replayed_in_its_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A timer that fired after the last flush fires again in the replay, at the time it
    fired and before the events that came after it (a later Checkout Started restarts
    the timer: replaying the events alone would never fire the first one)."""
    directory = write_project(tmp_path / "project")
    clock = Clock()
    service = _never_flushing(directory, clock, monkeypatch)
    send(service, message(at=T0, user="u1", event="Checkout Started"))
    clock.set(T0 + timedelta(minutes=30))
    wait_until(lambda: segments_of(service, "u1") == [ABANDONERS], "the absence trigger")
    clock.set(T0 + timedelta(minutes=31))
    send(service, message(at=clock.now, user="u1", event="Checkout Started"))
    timers = service.processor.trigger_state.timers()
    _crash(service)
    monkeypatch.undo()

    replayed = RealtimeService.open(directory, clock=Clock(clock.now))  # not started: no tick
    assert replayed.processor.replayed_events == 2
    assert segments_of(replayed, "u1") == [ABANDONERS]
    assert replayed.processor.trigger_state.timers() == timers
    replayed.close()
    with Warehouse(directory / "segmint.duckdb") as wh:
        assert wh.fetchall('SELECT segment, change, "at" FROM membership_outbox') == [
            (ABANDONERS, "entered", T0 + timedelta(minutes=30))
        ]


def test_scores_applied_after_the_last_flush_are_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = write_project(tmp_path / "project")
    clock = Clock()
    service = _never_flushing(directory, clock, monkeypatch)
    send(service, message(at=T0, user="u1", event="Product Viewed"))
    scores = [ModelScore("u1", 2, "Loyal", 0.25, "v0003"), ModelScore("nobody", 1, "X", None, "v")]
    service.in_writer(lambda processor: processor.apply_scores(T0, scores))
    held = service.memberships_of("u1")
    assert [m.segment for m in held or []] == ["Loyal"]
    _crash(service)
    monkeypatch.undo()

    replayed = RealtimeService.open(directory, clock=clock)  # not started: nothing re-scored
    assert replayed.memberships_of("u1") == held
    replayed.close()


def test_groups_already_written_are_not_applied_twice(tmp_path: Path) -> None:
    """A crash between the flush's commit and emptying the log leaves written groups in it."""
    directory = write_project(tmp_path / "project")
    clock = Clock()
    with running(directory, clock) as service:
        send(service, message(at=T0, user="u1", event="Product Viewed"))
        service.flush()
        written = applied_seq(service.wh)
        profile = service.profile("u1")
    stale = IntakeLog(directory / "segmint.duckdb.intake")
    event = Event("m-stale", EventType.track, T0, T0, event="Product Viewed", user_id="u1")
    stale.append(LoggedGroup(written, T0, [IngestRequest([event], [], "test", [None])]))
    stale.close()

    with running(directory, clock) as restarted:
        assert restarted.processor.replayed_events == 0
        assert restarted.profile("u1") == profile
        assert rows(restarted, "SELECT count(*) FROM events") == [(1,)]
