"""Rate limiters and barriers shared between workers.

Pick a backend from :mod:`greenroom.rate_limits.backends` and a limiter::

    limiter = ConcurrentRateLimiter(backend, "distributed-mutex", limit=1)
    with limiter.acquire():
        ...
"""

from ..errors import RateLimitExceeded
from .backend import RateLimiterBackend
from .barrier import Barrier
from .bucket import BucketRateLimiter
from .concurrent import ConcurrentRateLimiter
from .rate_limiter import RateLimiter
from .window import WindowRateLimiter

__all__ = [
    "Barrier",
    "BucketRateLimiter",
    "ConcurrentRateLimiter",
    "RateLimitExceeded",
    "RateLimiter",
    "RateLimiterBackend",
    "WindowRateLimiter",
]
