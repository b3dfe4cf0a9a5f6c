"""The real-time processor: everything that happens to an event after it is parsed.

It runs in the single writer thread (:mod:`segmint.realtime.committer`). For a
group of requests it opens one transaction and, per event in arrival order:

1. drops duplicates (``messageId`` within the dedupe window) and events of
   erased persons (counted in ``suppressed_events``, never stored);
2. finds the person (:mod:`segmint.realtime.identity`), merging an anonymous
   person into an identified one on ``identify`` / ``alias``;
3. evaluates the triggers against the profile *before* the event, then applies
   the event to the profile (events flagged as far in the future are stored only);
4. turns trigger firings into membership changes (entering a trigger segment
   needs the ``personalization`` purpose, checked with
   :func:`segmint.data.privacy.consent.may_use`), and records consent choices
   carried in ``context.consent.categoryPreferences``;

then appends the group's requests to the intake log
(:mod:`segmint.realtime.intake_log`) with one sync, and only then answers them.

Every writer tick, :meth:`Processor.start_flush` builds the rows of everything the
groups since the last flush changed (events, dead letters, consent choices, profile
states for the profile journal, trigger state, identifiers, memberships and their
outbox rows) and hands them to the flusher thread, which writes them in one
transaction while the writer goes on answering groups. Due timers and expired
memberships change the state in the writer too (:meth:`Processor.run_timers`),
logged as a tick record so that a replay repeats them in the same order.
Re-scoring and admin writes read the warehouse: they wait for the flusher and
write what is pending first (:meth:`Processor.run_write`).

Without an intake log (an in-memory warehouse, or ``realtime.intake_log: false``)
each group is written and committed before it is answered. If a group or a flush
fails, the in-memory state is reloaded from the database (and the intake log
replayed); a failed group's requests get the error. The journal is folded into
the ``profiles`` table by :meth:`Processor.compact_profiles` (a step per flush
every ``realtime.profile_compaction_seconds``, and all on stop).
"""

from __future__ import annotations

import itertools
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import orjson
import pyarrow as pa

from segmint.data.privacy.consent import (
    ConsentBook,
    ConsentChoice,
    ConsentPolicy,
    insert_consents,
    new_consent,
)
from segmint.engine import DeferredWrites, RowWriter, Warehouse
from segmint.realtime.committer import Job
from segmint.realtime.dedupe import MessageWindow
from segmint.realtime.events import Event, IngestOutcome, IngestRequest, Rejection
from segmint.realtime.identity import PersonResolver
from segmint.realtime.intake_log import IntakeLog, LoggedGroup, applied_seq, set_applied_seq
from segmint.realtime.memberships import Change, Membership, MembershipBook
from segmint.realtime.metrics import ServiceMetrics
from segmint.realtime.model_sync import sync_model_memberships
from segmint.realtime.profiles import (
    Profiles,
    compact_profiles,
    ensure_profiles_table,
    journal_profiles,
    journal_seq,
    load_profiles,
)
from segmint.realtime.rescoring import ModelScore
from segmint.realtime.store import ensure_realtime_tables
from segmint.realtime.suppression import SuppressionFilter
from segmint.realtime.triggers import Firing, TriggerSet, TriggerState
from segmint.segments.population import FALLBACK_SEGMENT

__all__ = ["Processor", "REALTIME_POLICY"]

logger = logging.getLogger(__name__)

#: Consent policy of trigger segments: personalization is allowed unless withdrawn
#: (the project file can require a grant instead, see ``realtime.personalization``).
REALTIME_POLICY = ConsentPolicy(
    opt_out=frozenset({"analytics", "personalization"}),
    opt_in=frozenset({"email_marketing", "advertising"}),
)
PERSONALIZATION = "personalization"

_EVENT_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("sent_at", pa.timestamp("us")),
        ("received_at", pa.timestamp("us")),
        ("properties", pa.string()),
        ("traits", pa.string()),
        ("context", pa.string()),
        ("_source", pa.string()),
        ("_load_id", pa.string()),
        ("_loaded_at", pa.timestamp("us")),
    ]
)


T = TypeVar("T")


