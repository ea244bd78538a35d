"""An in-process rate-limiter backend."""

from __future__ import annotations

import threading
import time

from ..backend import Compute, UpdatingBackend

__all__ = ["StubBackend"]

#: Expired keys are swept by a write at most this often, in seconds.
_SWEEP_INTERVAL_S = 1.0


class StubBackend(UpdatingBackend):
    """Counters in a dict, for tests and single-process use. TTLs are honoured to the millisecond."""

    def __init__(self) -> None:
        #: Key → (value, monotonic expiry in s); guarded by _cond, touched by any thread.
        self.db: dict[str, tuple[int, float]] = {}
        #: Guards db; notified by wait_notify so waiters wake at once.
        self._cond = threading.Condition()
        #: Monotonic time of the last sweep of expired keys; guarded by _cond.
        self._last_sweep_s = 0.0

    def _value(self, key: str) -> int | None:
        entry = self.db.get(key)
        if entry is None:
            return None
        if entry[1] <= time.monotonic():
            del self.db[key]
            return None
        return entry[0]

    def _put(self, key: str, value: int, ttl: int) -> None:
        now_s = time.monotonic()
        self.db[key] = (value, now_s + ttl / 1000)
        if now_s - self._last_sweep_s >= _SWEEP_INTERVAL_S:
            # Bucket, window and barrier keys are unique: drop the expired ones now and then.
            self._last_sweep_s = now_s
            for expired in [k for k, (_, expires_s) in self.db.items() if expires_s <= now_s]:
                del self.db[expired]

    def add(self, key: str, value: int, ttl: int) -> bool:
        with self._cond:
            if self._value(key) is not None:
                return False
            self._put(key, value, ttl)
            return True

    def _update(self, key: str, ttl: int, compute: Compute, others: list[str]) -> bool:
        with self._cond:
            new_value = compute(self._value(key) or 0, sum(self._value(k) or 0 for k in others))
            if new_value is None:
                return False
            self._put(key, new_value, ttl)
            return True

    def wait(self, key: str, timeout: int | None) -> bool:
        deadline_s = None if timeout is None else time.monotonic() + timeout / 1000
        with self._cond:
            while self._value(key) is None:
                remaining_s = None if deadline_s is None else deadline_s - time.monotonic()
                if remaining_s is not None and remaining_s <= 0:
                    return False
                self._cond.wait(remaining_s)
            return True

    def wait_notify(self, key: str, ttl: int) -> None:
        with self._cond:
            self._put(key, 1, ttl)
            self._cond.notify_all()
