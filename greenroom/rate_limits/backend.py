"""The rate-limiter backend contract: a few atomic counter primitives."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from typing import ClassVar

from ..common import compute_backoff

__all__ = ["RateLimiterBackend", "UpdatingBackend"]


class RateLimiterBackend(abc.ABC):
    """Base class for rate-limiter backends: atomic integer counters with a TTL.

    Every TTL is in milliseconds and is reset by every write to the key. A missing or expired key
    counts as 0. Every operation is atomic with respect to every other process using the same
    store.

    :meth:`wait` and :meth:`wait_notify` implement the blocking side of a barrier. The base class
    implements ``wait`` by polling :meth:`_is_notified` with backoff; backends that can block
    natively override ``wait`` instead.
    """

    #: The longest pause between two polls of :meth:`wait`, in milliseconds.
    poll_max_backoff_ms: ClassVar[int] = 500
    #: The first pause between two polls, in milliseconds (doubling, with jitter).
    poll_min_backoff_ms: ClassVar[int] = 10

    @abc.abstractmethod
    def add(self, key: str, value: int, ttl: int) -> bool:
        """Set ``key`` to ``value`` if it is absent; whether it was set."""

    @abc.abstractmethod
    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        """Add ``amount`` to ``key`` unless the result would exceed ``maximum``; whether it did."""

    @abc.abstractmethod
    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        """Subtract ``amount`` from ``key`` unless the result would fall below ``minimum``; whether it did."""

    @abc.abstractmethod
    def incr_and_sum(self, key: str, keys: Callable[[], list[str]], amount: int, maximum: int, ttl: int) -> bool:
        """Add ``amount`` to ``key`` unless it, or the sum of ``keys()`` plus ``amount``, would exceed ``maximum``.

        ``keys()`` normally includes ``key`` itself. Returns whether the increment happened.
        """

    def wait(self, key: str, timeout: int | None) -> bool:
        """Block until :meth:`wait_notify` was called for ``key``, or ``timeout`` ms passed.

        Returns:
          Whether the notification arrived. ``timeout=None`` waits forever.
        """
        deadline_s = None if timeout is None else time.monotonic() + timeout / 1000
        attempts = 0
        while True:
            if self._is_notified(key):
                return True
            remaining_s = None if deadline_s is None else deadline_s - time.monotonic()
            if remaining_s is not None and remaining_s <= 0:
                return False
            attempts, backoff_ms = compute_backoff(
                attempts, factor=self.poll_min_backoff_ms, max_backoff=self.poll_max_backoff_ms
            )
            time.sleep(backoff_ms / 1000 if remaining_s is None else min(backoff_ms / 1000, remaining_s))

    def wait_notify(self, key: str, ttl: int) -> None:
        """Wake everyone waiting on ``key`` now, and anyone who waits within ``ttl`` ms."""

    def _is_notified(self, key: str) -> bool:
        """Whether :meth:`wait_notify` was called for ``key`` (for the polling :meth:`wait`)."""
        raise NotImplementedError(f"{type(self).__name__} does not support blocking waits")


#: (current value of the key, sum of the other keys) → the new value, or None to refuse.
Compute = Callable[[int, int], "int | None"]


class UpdatingBackend(RateLimiterBackend):
    """A backend whose counters change by an atomic read-modify-write: it implements :meth:`_update`."""

    @abc.abstractmethod
    def _update(self, key: str, ttl: int, compute: Compute, others: list[str]) -> bool:
        """Atomically set ``key`` to ``compute(current, sum of others)``; False when that refuses."""

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        def compute(current: int, others_sum: int) -> int | None:
            """``current + amount``, or ``None`` (refused) when that would pass ``maximum``."""
            return None if current + amount > maximum else current + amount

        return self._update(key, ttl, compute, [])

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        def compute(current: int, others_sum: int) -> int | None:
            """``current - amount``, or ``None`` (refused) when that would go below ``minimum``."""
            return None if current - amount < minimum else current - amount

        return self._update(key, ttl, compute, [])

    def incr_and_sum(self, key: str, keys: Callable[[], list[str]], amount: int, maximum: int, ttl: int) -> bool:
        def compute(current: int, others_sum: int) -> int | None:
            if current + amount > maximum or current + others_sum + amount > maximum:
                return None
            return current + amount

        return self._update(key, ttl, compute, [k for k in keys() if k != key])
