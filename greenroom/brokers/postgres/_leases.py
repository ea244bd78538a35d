"""The Postgres broker's lease keeper: renews the leases of the rows a process holds, and purges old dead letters."""

from __future__ import annotations

import threading

from ..._background import BackgroundThread, join_unless_current
from ...common import current_millis
from ._consumer import PostgresConsumer
from ._storage import PostgresStorage

__all__ = ["LeaseKeeper"]

#: How often the lease keeper purges expired dead letters (ms).
_PURGE_INTERVAL_MS = 60_000


class LeaseKeeper:
    """Renews, in one statement by primary key, the leases of every row this process holds.

    It also purges expired dead letters, and vacuums the messages table every
    ``vacuum_interval_ms`` (see :class:`PostgresSettings`).

    One per broker and process, its thread started by the first consumer and stopped by
    :meth:`PostgresBroker.close` (the next consumer starts it again).
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        #: Consumers whose rows to renew: added by consumer threads, removed by whichever thread
        #: releases the last row of a closed consumer. Guarded by _lock, as is _runner.
        self._consumers: set[PostgresConsumer] = set()
        self._lock = threading.Lock()
        self._runner = BackgroundThread(self._run, "greenroom-postgres-leases")
        self._last_purge_ms = 0
        self._last_vacuum_ms = 0

    def add(self, consumer: PostgresConsumer) -> None:
        """Renew the leases of ``consumer`` from now on; starts the thread if it is not running."""
        with self._lock:
            self._consumers.add(consumer)
            self._runner.ensure_running()

    def discard(self, consumer: PostgresConsumer) -> None:
        """Forget a closed consumer that holds no row any more."""
        with self._lock:
            self._consumers.discard(consumer)

    def stop(self) -> None:
        """Stop the thread and wait for it (unless called from it); :meth:`add` starts it again."""
        with self._lock:
            thread = self._runner.stop()
        join_unless_current(thread, self.storage.settings.retry_timeout_ms / 1000 + 10)

    def _run(self, stop_event: threading.Event) -> None:
        settings = self.storage.settings
        interval_s = min(settings.renew_interval_ms, settings.vacuum_interval_ms or settings.renew_interval_ms) / 1000
        while not stop_event.wait(interval_s):
            try:
                self.run_once()
            except Exception:  # thread top level: log, and keep renewing at the next interval
                self.storage.logger.exception("Could not renew leases; retrying in %.1f s.", interval_s)

    def run_once(self, now_ms: int | None = None) -> None:
        """Renew the leases of every row held in this process, and purge dead letters when due."""
        now_ms = current_millis() if now_ms is None else now_ms
        with self._lock:
            consumers = list(self._consumers)
        row_ids: list[int] = []
        owners: list[str] = []
        for consumer in consumers:
            held = consumer.held_rows()
            if held:
                row_ids += held
                owners.append(consumer.owner)
        self.storage.renew(row_ids, owners)
        settings = self.storage.settings
        if now_ms - self._last_purge_ms >= min(_PURGE_INTERVAL_MS, settings.dead_message_ttl):
            self.storage.purge_dead_letters()
            self._last_purge_ms = now_ms
        if settings.vacuum_interval_ms and now_ms - self._last_vacuum_ms >= settings.vacuum_interval_ms:
            self.storage.vacuum()
            self._last_vacuum_ms = now_ms