@dataclass(frozen=True)
class PreparedFlush:
    """The statements of one flush and what it covers."""

    writes: DeferredWrites
    seq: int  # the last logged group it writes
    changes: list[Change]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(value: dict[str, Any]) -> str | None:
    return orjson.dumps(value).decode() if value else None


class Processor:
    """Holds the real-time state and applies groups of jobs (see the module docstring)."""

    def __init__(
        self,
        wh: Warehouse,
        triggers: TriggerSet,
        *,
        window: MessageWindow,
        metrics: ServiceMetrics,
        clock: Callable[[], datetime] = utcnow,
        policy: ConsentPolicy = REALTIME_POLICY,
        on_commit: Callable[[list[Change], set[str]], None] | None = None,
        intake_log: IntakeLog | None = None,
    ) -> None:
        self.wh = wh
        self.triggers = triggers
        self.window = window
        self.metrics = metrics
        self.clock = clock
        self.policy = policy
        self.on_commit = on_commit
        self.intake_log = intake_log
        #: Guards the in-memory state against readers (held per event, not per group).
        self.lock = threading.RLock()
        self._rows: list[tuple[Event, str]] = []  # event, source
        self._failed: list[tuple[Rejection, str, datetime]] = []
        self._suppressed: dict[tuple[date, str], int] = {}
        self._touched: set[str] = set()
        self._change_received: list[datetime] = []
        self._consents: list[tuple[str, ConsentChoice]] = []
        self._intake_seq = 0  # the last group logged
        self._written_seq = 0  # the last group written to the warehouse (or being written)
        self._flusher = ThreadPoolExecutor(1, thread_name_prefix="segmint-flush")
        self._inflight: Future[None] | None = None
        #: Events the last :meth:`load` replayed from the intake log.
        self.replayed_events = 0
        self.load()

    # ------------------------------------------------------------------ state

    def load(self) -> None:
        """(Re)build the in-memory state from the database."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:  # let it end: its commit, if any, is part of the state
            wait([inflight])
        wh = self.wh
        ensure_realtime_tables(wh)
        ensure_profiles_table(wh)
        TriggerState.ensure_tables(wh)
        with wh.transaction():
            sync_model_memberships(wh, self.clock())
        with self.lock:
            self.profiles: Profiles = load_profiles(wh, self.triggers.windows())
            self._journal_seq = journal_seq(wh)
            self._uncompacted = self.profiles.dirty() | self.profiles.removed()
            self._round: set[str] = set()  # persons of the compaction round under way
            self._round_seq = 0
            self.profiles.mark_clean()
            self.trigger_state = TriggerState.load(wh)
            self.memberships = MembershipBook.load(wh)
            self.resolver = PersonResolver.load(wh)
            self.suppression = SuppressionFilter.load(wh)
            self.consents = ConsentBook.load(wh, self.policy)
            self.window.load(wh, self.clock())
            self._reset_pending()
        if self.intake_log is not None:
            self._replay(self.intake_log)

    def _replay(self, log: IntakeLog) -> None:
        """Apply the groups acknowledged after the last flush again (after a crash or a
        failed flush); they stay pending until the next flush writes them."""
        self._written_seq = self._intake_seq = applied_seq(self.wh)
        self.replayed_events = 0
        for group in log.groups():
            if group.seq <= self._written_seq:
                continue  # written by a flush that ended before the log was emptied
            self.window.prune(group.now)
            if group.tick:
                self._fire_timers(group.now)
            self._move_to_scores(group.now, group.scores)
            for request in group.requests:
                self.replayed_events += self._ingest(request, group.now).accepted
            self._intake_seq = group.seq
        if self.replayed_events:
            logger.info("replayed %d acknowledged events from %s", self.replayed_events, log.path)

    def compact_profiles(self, limit: int | None = None, writer: RowWriter | None = None) -> int:
        """Fold the profile journal into the ``profiles`` table; returns persons written.

        Works in rounds: a round takes every person journaled so far and the journal's
        ``seq``; ``limit`` bounds the persons written per call (the writer compacts in
        small steps between groups, so no group waits long); ``None`` writes everyone
        journaled so far and empties the journal.
        The round's last step drops the journal rows up to its ``seq``. Writes to
        ``writer`` (default: the warehouse, inside the caller's transaction), in the
        writer thread (or when it is stopped); if the writes fail, the caller reloads
        (:meth:`load` reads the journal again).
        """
        # No lock: only the writer thread changes profiles and these sets, and building
        # rows only reads the profiles, so readers are not held up.
        wh = self.wh if writer is None else writer
        if limit is None:  # everything journaled so far, in one go
            persons = self._round | self._uncompacted
            self._round, self._uncompacted = set(), set()
            return compact_profiles(wh, self.profiles, persons, through_seq=self._journal_seq)
        if not self._round:
            self._round, self._uncompacted = self._uncompacted, set()
            self._round_seq = self._journal_seq
        if limit >= len(self._round):
            persons, self._round = self._round, set()
            return compact_profiles(wh, self.profiles, persons, through_seq=self._round_seq)
        persons = set(itertools.islice(self._round, limit))
        self._round -= persons
        return compact_profiles(wh, self.profiles, persons)

    @property
    def uncompacted(self) -> int:
        """Persons journaled and not yet written to the ``profiles`` table."""
        return len(self._uncompacted) + len(self._round)

    @property
    def compacting(self) -> bool:
        """A compaction round is under way (more steps to come)."""
        return bool(self._round)

    def _reset_pending(self) -> None:
        self._rows.clear()
        self._failed.clear()
        self._suppressed.clear()
        self._touched.clear()
        self._change_received.clear()
        self._consents.clear()

    @property
    def pending(self) -> bool:
        """Groups were acknowledged (from the intake log) and not yet written."""
        return self._intake_seq > self._written_seq

    # ------------------------------------------------------------------ groups

    def handle(self, jobs: Sequence[Job]) -> None:
        """Apply a group of jobs and answer them once they are durable."""
        ingest = [j for j in jobs if j.kind == "ingest"]
        if ingest:
            self._handle_ingest(ingest)
        for job in jobs:
            if job.kind == "call":  # payload(processor), in this thread
                try:
                    result = job.payload(self)
                except Exception as e:
                    job.future.set_exception(e)
                else:
                    job.future.set_result(result)

    def run_write(self, action: Callable[[Processor], T]) -> T:
        """Write everything pending, then run ``action(self)`` in a transaction of its own
        (admin writes, re-scoring: they read the warehouse). On failure the state is
        reloaded and the error raised."""
        self.flush_pending()
        try:
            with self.wh.transaction():
                return action(self)
        except Exception:
            self.load()
            raise

    def _handle_ingest(self, jobs: list[Job]) -> None:
        """Apply the group in memory, make it durable, answer it.

        Durable means appended to the intake log when there is one (the warehouse is
        written by a later flush), else committed to the warehouse.
        """
        now = self.clock()
        self.window.prune(now)
        started = self.metrics.clock()
        announced = self.memberships.pending_count()
        try:
            if self.intake_log is None:
                with self.wh.transaction():
                    outcomes = [self._ingest(job.payload, now) for job in jobs]
                    changes = self._flush(now, self.wh)
            else:
                outcomes = [self._ingest(job.payload, now) for job in jobs]
                changes = self.memberships.pending_changes(announced)
                self._log(now, [job.payload for job in jobs])
        except Exception as e:
            logger.exception("commit of %d requests failed; reloading state", len(jobs))
            for job in jobs:
                job.future.set_exception(e)
            self.load()
            return
        self.metrics.commit_seconds.observe(self.metrics.clock() - started)
        for job, outcome in zip(jobs, outcomes, strict=True):
            self.metrics.count(outcome)
            job.future.set_result(outcome)
        done = utcnow()
        self.metrics.observe_change_latencies(
            [(done - received).total_seconds() for received in self._change_received]
        )
        self._change_received.clear()
        self.metrics.observe_changes(changes)
        if self.intake_log is None:
            self._announce(changes)

    def _log(
        self,
        now: datetime,
        requests: list[IngestRequest],
        *,
        tick: bool = False,
        scores: Sequence[ModelScore] = (),
    ) -> None:
        assert self.intake_log is not None
        group = LoggedGroup(self._intake_seq + 1, now, requests, tick, list(scores))
        self.intake_log.append(group)
        self._intake_seq = group.seq

    # ------------------------------------------------------------------ flushing

    @property
    def flushing(self) -> bool:
        """A flush is running in the flusher thread."""
        return self._inflight is not None and not self._inflight.done()

    def settle(self) -> None:
        """Wait for the flush in the flusher thread; if it failed, reload the state (the
        intake log still holds what it did not write)."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return
        try:
            inflight.result()
        except Exception:
            logger.exception("writing acknowledged groups to the warehouse failed; reloading")
            self.load()

    def start_flush(
        self,
        now: datetime,
        *,
        compaction_step: int | None = None,
        then: Callable[[], None] | None = None,
    ) -> bool:
        """Write what the groups acknowledged since the last flush changed, then run
        ``then`` (checkpoint, outbox relay); returns False, doing nothing, while the last
        flush still runs.

        With an intake log this runs in the flusher thread: the rows are built here,
        while nothing else changes the state, and the log switches files so that the
        flushed groups' file can be emptied once they are committed. Without one it
        runs here. ``compaction_step``: also fold that many persons of the profile
        journal into ``profiles`` in the same transaction (see :meth:`compact_profiles`).
        """
        if self.flushing:
            return False
        self.settle()
        if self.intake_log is None:
            self._flush_here(now, compaction_step)
            if then is not None:
                then()
            return True
        prepared = self._prepare(now, compaction_step)
        if prepared is not None or then is not None:
            self._inflight = self._flusher.submit(self._write_then, prepared, then)
        return True

    def flush_pending(self, *, compaction_step: int | None = None) -> list[Change]:
        """Write what is pending now, in this thread, after the flusher's flush; returns
        the membership changes written. On failure the state is reloaded (which replays
        the log: nothing acknowledged is lost) and the error raised."""
        self.settle()
        return self._flush_here(self.clock(), compaction_step)

    def _flush_here(self, now: datetime, compaction_step: int | None) -> list[Change]:
        prepared = self._prepare(now, compaction_step)
        if prepared is None:
            return []
        try:
            self._write(prepared)
        except Exception:
            logger.exception("writing acknowledged groups to the warehouse failed; reloading")
            self.load()
            raise
        return prepared.changes

    def _prepare(self, now: datetime, compaction_step: int | None) -> PreparedFlush | None:
        pending = self.pending
        if not pending and compaction_step is None:
            return None
        writes = DeferredWrites()
        changes = self._flush(now, writes)
        if pending:
            set_applied_seq(writes, self._intake_seq)
        if compaction_step is not None:
            self.compact_profiles(compaction_step, writes)
        if self.intake_log is not None:
            self.intake_log.rotate()
        self._written_seq = self._intake_seq
        self._announce(changes)
        return PreparedFlush(writes, self._written_seq, changes)

    def _write(self, prepared: PreparedFlush) -> None:
        started = self.metrics.clock()
        with self.wh.transaction():
            prepared.writes.apply(self.wh)
        if self.intake_log is not None:
            self.intake_log.clear_through(prepared.seq)
        self.metrics.flush_seconds.observe(self.metrics.clock() - started)

    def _write_then(self, prepared: PreparedFlush | None, then: Callable[[], None] | None) -> None:
        if prepared is not None:
            self._write(prepared)
        if then is not None:
            then()

    def close(self) -> None:
        """Wait for the flusher thread and stop it."""
        self.settle()
        self._flusher.shutdown()

    def _announce(self, changes: list[Change]) -> None:
        """Tell the service what the warehouse now holds (re-scoring)."""
        touched, self._touched = self._touched, set()
        if self.on_commit is not None:
            self.on_commit(changes, touched)

    def process_in_transaction(self, request: IngestRequest, now: datetime) -> IngestOutcome:
        """Apply one request and write it, inside a transaction the caller opened."""
        outcome = self._ingest(request, now)
        self._flush(now, self.wh)
        self._touched.clear()
        return outcome

    def _ingest(self, request: IngestRequest, now: datetime) -> IngestOutcome:
        outcome = IngestOutcome()
        for rejection in request.rejections:
            self._failed.append((rejection, request.source, now))
            outcome.rejected.append(rejection)
        indices = request.indices or [None] * len(request.events)
        for event, index in zip(request.events, indices, strict=True):
            if self.window.seen(event.message_id):
                outcome.duplicate += 1
                continue
            if self.suppression.blocks(event):
                key = (now.date(), request.source)
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                outcome.rejected.append(
                    Rejection(
                        "suppressed",
                        "the person was erased; the event is not kept",
                        b"",
                        index,
                        None,
                    )
                )
                continue
            self.window.add(event.message_id, event.received_at)
            self._apply(event, request.source)
            outcome.accepted += 1
        return outcome

    def _apply(self, event: Event, source: str) -> None:
        with self.lock:
            person, merges = self.resolver.resolve(event)
            for merge in merges:
                self.profiles.merge(merge.survivor, merge.merged)
                self.memberships.move(merge.survivor, merge.merged, event.timestamp)
                self.trigger_state.merge(merge.survivor, merge.merged)
            firings: list[Firing] = []
            if not event.future:
                # A far-future event (a client clock years ahead) is stored but neither
                # moves the profile's "last seen" nor fires triggers; batch features
                # ignore it too (they are computed as of now).
                profile = self.profiles.get_or_create(person)
                firings = self.triggers.on_event(event, person, profile, self.trigger_state)
                self.profiles.apply(person, event)
        self._record_consents(event)
        if firings:
            before = self.memberships.pending_count()
            self.apply_firings(firings)
            caused = self.memberships.pending_count() - before
            self._change_received.extend([event.received_at] * caused)
        self._rows.append((event, source))
        self._touched.add(person)

    # ------------------------------------------------------------------ consent

    def _record_consents(self, event: Event) -> None:
        consent = event.context.get("consent")
        preferences = consent.get("categoryPreferences") if isinstance(consent, dict) else None
        if not event.user_id or not isinstance(preferences, dict):
            return
        for purpose, granted in preferences.items():
            if not isinstance(granted, bool) or not isinstance(purpose, str) or not purpose.strip():
                continue
            if self.consents.latest(event.user_id, purpose) is granted:
                continue  # a preference repeated on every event is one choice
            person, choice = new_consent(
                event.user_id,
                purpose,
                granted,
                at=event.timestamp,
                source=f"event:{event.message_id}",
            )
            self.consents.record(person, choice)
            self._consents.append((person, choice))

    def may_personalise(self, person: str, at: datetime) -> bool:
        """The purpose check (see :class:`~segmint.data.privacy.consent.ConsentBook`) for the
        person's customer id, else the person id."""
        subject = self.resolver.customer_of(person) or person
        return self.consents.may_use(subject, PERSONALIZATION, at)

    def apply_firings(self, firings: Sequence[Firing]) -> None:
        for firing in firings:
            if firing.action == "exit":
                self.memberships.exit(
                    firing.person_id,
                    firing.segment,
                    source="trigger",
                    reason=firing.reason,
                    at=firing.at,
                )
                continue
            if not self.may_personalise(firing.person_id, firing.at):
                self.metrics.consent_blocked.inc()
                logger.info("trigger %s not applied: no personalization consent", firing.trigger)
                continue
            expires = firing.at + firing.ttl if firing.ttl is not None else None
            self.memberships.enter(
                Membership(
                    firing.person_id,
                    firing.segment,
                    "trigger",
                    firing.trigger,
                    firing.reason,
                    firing.at,
                    expires,
                )
            )

    # ------------------------------------------------------------------ writing

    def _flush(self, now: datetime, wh: RowWriter) -> list[Change]:
        load_id = f"rt-{uuid.uuid4().hex[:12]}"
        wh.insert_rows(
            "events", _EVENT_SCHEMA.names, self._event_rows(load_id, now), schema=_EVENT_SCHEMA
        )
        wh.insert_rows(
            "failed_events",
            [
                "failure_id",
                "received_at",
                "source",
                "reason",
                "detail",
                "message_id",
                "payload",
                "attempts",
            ],
            [
                (
                    f"f_{uuid.uuid4().hex[:16]}",
                    received,
                    source,
                    rejection.reason,
                    rejection.detail,
                    rejection.message_id,
                    rejection.raw.decode("utf-8", "replace"),
                    1,
                )
                for rejection, source, received in self._failed
            ],
        )
        for (day, source), count in self._suppressed.items():
            wh.execute(
                "INSERT INTO suppressed_events (day, source, events) VALUES (?, ?, ?)",
                [day, source, count],
            )
        insert_consents(wh, self._consents)
        self.resolver.flush(wh, now)
        with self.lock:
            dirty, removed = self.profiles.dirty(), self.profiles.removed()
            if dirty or removed:
                self._journal_seq += 1
                journal_profiles(
                    wh,
                    self._journal_seq,
                    [self.profiles.get_or_create(p) for p in sorted(dirty)],
                    sorted(removed),
                )
                self._uncompacted |= dirty | removed
            self.profiles.mark_clean()
        self.trigger_state.save(wh)
        changes = self.memberships.flush(wh)
        self._rows.clear()
        self._failed.clear()
        self._suppressed.clear()
        self._consents.clear()
        return changes

    def _event_rows(self, load_id: str, now: datetime) -> list[tuple[Any, ...]]:
        rows = []
        for event, source in self._rows:
            properties = event.properties
            if event.previous_id is not None or event.group_id is not None:
                # The events table has no column for these: keep them where the identity
                # resolver looks for them.
                properties = dict(properties)
                if event.previous_id is not None:
                    properties["previousId"] = event.previous_id
                if event.group_id is not None:
                    properties["groupId"] = event.group_id
            rows.append(
                (
                    event.message_id,
                    event.type.value,
                    event.event,
                    event.user_id,
                    event.anonymous_id,
                    event.timestamp,
                    event.sent_at,
                    event.received_at,
                    _json(properties),
                    _json(event.traits),
                    _json(event.context),
                    source,
                    load_id,
                    now,
                )
            )
        return rows

    # ------------------------------------------------------------------ timers

    def timers_due(self, now: datetime) -> bool:
        """A trigger timer is due or a membership expired."""
        next_due = self.trigger_state.next_due()
        expiring = self.memberships.next_expiry()
        return (next_due is not None and next_due <= now) or (
            expiring is not None and expiring <= now
        )

    def run_timers(self, now: datetime) -> list[Change]:
        """Fire due timers and end expired memberships; returns the membership changes.

        Logged as a tick record (written by the next flush), else committed at once.
        """
        return self._change_state(now, lambda: self._fire_timers(now), tick=True)

    def apply_scores(self, now: datetime, scores: Sequence[ModelScore]) -> list[Change]:
        """Move re-scored persons to their model segments; returns the membership changes.

        Logged as a record with the scores (written by the next flush), else committed at
        once.
        """
        return self._change_state(now, lambda: self._move_to_scores(now, scores), scores=scores)

    def _change_state(
        self,
        now: datetime,
        change: Callable[[], None],
        *,
        tick: bool = False,
        scores: Sequence[ModelScore] = (),
    ) -> list[Change]:
        announced = self.memberships.pending_count()
        try:
            change()
            if self.intake_log is None:
                with self.wh.transaction():
                    return self._flush(now, self.wh)
            self._log(now, [], tick=tick, scores=scores)
        except Exception:
            self.load()
            raise
        return self.memberships.pending_changes(announced)

    def _fire_timers(self, now: datetime) -> None:
        self.memberships.expire(now)
        with self.lock:
            firings = self.triggers.due(now, self.trigger_state)
        self.apply_firings(firings)

    def _move_to_scores(self, now: datetime, scores: Sequence[ModelScore]) -> None:
        book = self.memberships
        for score in scores:
            person = self.resolver.person_of(score.customer_id)
            if person is None:
                continue
            held = [m for m in book.current(person, now) if m.source == "model"]
            reason = (
                f"model {score.version}: too little data (fallback rule)"
                if score.segment_id == FALLBACK_SEGMENT
                else f"model {score.version}: nearest to segment {score.segment_id} "
                "(re-scored in real time)"
            )
            if [(m.segment, m.source_name, m.reason) for m in held] == [
                (score.segment, score.version, reason)
            ]:
                continue  # most re-scores confirm the segment: nothing to write
            for m in held:
                if m.segment != score.segment:
                    book.exit(person, m.segment, source="model", reason=reason, at=now)
            # Entering the segment held already refreshes its reason (no outbox row).
            book.enter(Membership(person, score.segment, "model", score.version, reason, now))
