"""The SQLite broker as its consumer and lease keeper see it.

``sqlite.py`` imports the consumer, so the consumer names its broker through
:class:`SQLiteBrokerPort` rather than importing it back. The port lists the members of
:class:`~greenroom.brokers.sqlite.SQLiteBroker` it uses, private ones included: a storage layer
below the broker (the leases, the dead letters, the change watcher) would leave only its public
methods here.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ._sqlite_watch import ChangeWatcher

__all__ = ["LeaseSettings", "SQLiteBrokerPort"]


class LeaseSettings(Protocol):
    """The fields of ``SQLiteSettings`` the consumer and the lease keeper read."""

    @property
    def lease_ms(self) -> int: ...

    @property
    def renew_interval_ms(self) -> int: ...

    @property
    def dead_message_ttl(self) -> int: ...

    @property
    def lock_retry_ms(self) -> int: ...

    @property
    def max_payload_bytes(self) -> int: ...


class SQLiteBrokerPort(Protocol):
    """The members of ``SQLiteBroker`` that ``_SQLiteConsumer`` and ``_LeaseKeeper`` use."""

    @property
    def logger(self) -> logging.Logger: ...

    @property
    def settings(self) -> LeaseSettings: ...

    def _change_watcher(self) -> ChangeWatcher: ...

    def _peek(self, queue_name: str, now_ms: int) -> int | None: ...

    def _lease(self, queue_name: str, owner: str, limit: int) -> list[tuple[int, int, bytes]]: ...

    def _delete(self, row_id: int) -> None: ...

    def _bury(self, row_id: int, owner: str, queue_name: str, message_id: str | None, reason: str) -> None: ...

    def _in_chunks(self, template: str, values: list[Any], *leading: Any) -> None: ...

    def _purge_dead_letters(self, older_than_ms: int) -> None: ...

    # The broker takes its own consumer type here, which this module cannot name without importing
    # the consumer's module back.
    def _forget(self, consumer: Any) -> None: ...
