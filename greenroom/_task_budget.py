"""How many more messages the worker threads of a process may start before the process is replaced.

The ``greenroom`` command recycles worker processes (``--max-tasks-per-child``, ``--max-memory-per-child``,
a message that ignored its time limit). Counting in the worker threads, at the moment each one takes a
message, keeps the count exact: a process told to run 50 messages starts 50, not 50 plus whatever its
threads took while the main thread was noticing.
"""

from __future__ import annotations

import threading

__all__ = ["TaskBudget"]


class TaskBudget:
    """The messages a worker may still start: ``limit`` of them, or any number until :meth:`close`.

    Parameters:
      limit: How many messages may start in all; ``None`` for no limit.

    Worker threads call :meth:`take` before running a message; any thread may call :meth:`close`.
    ``spent`` is set once no message may start any more; whoever owns the worker then stops it.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit
        #: Messages started so far (every worker thread increments it, under _lock).
        self.taken = 0
        #: Why no message may start any more (None while messages may start).
        self.reason: str | None = None
        #: Set once no message may start any more.
        self.spent = threading.Event()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Count one more message started; False (nothing counted) when the budget is spent."""
        with self._lock:
            if self.spent.is_set():
                return False
            self.taken += 1
            if self.limit is not None and self.taken >= self.limit:
                self._close(f"it started {self.limit} messages")
            return True

    def close(self, reason: str) -> None:
        """Let no further message start (the first reason given is kept)."""
        with self._lock:
            self._close(reason)

    def _close(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.spent.set()
