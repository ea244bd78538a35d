"""The schedules declared on a broker, kept by the broker itself (as one more middleware).

greenroom keeps no module-level registry: like actors, schedules belong to their broker. The
first ``greenroom.schedule`` for a broker adds a :class:`ScheduleBook` to its middleware; it
overrides no hook, so it costs nothing per message, and whoever holds the broker (a worker
process, ``greenroomctl``) finds the schedules there.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..middleware.middleware import Middleware
from ._memory_store import MemoryStore

if TYPE_CHECKING:
    from ..broker import Broker
    from ._schedule import Schedule

__all__ = ["ScheduleBook", "book_of", "schedules_of"]


class ScheduleBook(Middleware):
    """The schedules of one broker, by name, in declaration order.

    Also holds the in-memory lease and tick record that schedulers of a broker with no shared
    storage (the stub broker) coordinate through: they can only be in this process.
    """

    def __init__(self) -> None:
        #: Declarations come from imports, usually in one thread; readers copy under the lock.
        self._lock = threading.Lock()
        self._schedules: dict[str, Schedule] = {}
        self.memory_store = MemoryStore()

    def add(self, schedule: Schedule) -> bool:
        """Register ``schedule``; ``False`` when its name is taken."""
        with self._lock:
            if schedule.name in self._schedules:
                return False
            self._schedules[schedule.name] = schedule
            return True

    def schedules(self) -> list[Schedule]:
        """The declared schedules, in declaration order."""
        with self._lock:
            return list(self._schedules.values())


def book_of(broker: Broker) -> ScheduleBook:
    """The broker's schedule book, added to its middleware on first use."""
    for middleware in broker.middleware:
        if isinstance(middleware, ScheduleBook):
            return middleware
    book = ScheduleBook()
    broker.add_middleware(book)
    return book


def schedules_of(broker: Broker) -> list[Schedule]:
    """The schedules declared on ``broker`` (none when nothing was declared)."""
    for middleware in broker.middleware:
        if isinstance(middleware, ScheduleBook):
            return middleware.schedules()
    return []
