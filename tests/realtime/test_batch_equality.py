"""Streaming a data set event by event gives the profiles and segments the batch pipeline gives.

A synthetic data set (customers, orders, events) is ingested in batch and the pipeline
publishes a model version; its assignments and its feature snapshot's ``as_of`` are
recorded. Then the ``events`` table is emptied (customers, orders, the model and the
snapshot stay) and the very same events are sent again, one message per request and in
time order, through the real-time service with its clock fixed at that ``as_of``. After
:meth:`RealtimeService.rescore_now`:

* every customer's model membership names the segment of its batch assignment;
* the real-time profiles (served and saved) equal :func:`profiles_sql` over the events
  the service stored, grouped by the person the service resolved each event to.

The events sent are the rows batch ingest kept (quarantined rows are not events), each
written back as a Segment message with its stored ``timestamp`` and no ``sentAt``, so the
intake's clock-skew correction leaves the time unchanged.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from segmint.data.demo import write_demo_project
from segmint.data.synthetic import generate
from segmint.engine import Warehouse
from segmint.project import Project
from segmint.realtime.events import EventType, IngestOutcome, Rejection
from segmint.realtime.profiles import PROFILE_FIELD_TYPES, profiles_sql
from segmint.realtime.service import RealtimeService
from segmint.realtime.spec import parse_message
from segmint.segments.registry import current_assignments

SEED = 20261123
CUSTOMERS = 300
#: Requests in flight at once (the writer groups them into commits, as under real load).
IN_FLIGHT = 500
#: Tables the real-time path writes; emptied before the replay.
REALTIME_TABLES = (
    "events",
    "failed_events",
    "memberships",
    "membership_outbox",
    "suppressed_events",
    "profiles",
    "trigger_fires",
    "trigger_timers",
    "identities",
    "identity_links",
)
_EVENT_COLUMNS = (
    "message_id",
    "type",
    "event",
    "user_id",
    "anonymous_id",
    "timestamp",
    "properties",
    "traits",
    "context",
)
#: Each stored event with the person the service resolved it to (after all merges).
_EVENTS_BY_PERSON = """
CREATE OR REPLACE TEMP VIEW events_by_person AS
SELECT e.*, coalesce(u.person_id, a.person_id) AS person_id
FROM events AS e
LEFT JOIN identities AS u
    ON u.identifier_type = 'user_id' AND u.identifier_value = e.user_id
LEFT JOIN identities AS a
    ON e.user_id IS NULL AND a.identifier_type = 'anonymous_id'
    AND a.identifier_value = e.anonymous_id
