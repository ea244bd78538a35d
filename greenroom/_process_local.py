"""State that belongs to one process: a forked child builds its own instead of using the parent's.

Connections, threads and locks do not survive ``fork()`` in a usable state: the child has only the
thread that forked, a lock another thread held stays held forever, and a socket or SQLite file
shared with the parent must be neither used nor closed by the child. :class:`ProcessLocal` holds
such state and gives a forked child a fresh value from its factory on first use there. The
parent's value is kept referenced in the child and never touched, so that collecting it cannot
close what the parent still uses.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ProcessLocal"]

T = TypeVar("T")

#: Bumped in every forked child; a ProcessLocal built in an older generation rebuilds its value.
_generation = 0


def _after_fork_in_child() -> None:
    global _generation
    _generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


class ProcessLocal(Generic[T]):
    """A value built on first use in each process.

    Parameters:
      factory: Builds the value; called at most once per process (under a lock).
    """

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._value: T | None = None
        self._generation = _generation
        self._lock = threading.Lock()
        #: Values inherited from parents: kept so that garbage collection never finalizes them here.
        self._inherited: list[T] = []

    def get(self) -> T:
        """This process's value, built now if it does not exist yet."""
        if self._generation != _generation:
            self._forget_parent()
        value = self._value
        if value is None:
            with self._lock:
                if self._value is None:
                    self._value = self._factory()
                value = self._value
        return value

    def peek(self) -> T | None:
        """This process's value if it was built, else None (never builds one)."""
        if self._generation != _generation:
            self._forget_parent()
        return self._value

    def reset(self) -> T | None:
        """Take this process's value out (to close it); the next :meth:`get` builds a new one."""
        if self._generation != _generation:
            self._forget_parent()
        with self._lock:
            value, self._value = self._value, None
        return value

    def _forget_parent(self) -> None:
        # Only the forking thread exists in the child, so nothing races with this; the lock is
        # replaced because a parent thread may have held it at the moment of the fork.
        if self._value is not None:
            self._inherited.append(self._value)
        self._value = None
        self._lock = threading.Lock()
        self._generation = _generation
