"""A distributed barrier: the last of N parties to arrive clears it."""

from __future__ import annotations

from .backend import RateLimiterBackend

__all__ = ["Barrier"]


class Barrier:
    """A countdown shared by ``parties`` participants, possibly in different processes.

    Keys must be unique per use (a UUID): a barrier is not reusable.

    Parameters:
      backend: Where the countdown lives.
      key: The barrier's unique name.
      ttl: How long the barrier lives, in milliseconds.
    """

    def __init__(self, backend: RateLimiterBackend, key: str, *, ttl: int = 900000) -> None:
        self.backend = backend
        self.key = key
        self.key_events = f"{key}@events"
        self.ttl = ttl

    def create(self, parties: int) -> bool:
        """Create the barrier for ``parties`` participants; ``False`` if it already exists."""
        assert parties > 0, "parties must be positive"
        return self.backend.add(self.key, parties, self.ttl)

    def wait(self, *, block: bool = True, timeout: int | None = None) -> bool:
        """Arrive at the barrier.

        Exactly one caller — the last to arrive — gets ``True`` without waiting and wakes the
        blocked ones. (A barrier that expired, or was never created, counts as already cleared.)

        Parameters:
          block: Wait for the barrier to clear; otherwise return ``False`` at once.
          timeout: How long to wait, in milliseconds (``None``: as long as it takes).

        Returns:
          Whether the barrier cleared.
        """
        # The countdown stops at 1: the decrement that would take it to 0 is refused, and
        # being refused is what tells the last party that it is the last.
        if not self.backend.decr(self.key, 1, 1, self.ttl):
            self.backend.wait_notify(self.key_events, self.ttl)
            return True
        if block:
            return self.backend.wait(self.key_events, timeout)
        return False
