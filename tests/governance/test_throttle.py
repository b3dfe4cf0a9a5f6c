"""Throttling of failed authentications: blocking, Retry-After, reset, bounded memory."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from segmint.errors import UserInputError
from segmint.governance import AuthThrottle, client_key

A, B = "203.0.113.7", "198.51.100.2"


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def throttle_of(clock: FakeClock, **kwargs) -> AuthThrottle:
    options = {"max_failures": 3, "window_seconds": 60, "block_seconds": 30}
    return AuthThrottle(**(options | kwargs), clock=clock)


def test_blocks_after_max_failures(clock):
    throttle = throttle_of(clock)
    assert throttle.failure(A) is None
    assert throttle.failure(A) is None
    assert throttle.check(A) is None
    assert throttle.failure(A) == 30
    assert throttle.check(A) == 30
    assert throttle.check(B) is None  # other clients are not affected


def test_retry_after_counts_down_in_whole_seconds_and_ends(clock):
    throttle = throttle_of(clock)
    for _ in range(3):
        throttle.failure(A)
    clock.advance(10.5)
    assert throttle.check(A) == 20  # 19.5 s left, rounded up
    clock.advance(19.3)
    assert throttle.check(A) == 1  # 0.2 s left: never 0
    clock.advance(0.2)
    assert throttle.check(A) is None
    assert throttle.failure(A) is None  # a fresh start after the block


def test_failures_outside_the_window_do_not_count(clock):
    throttle = throttle_of(clock)
    for _ in range(10):
        assert throttle.failure(A) is None
        assert throttle.failure(A) is None
        clock.advance(60)
    assert throttle.check(A) is None


def test_window_is_sliding(clock):
    throttle = throttle_of(clock)
    throttle.failure(A)
    clock.advance(40)
    throttle.failure(A)
    clock.advance(30)  # the first failure left the window
    assert throttle.failure(A) is None
    clock.advance(5)
    assert throttle.failure(A) == 30  # three within 60 s: 40+30 -> 70, 75


def test_failures_while_blocked_do_not_extend_the_block(clock):
    throttle = throttle_of(clock)
    for _ in range(3):
        throttle.failure(A)
    clock.advance(10)
    assert throttle.failure(A) == 20
    assert throttle.check(A) == 20


def test_success_resets_the_count(clock):
    throttle = throttle_of(clock)
    throttle.failure(A)
    throttle.failure(A)
    throttle.success(A)
    assert throttle.failure(A) is None
    assert throttle.failure(A) is None
    assert throttle.check(A) is None
    throttle.success(B)  # an unknown client is fine


def test_success_does_not_lift_a_block(clock):
    throttle = throttle_of(clock)
    for _ in range(3):
        throttle.failure(A)
    throttle.success(A)
    assert throttle.check(A) == 30


def test_idle_clients_are_forgotten(clock):
    throttle = throttle_of(clock)
    throttle.failure(A)
    throttle.failure(B)
    assert len(throttle) == 2
    clock.advance(61)
    assert throttle.check(A) is None
    assert len(throttle) == 0


def test_blocked_clients_are_kept_until_the_block_ends(clock):
    throttle = throttle_of(clock, window_seconds=5, block_seconds=100)
    for _ in range(3):
        throttle.failure(A)
    clock.advance(50)
    throttle.check(B)
    assert len(throttle) == 1
    clock.advance(50)
    throttle.check(B)
    assert len(throttle) == 0


def test_number_of_clients_is_capped_least_recent_first(clock):
    throttle = throttle_of(clock, max_clients=3)
    for client in ("c1", "c2", "c3"):
        throttle.failure(client)
        throttle.failure(client)
    throttle.failure("c1")  # c1 is now the most recent ... and blocked
    throttle.failure("c4")  # evicts c2
    assert len(throttle) == 3
    assert throttle.check("c1") == 30
    assert throttle.failure("c2") is None
    assert throttle.failure("c2") is None  # c2 starts from zero: not blocked at 2
    assert len(throttle) == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_failures": 0},
        {"window_seconds": 0},
        {"block_seconds": -1},
        {"block_seconds": float("nan")},
        {"window_seconds": float("inf")},
        {"max_clients": 0},
    ],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(UserInputError):
        AuthThrottle(**kwargs)


def test_defaults_follow_the_issue():
    throttle = AuthThrottle()
    assert (throttle.max_failures, throttle.window_seconds, throttle.block_seconds) == (10, 60, 60)
    assert throttle.max_clients == 10_000


def test_concurrent_failures_are_all_counted():
    clock = FakeClock()
    throttle = AuthThrottle(max_failures=400, clock=clock)
    results: list[float | None] = []
    lock = threading.Lock()

    def hammer() -> None:
        for _ in range(100):
            wait = throttle.failure(A)
            with lock:
                results.append(wait)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Exactly the 400th failure blocks; none is lost or counted twice.
    assert sum(r is not None for r in results) == 1
    assert throttle.check(A) == 60


OPS = st.lists(
    st.tuples(
        st.sampled_from(["failure", "success", "check", "advance"]),
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.floats(min_value=0, max_value=50),
    ),
    max_size=200,
)


@given(OPS)
def test_invariants_under_any_sequence(ops):
    clock = FakeClock()
    throttle = AuthThrottle(
        max_failures=3, window_seconds=20, block_seconds=15, clock=clock, max_clients=3
    )
    streak: dict[str, int] = {}
    for op, client, seconds in ops:
        if op == "advance":
            clock.advance(seconds)
            streak.clear()
            continue
        result = getattr(throttle, op)(client)
        if op == "success":
            streak.pop(client, None)
        elif op == "failure":
            streak[client] = streak.get(client, 0) + 1
        if result is not None:
            assert result == int(result) and 1 <= result <= 15
        assert len(throttle) <= 3
        # max_failures failures at one instant, with no success between, block.
        if op == "failure" and streak[client] >= 3:
            assert throttle.check(client) is not None or len(set(streak)) > 3


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("testclient", "unknown"),
        ("", "unknown"),
        (None, "unknown"),
    ],
)
def test_client_key(address, key):
    assert client_key(address) == key
