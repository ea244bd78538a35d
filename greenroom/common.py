"""Helpers shared by brokers and middleware.

This module is public API: third-party brokers written for Dramatiq import ``compute_backoff``,
``current_millis``, ``q_name``, ``dq_name`` and ``xq_name`` from it.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from queue import Empty, Queue
from typing import Any, Protocol, TypeVar

from ._settings import getenv_int  # kept here for existing callers; _settings owns the environment
from .errors import QueueJoinTimeout

__all__ = [
    "Deadline",
    "Every",
    "process_tag",
    "compute_backoff",
    "current_millis",
    "dead_letter_reason",
    "dq_name",
    "getenv_int",
    "is_expected",
    "iter_queue",
    "join_all",
    "join_queue",
    "q_name",
    "xq_name",
]

T = TypeVar("T")

_rng = random.Random()


def compute_backoff(
    attempts: int, *, factor: float = 5, jitter: bool = True, max_backoff: float = 2000, max_exponent: int = 32
) -> tuple[int, int]:
    """Compute an exponential backoff.

    Parameters:
      attempts: The number of attempts so far.
      factor: The base delay in milliseconds.
      jitter: Whether to randomise the delay (``base * U[1, 2]``, or ``max_backoff * U[0.5, 1]`` past the cap).
      max_backoff: The upper bound in milliseconds.
      max_exponent: The largest power of two to multiply by.

    Returns:
      The incremented attempt count and the delay in milliseconds.
    """
    base = factor * 2 ** min(attempts, max_exponent)
    if jitter:
        backoff = int(base * _rng.uniform(1, 2))
        if backoff > max_backoff:
            backoff = int(max_backoff * _rng.uniform(0.5, 1))
    else:
        backoff = int(min(base, max_backoff))
    return attempts + 1, backoff


class Every:
    """Says yes at most once per ``interval_s``, whichever thread asks: for work such as purging
    expired rows, done on the way by whichever write comes first once it is due."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._lock = threading.Lock()
        #: Monotonic time of the last yes (0: the first call is due); guarded by _lock.
        self._last_s = 0.0

    def due(self) -> bool:
        """Whether the work is due now; a yes counts as doing it."""
        now_s = time.monotonic()
        with self._lock:
            if self._last_s and now_s - self._last_s < self.interval_s:
                return False
            self._last_s = now_s
            return True

    def reset(self) -> None:
        """Make the next call due at once."""
        with self._lock:
            self._last_s = 0.0


class Deadline:
    """A point on the monotonic clock that a bounded wait must not pass; ``None`` means no bound.

    Timeouts are given in the unit their name says (``after_ms``, ``after_s``); what is left is
    always read in seconds, the unit of ``time`` and ``threading`` waits.
    """

    __slots__ = ("at_s",)

    def __init__(self, at_s: float | None) -> None:
        #: The ``time.monotonic()`` reading at which the deadline passes, or ``None`` for never.
        self.at_s = at_s

    @classmethod
    def after_s(cls, timeout_s: float | None) -> Deadline:
        """The deadline ``timeout_s`` seconds from now (never, for ``None``)."""
        return cls(None if timeout_s is None else time.monotonic() + timeout_s)

    @classmethod
    def after_ms(cls, timeout_ms: float | None) -> Deadline:
        """The deadline ``timeout_ms`` milliseconds from now (never, for ``None``)."""
        return cls.after_s(None if timeout_ms is None else timeout_ms / 1000)

    def remaining_s(self) -> float | None:
        """Seconds left, never below zero; ``None`` when unbounded."""
        if self.at_s is None:
            return None
        return max(0.0, self.at_s - time.monotonic())

    def left_s(self, cap_s: float) -> float:
        """Seconds left, at most ``cap_s`` (a wait that must wake up now and then); never below zero."""
        if self.at_s is None:
            return cap_s
        return max(0.0, min(cap_s, self.at_s - time.monotonic()))

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.at_s is not None and time.monotonic() >= self.at_s


def process_tag(pid: int | None = None) -> str:
    """``host:pid`` of this process (or of ``pid`` on this host): how brokers name who holds a message."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


def current_millis() -> int:
    """The current Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def q_name(queue_name: str) -> str:
    """The canonical name of a queue: one ``.DQ`` or ``.XQ`` suffix removed."""
    if queue_name.endswith((".DQ", ".XQ")):
        return queue_name[:-3]
    return queue_name


def dq_name(queue_name: str) -> str:
    """The name of the delay queue of a queue."""
    if queue_name.endswith(".DQ"):
        return queue_name
    if queue_name.endswith(".XQ"):
        return queue_name[:-3] + ".DQ"
    return queue_name + ".DQ"


def xq_name(queue_name: str) -> str:
    """The name of the dead-letter queue of a queue."""
    if queue_name.endswith(".XQ"):
        return queue_name
    if queue_name.endswith(".DQ"):
        return queue_name[:-3] + ".XQ"
    return queue_name + ".XQ"


def dead_letter_reason(exception: BaseException, limit: int = 4096) -> str:
    """The ``repr`` of the exception a message is dead-lettered with, at most ``limit`` characters.

    A ``repr`` that raises (an argument whose own ``__repr__`` fails, say) must not keep the message
    from being dead-lettered: the exception's class name stands in for it."""
    try:
        text = repr(exception)
    except Exception:  # noqa: BLE001 - any failure of user code in repr
        text = f"{type(exception).__name__} (its repr() failed)"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_expected(exception: BaseException, throws: object) -> bool:
    """Whether ``exception`` is one of ``throws`` (an exception class or a tuple of them).

    Anything else in ``throws`` (a string from a foreign producer, say) matches nothing.
    """
    if isinstance(throws, type) and issubclass(throws, BaseException):
        return isinstance(exception, throws)
    if isinstance(throws, tuple) and all(isinstance(t, type) and issubclass(t, BaseException) for t in throws):
        return bool(throws) and isinstance(exception, throws)
    return False


def iter_queue(queue: Queue[T]) -> Iterator[T]:
    """Drain a queue without blocking, yielding each item."""
    while True:
        try:
            yield queue.get_nowait()
        except Empty:
            return


class _Joinable(Protocol):
    def join(self, *, timeout: int | None = None) -> Any: ...


def join_queue(queue: Queue[Any], timeout_s: float | None = None) -> None:
    """Wait until every task put on ``queue`` was marked done.

    Raises:
      QueueJoinTimeout: When ``timeout_s`` seconds pass first.
    """
    if timeout_s is None:
        queue.join()
        return
    all_tasks_done = getattr(queue, "all_tasks_done", None)
    if all_tasks_done is None:
        # gevent's patched Queue has no condition to wait on, but its join takes a timeout.
        if not queue.join(timeout_s):  # type: ignore[call-arg, func-returns-value]
            raise QueueJoinTimeout("timed out waiting for queue to be joined")
        return
    # Queue.join has no timeout; wait on its condition directly instead of leaking a helper thread.
    deadline = Deadline.after_s(timeout_s)
    with queue.all_tasks_done:
        while queue.unfinished_tasks:
            if deadline.expired():
                raise QueueJoinTimeout("timed out waiting for queue to be joined")
            queue.all_tasks_done.wait(deadline.remaining_s())


def join_all(joinables: Iterable[Any], timeout_ms: int | None) -> None:
    """Join threads or processes with one shared deadline of ``timeout_ms`` milliseconds."""
    deadline = Deadline.after_ms(timeout_ms)
    for obj in joinables:
        obj.join(timeout=deadline.remaining_s())
