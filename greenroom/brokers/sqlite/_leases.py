"""The SQLite broker's lease keeper: renews the leases of the rows a process holds, and purges old dead letters."""

from __future__ import annotations

from .._lease_keeper import LeaseKeeper as _LeaseKeeper
from ._consumer import SQLiteConsumer
from ._storage import SQLiteStorage

__all__ = ["LeaseKeeper"]


class LeaseKeeper(_LeaseKeeper[SQLiteConsumer]):
    """Renews, by owner, the leases of the rows this process holds, and purges expired dead letters."""

    def __init__(self, storage: SQLiteStorage) -> None:
        settings = storage.settings
        super().__init__(
            storage.logger, settings.renew_interval_ms, settings.lock_retry_ms / 1000 + 5, "greenroom-sqlite-leases"
        )
        self.storage = storage

    def run_once(self, now_ms: int) -> None:
        """Renew the leases of every row held in this process, and purge dead letters when due."""
        settings = self.storage.settings
        owners = [consumer.owner for consumer in self.consumers() if consumer.held > 0]
        if owners:
            self.storage.renew(owners, now_ms + settings.lease_ms)
        if self.purge_due(now_ms, settings.dead_message_ttl):
            self.storage.purge_dead_letters(now_ms - settings.dead_message_ttl)
