"""Rate limiters and barriers, on every rate-limiter backend."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.rate_limits import (
    Barrier,
    BucketRateLimiter,
    ConcurrentRateLimiter,
    RateLimiterBackend,
    RateLimitExceeded,
    WindowRateLimiter,
)
from greenroom.rate_limits.backends import StubBackend


def test_concurrent_limiter_never_lets_more_than_limit_in(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    limiter = ConcurrentRateLimiter(rate_limiter_backend, key, limit=3)
    lock = threading.Lock()
    inside = 0
    most_inside = 0
    acquired_by: dict[int, int] = {}
    errors: list[BaseException] = []
    deadline = time.monotonic() + 30

    def work(worker_id: int) -> None:
        nonlocal inside, most_inside
        try:
            while acquired_by.get(worker_id, 0) < 3 and time.monotonic() < deadline:
                with limiter.acquire(raise_on_failure=False) as acquired:
                    if not acquired:
                        time.sleep(0.002)  # back off before trying again
                        continue
                    with lock:
                        inside += 1
                        most_inside = max(most_inside, inside)
                    time.sleep(0.005)  # hold the slot, as real work would
                    with lock:
                        inside -= 1
                    acquired_by[worker_id] = acquired_by.get(worker_id, 0) + 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert 1 <= most_inside <= 3
    assert all(acquired_by.get(i) == 3 for i in range(20)), acquired_by
    # Every slot was given back.
    holders = [limiter.acquire() for _ in range(3)]
    for holder in holders:
        assert holder.__enter__()
    with pytest.raises(RateLimitExceeded, match=key):
        limiter.acquire().__enter__()
    for holder in holders:
        holder.__exit__(None, None, None)


def test_a_mutex_admits_one_holder(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    mutex = ConcurrentRateLimiter(rate_limiter_backend, key, limit=1)
    with mutex.acquire():
        with mutex.acquire(raise_on_failure=False) as acquired:
            assert not acquired
        with pytest.raises(RateLimitExceeded), mutex.acquire():
            pass  # pragma: no cover
    with mutex.acquire() as acquired:
        assert acquired


@pytest.fixture
def now_ms(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The time the limiters read, in ms, as a one-element list the test moves forward."""
    now = [1_000_000_000_000]
    monkeypatch.setattr("greenroom.common.current_millis", lambda: now[0])
    return now


def test_bucket_limiter_counts_per_bucket(
    rate_limiter_backend: RateLimiterBackend, key: str, now_ms: list[int]
) -> None:
    limiter = BucketRateLimiter(rate_limiter_backend, key, limit=2, bucket=10000)
    for expected in (True, True, False):
        with limiter.acquire(raise_on_failure=False) as acquired:
            assert acquired is expected
    now_ms[0] += 10000  # the next bucket
    with limiter.acquire(raise_on_failure=False) as acquired:
        assert acquired


def test_window_limiter_counts_over_the_window(
    rate_limiter_backend: RateLimiterBackend, key: str, now_ms: list[int]
) -> None:
    limiter = WindowRateLimiter(rate_limiter_backend, key, limit=3, window=3)

    def attempt() -> bool:
        with limiter.acquire(raise_on_failure=False) as acquired:
            return acquired

    assert attempt()
    assert attempt()
    now_ms[0] += 1000
    assert attempt()
    now_ms[0] += 1000
    assert not attempt()  # three in the last three seconds
    now_ms[0] += 1000
    # The first second left the window: one acquisition (second 1) remains in it.
    assert attempt()
    assert attempt()
    assert not attempt()


def test_limiter_arguments_are_checked() -> None:
    backend = StubBackend()
    with pytest.raises(AssertionError):
        ConcurrentRateLimiter(backend, "k", limit=0)
    with pytest.raises(AssertionError):
        WindowRateLimiter(backend, "k", window=0)
    with pytest.raises(AssertionError):
        Barrier(backend, "k").create(0)


def test_barrier_clears_for_the_last_party(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    barrier = Barrier(rate_limiter_backend, key, ttl=30000)
    assert barrier.create(3)
    assert not barrier.create(3)
    assert not barrier.wait(block=False)
    assert not barrier.wait(block=False)
    assert barrier.wait(block=False)


def test_blocked_parties_are_released_by_the_last(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    barrier = Barrier(rate_limiter_backend, key, ttl=30000)
    barrier.create(3)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(barrier.wait(timeout=15000))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    # Two parties block until the third arrives and clears the barrier for all of them.
    assert results == [True, True, True]


def test_rate_limit_exceeded_in_an_actor_is_retried(stub_broker: StubBroker, stub_worker: Worker) -> None:
    backend = StubBackend()
    mutex = ConcurrentRateLimiter(backend, "greenroom-test-actor-mutex", limit=1)
    attempts: list[bool] = []
    first_attempt_done = threading.Event()

    @greenroom.actor(min_backoff=10, max_backoff=50)
    def guarded() -> None:
        try:
            with mutex.acquire():
                attempts.append(True)
        except RateLimitExceeded:
            attempts.append(False)
            first_attempt_done.set()
            raise

    holder: Any = mutex.acquire()
    holder.__enter__()
    guarded.send()
    assert first_attempt_done.wait(10)
    holder.__exit__(None, None, None)
    stub_broker.join(guarded.queue_name, timeout=10000)
    stub_worker.join()
    assert attempts[0] is False
    assert attempts[-1] is True
    assert not stub_broker.dead_letters
