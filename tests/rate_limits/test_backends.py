"""The contract every rate-limiter backend meets, run against each of them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from greenroom.rate_limits import RateLimiterBackend
from greenroom.rate_limits.backends import SQLiteBackend, StubBackend
from greenroom.testing import wait_for


def test_add_sets_only_absent_keys(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    assert rate_limiter_backend.add(key, 5, 10000)
    assert not rate_limiter_backend.add(key, 6, 10000)
    # The value is the first one: decrementing 5 down to 0 works, once.
    assert rate_limiter_backend.decr(key, 5, 0, 10000)
    assert not rate_limiter_backend.decr(key, 1, 0, 10000)


def test_incr_refuses_past_the_maximum(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    assert rate_limiter_backend.incr(key, 1, 2, 10000)  # a missing key counts as 0
    assert rate_limiter_backend.incr(key, 1, 2, 10000)
    assert not rate_limiter_backend.incr(key, 1, 2, 10000)
    # A refused increment leaves the counter as it was.
    assert rate_limiter_backend.decr(key, 2, 0, 10000)
    assert rate_limiter_backend.incr(key, 2, 2, 10000)


def test_decr_refuses_below_the_minimum(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    assert not rate_limiter_backend.decr(key, 1, 0, 10000)  # missing counts as 0
    assert rate_limiter_backend.add(key, 3, 10000)
    assert rate_limiter_backend.decr(key, 1, 1, 10000)
    assert rate_limiter_backend.decr(key, 1, 1, 10000)
    assert not rate_limiter_backend.decr(key, 1, 1, 10000)


def test_incr_and_sum_counts_every_key(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    keys = [f"{key}@3", f"{key}@2", f"{key}@1"]
    assert rate_limiter_backend.incr(keys[2], 2, 10, 10000)
    assert rate_limiter_backend.incr_and_sum(keys[0], lambda: keys, 1, 3, 10000)
    assert not rate_limiter_backend.incr_and_sum(keys[0], lambda: keys, 1, 3, 10000)
    assert not rate_limiter_backend.incr_and_sum(keys[1], lambda: keys, 1, 3, 10000)
    assert rate_limiter_backend.decr(keys[2], 2, 0, 10000)
    assert rate_limiter_backend.incr_and_sum(keys[1], lambda: keys, 2, 3, 10000)
    assert not rate_limiter_backend.incr_and_sum(keys[0], lambda: keys, 1, 3, 10000)


def test_keys_expire_after_their_ttl(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    # 3 s: memcached counts expiry in whole seconds, so a 1 s key may expire at once.
    assert rate_limiter_backend.add(key, 1, 3000)
    assert not rate_limiter_backend.add(key, 1, 3000)
    # memcached counts whole seconds, so allow a little more than the TTL.
    wait_for(lambda: rate_limiter_backend.add(key, 1, 3000), timeout_s=10, interval_s=0.05)


def test_wait_returns_once_notified(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    results: list[bool] = []
    thread = threading.Thread(target=lambda: results.append(rate_limiter_backend.wait(key, 10000)))
    thread.start()
    try:
        rate_limiter_backend.wait_notify(key, 10000)
    finally:
        thread.join(15)
    assert results == [True]
    # A notification also releases those who wait after it.
    assert rate_limiter_backend.wait(key, 1000)


def test_wait_times_out_without_notification(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    assert not rate_limiter_backend.wait(key, 1000)


def test_concurrent_decrements_are_atomic(rate_limiter_backend: RateLimiterBackend, key: str) -> None:
    assert rate_limiter_backend.add(key, 30, 30000)
    outcomes: list[bool] = []
    lock = threading.Lock()

    def arrive() -> None:
        outcome = rate_limiter_backend.decr(key, 1, 1, 30000)
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=arrive) for _ in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # 29 decrements take the count from 30 to 1; exactly one is refused (the barrier's last party).
    assert sorted(outcomes) == [False] + [True] * 29


def test_memcached_ttls_round_up_and_long_ones_are_absolute() -> None:
    pytest.importorskip("pylibmc")
    from greenroom._memcached import ttl_seconds

    assert ttl_seconds(1) == 1
    assert ttl_seconds(1000) == 1
    assert ttl_seconds(1001) == 2
    assert ttl_seconds(40 * 24 * 3600 * 1000) > time.time()


def test_redis_keys_have_no_prefix_by_default() -> None:
    pytest.importorskip("redis")
    from greenroom.rate_limits.backends import RedisBackend

    assert RedisBackend()._key("k") == "k"
    assert RedisBackend(namespace="ns")._key("k") == "ns:k"


def test_expired_keys_are_purged_from_the_sqlite_table(tmp_path: Path) -> None:
    backend = SQLiteBackend(path=tmp_path / "limits.db")
    try:
        backend.add("short", 1, 1)
        wait_for(lambda: not backend._is_notified("short"), timeout_s=5)  # expired
        backend._table.purges.reset()  # make the next write purge
        backend.add("other", 1, 60000)
        rows = backend._table.db.read(lambda conn: conn.execute("SELECT key FROM greenroom_rate_limits").fetchall())
        assert rows == [("other",)]
    finally:
        backend.close()


def test_expired_keys_are_swept_from_the_stub() -> None:
    backend = StubBackend()
    backend.add("short", 1, 1)
    wait_for(lambda: backend.db["short"][1] <= time.monotonic())
    backend._last_sweep_s = 0.0
    backend.add("other", 1, 60000)
    assert list(backend.db) == ["other"]
