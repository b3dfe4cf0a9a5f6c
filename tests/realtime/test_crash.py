"""kill -9 under load: every acknowledged event is in the warehouse after a restart, once.

``segmint serve`` runs as a subprocess on loopback. Load threads post ``/v1/batch``
requests of :data:`BATCH` events with unique messageIds and note which batches were
answered 200 (acknowledged: the service answers only once the events are synced to its
intake log). At a moment drawn from a seeded random generator the server is killed with
SIGKILL. The warehouse is then opened directly (DuckDB replays its write-ahead log),
``segmint events recover`` writes the acknowledged events still in the intake log, and
every acknowledged messageId must be in ``events`` exactly once, and nothing that was
never sent. The server is restarted, the batches that got no answer are sent again (each
message is accepted or a duplicate, never stored twice) and the next round begins.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from segmint.engine import Warehouse
from segmint.governance.keys import Role, create_key, ensure_keys_table

SEED = 20261123
ROUNDS = 3
BATCH = 50
LOAD_THREADS = 2
#: Bounds against hangs (never timing assertions).
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 20.0
#: The kill happens this long after the first acknowledged batch of a round (seeded).
KILL_AFTER_S = (0.1, 1.5)

PROJECT_YAML = """\
warehouse: ./segmint.duckdb
triggers:
  - name: cart_abandoned_fast
    on: [abandoned_cart]
    when: minutes_since_last_event < 30
    then: {enter: At-Risk, ttl_minutes: 1440}
"""

EVENT_NAMES = ("Product Viewed", "Product Added", "abandoned_cart", "Order Completed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _segmint() -> list[str]:
    script = Path(sys.executable).with_name("segmint")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from segmint.cli.main import run; run()"]


def _serve_command(project: Path, port: int) -> list[str]:
    return [
        *_segmint(),
        "serve",
        "--project",
        str(project),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


class Server:
    """``segmint serve`` in a subprocess, its output in a log file."""

    def __init__(self, project: Path, log: Path) -> None:
        self.project = project
        self.log = log
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def start(self) -> None:
        for _attempt in range(3):  # another process may take the free port first
            self.port = _free_port()
            with self.log.open("ab") as out:
                self.process = subprocess.Popen(
                    _serve_command(self.project, self.port), stdout=out, stderr=out
                )
            if self._wait_ready():
                return
        pytest.fail(f"segmint serve did not start:\n{self.log_tail()}")

    def _wait_ready(self) -> bool:
        """True when ready; False when the process exited (e.g. the port was taken)."""
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with httpx.Client(timeout=2.0) as client:
            while self.process.poll() is None:
                try:
                    if client.get(f"{self.url}/readyz").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.kill()
                    pytest.fail(
                        f"segmint serve not ready in {START_TIMEOUT_S} s:\n{self.log_tail()}"
                    )
                time.sleep(0.05)
        self.process = None
        return False

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """SIGTERM: uvicorn shuts down, the service finishes its queue and closes."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
            pytest.fail(f"segmint serve did not stop on SIGTERM:\n{self.log_tail()}")


@dataclass
class Ledger:
    """Every batch sent, and which ones the server acknowledged."""

    batches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    acknowledged: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    problems: list[str] = field(default_factory=list)

    def new_batch(self, name: str, rng: random.Random, now: datetime) -> list[dict[str, Any]]:
        batch = []
        for i in range(BATCH):
            user = f"user-{rng.randrange(40)}"
            batch.append(
                {
                    "type": "track",
                    "messageId": f"{name}-{i}",
                    "userId": user,
                    "event": rng.choice(EVENT_NAMES),
                    "properties": {"product_id": f"P{rng.randrange(20)}", "price": 9.5},
                    "timestamp": (now - timedelta(seconds=rng.randrange(3600))).isoformat() + "Z",
                }
            )
        with self.lock:
            self.batches[name] = batch
        return batch

    def acknowledge(self, name: str) -> None:
        with self.lock:
            self.acknowledged.add(name)

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)

    def message_ids(self, names: set[str] | None = None) -> set[str]:
        with self.lock:
            chosen = self.batches if names is None else {n: self.batches[n] for n in names}
            return {m["messageId"] for batch in chosen.values() for m in batch}

    def unacknowledged(self) -> list[str]:
        with self.lock:
            return sorted(set(self.batches) - self.acknowledged)


def _post(client: httpx.Client, url: str, batch: list[dict[str, Any]]) -> httpx.Response:
    return client.post(f"{url}/v1/batch", json={"batch": batch})


def _check_answer(ledger: Ledger, name: str, response: httpx.Response, *, resent: bool) -> None:
    """A 200 acknowledges the batch; its counts must cover every message."""
    if response.status_code != 200:
        ledger.problem(f"{name}: HTTP {response.status_code}: {response.text[:200]}")
        return
    body = response.json()
    counted = body["accepted"] + body["duplicate"]
    if body["rejected"] or counted != BATCH or (not resent and body["duplicate"]):
        ledger.problem(f"{name}: unexpected answer {body}")
    ledger.acknowledge(name)


