"""Fixtures of the HTTP API tests: a project with triggers, a running service, keys per role.

Every test module gets its own project folder (``project_dir``) holding ``segmint.yaml``
with the seed trigger (``cart_abandoned_fast``: ``abandoned_cart`` less than 30 minutes
after the previous event enters ``At-Risk`` for a day) and an absence trigger
(``checkout_abandoned``: ``Checkout Started`` without ``Order Completed`` within 30
minutes enters ``Checkout Abandoners`` for an hour). A module may add project-file
lines by overriding the ``project_extra`` fixture.

:func:`running_api` opens a service over its own DuckDB file in that folder, creates
one key per role (and a revoked one) before the app starts, and yields an :class:`Api`
with a ``TestClient``. Services get a :class:`Clock` (fixed "now", naive UTC) unless a
test asks for the real one, so timers and TTLs only move when a test moves them.
"""

from __future__ import annotations

import base64
import itertools
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from segmint.api import create_app
from segmint.config import load_project
from segmint.engine import Warehouse
from segmint.governance.keys import Role, create_key, revoke_key
from segmint.governance.throttle import AuthThrottle
from segmint.realtime.service import RealtimeService

PROJECT_YAML = """\
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

#: "Now" of the fixed clocks: events of the tests happen shortly before it.
NOW = datetime(2026, 11, 23, 12, 0)
#: Who can present a key: the five roles and a revoked admin key.
PRINCIPALS = (*(role.value for role in Role), "revoked")
#: Upper bound for the writer thread's background work to get somewhere (never asserted).
WAIT_S = 20.0
PSEUDONYMIZATION_KEY = "k" * 40

_databases = itertools.count()


class Clock:
    """A settable source of "now" (naive UTC) for :class:`RealtimeService`."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def iso(moment: datetime) -> str:
    """A naive UTC time as the ISO-8601 text Segment clients send."""
    return moment.isoformat(timespec="milliseconds") + "Z"


def uid(prefix: str = "u") -> str:
    """A user id no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def basic_auth(key: str) -> dict[str, str]:
    """The header the Segment SDKs send: the key as HTTP Basic user, empty password."""
    token = base64.b64encode(f"{key}:".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def unthrottled() -> AuthThrottle:
    """A throttle that never blocks (for tests that send many bad keys on purpose)."""
    return AuthThrottle(max_failures=1_000_000)


@dataclass
class Api:
    """A running app over a service, with one key per principal."""

    service: RealtimeService
    client: TestClient
    keys: dict[str, str]
    key_ids: dict[str, str]
    clock: Clock
    app: FastAPI = field(repr=False)

    @property
    def wh(self) -> Warehouse:
        return self.service.wh

    def headers(self, who: str | None) -> dict[str, str]:
        """Authorization of a principal (a role name, ``revoked``), none for ``None``."""
        return {} if who is None else basic_auth(self.keys[who])

    def post(
        self,
        path: str,
        payload: Any = None,
        *,
        who: str | None = "ingest",
        content: bytes | None = None,
    ) -> httpx.Response:
        if content is not None:
            headers = {**self.headers(who), "Content-Type": "application/json"}
            return self.client.post(path, content=content, headers=headers)
        return self.client.post(path, json=payload, headers=self.headers(who))

    def get(
        self, path: str, *, who: str | None = "admin", params: dict[str, Any] | None = None
    ) -> httpx.Response:
        return self.client.get(path, headers=self.headers(who), params=params)

    def rows(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Read the warehouse once every acknowledged event is written to it."""
        self.service.flush()
        return [tuple(row) for row in self.wh.fetchall(sql, params)]

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        self.service.flush()
        return self.wh.scalar(sql, params)

    def person(self, identifier: str) -> str:
        person = self.service.person_of(identifier)
        assert person is not None, f"no person for {identifier!r}"
        return person

    def segments_of(self, identifier: str, *, who: str = "analyst") -> list[str]:
        response = self.get(f"/v1/profiles/{identifier}/segments", who=who)
        assert response.status_code == 200, response.text
        return [s["segment"] for s in response.json()["segments"]]


def write_project(directory: Path, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "segmint.yaml").write_text(PROJECT_YAML + extra, encoding="utf-8")
    return directory


def open_service(directory: Path, *, clock: Callable[[], datetime]) -> RealtimeService:
    """A service (not started) over a new DuckDB file in the project folder."""
    project, root = load_project(directory)
    wh = Warehouse(root / f"api-{next(_databases)}.duckdb")
    return RealtimeService(project, wh, clock=clock)


def add_keys(service: RealtimeService) -> tuple[dict[str, str], dict[str, str]]:
    """One key per role and a revoked admin key; the service's cache is refreshed."""
    keys: dict[str, str] = {}
    ids: dict[str, str] = {}
    with service.wh.transaction():
        for role in Role:
            info, keys[role.value] = create_key(service.wh, role, name=f"test {role.value}")
            ids[role.value] = info.key_id
        info, keys["revoked"] = create_key(service.wh, Role.admin, name="revoked")
        ids["revoked"] = info.key_id
        revoke_key(service.wh, info.key_id)
    service.keys.refresh(service.wh)
    return keys, ids


@contextmanager
def running_api(directory: Path, *, clock: Clock | None = None) -> Iterator[Api]:
    """Open a service with keys, run its app in a ``TestClient``; close everything after."""
    clock = clock if clock is not None else Clock()
    service = open_service(directory, clock=clock)
    try:
        keys, ids = add_keys(service)
        app = create_app(service)
        with TestClient(app) as client:
            yield Api(service, client, keys, ids, clock, app)
    finally:
        service.close()


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail after :data:`WAIT_S` (a hang, not a timing)."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


# ---------------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def uvicorn_server(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free loopback port in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), "uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT_S)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def project_extra() -> str:
    """Project-file lines added after the triggers (modules override this)."""
    return ""


@pytest.fixture(scope="module")
def project_dir(tmp_path_factory: pytest.TempPathFactory, project_extra: str) -> Path:
    return write_project(tmp_path_factory.mktemp("project"), project_extra)


@pytest.fixture(scope="module")
def api(project_dir: Path) -> Iterator[Api]:
    """One running API per module (fixed clock); tests keep apart by their user ids."""
    with running_api(project_dir) as running:
        running.app.state.throttle = unthrottled()
        yield running


@pytest.fixture
def fresh_api(project_dir: Path) -> Iterator[Api]:
    """A running API over an empty warehouse, for tests that count or move the clock."""
    with running_api(project_dir) as running:
        yield running


@pytest.fixture
def pseudonymization_key(monkeypatch: pytest.MonkeyPatch) -> bytes:
    monkeypatch.setenv("SEGMINT_PSEUDONYMIZATION_KEY", PSEUDONYMIZATION_KEY)
    monkeypatch.delenv("SEGMINT_PSEUDONYMIZATION_KEY_FILE", raising=False)
    return PSEUDONYMIZATION_KEY.encode()


@pytest.fixture
def no_pseudonymization_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEGMINT_PSEUDONYMIZATION_KEY", raising=False)
    monkeypatch.delenv("SEGMINT_PSEUDONYMIZATION_KEY_FILE", raising=False)
