"""The base class of rate limiters."""

from __future__ import annotations

import abc
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import RateLimitExceeded
from .backend import RateLimiterBackend

__all__ = ["RateLimitExceeded", "RateLimiter"]


class RateLimiter(abc.ABC):
    """Base class for rate limiters.

    Raised inside an actor, :class:`~greenroom.RateLimitExceeded` is an ordinary failure for the
    Retries middleware (the message is retried with backoff) but is only logged at DEBUG.

    Parameters:
      backend: Where the limiter keeps its counters.
      key: What is being limited; limiters with the same key (and backend) share their budget.
    """

    def __init__(self, backend: RateLimiterBackend, key: str) -> None:
        self.backend = backend
        self.key = key

    @contextmanager
    def acquire(self, *, raise_on_failure: bool = True) -> Iterator[bool]:
        """Acquire the limiter for the duration of a ``with`` block.

        Parameters:
          raise_on_failure: Raise when the limit is reached; otherwise the block runs with
            ``False`` as its value and must check it.

        Raises:
          RateLimitExceeded: When the limit is reached and ``raise_on_failure`` is set.
        """
        acquired = self._acquire()
        if not acquired and raise_on_failure:
            raise RateLimitExceeded(f"rate limit exceeded for key {self.key!r}")
        try:
            yield acquired
        finally:
            if acquired:
                self._release()

    @abc.abstractmethod
    def _acquire(self) -> bool:
        """Try to take a slot; whether it was taken."""

    def _release(self) -> None:
        """Give back a slot taken by :meth:`_acquire` (limiters that count over time do nothing)."""
