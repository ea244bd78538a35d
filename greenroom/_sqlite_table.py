"""The expiring key/value table that the SQLite results and rate-limiter backends keep in a file.

It lives in a :class:`~greenroom._sqlite.Database`, like the SQLite broker's queues, so the three
share one way of opening the file, of retrying while it is busy, of surviving ``fork()`` and of
translating errors (and may share the file itself).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from ._sqlite import Database
from .common import Every
from .logging import get_logger

__all__ = ["ExpiringTable"]

T = TypeVar("T")

#: Expired rows are deleted by a write at most this often, per table instance, in seconds.
_PURGE_INTERVAL_S = 5.0


class ExpiringTable:
    """A ``key → value`` table of an SQLite file whose rows expire.

    Expiry uses the wall clock (shared between processes): an expired row is invisible at once and
    overwritten by the next write of its key. Keys are mostly unique (message ids, buckets,
    barriers), so a write also deletes the expired rows, at most every few seconds per instance.

    Parameters:
      path: The database file (its directory is created on first use).
      name: The table's name.
      value_type: The SQL type of the ``value`` column.
      busy_timeout_ms: How long a statement waits for another writer; a busy database is retried
        for as long again before :class:`~greenroom.errors.ConnectionClosed` is raised.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str, value_type: str, busy_timeout_ms: int) -> None:
        self.name = name
        statements = (
            f"CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, value {value_type} NOT NULL,"
            f" expires_at INTEGER NOT NULL) WITHOUT ROWID",
            f"CREATE INDEX IF NOT EXISTS {name}_expiry ON {name} (expires_at)",
        )

        def schema(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement)
            conn.execute("COMMIT")

        self.db = Database(
            os.fspath(path),
            busy_timeout_ms=busy_timeout_ms,
            lock_retry_ms=busy_timeout_ms,
            logger=get_logger(__name__, type(self)),
            schema=schema,
            create_directory=True,
        )
        self._select = f"SELECT value FROM {name} WHERE key = ? AND expires_at > ?"
        self._insert = f"INSERT OR REPLACE INTO {name} (key, value, expires_at) VALUES (?, ?, ?)"
        self._purge = f"DELETE FROM {name} WHERE expires_at <= ?"
        #: When expired rows are purged: by the first write once the interval has passed.
        self.purges = Every(_PURGE_INTERVAL_S)

    def get(self, key: str, now_ms: int, conn: sqlite3.Connection | None = None) -> Any:
        """The value of an unexpired row, or None; read on ``conn`` (inside its transaction) if given."""
        if conn is not None:
            row = conn.execute(self._select, (key, now_ms)).fetchone()
        else:
            row = self.db.read(lambda own: own.execute(self._select, (key, now_ms)).fetchone())
        return None if row is None else row[0]

    def write(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` in one write transaction (retried as a whole while the file is busy)."""
        return self.db.write(operation)

    def put(self, conn: sqlite3.Connection, key: str, value: Any, now_ms: int, ttl_ms: int) -> None:
        """Write a row inside a :meth:`write` transaction, purging expired rows when a purge is due."""
        conn.execute(self._insert, (key, value, now_ms + int(ttl_ms)))
        if self.purges.due():
            conn.execute(self._purge, (now_ms,))

    def close(self) -> None:
        """Close the table's connections (they reopen on next use)."""
        self.db.close()
