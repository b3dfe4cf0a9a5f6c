"""Replaying a batch changes nothing: serially, from 8 threads at once, after a restart.

DESIGN §9: "Replay a batch twice (serial and concurrent): nothing changes." The batch
holds 300 valid events of 20 persons (anonymous visits, identify merges, consent
choices, abandoned carts that set off the seed trigger, checkouts that start absence
timers), interleaved as a site would send them. Sent over HTTP to uvicorn, with the
service's clock fixed so that no timer or TTL moves between the snapshots; a
snapshot is the full content of every table the real-time path writes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from segmint.api import create_app
from segmint.config import load_project
from segmint.engine import Warehouse
from segmint.realtime.service import RealtimeService
from tests.api.conftest import (
    NOW,
    Clock,
    add_keys,
    basic_auth,
    iso,
    open_service,
    uvicorn_server,
)

pytestmark = pytest.mark.slow

PERSONS = 20
THREADS = 8

#: Table -> columns left out of the comparison: per-load ids, the key a load came
#: through (each service has its own keys), and wall-clock write times.
TABLES: dict[str, tuple[str, ...]] = {
    "events": ("_load_id", "_source"),
    "profiles": ("updated_at",),
    "memberships": (),
    "membership_outbox": (),
    "identities": (),
    "identity_links": (),
    "trigger_fires": (),
    "trigger_timers": (),
    "consents": ("_load_id", "_loaded_at"),
    "failed_events": ("failure_id", "source"),
    "suppressed_events": ("source",),
}


def person_events(i: int) -> list[dict[str, Any]]:
    """15 events of person ``i``, all within the hour before :data:`NOW`.

    Even persons abandon a cart within 30 minutes (At-Risk, for a day); every fifth
    withdrew personalization; every third never completes the checkout, whose absence
    timer is due after :data:`NOW` (the clock is fixed: it stays pending).
    """
    user, anonymous = f"replay-{i:02d}", f"replay-anon-{i:02d}"
    start = NOW - timedelta(minutes=70) + timedelta(seconds=20 * i)

    def at(minutes: float) -> str:
        return iso(start + timedelta(minutes=minutes))

    def track(event: str, minutes: float, **properties: Any) -> dict[str, Any]:
        message = {"type": "track", "userId": user, "event": event, "timestamp": at(minutes)}
        return {**message, "properties": properties}

    identify: dict[str, Any] = {
        "type": "identify",
        "userId": user,
        "anonymousId": anonymous,
        "traits": {"email": f"{user}@example.com", "plan": "pro" if i % 2 else "free"},
        "timestamp": at(2),
    }
    if i % 5 == 0:
        identify["context"] = {"consent": {"categoryPreferences": {"personalization": False}}}
    cart_gap = 10 if i % 2 == 0 else 45
    ending = (
        track("Checkout Started", 58, value=5.0)
        if i % 3 == 0
        else track("Order Completed", 58, revenue=20.0 + i, order_id=f"o-{i}")
    )
    events = [
        {"type": "page", "anonymousId": anonymous, "name": "Home", "timestamp": at(0)},
        {"type": "page", "anonymousId": anonymous, "name": "Shoes", "timestamp": at(1)},
        identify,
        track("Product Viewed", 3, product_id=f"p-{i}", price=10.0 + i),
        track("Product Viewed", 4, product_id=f"p-{i + 1}", price=12.5),
        track("Product Added", 5, product_id=f"p-{i}", price=10.0 + i, quantity=2),
        track("abandoned_cart", 5 + cart_gap),
        {"type": "screen", "userId": user, "name": "Cart", "timestamp": at(52)},
        {"type": "group", "userId": user, "groupId": f"org-{i % 3}", "timestamp": at(53)},
        track("Coupon Entered", 54, coupon="WELCOME"),
        {"type": "alias", "userId": user, "previousId": f"old-{user}", "timestamp": at(55)},
        track("Product Viewed", 56, product_id="p-x", price=1.0),
        track("Checkout Started", 57, value=20.0 + i),
        ending,
        {"type": "page", "userId": user, "name": "Thanks", "timestamp": at(59)},
    ]
    for n, event in enumerate(events):
        event["messageId"] = f"{user}-{n:02d}"
    return events


def replay_body() -> bytes:
    per_person = [person_events(i) for i in range(PERSONS)]
    interleaved = [events[n] for n in range(15) for events in per_person]
    assert len(interleaved) == 300
    return orjson.dumps({"batch": interleaved, "sentAt": iso(NOW)})


BODY = replay_body()


def snapshot(service: RealtimeService) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of the real-time path, in a stable order (the profiles
    table refreshed from the journal first)."""
    service.compact_profiles()
    wh = service.wh
    tables = {}
    for table, volatile in TABLES.items():
        columns = [c for c in wh.columns(table) if c not in volatile]
        names = ", ".join(f'"{c}"' for c in columns)
        rows = wh.fetchall(f'SELECT {names} FROM "{table}" ORDER BY ALL')
        tables[table] = [tuple(row) for row in rows]
    return tables


