"""Waiting on conditions instead of sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["wait_for"]


def wait_for(
    predicate: Callable[[], object], timeout_s: float = 5.0, interval_s: float = 0.01, message: str = ""
) -> None:
    """Poll ``predicate`` until it returns something truthy.

    Raises:
      TimeoutError: When it is still falsy after ``timeout_s`` seconds.
    """
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline_s:
            raise TimeoutError(message or f"condition not met within {timeout_s} s: {predicate!r}")
        time.sleep(interval_s)
