"""The window limiter's bound under contention, on every rate-limiter backend, in real time.

Eight threads try eight times a second each. A ``limit=2, window=2`` limiter then admits two in
the first second of the run, and the next two only once that second has left the window: never
more than two in any two consecutive seconds, so at most ``limit × ⌈seconds touched / window⌉`` in
the whole run. A backend that drops a key before its second leaves the window (memcached, whose
expiry clock ticks once a second, did) admits a second pair a second early.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter

import pytest

from greenroom import common
from greenroom.rate_limits import RateLimiterBackend, WindowRateLimiter

LIMIT = 2
WINDOW_S = 2
THREADS = 8
TRIES_PER_S = 8
RUN_S = 4.0


def test_window_limiter_never_admits_more_than_its_limit_per_window(
    rate_limiter_backend: RateLimiterBackend, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = WindowRateLimiter(rate_limiter_backend, key, limit=LIMIT, window=WINDOW_S)
    # The limiter reads the clock once per try: record what it read, to know the second it counted in.
    last_read = threading.local()
    real_current_millis = common.current_millis

    def recording_current_millis() -> int:
        now_ms = real_current_millis()
        last_read.ms = now_ms
        return now_ms

    monkeypatch.setattr(common, "current_millis", recording_current_millis)
    admitted: list[int] = []  # the second each admission counted in
    errors: list[BaseException] = []
    lock = threading.Lock()
    start_s = time.time()
    deadline_s = time.monotonic() + RUN_S

    def hammer() -> None:
        pause = threading.Event()  # never set: paces the tries
        try:
            while time.monotonic() < deadline_s:
                with limiter.acquire(raise_on_failure=False) as acquired:
                    if acquired:
                        with lock:
                            admitted.append(last_read.ms // 1000)
                pause.wait(1 / TRIES_PER_S)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RUN_S + 30)
    end_s = time.time()
    assert not errors
    assert not any(thread.is_alive() for thread in threads)

    per_second = Counter(admitted)
    first, last = int(start_s), int(end_s)
    for window_start in range(first - WINDOW_S + 1, last + 1):
        in_window = sum(per_second[second] for second in range(window_start, window_start + WINDOW_S))
        assert in_window <= LIMIT, (window_start - first, sorted(s - first for s in admitted))
    seconds_touched = last - first + 1
    assert LIMIT <= len(admitted) <= LIMIT * math.ceil(seconds_touched / WINDOW_S)
