"""An in-memory results backend for tests and single-process use."""

from __future__ import annotations

import threading
import time
from typing import Any, ClassVar

from ...common import Deadline
from ..backend import ResultBackend
from ..result import Missing

__all__ = ["StubBackend"]

#: Expired results are swept by a store at most this often, in seconds.
_SWEEP_INTERVAL_S = 1.0


class StubBackend(ResultBackend):
    """Keep results in memory, in this process.

    As in Dramatiq, every instance shares one store, so a backend built by a producer sees the
    results stored through the worker's instance. TTLs are honoured to the millisecond.

    Parameters:
      namespace: As for :class:`~greenroom.results.ResultBackend`.
      encoder: As for :class:`~greenroom.results.ResultBackend`.
      use_namespace_prefix_keys: As for :class:`~greenroom.results.ResultBackend`.
    """

    #: Key → (encoded value, monotonic expiry in s); shared by all instances (compat), guarded by
    #: _lock; written by worker threads, read by any thread.
    results: ClassVar[dict[str, tuple[bytes, float]]] = {}
    _lock: ClassVar[threading.Condition] = threading.Condition()
    #: Monotonic time of the last sweep of expired results; guarded by _lock.
    _last_sweep_s: ClassVar[float] = 0.0

    def _get(self, message_key: str) -> Any:
        with self._lock:
            return self._get_locked(message_key)

    def _get_locked(self, message_key: str) -> Any:
        entry = self.results.get(message_key)
        if entry is None:
            return Missing
        data, expires_s = entry
        if expires_s <= time.monotonic():
            del self.results[message_key]
            return Missing
        return self._decode(data)

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        data = self._encode(result)
        now_s = time.monotonic()
        with self._lock:
            self.results[message_key] = (data, now_s + ttl / 1000)
            self._lock.notify_all()
            if now_s - StubBackend._last_sweep_s >= _SWEEP_INTERVAL_S:
                StubBackend._last_sweep_s = now_s
                for expired in [k for k, (_, expires_s) in self.results.items() if expires_s <= now_s]:
                    del self.results[expired]

    def _get_blocking(self, message_key: str, timeout_ms: int) -> Any:
        # In-process: wait on the store's condition instead of polling.
        deadline = Deadline.after_ms(timeout_ms)
        with self._lock:
            while True:
                value = self._get_locked(message_key)
                if value is not Missing or deadline.expired():
                    return value
                self._lock.wait(deadline.remaining_s())

    def flush(self) -> None:
        """Forget every stored result (a test helper)."""
        with self._lock:
            self.results.clear()