def counts(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, int]:
    return {table: len(rows) for table, rows in tables.items()}


class Served:
    def __init__(self, service: RealtimeService, url: str, key: str) -> None:
        self.service, self.url, self.headers = service, url, basic_auth(key)
        self.headers["Content-Type"] = "application/json"

    def send(self) -> dict[str, Any]:
        with httpx.Client(timeout=120) as client:
            response = client.post(f"{self.url}/v1/batch", content=BODY, headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def send_concurrently(self) -> list[dict[str, Any]]:
        start = threading.Barrier(THREADS)
        answers: list[dict[str, Any]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()

        def sender() -> None:
            try:
                start.wait()
                answer = self.send()
                with lock:
                    answers.append(answer)
            except BaseException as e:  # reported below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=sender) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        assert len(answers) == THREADS
        return answers


@pytest.fixture
def serve(tmp_path: Path, project_dir: Path) -> Iterator[Any]:
    """Start services under uvicorn (fixed clock); everything is closed after the test."""
    started: list[RealtimeService] = []
    stack: list[Any] = []

    def _serve() -> Served:
        service = open_service(project_dir, clock=Clock())
        started.append(service)
        keys, _ = add_keys(service)
        server = uvicorn_server(create_app(service))
        url = server.__enter__()
        stack.append(server)
        return Served(service, url, keys["ingest"])

    try:
        yield _serve
    finally:
        for server in reversed(stack):
            server.__exit__(None, None, None)
        for service in started:
            service.close()


def test_the_replay_batch_exercises_what_it_should(serve: Any) -> None:
    served = serve()
    answer = served.send()
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (300, 0, 0)

    tables = snapshot(served.service)
    sizes = counts(tables)
    assert sizes["events"] == 300
    assert sizes["profiles"] == PERSONS  # anonymous visits merged into the identified person
    at_risk = {row[0] for row in tables["memberships"] if row[1] == "At-Risk"}
    # even persons abandon within 30 minutes; every fifth withdrew personalization
    expected = {served.service.person_of(f"replay-{i:02d}") for i in range(0, PERSONS, 2)}
    expected -= {served.service.person_of(f"replay-{i:02d}") for i in range(0, PERSONS, 5)}
    assert at_risk == expected
    pending = {row[0] for row in tables["trigger_timers"]}
    assert pending == {served.service.person_of(f"replay-{i:02d}") for i in range(0, PERSONS, 3)}
    assert sizes["membership_outbox"] == len(expected)
    assert sizes["failed_events"] == 0


def test_replaying_serially_and_from_8_threads_changes_nothing(serve: Any) -> None:
    served = serve()
    assert served.send()["accepted"] == 300
    before = snapshot(served.service)

    again = served.send()
    assert (again["accepted"], again["duplicate"], again["rejected"]) == (0, 300, 0)
    assert snapshot(served.service) == before

    for answer in served.send_concurrently():
        assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (0, 300, 0)
    after = snapshot(served.service)
    assert counts(after) == counts(before)
    assert after == before


def test_a_concurrent_first_delivery_ends_like_a_serial_one(serve: Any) -> None:
    serial, concurrent = serve(), serve()
    assert serial.send()["accepted"] == 300

    answers = concurrent.send_concurrently()

    assert sum(a["accepted"] for a in answers) == 300
    assert sum(a["duplicate"] for a in answers) == 300 * (THREADS - 1)
    assert all(a["rejected"] == 0 for a in answers)
    assert snapshot(concurrent.service) == snapshot(serial.service)


def run_once(service: RealtimeService) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Serve ``service`` under uvicorn, send the batch once; the answer and a snapshot."""
    keys, _ = add_keys(service)
    with uvicorn_server(create_app(service)) as url:
        answer = Served(service, url, keys["ingest"]).send()
    return answer, snapshot(service)


def test_a_replay_after_a_restart_is_still_recognised(project_dir: Path) -> None:
    """The dedupe window outlives the process: a client retrying after a restart."""
    first = open_service(project_dir, clock=Clock())
    try:
        answer, before = run_once(first)
        assert answer["accepted"] == 300
    finally:
        first.close()

    project, _root = load_project(project_dir)
    restarted = RealtimeService(project, Warehouse(first.wh.path), clock=Clock())
    try:
        answer, after = run_once(restarted)
    finally:
        restarted.close()
    assert (answer["accepted"], answer["duplicate"], answer["rejected"]) == (0, 300, 0)
    assert after == before
