"""What the lease keepers of the table-based brokers (SQLite, PostgreSQL) share: a thread per process
that renews the leases of the rows that process's consumers hold, and does the broker's housekeeping.

A consumer leases rows for ``lease_ms``; while it holds them, its process's keeper extends their
leases every ``renew_interval_ms``. A process that dies stops renewing, and its rows come back when
their leases run out (or at once, through ``Broker.recover_process``).
"""

from __future__ import annotations

import logging
import threading
from typing import Generic, TypeVar

from .._background import BackgroundThread, join_unless_current
from ..common import current_millis

__all__ = ["LeaseKeeper", "PURGE_INTERVAL_MS"]

#: How often a lease keeper purges expired dead letters (ms).
PURGE_INTERVAL_MS = 60_000

C = TypeVar("C")


class LeaseKeeper(Generic[C]):
    """Keeps the leases of a process's consumers (of type ``C``) alive, on a thread of its own.

    One per broker and process, its thread started by the first consumer and stopped by the broker's
    ``close()`` (the next consumer starts it again). Subclasses say what one round does
    (:meth:`run_once`).

    Parameters:
      logger: Where a failed round is reported.
      interval_ms: Time between rounds.
      stop_timeout_s: How long :meth:`stop` waits for a round in progress.
      thread_name: The name of the thread.
    """

    def __init__(self, logger: logging.Logger, interval_ms: int, stop_timeout_s: float, thread_name: str) -> None:
        self.logger = logger
        self.interval_ms = interval_ms
        self.stop_timeout_s = stop_timeout_s
        #: Consumers whose rows to renew: added by consumer threads, removed by whichever thread
        #: releases the last row of a closed consumer. Guarded by _lock, as is _runner.
        self._consumers: set[C] = set()
        self._lock = threading.Lock()
        self._runner = BackgroundThread(self._run, thread_name)
        self.last_purge_ms = 0

    def add(self, consumer: C) -> None:
        """Renew the leases of ``consumer`` from now on; starts the thread if it is not running."""
        with self._lock:
            self._consumers.add(consumer)
            self._runner.ensure_running()

    def discard(self, consumer: C) -> None:
        """Forget a closed consumer that holds no row any more."""
        with self._lock:
            self._consumers.discard(consumer)

    def consumers(self) -> list[C]:
        """The consumers known now (a copy: they come and go while a round runs)."""
        with self._lock:
            return list(self._consumers)

    def stop(self) -> None:
        """Stop the thread and wait for it (unless called from it); :meth:`add` starts it again."""
        with self._lock:
            thread = self._runner.stop()
        join_unless_current(thread, self.stop_timeout_s)

    def purge_due(self, now_ms: int, dead_message_ttl: int) -> bool:
        """Whether expired dead letters should be purged now; if so, counts this as the purge."""
        if now_ms - self.last_purge_ms < min(PURGE_INTERVAL_MS, dead_message_ttl):
            return False
        self.last_purge_ms = now_ms
        return True

    def _run(self, stop_event: threading.Event) -> None:
        interval_s = self.interval_ms / 1000
        while not stop_event.wait(interval_s):
            try:
                self.run_once(current_millis())
            except Exception:  # thread top level: log, and keep renewing at the next interval
                self.logger.exception("Could not renew leases; retrying in %.1f s.", interval_s)

    def run_once(self, now_ms: int) -> None:
        """One round: renew the leases of the rows held in this process, and whatever housekeeping is due."""
        raise NotImplementedError
