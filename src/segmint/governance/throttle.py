"""Throttling of failed authentications per client address.

After ``max_failures`` failed authentications within ``window_seconds``, a client
is blocked for ``block_seconds``: the server answers 429 with ``Retry-After`` set
to :meth:`AuthThrottle.check`'s answer, before looking at the key. A successful
authentication forgets the client's failures.

Memory is bounded: clients whose failures have all left the window are dropped,
and at most ``max_clients`` are tracked (the least recently seen go first). A
client with very many addresses can therefore push a blocked address out early;
:func:`client_key` counts a whole IPv6 /64 network as one client, because one
host usually owns all of it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from segmint.errors import UserInputError

logger = logging.getLogger(__name__)

__all__ = ["AuthThrottle", "client_key"]

UNKNOWN_CLIENT = "unknown"


def client_key(address: str | None) -> str:
    """The throttling key of a client address.

    IPv4 addresses are kept as they are; IPv6 addresses become their /64 network
    (IPv4-mapped IPv6 addresses become the IPv4 address); anything else (a Unix
    socket, no address) is ``"unknown"``.

    Examples
    --------
    >>> client_key("203.0.113.7")
    '203.0.113.7'
    >>> client_key("2001:db8::1")
    '2001:db8::/64'
    >>> client_key(None)
    'unknown'
    """
    if not address:
        return UNKNOWN_CLIENT
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return UNKNOWN_CLIENT
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


@dataclass(slots=True)
class _Client:
    failures: deque[float] = field(default_factory=deque)
    blocked_until: float | None = None
    last_seen: float = 0.0


class AuthThrottle:
    """Blocks clients after repeated failed authentications.

    Parameters
    ----------
    max_failures
        Failures within the window that block a client.
    window_seconds
        Length of the sliding window failures are counted in.
    block_seconds
        How long a client stays blocked.
    clock
        Monotonic time in seconds (injected by tests).
    max_clients
        Most clients tracked at once; the least recently seen are forgotten first.

    Examples
    --------
    >>> throttle = AuthThrottle(max_failures=2, block_seconds=30)
    >>> throttle.failure("203.0.113.7")
    >>> throttle.check("203.0.113.7") is None
    True
    >>> throttle.failure("203.0.113.7")
    30.0
    >>> throttle.check("203.0.113.7")
    30.0
    """

    def __init__(
        self,
        max_failures: int = 10,
        window_seconds: float = 60,
        block_seconds: float = 60,
        clock: Callable[[], float] = time.monotonic,
        *,
        max_clients: int = 10_000,
    ) -> None:
        if max_failures < 1:
            raise UserInputError(f"max_failures must be at least 1, not {max_failures}")
        for label, value in (("window_seconds", window_seconds), ("block_seconds", block_seconds)):
            if not value > 0 or math.isinf(value):
                raise UserInputError(f"{label} must be a positive number of seconds, not {value}")
        if max_clients < 1:
            raise UserInputError(f"max_clients must be at least 1, not {max_clients}")
        self.max_failures = max_failures
        self.window_seconds = float(window_seconds)
        self.block_seconds = float(block_seconds)
        self.max_clients = max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ API
    def check(self, client: str) -> float | None:
        """Seconds the client must wait (whole, at least 1) if it is blocked, else ``None``."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            state = self._clients.get(client)
            if state is None:
                return None
            return self._wait(state, now)

    def failure(self, client: str) -> float | None:
        """Count a failed authentication; returns the wait if the client is now blocked."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            state = self._clients.get(client)
            if state is None:
                state = self._clients[client] = _Client()
                while len(self._clients) > self.max_clients:
                    self._clients.popitem(last=False)
            else:
                self._clients.move_to_end(client)
            state.last_seen = now
            wait = self._wait(state, now)
            if wait is not None:
                return wait
            failures = state.failures
            failures.append(now)
            while failures and failures[0] <= now - self.window_seconds:
                failures.popleft()
            if len(failures) < self.max_failures:
                return None
            failures.clear()
            state.blocked_until = now + self.block_seconds
            logger.warning(
                "client %s blocked for %.0f s after %d failed authentications",
                client,
                self.block_seconds,
                self.max_failures,
            )
            return self._wait(state, now)

    def success(self, client: str) -> None:
        """Forget the client's failures after a successful authentication.

        A block in force stays until it ends: a blocked client is refused before
        its key is looked at, so a success can only come from a request that was
        already under way.
        """
        with self._lock:
            state = self._clients.get(client)
            if state is not None and state.blocked_until is None:
                del self._clients[client]

    def __len__(self) -> int:
        """Number of clients tracked."""
        with self._lock:
            return len(self._clients)

    # ------------------------------------------------------------------ internals
    def _wait(self, state: _Client, now: float) -> float | None:
        if state.blocked_until is None:
            return None
        remaining = state.blocked_until - now
        if remaining <= 0:
            state.blocked_until = None
            return None
        return float(max(1, math.ceil(remaining)))

    def _stale(self, state: _Client, now: float) -> bool:
        if state.blocked_until is not None:
            return state.blocked_until <= now
        return now - state.last_seen >= self.window_seconds

    def _prune(self, now: float) -> None:
        """Drop clients with nothing left to count, oldest first (amortised O(1))."""
        while self._clients:
            client, state = next(iter(self._clients.items()))
            if not self._stale(state, now):
                break
            del self._clients[client]
