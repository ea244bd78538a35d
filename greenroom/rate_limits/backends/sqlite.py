"""A rate-limiter backend in an SQLite file: limits shared by processes on one machine, no server."""

from __future__ import annotations

import os
import sqlite3

from ..._settings import DEFAULT_SQLITE_PATH
from ..._sqlite_table import ExpiringTable
from ...common import current_millis
from ..backend import Compute, UpdatingBackend

__all__ = ["DEFAULT_PATH", "SQLiteBackend"]

#: The default database file: the default SQLite broker's.
DEFAULT_PATH = DEFAULT_SQLITE_PATH


class SQLiteBackend(UpdatingBackend):
    """Counters in a table of an SQLite database file.

    Every operation is one ``BEGIN IMMEDIATE`` transaction, so it is atomic across threads and
    processes. Expiry uses the wall clock (shared between processes); an expired row counts as
    absent and is overwritten by the next write. Barriers block by polling.

    Parameters:
      path: The database file (``greenroom.db`` in the working directory by default); the SQLite
        broker's file can be shared.
      busy_timeout: How long to wait for another writer, in milliseconds.
    """

    poll_max_backoff_ms = 100

    def __init__(self, *, path: str | os.PathLike[str] = DEFAULT_PATH, busy_timeout: int = 10000) -> None:
        self.path = os.fspath(path)
        self._table = ExpiringTable(
            self.path, name="greenroom_rate_limits", value_type="INTEGER", busy_timeout_ms=busy_timeout
        )

    def add(self, key: str, value: int, ttl: int) -> bool:
        def operation(conn: sqlite3.Connection) -> bool:
            now_ms = current_millis()  # read with the write lock held: waiting must not age it
            if self._table.get(key, now_ms, conn) is not None:
                return False
            self._table.put(conn, key, value, now_ms, ttl)
            return True

        return self._table.write(operation)

    def _update(self, key: str, ttl: int, compute: Compute, others: list[str]) -> bool:
        """In one write transaction: set ``key`` to ``compute(current, others_sum)`` unless it is None."""

        def operation(conn: sqlite3.Connection) -> bool:
            now_ms = current_millis()  # read with the write lock held: waiting must not age it
            others_sum = 0
            if others:
                marks = ",".join("?" * len(others))
                (others_sum,) = conn.execute(
                    f"SELECT COALESCE(SUM(value), 0) FROM {self._table.name} WHERE key IN ({marks}) AND expires_at > ?",
                    (*others, now_ms),
                ).fetchone()
            new_value = compute(int(self._table.get(key, now_ms, conn) or 0), int(others_sum))
            if new_value is None:
                return False
            self._table.put(conn, key, new_value, now_ms, ttl)
            return True

        return self._table.write(operation)

    def wait_notify(self, key: str, ttl: int) -> None:
        now_ms = current_millis()
        self._table.write(lambda conn: self._table.put(conn, key, 1, now_ms, ttl))

    def _is_notified(self, key: str) -> bool:
        return self._table.get(key, current_millis()) is not None

    def close(self) -> None:
        """Close this backend's connections (they reopen on next use)."""
        self._table.close()