def _load(
    server_url: str,
    auth: httpx.BasicAuth,
    ledger: Ledger,
    stop: threading.Event,
    label: str,
    seed: int,
) -> None:
    rng = random.Random(seed)
    with httpx.Client(auth=auth, timeout=REQUEST_TIMEOUT_S) as client:
        for n in range(1_000_000):
            if stop.is_set():
                return
            name = f"{label}-{n}"
            batch = ledger.new_batch(name, rng, datetime.now(UTC).replace(tzinfo=None))
            try:
                response = _post(client, server_url, batch)
            except httpx.HTTPError:
                return  # the server is gone: this batch stays unacknowledged
            _check_answer(ledger, name, response, resent=False)


def _stored_counts(database: Path) -> dict[str, int]:
    """messageId -> rows in ``events``, read with the server stopped: the warehouse opens
    (DuckDB replays its write-ahead log), then ``segmint events recover`` writes what the
    server acknowledged from its intake log."""
    Warehouse(database).close()
    recovered = subprocess.run(
        [*_segmint(), "events", "recover", "--project", str(database.parent)],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    assert recovered.returncode == 0, recovered.stderr
    assert "recovered" in recovered.stdout, recovered.stdout
    wh = Warehouse(database)
    try:
        return dict(wh.fetchall("SELECT message_id, count(*) FROM events GROUP BY message_id"))
    finally:
        wh.close()


def _assert_exactly_once(ledger: Ledger, database: Path, *, everything_sent: bool) -> None:
    stored = _stored_counts(database)
    twice = {m: n for m, n in stored.items() if n != 1}
    assert not twice, f"stored more than once: {sorted(twice)[:10]}"
    sent = ledger.message_ids()
    assert set(stored) <= sent, f"never sent: {sorted(set(stored) - sent)[:10]}"
    acknowledged = ledger.message_ids(set(ledger.acknowledged))
    lost = acknowledged - set(stored)
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:10]}"
    if everything_sent:
        assert set(stored) == sent


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    directory = tmp_path / "project"
    directory.mkdir()
    (directory / "segmint.yaml").write_text(PROJECT_YAML, encoding="utf-8")
    wh = Warehouse(directory / "segmint.duckdb")
    try:
        ensure_keys_table(wh)
        with wh.transaction():
            _, key = create_key(wh, Role.ingest, name="crash test")
    finally:
        wh.close()
    yield directory, key


def _resend(server: Server, auth: httpx.BasicAuth, ledger: Ledger) -> None:
    with httpx.Client(auth=auth, timeout=REQUEST_TIMEOUT_S) as client:
        for name in ledger.unacknowledged():
            _check_answer(
                ledger, name, _post(client, server.url, ledger.batches[name]), resent=True
            )


def test_kill_9_under_load_keeps_every_acknowledged_event_exactly_once(
    project: tuple[Path, str], tmp_path: Path
) -> None:
    directory, key = project
    database = directory / "segmint.duckdb"
    auth = httpx.BasicAuth(key, "")
    rng = random.Random(SEED)
    ledger = Ledger()
    server = Server(directory, tmp_path / "serve.log")
    try:
        _rounds(server, auth, ledger, rng, database)
    except (AssertionError, httpx.HTTPError) as e:
        output = server.log_tail()
        raise AssertionError(f"{e!r}\n--- segmint serve output ---\n{output}") from e
    finally:
        server.kill()
    assert not ledger.problems, ledger.problems
    _assert_exactly_once(ledger, database, everything_sent=True)
    assert len(ledger.batches) > ROUNDS  # the load really ran


def _rounds(
    server: Server, auth: httpx.BasicAuth, ledger: Ledger, rng: random.Random, database: Path
) -> None:
    """Load, kill -9, check, restart and resend, :data:`ROUNDS` times; then a clean stop."""
    for round_no in range(ROUNDS):
        server.start()
        _resend(server, auth, ledger)  # the previous round's unanswered batches
        assert not ledger.unacknowledged()
        stop = threading.Event()
        threads = [
            threading.Thread(
                target=_load,
                args=(server.url, auth, ledger, stop, f"r{round_no}t{t}", rng.randrange(2**32)),
                daemon=True,
            )
            for t in range(LOAD_THREADS)
        ]
        acknowledged_before = len(ledger.acknowledged)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(ledger.acknowledged) == acknowledged_before:  # the load is flowing
            assert time.monotonic() < deadline, "no batch was acknowledged"
            assert all(t.is_alive() for t in threads), ledger.problems
            time.sleep(0.01)
        time.sleep(rng.uniform(*KILL_AFTER_S))  # choose the moment of the kill
        server.kill()
        stop.set()
        for thread in threads:
            thread.join(REQUEST_TIMEOUT_S)
            assert not thread.is_alive()
        assert not ledger.problems, ledger.problems
        _assert_exactly_once(ledger, database, everything_sent=False)

    server.start()
    _resend(server, auth, ledger)
    assert not ledger.unacknowledged()
    server.stop()
