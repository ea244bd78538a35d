"""The thread of a worker process that carries out cancellations, writes held progress, and beats.

Every poll interval it asks the store, in one round trip, which of the messages running in this
process were cancelled, and interrupts their actors (as a time limit does: an exception in the
thread, a cancelled task for ``async def`` actors, a thrown greenlet under gevent). It also
writes progress reports that were held back to coalesce them, and records the process's
heartbeat for ``greenroomctl workers``.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any, Protocol

from .._background import BackgroundThread, join_unless_current
from ..common import current_millis
from ..errors import Cancelled
from ..logging import get_logger
from ..threading import interrupt
from ._store import JobStore

if TYPE_CHECKING:
    from ..broker import Broker
    from ..worker import Worker

__all__ = ["CancelWatch"]

#: Heartbeats a worker may miss before it counts as gone.
_MISSED_BEATS = 3


class _Tracking(Protocol):
    active_ttl: int

    def store(self, broker: Broker) -> JobStore: ...

    def flush_minutes(self, broker: Broker) -> None: ...


class _Watched(Protocol):
    message_id: str
    thread_id: int


class CancelWatch:
    """Cancellations, held progress and heartbeats of one worker process.

    Parameters:
      tracking: The middleware (its store and time-to-live settings).
      poll_interval_ms: Milliseconds between two looks for cancellations.
      heartbeat_interval_ms: Milliseconds between two heartbeats.
    """

    def __init__(self, tracking: _Tracking, *, poll_interval_ms: int, heartbeat_interval_ms: int) -> None:
        self._tracking = tracking
        self.poll_interval_s = poll_interval_ms / 1000
        self.heartbeat_interval_s = heartbeat_interval_ms / 1000
        self._logger = get_logger(__name__, type(self))
        #: Guards everything below; taken by worker threads and the watch thread.
        self._lock = threading.Lock()
        self._runs: dict[str, _Watched] = {}
        #: message id → monotonic time of its last progress write, and the fields held since.
        self._progress_written: dict[str, float] = {}
        self._progress_held: dict[str, dict[str, Any]] = {}
        self._runner = BackgroundThread(self._run, "greenroom-job-watch")
        self._broker: Broker | None = None
        self._worker_info: dict[str, Any] = {}
        self.worker_id = uuid.uuid4().hex

    # -- the worker's runs ------------------------------------------------------------------------

    def add(self, run: _Watched) -> None:
        """Watch a message that started running for its cancellation."""
        with self._lock:
            self._runs[run.message_id] = run

    def discard(self, run: _Watched) -> None:
        """Stop watching a message whose actor is done."""
        with self._lock:
            if self._runs.get(run.message_id) is run:
                del self._runs[run.message_id]

    @property
    def running(self) -> int:
        """How many tracked messages run in this process."""
        return len(self._runs)

    # -- progress -------------------------------------------------------------------------------

    def hold_progress(self, message_id: str, fields: dict[str, Any], interval_ms: int) -> bool:
        """Hold a progress report back if the message's last one was written under ``interval_ms`` ago.

        Returns whether it was held (the watch thread, or the message's last status write, writes it).
        """
        now_s = time.monotonic()
        with self._lock:
            last_s = self._progress_written.get(message_id)
            if last_s is not None and now_s - last_s < interval_ms / 1000:
                self._progress_held[message_id] = fields
                return True
            self._progress_written[message_id] = now_s
            self._progress_held.pop(message_id, None)
            return False

    def take_progress(self, message_id: str) -> dict[str, Any]:
        """The progress held for a message that ends (to write with its final status); forgets it."""
        with self._lock:
            self._progress_written.pop(message_id, None)
            return self._progress_held.pop(message_id, {})

    # -- the thread -------------------------------------------------------------------------------

    def start(self, broker: Broker, worker: Worker) -> None:
        """Start watching for a worker (the first one of the process starts the thread)."""
        with self._lock:
            self._broker = broker
            self._worker_info = {
                "id": self.worker_id,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "queues": sorted(worker.consumer_whitelist or broker.get_declared_queues()),
                "started_at_ms": current_millis(),
            }
            self._runner.ensure_running()

    def stop(self, worker: Worker) -> None:
        """Stop the thread and take this worker off the list of live workers."""
        with self._lock:
            thread = self._runner.stop()
            broker = self._broker
        join_unless_current(thread, 10)
        if broker is not None:
            try:
                self._tracking.store(broker).retire(self.worker_id)
            except Exception:  # noqa: BLE001 - its heartbeat expires anyway
                self._logger.warning("Could not remove worker %s from the list of workers.", self.worker_id)
            try:
                self._tracking.flush_minutes(broker)
            except Exception:  # noqa: BLE001 - only the dashboard's per-minute counts miss them
                self._logger.warning("Could not store the last per-minute counts of worker %s.", self.worker_id)

    def _run(self, stop_event: threading.Event) -> None:
        next_beat_s = 0.0
        while True:
            try:
                self.look()
                if time.monotonic() >= next_beat_s:
                    self.beat()
                    next_beat_s = time.monotonic() + self.heartbeat_interval_s
            except Exception:
                self._logger.warning("Could not look for cancelled messages; retrying.", exc_info=True)
            if stop_event.wait(self.poll_interval_s):
                return

    def look(self) -> None:
        """Interrupt the running messages that were cancelled; write the progress held back."""
        broker = self._broker
        if broker is None:
            return
        store = self._tracking.store(broker)
        with self._lock:
            runs = dict(self._runs)
            held = [(message_id, fields) for message_id, fields in self._progress_held.items() if message_id in runs]
            for message_id, _ in held:
                del self._progress_held[message_id]
                self._progress_written[message_id] = time.monotonic()
        for message_id, fields in held:
            store.update(message_id, fields, self._tracking.active_ttl)
        if not runs:
            return
        for message_id in store.cancel_requested(runs):
            run = runs[message_id]
            if interrupt(run.thread_id, Cancelled, message_id):
                self._logger.warning("Message %s was cancelled; interrupting its actor.", message_id)

    def beat(self) -> None:
        """Record this process's heartbeat."""
        broker = self._broker
        if broker is None:
            return
        info = {**self._worker_info, "running": self.running, "beat_at_ms": current_millis()}
        ttl_ms = int(self.heartbeat_interval_s * 1000 * _MISSED_BEATS)
        self._tracking.store(broker).beat(self.worker_id, info, ttl_ms)
        # The per-minute counts ride on the heartbeat: one write per beat, however many messages ended.
        self._tracking.flush_minutes(broker)
