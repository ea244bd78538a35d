"""A rate-limiter backend in an SQLite file: limits shared by processes on one machine, no server."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable

from ..._sqlite_local import ThreadLocalConnections, translate_sqlite_errors
from ...common import current_millis
from ..backend import RateLimiterBackend

__all__ = ["DEFAULT_PATH", "SQLiteBackend"]

#: The default database file: the default SQLite broker's.
DEFAULT_PATH = "greenroom.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS greenroom_rate_limits (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greenroom_rate_limits_expiry ON greenroom_rate_limits (expires_at)
"""

#: Expired rows are deleted by a write at most this often, per backend instance, in seconds.
#: (Bucket, window and barrier keys are unique, so without this the table would only grow.)
_PURGE_INTERVAL_S = 5.0


class SQLiteBackend(RateLimiterBackend):
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
        self._connections = ThreadLocalConnections(self.path, busy_timeout_ms=busy_timeout, schema=_SCHEMA)
        #: Monotonic time of the last purge; guarded by _purge_lock.
        self._last_purge_s = 0.0
        self._purge_lock = threading.Lock()

    def _purge_due(self) -> bool:
        now_s = time.monotonic()
        with self._purge_lock:
            if now_s - self._last_purge_s < _PURGE_INTERVAL_S:
                return False
            self._last_purge_s = now_s
            return True

    def _set(self, conn: sqlite3.Connection, key: str, value: int, now_ms: int, ttl: int) -> None:
        """Write a row (inside a write transaction), purging expired rows when a purge is due."""
        conn.execute(
            "INSERT OR REPLACE INTO greenroom_rate_limits (key, value, expires_at) VALUES (?, ?, ?)",
            (key, value, now_ms + int(ttl)),
        )
        if self._purge_due():
            conn.execute("DELETE FROM greenroom_rate_limits WHERE expires_at <= ?", (now_ms,))

    def _update(self, key: str, ttl: int, compute: Callable[[int | None, int], int | None], others: list[str]) -> bool:
        """In one write transaction: set ``key`` to ``compute(current, others_sum)`` unless it is None."""
        now_ms = current_millis()
        with translate_sqlite_errors(), self._connections.write() as conn:
            row = conn.execute(
                "SELECT value FROM greenroom_rate_limits WHERE key = ? AND expires_at > ?", (key, now_ms)
            ).fetchone()
            others_sum = 0
            if others:
                marks = ",".join("?" * len(others))
                (others_sum,) = conn.execute(
                    "SELECT COALESCE(SUM(value), 0) FROM greenroom_rate_limits"
                    f" WHERE key IN ({marks}) AND expires_at > ?",
                    (*others, now_ms),
                ).fetchone()
            new_value = compute(None if row is None else int(row[0]), int(others_sum))
            if new_value is None:
                return False
            self._set(conn, key, new_value, now_ms, ttl)
            return True

    def add(self, key: str, value: int, ttl: int) -> bool:
        return self._update(key, ttl, lambda current, _: value if current is None else None, [])

    def incr(self, key: str, amount: int, maximum: int, ttl: int) -> bool:
        def compute(current: int | None, _: int) -> int | None:
            new_value = (current or 0) + amount
            return None if new_value > maximum else new_value

        return self._update(key, ttl, compute, [])

    def decr(self, key: str, amount: int, minimum: int, ttl: int) -> bool:
        def compute(current: int | None, _: int) -> int | None:
            new_value = (current or 0) - amount
            return None if new_value < minimum else new_value

        return self._update(key, ttl, compute, [])

    def incr_and_sum(self, key: str, keys: Callable[[], list[str]], amount: int, maximum: int, ttl: int) -> bool:
        def compute(current: int | None, others_sum: int) -> int | None:
            new_value = (current or 0) + amount
            return None if new_value > maximum or new_value + others_sum > maximum else new_value

        return self._update(key, ttl, compute, [k for k in keys() if k != key])

    def wait_notify(self, key: str, ttl: int) -> None:
        now_ms = current_millis()
        with translate_sqlite_errors(), self._connections.write() as conn:
            self._set(conn, key, 1, now_ms, ttl)

    def _is_notified(self, key: str) -> bool:
        with translate_sqlite_errors():
            row = (
                self._connections.connection()
                .execute(
                    "SELECT 1 FROM greenroom_rate_limits WHERE key = ? AND expires_at > ?", (key, current_millis())
                )
                .fetchone()
            )
        return row is not None

    def close(self) -> None:
        """Close this backend's connections (they reopen on next use)."""
        self._connections.close()