"""


@dataclass
class Replay:
    """The batch results and the service that streamed the same events."""

    service: RealtimeService
    as_of: datetime
    version: str
    batch_segments: dict[str, str]  # customer id -> segment name
    batch_events: set[tuple[Any, ...]]  # the events batch ingest stored
    identified: set[str]  # user ids that have events
    outcome: IngestOutcome


def _message(row: tuple[Any, ...]) -> dict[str, Any]:
    """A stored event as the Segment message a client would have sent."""
    message_id, call, name, user_id, anonymous_id, timestamp, properties, traits, context = row
    message: dict[str, Any] = {
        "type": call,
        "messageId": message_id,
        "timestamp": timestamp.isoformat() + "Z",
    }
    if name is not None:
        message["event" if call == "track" else "name"] = name
    if user_id is not None:
        message["userId"] = user_id
    if anonymous_id is not None:
        message["anonymousId"] = anonymous_id
    for key, text in (("properties", properties), ("traits", traits), ("context", context)):
        if text is not None:
            message[key] = orjson.loads(text)
    return message


def _comparable(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """An events row with its JSON columns parsed and sorted.

    Text formatting may differ, and an empty object counts as NULL: batch ingest keeps
    ``{}`` where the real-time intake writes NULL for an absent or empty object.
    """
    *head, properties, traits, context = row
    as_json = [orjson.loads(v) if v is not None else None for v in (properties, traits, context)]
    return (*head, *(orjson.dumps(v or None, option=orjson.OPT_SORT_KEYS) for v in as_json))


def _run_batch(folder: Path) -> tuple[Path, datetime, str, dict[str, str], list[tuple[Any, ...]]]:
    data = generate(folder / "data", customers=CUSTOMERS, seed=SEED)
    files = {k: v for k, v in data.files.items() if k in ("customers", "orders", "events")}
    project_file = write_demo_project(files, folder)
    config = yaml.safe_load(project_file.read_text(encoding="utf-8"))
    config["segmentation"] = {"k": 4, "bootstrap": 0, "seed": SEED}
    project_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")

    project = Project(project_file)
    try:
        project.ingest()
        result = project.run()
        wh = project.warehouse
        assignments = current_assignments(wh)
        segments = dict(zip(assignments["customer_id"], assignments["segment_name"], strict=True))
        columns = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
        events = wh.fetchall(f'SELECT {columns} FROM events ORDER BY "timestamp", message_id')
        with wh.transaction():
            for table in REALTIME_TABLES:
                if wh.has_table(table):
                    wh.execute(f"DELETE FROM {table}")
    finally:
        project.close()
    return project_file, result.features.as_of, result.version, segments, events


def _stream(service: RealtimeService, messages: list[dict[str, Any]]) -> IngestOutcome:
    """One request per message, in order, many in flight; returns the summed outcome."""
    total = IngestOutcome()
    in_flight: deque[Future[IngestOutcome]] = deque()

    def collect(future: Future[IngestOutcome]) -> None:
        outcome = future.result()
        total.accepted += outcome.accepted
        total.duplicate += outcome.duplicate
        total.rejected.extend(outcome.rejected)

    for message in messages:
        request = service.parse(orjson.dumps(message), EventType(message["type"]))
        in_flight.append(service.submit(request, source="replay"))
        if len(in_flight) >= IN_FLIGHT:
            collect(in_flight.popleft())
    while in_flight:
        collect(in_flight.popleft())
    return total


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replay]:
    folder = tmp_path_factory.mktemp("batch_equality")
    project_file, as_of, version, segments, rows = _run_batch(folder)
    service = RealtimeService.open(project_file, clock=lambda: as_of)
    try:
        service.start()
        assert service.rescorer.version is not None
        assert service.rescorer.version.version == version
        outcome = _stream(service, [_message(row) for row in rows])
        service.rescore_now()
        service.compact_profiles()
        yield Replay(
            service=service,
            as_of=as_of,
            version=version,
            batch_segments=segments,
            batch_events={_comparable(row) for row in rows},
            identified={row[3] for row in rows if row[3] is not None},
            outcome=outcome,
        )
    finally:
        service.close()


def test_every_event_is_accepted_and_stored_as_batch_ingest_stored_it(replay: Replay) -> None:
    assert replay.outcome.rejected == []
    assert (replay.outcome.accepted, replay.outcome.duplicate) == (len(replay.batch_events), 0)
    columns = ", ".join(f'"{c}"' for c in _EVENT_COLUMNS)
    stored = replay.service.wh.fetchall(f"SELECT {columns} FROM events")
    assert {_comparable(row) for row in stored} == replay.batch_events


def test_model_segments_equal_the_batch_assignments(replay: Replay) -> None:
    service = replay.service
    with_events = [c for c in replay.batch_segments if c in replay.identified]
    assert len(with_events) >= CUSTOMERS // 2  # the comparison is not vacuous
    assert len(set(replay.batch_segments.values())) >= 2
    differing = {}
    for customer, batch_segment in replay.batch_segments.items():
        held = service.memberships_of(customer)
        model = [m for m in held or [] if m.source == "model"]
        assert len(model) == 1, (customer, held)
        assert model[0].source_name == replay.version
        if customer not in replay.identified:
            # Never heard of in real time: served from the batch run, as assigned.
            assert model[0].reason.endswith("batch run"), model[0]
            assert model[0].segment == batch_segment, customer
            continue
        assert "re-scored" in model[0].reason or "fallback" in model[0].reason, model[0]
        if model[0].segment != batch_segment:
            differing[customer] = (batch_segment, model[0].segment)
    assert not differing, f"{len(differing)} customers differ (batch, real time): {differing}"


def _profiles_by_sql(wh: Warehouse) -> dict[str, dict[str, Any]]:
    wh.execute(_EVENTS_BY_PERSON)
    assert wh.fetchall("SELECT count(*) FROM events_by_person WHERE person_id IS NULL") == [(0,)]
    table = wh.arrow(profiles_sql("events_by_person"))
    return {row["person_id"]: row for row in table.to_pylist()}


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, float) and isinstance(actual, float):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-9)  # summation order
    return bool(expected == actual)


def _traits(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    return orjson.loads(value) if isinstance(value, str | bytes) else dict(value)


def _differences(expected: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    found = [
        f"{name}: batch {expected[name]!r}, real time {actual[name]!r}"
        for name in PROFILE_FIELD_TYPES
        if not _same(expected[name], actual[name])
    ]
    if _traits(expected["traits"]) != _traits(actual["traits"]):
        found.append(f"traits: batch {expected['traits']!r}, real time {actual['traits']!r}")
    return found


def test_served_profiles_equal_profiles_sql(replay: Replay) -> None:
    service = replay.service
    by_sql = _profiles_by_sql(service.wh)
    assert len(by_sql) >= CUSTOMERS // 2
    assert set(service.processor.profiles) == set(by_sql)
    problems = {}
    for person_id, expected in by_sql.items():
        served = service.profile(person_id)
        assert served is not None and served["person_id"] == person_id
        fields = dict(served["fields"])
        for name in ("first_seen_at", "last_seen_at", "last_order_at"):
            text = fields[name]
            fields[name] = None if text is None else datetime.fromisoformat(text)
        found = _differences(expected, {**fields, "traits": served["traits"]})
        if found:
            problems[person_id] = found
    assert not problems, problems


def test_saved_profiles_equal_profiles_sql(replay: Replay) -> None:
    service = replay.service
    by_sql = _profiles_by_sql(service.wh)
    columns = ", ".join(f'"{c}"' for c in ("person_id", *PROFILE_FIELD_TYPES, "traits"))
    saved = {
        row["person_id"]: row
        for row in service.wh.arrow(f"SELECT {columns} FROM profiles").to_pylist()
    }
    assert set(saved) - set(by_sql) == set(), "saved profiles of persons without events (merged)"
    assert set(by_sql) - set(saved) == set(), "persons with events but no saved profile"
    problems = {p: d for p in by_sql if (d := _differences(by_sql[p], saved[p]))}
    assert not problems, problems


def test_batch_ingest_keeps_the_exported_time_and_the_intake_corrects_the_client_clock(
    make_project: Any,
) -> None:
    """One message, two paths. The real-time intake receives what the client's clock said
    and stores ``receivedAt - (sentAt - timestamp)``. An events file is an export whose
    ``timestamp`` is already corrected by the collector that received it (Segment's
    warehouses hold the corrected time), so batch ingest keeps it: correcting again would
    shift it twice.
    """
    message = {
        "messageId": "skew-1",
        "type": "track",
        "event": "Product Viewed",
        "userId": "C1",
        "timestamp": "2026-01-10T12:00:00.000Z",
        "sentAt": "2026-01-10T12:00:30.000Z",  # the client's clock
        "receivedAt": "2026-01-10T12:00:02.000Z",  # the collector's clock
    }
    project = make_project(
        "sources:\n  - {name: web, kind: events, path: events.jsonl}\n",
        {"events.jsonl": orjson.dumps(message).decode() + "\n"},
    )
    project.ingest()
    (batch_time,) = project.warehouse.fetchall(
        "SELECT \"timestamp\" FROM events WHERE message_id = 'skew-1'"
    )[0]
    received = datetime(2026, 1, 10, 12, 0, 2)
    intake = parse_message(message, received_at=received)
    assert not isinstance(intake, Rejection)
    assert intake.timestamp == datetime(2026, 1, 10, 11, 59, 32)
    assert batch_time == datetime(2026, 1, 10, 12, 0)
