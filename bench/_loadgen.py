"""Load generator of ``bench/realtime.py``: Segment payloads and paced HTTP clients.

Standard library only, so that the client processes start fast and stay small:
each worker process owns one keep-alive ``http.client`` connection to the server
on loopback, builds its request bodies *before* the clock starts (the timed loop
only sends pre-serialised bytes and reads the answer), waits for a common start
time, then sends either as fast as the server answers (``rate`` 0) or paced on a
fixed schedule (``rate`` requests/s), and stops after ``count`` requests or at
``deadline``, whichever comes first. It reports latencies measured from the actual
send and from the scheduled send (the latter is not fooled by coordinated
omission: a slow answer delays the next request and that delay is counted), plus
its own CPU time, so the caller can tell whether the client was the bottleneck.

Payloads follow the Segment spec as analytics.js / analytics-python send them:
track (e-commerce events), page, screen and identify calls with ``messageId``,
``timestamp``, ``context`` (library, ip, userAgent, page) and ``properties`` or
``traits``, for a pool of identified persons ``u<n>`` (each with a stable device
id ``anon-u<n>``) plus a few anonymous visitors ``anon-v<n>`` who occasionally
identify as a person (an anonymous-to-identified merge).
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import resource
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "EventFactory",
    "WorkerResult",
    "WorkerSpec",
    "basic_auth",
    "build_requests",
    "run_worker",
]

#: Track events and their weights in the generated traffic (page/screen/identify aside).
TRACK_MIX: tuple[tuple[str, int], ...] = (
    ("Product Viewed", 40),
    ("Product List Viewed", 10),
    ("Product Added", 12),
    ("Product Removed", 3),
    ("Cart Viewed", 6),
    ("Checkout Started", 5),
    ("Order Completed", 4),
    ("abandoned_cart", 2),
    ("Email Opened", 4),
    ("Products Searched", 6),
)
CALL_MIX: tuple[tuple[str, int], ...] = (
    ("track", 72),
    ("page", 20),
    ("screen", 3),
    ("identify", 5),
)
#: Untimed look-ups each ``get`` worker sends before the clock starts.
WARM_UP = 5
CATEGORIES = ("shoes", "outerwear", "accessories", "kids", "home", "beauty")
USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
)


def basic_auth(key: str) -> str:
    """The ``Authorization`` header value of a write key (HTTP Basic, key as user)."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventFactory:
    """Realistic Segment messages with unique ``messageId`` values (deterministic by seed).

    Examples
    --------
    >>> f = EventFactory(persons=100, seed=1, prefix="t")
    >>> m = f.message()
    >>> sorted(k for k in ("messageId", "type", "timestamp", "context") if k in m)
    ['context', 'messageId', 'timestamp', 'type']
    """

    def __init__(self, *, persons: int, seed: int, prefix: str, visitors: int = 0) -> None:
        self.persons = persons
        self.visitors = visitors if visitors else max(persons // 10, 1)
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.seq = 0
        self._calls = [c for c, _ in CALL_MIX]
        self._call_w = [w for _, w in CALL_MIX]
        self._tracks = [e for e, _ in TRACK_MIX]
        self._track_w = [w for _, w in TRACK_MIX]

    def _message_id(self) -> str:
        self.seq += 1
        return f"{self.prefix}-{self.seq}"

    def _context(self, path: str) -> dict[str, Any]:
        rng = self.rng
        return {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "userAgent": rng.choice(USER_AGENTS),
            "locale": "en-GB",
            "page": {"path": path, "url": f"https://shop.example.com{path}"},
        }

    def _product(self) -> dict[str, Any]:
        rng = self.rng
        n = rng.randrange(5_000)
        return {
            "product_id": f"p-{n}",
            "sku": f"SKU-{n:05d}",
            "category": CATEGORIES[n % len(CATEGORIES)],
            "name": f"Product {n}",
            "price": round(5 + (n % 200) * 1.25, 2),
            "quantity": rng.choice((1, 1, 1, 2)),
            "currency": "GBP",
        }

    def _who(self, anonymous_ok: bool = True) -> dict[str, str]:
        rng = self.rng
        if anonymous_ok and rng.random() < 0.05:
            return {"anonymousId": f"anon-v{rng.randrange(self.visitors)}"}
        n = rng.randrange(self.persons)
        return {"userId": f"u{n}", "anonymousId": f"anon-u{n}"}

    def track(self, event: str, who: dict[str, str] | None = None) -> dict[str, Any]:
        """One track call of ``event`` (properties fitting the event)."""
        rng = self.rng
        if event in ("Product Viewed", "Product Added", "Product Removed"):
            properties: dict[str, Any] = self._product()
        elif event == "Order Completed":
            items = [self._product() for _ in range(rng.randrange(1, 4))]
            properties = {
                "order_id": f"o-{self.prefix}-{self.seq}",
                "total": round(sum(i["price"] * i["quantity"] for i in items), 2),
                "currency": "GBP",
                "products": items,
            }
        elif event == "Products Searched":
            properties = {"query": rng.choice(CATEGORIES)}
        elif event == "Product List Viewed":
            properties = {"category": rng.choice(CATEGORIES)}
        else:
            properties = {"cart_id": f"c-{rng.randrange(100_000)}"}
        return {
            "type": "track",
            "event": event,
            **(who if who is not None else self._who()),
            "properties": properties,
            "context": self._context("/cart" if "Cart" in event else "/p"),
            "timestamp": _now_iso(),
            "messageId": self._message_id(),
        }

    def message(self) -> dict[str, Any]:
        """One message drawn from the traffic mix."""
        rng = self.rng
        call = rng.choices(self._calls, self._call_w)[0]
        if call == "track":
            return self.track(rng.choices(self._tracks, self._track_w)[0])
        if call in ("page", "screen"):
            category = rng.choice(CATEGORIES)
            return {
                "type": call,
                **self._who(),
                "name": category.title(),
                "properties": {"path": f"/c/{category}", "title": category.title()},
                "context": self._context(f"/c/{category}"),
                "timestamp": _now_iso(),
                "messageId": self._message_id(),
            }
        n = rng.randrange(self.persons)
        anonymous = f"anon-v{rng.randrange(self.visitors)}" if rng.random() < 0.2 else f"anon-u{n}"
        return {
            "type": "identify",
            "userId": f"u{n}",
            "anonymousId": anonymous,
            "traits": {"email": f"u{n}@example.com", "plan": rng.choice(("free", "plus"))},
            "context": self._context("/account"),
            "timestamp": _now_iso(),
            "messageId": self._message_id(),
        }

    def batch(self, size: int, *, change_share: float = 0.0) -> bytes:
        """A ``/v1/batch`` body; ``change_share`` of it are cart/order events that move
        persons into or out of the cart trigger segment."""
        messages = []
        for _ in range(size):
            if change_share and self.rng.random() < change_share:
                event = self.rng.choice(("Product Added", "Order Completed"))
                messages.append(self.track(event, self._who(anonymous_ok=False)))
            else:
                messages.append(self.message())
        return json.dumps({"batch": messages}, separators=(",", ":")).encode()


@dataclass
class WorkerSpec:
    """What one client process does (plain data: it crosses a process boundary)."""

    name: str
    host: str
    port: int
    auth: str
    kind: str  # batch | probe | get
    count: int  # at most this many requests
    rate: float = 0.0  # requests/s; 0: as fast as the server answers
    seed: int = 0
    persons: int = 10_000
    batch_size: int = 500
    change_share: float = 0.0
    path: str = "/v1/profiles/{id}"
    prefix: str = "m"
    timeout: float = 30.0
    ids: list[str] = field(default_factory=list)  # identifiers to look up (kind get)
    connections: int = 1  # keep-alive connections (threads) sharing the schedule


@dataclass
class WorkerResult:
    """What one client process measured (seconds; times on the shared monotonic clock)."""

    name: str
    kind: str
    requests: int = 0
    events: int = 0
    accepted: int = 0
    duplicate: int = 0
    rejected: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # from the actual send
    schedule_latencies: list[float] = field(default_factory=list)  # from the scheduled send
    first_send: float = 0.0
    last_done: float = 0.0
    cpu_seconds: float = 0.0
    prepare_seconds: float = 0.0
    body_bytes: int = 0
    acked_ids: list[str] = field(default_factory=list)  # user ids of acknowledged batches


Request = tuple[str, str, bytes | None, int, list[str]]


def build_requests(spec: WorkerSpec) -> list[Request]:
    """The worker's requests as (method, path, body, events, user ids), built before timing."""
    factory = EventFactory(persons=spec.persons, seed=spec.seed, prefix=spec.prefix)
    rng = random.Random(spec.seed + 1)
    out: list[Request] = []
    for i in range(spec.count):
        if spec.kind == "batch":
            body = factory.batch(spec.batch_size, change_share=spec.change_share)
            users = sorted({m["userId"] for m in json.loads(body)["batch"] if "userId" in m})
            out.append(("POST", "/v1/batch", body, spec.batch_size, users))
        elif spec.kind == "probe":
            # a person never seen before adds to the cart: always a membership change
            who = {"userId": f"{spec.prefix}-p{i}", "anonymousId": f"anon-{spec.prefix}-p{i}"}
            message = factory.track("Product Added", who)
            out.append(("POST", "/v1/track", json.dumps(message).encode(), 1, [who["userId"]]))
        elif spec.kind == "get":
            known = spec.ids[rng.randrange(len(spec.ids))] if spec.ids else None
            identifier = known or f"u{rng.randrange(spec.persons)}"
            out.append(("GET", spec.path.format(id=identifier), None, 0, []))
        else:
            raise ValueError(f"unknown worker kind {spec.kind!r}")
    return out


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait_until(t: float) -> None:
    while True:
        remaining = t - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(remaining)


def _connect(spec: WorkerSpec) -> http.client.HTTPConnection:
    conn = http.client.HTTPConnection(spec.host, spec.port, timeout=spec.timeout)
    conn.request("GET", "/healthz")  # open the keep-alive connection now
    conn.getresponse().read()
    return conn


def _drive(
    spec: WorkerSpec,
    conn: http.client.HTTPConnection,
    slots: list[tuple[float, Request]],
    stop: float,
    headers: dict[str, str],
    result: WorkerResult,
    lock: threading.Lock,
) -> None:
    """Send ``slots`` (scheduled time, request) on one connection; add to ``result``."""
    acked: set[str] = set()
    try:
        _send_all(spec, conn, slots, stop, headers, result, lock, acked)
    except Exception as e:  # reported to the parent, which fails the run
        with lock:
            result.errors.append(f"{type(e).__name__}: {e}")
    with lock:
        result.acked_ids.extend(acked)


def _send_all(
    spec: WorkerSpec,
    conn: http.client.HTTPConnection,
    slots: list[tuple[float, Request]],
    stop: float,
    headers: dict[str, str],
    result: WorkerResult,
    lock: threading.Lock,
    acked: set[str],
) -> None:
    for scheduled, (method, path, body, events, users) in slots:
        if spec.rate:
            _wait_until(scheduled)
        sent = time.monotonic()
        if sent >= stop:
            break
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        done = time.monotonic()
        answer = json.loads(data) if method == "POST" and response.status in (200, 400) else None
        with lock:
            result.requests += 1
            result.latencies.append(done - sent)
            result.schedule_latencies.append(done - (scheduled if spec.rate else sent))
            status = str(response.status)
            result.statuses[status] = result.statuses.get(status, 0) + 1
            result.body_bytes += len(body or b"")
            result.last_done = max(result.last_done, done)
            if method != "POST":
                continue
            result.events += events
            if response.status == 200:
                acked.update(users)
            if answer is not None:
                result.accepted += answer.get("accepted", 0)
                result.duplicate += answer.get("duplicate", 0)
                result.rejected += answer.get("rejected", 0)
                if answer.get("errors") and len(result.errors) < 5:
                    result.errors.append(json.dumps(answer["errors"][:2]))
            elif len(result.errors) < 5:
                result.errors.append(f"{response.status}: {data[:200]!r}")


def run_worker(spec: WorkerSpec, ready: Any, start_at: Any, deadline: Any, results: Any) -> None:
    """Process entry point: prepare, signal ``ready``, wait for ``start_at``, send, report.

    With ``spec.connections`` > 1 the schedule is dealt round-robin to that many
    connections (one thread each), so a slow answer on one does not hold up the
    requests scheduled after it (an open-loop load, as many clients would send).
    """
    result = WorkerResult(spec.name, spec.kind)
    try:
        began = time.monotonic()
        requests = build_requests(spec)
        result.prepare_seconds = time.monotonic() - began
        headers = {"Authorization": spec.auth, "Content-Type": "application/json"}
        conns = [_connect(spec) for _ in range(max(spec.connections, 1))]
        for method, path, _, _, _ in requests[:WARM_UP] if spec.kind == "get" else []:
            for conn in conns:  # the first calls of a route are slower
                conn.request(method, path, headers=headers)
                conn.getresponse().read()
        ready.put(spec.name)
        while start_at.value == 0.0:
            time.sleep(0.005)
        t0, stop = start_at.value, deadline.value
        interval = 1.0 / spec.rate if spec.rate else 0.0
        slots = [(t0 + i * interval, request) for i, request in enumerate(requests)]
        _wait_until(t0)
        cpu0 = _cpu()
        result.first_send = time.monotonic()
        lock = threading.Lock()
        n = len(conns)
        threads = [
            threading.Thread(
                target=_drive, args=(spec, conn, slots[k::n], stop, headers, result, lock)
            )
            for k, conn in enumerate(conns)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        result.cpu_seconds = _cpu() - cpu0
        result.acked_ids = sorted(set(result.acked_ids))
        for conn in conns:
            conn.close()
    except Exception as e:  # reported to the parent, which fails the run
        result.errors.append(f"{type(e).__name__}: {e}")
    results.put(result)
