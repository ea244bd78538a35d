"""Keep ``fork()`` out of SQLite operations, and interrupts out of SQLite transactions.

SQLite keeps per-process state about the locks its connections hold (one record per open file,
shared by every connection of the process). A child forked while another thread of the parent is
inside a transaction inherits that record with the lock marked as held, although the child holds
no lock at all: every connection the child opens, even a brand-new one, then waits on a lock that
nobody will ever release. SQLite's documentation therefore forbids carrying an open transaction
across ``fork()``.

:data:`sqlite_gate` counts the SQLite operations in progress in this process. A fork (of any kind:
``os.fork``, ``multiprocessing``, ``subprocess`` with a preexec function) waits, through
``os.register_at_fork``, until none is in progress, and none starts until the fork is done. The
children then start with a consistent state, and each SQLite user opens fresh connections there.
"""

from __future__ import annotations

import os
import threading

from .threading import interrupts_deferred

__all__ = ["ForkGate", "sqlite_gate", "sqlite_operation"]


class ForkGate:
    """Lets operations run concurrently with each other but never across a ``fork()``.

    Operations nest: a thread already inside one enters again without waiting, so a fork waiting
    for the gate to drain cannot deadlock with it.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        #: Operations in progress, across threads; guarded by _condition.
        self._active = 0
        #: True from the moment a fork waits for the gate until the fork is done.
        self._forking = False
        #: This thread's nesting depth.
        self._local = threading.local()

    def enter(self) -> None:
        """Start an operation: wait while a fork is under way, then count this thread in."""
        depth: int = getattr(self._local, "depth", 0)
        if depth == 0:
            with self._condition:
                while self._forking:
                    self._condition.wait()
                self._active += 1
        self._local.depth = depth + 1

    def exit(self) -> None:
        """End the operation :meth:`enter` started; the last one to end lets a waiting fork go."""
        depth: int = self._local.depth - 1
        self._local.depth = depth
        if depth == 0:
            with self._condition:
                self._active -= 1
                if self._active == 0:
                    self._condition.notify_all()

    def before_fork(self) -> None:
        """Wait until no operation is in progress and hold the gate shut through the fork."""
        self._condition.acquire()
        self._forking = True
        if getattr(self._local, "depth", 0) == 0:  # a thread forking inside its own operation cannot wait for it
            while self._active:
                self._condition.wait()

    def after_fork_in_parent(self) -> None:
        """Open the gate again."""
        self._forking = False
        self._condition.notify_all()
        self._condition.release()

    def after_fork_in_child(self) -> None:
        """Start afresh: the operations of the parent's other threads do not exist in the child."""
        self._condition = threading.Condition(threading.Lock())
        self._active = 0
        self._forking = False
        depth: int = getattr(self._local, "depth", 0)
        self._local = threading.local()
        self._local.depth = depth


#: The gate of every SQLite operation of this process (broker, results and rate-limit backends).
sqlite_gate = ForkGate()

os.register_at_fork(
    before=sqlite_gate.before_fork,
    after_in_parent=sqlite_gate.after_fork_in_parent,
    after_in_child=sqlite_gate.after_fork_in_child,
)


class sqlite_operation:
    """Run one SQLite operation (a transaction, a read) so that neither a fork nor an interrupt tears it.

    Inside an actor, a time-limit or shutdown interrupt asked for meanwhile is raised once the
    operation is over (see :func:`greenroom.threading.interrupts_deferred`).
    """

    __slots__ = ("_deferred",)

    def __init__(self) -> None:
        self._deferred = interrupts_deferred()

    def __enter__(self) -> None:
        self._deferred.__enter__()
        try:
            sqlite_gate.enter()
        except BaseException:
            self._deferred.__exit__(None, None, None)
            raise

    def __exit__(self, *exc_info: object) -> None:
        try:
            sqlite_gate.exit()
        finally:
            self._deferred.__exit__(*exc_info)
