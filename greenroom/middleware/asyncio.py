"""Run ``async def`` actors on an event loop thread."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from ..asyncio import EventLoopThread, get_event_loop_thread, set_event_loop_thread
from ..logging import get_logger
from .middleware import Middleware

if TYPE_CHECKING:
    from ..broker import Broker
    from ..worker import Worker

__all__ = ["AsyncIO"]

#: How long a worker waits for the event loop to start, in seconds.
_START_TIMEOUT_S = 1.0


class AsyncIO(Middleware):
    """Start an event loop thread when a worker boots, and stop it when the worker stops.

    Async actors run on that loop; each worker thread that processes one waits for it, so at
    most ``worker_threads`` coroutines run at once. Time limits and shutdown notifications
    interrupt the waiting worker thread, which cancels the coroutine.
    """

    def __init__(self) -> None:
        self.logger = get_logger(__name__, type(self))
        #: This middleware's loop thread; set and cleared by the thread booting and stopping workers.
        self.event_loop_thread: EventLoopThread | None = None
        #: How many booted workers share the loop (one loop per process, however many workers).
        self._users = 0
        self._lock = threading.Lock()

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        with self._lock:
            self._users += 1
            if self.event_loop_thread is not None:
                return
            event_loop_thread = EventLoopThread(self.logger)
            event_loop_thread.start(timeout=_START_TIMEOUT_S)
            self.event_loop_thread = event_loop_thread
            set_event_loop_thread(event_loop_thread)

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or self.event_loop_thread is None:
                return
            event_loop_thread, self.event_loop_thread = self.event_loop_thread, None
            if get_event_loop_thread() is event_loop_thread:
                set_event_loop_thread(None)
        event_loop_thread.stop()
