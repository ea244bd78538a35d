"""The Postgres broker's lease keeper: renews the leases of the rows a process holds, and purges old dead letters."""

from __future__ import annotations

from .._lease_keeper import LeaseKeeper as _LeaseKeeper
from ._compaction import IndexCompactor
from ._consumer import PostgresConsumer
from ._storage import PostgresStorage

__all__ = ["LeaseKeeper"]

#: How long closing the broker waits for a rebuild of the indexes in progress (one usually takes
#: milliseconds; it waits up to its lock timeout for each older transaction in its way).
COMPACTION_STOP_TIMEOUT_S = 10.0


class LeaseKeeper(_LeaseKeeper[PostgresConsumer]):
    """Renews, in one statement by primary key, the leases of every row this process holds.

    It also purges expired dead letters, and vacuums the messages table every
    ``vacuum_interval_ms`` (see :class:`PostgresSettings`); after a vacuum it ran, it lets the
    compactor rebuild the table's indexes if they are due (see ``_compaction.py``).
    """

    def __init__(self, storage: PostgresStorage) -> None:
        settings = storage.settings
        interval_ms = min(settings.renew_interval_ms, settings.vacuum_interval_ms or settings.renew_interval_ms)
        super().__init__(
            storage.logger, interval_ms, settings.retry_timeout_ms / 1000 + 10, "greenroom-postgres-leases"
        )
        self.storage = storage
        self.compactor = IndexCompactor(storage)
        self._last_vacuum_ms = 0

    def stop(self) -> None:
        """Stop the thread, and give a rebuild of the indexes in progress time to finish.

        A rebuild cut short by the process's exit leaves invalid copies that the next one drops.
        """
        super().stop()
        self.compactor.join(COMPACTION_STOP_TIMEOUT_S)

    def run_once(self, now_ms: int) -> None:
        """Renew the leases of every row held in this process; purge dead letters and vacuum when due."""
        row_ids: list[int] = []
        owners: list[str] = []
        for consumer in self.consumers():
            held = consumer.held_rows()
            if held:
                row_ids += held
                owners.append(consumer.owner)
        self.storage.renew(row_ids, owners)
        settings = self.storage.settings
        if self.purge_due(now_ms, settings.dead_message_ttl):
            self.storage.purge_dead_letters()
        if settings.vacuum_interval_ms and now_ms - self._last_vacuum_ms >= settings.vacuum_interval_ms:
            if self.storage.vacuum():
                self.compactor.start_if_due()
            self._last_vacuum_ms = now_ms
