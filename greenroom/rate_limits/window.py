"""A limit on acquisitions within a sliding window of seconds."""

from __future__ import annotations

from .. import common
from .backend import RateLimiterBackend
from .rate_limiter import RateLimiter

__all__ = ["WindowRateLimiter"]


class WindowRateLimiter(RateLimiter):
    """Allow ``limit`` acquisitions within any ``window`` consecutive seconds.

    The count is kept per second (``key@<unix second>``) and summed over the window.
    Acquisitions are never released.

    Parameters:
      backend: Where the counters live.
      key: The name of the limited resource.
      limit: How many acquisitions the window allows (at least 1).
      window: The window size in **seconds** (at least 1), as in Dramatiq.
    """

    def __init__(self, backend: RateLimiterBackend, key: str, *, limit: int = 1, window: int = 1) -> None:
        assert limit >= 1, f"a window limiter admits at least 1 message per window, not {limit}"
        assert window >= 1, f"a window limiter's window is at least 1 s, not {window}"
        super().__init__(backend, key)
        self.limit = limit
        self.window = window
        self.window_ms = window * 1000

    def _acquire(self) -> bool:
        second = common.current_millis() // 1000
        keys = [f"{self.key}@{second - offset}" for offset in range(self.window)]
        return self.backend.incr_and_sum(keys[0], lambda: keys, 1, self.limit, self.window_ms)
