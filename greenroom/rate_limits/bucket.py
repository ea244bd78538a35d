"""A limit on acquisitions per fixed time bucket."""

from __future__ import annotations

from .. import common
from .backend import RateLimiterBackend
from .rate_limiter import RateLimiter

__all__ = ["BucketRateLimiter"]


class BucketRateLimiter(RateLimiter):
    """Allow ``limit`` acquisitions per ``bucket`` ms, counted in fixed, wall-clock-aligned buckets.

    Acquisitions are never released. Up to ``2 * limit`` acquisitions can fall within ``bucket``
    ms when they straddle a bucket boundary; use :class:`WindowRateLimiter` for a sliding window.

    Parameters:
      backend: Where the counters live.
      key: The name of the limited resource.
      limit: How many acquisitions each bucket allows.
      bucket: The bucket size in milliseconds.
    """

    def __init__(self, backend: RateLimiterBackend, key: str, *, limit: int = 1, bucket: int = 1000) -> None:
        assert limit >= 1, "limit must be positive"
        assert bucket >= 1, "bucket must be positive"
        super().__init__(backend, key)
        self.limit = limit
        self.bucket = bucket

    def _acquire(self) -> bool:
        now_ms = common.current_millis()
        key = f"{self.key}@{now_ms - now_ms % self.bucket}"
        if self.backend.add(key, 1, self.bucket):
            return True
        return self.backend.incr(key, 1, self.limit, self.bucket)
