"""A limit on how many holders may be inside at once (a distributed semaphore or mutex)."""

from __future__ import annotations

from .backend import RateLimiterBackend
from .rate_limiter import RateLimiter

__all__ = ["ConcurrentRateLimiter"]


class ConcurrentRateLimiter(RateLimiter):
    """Let at most ``limit`` holders in at once; ``limit=1`` makes a mutex.

    A holder that dies without releasing keeps its slot until ``ttl`` ms after the key was last
    written, so set ``ttl`` above the longest time a holder may stay inside.

    Parameters:
      backend: Where the counter lives.
      key: The name of the limited resource.
      limit: How many holders may be inside at once (at least 1).
      ttl: How long the counter lives after its last change, in milliseconds.
    """

    def __init__(self, backend: RateLimiterBackend, key: str, *, limit: int = 1, ttl: int = 900000) -> None:
        assert limit >= 1, f"a concurrent limiter admits at least 1 holder, not {limit}"
        super().__init__(backend, key)
        self.limit = limit
        self.ttl = ttl

    def _acquire(self) -> bool:
        if self.backend.add(self.key, 1, self.ttl):
            return True
        return self.backend.incr(self.key, 1, self.limit, self.ttl)

    def _release(self) -> None:
        self.backend.decr(self.key, 1, 0, self.ttl)
