"""A results backend in an SQLite file: results with no server, across processes on one machine."""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING, Any

from ..._sqlite_local import ThreadLocalConnections, translate_sqlite_errors
from ...common import current_millis
from ..backend import DEFAULT_NAMESPACE, ResultBackend
from ..result import Missing

if TYPE_CHECKING:
    from ...encoder import Encoder

__all__ = ["DEFAULT_PATH", "SQLiteBackend"]

#: The default database file: the default SQLite broker's, so one file holds queues and results.
DEFAULT_PATH = "greenroom.db"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS greenroom_results (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS greenroom_results_expiry ON greenroom_results (expires_at)
"""

#: Expired rows are deleted by a store at most this often, per backend instance, in seconds.
_PURGE_INTERVAL_S = 5.0


class SQLiteBackend(ResultBackend):
    """Store results in a table of an SQLite database file.

    Any process on the machine that opens the same file sees the results, so a producer can
    ``get_result`` what a worker process stored. Pass the SQLite broker's path to keep everything
    in one file (the tables do not collide). Connections are per thread, opened on first use, in
    WAL mode. Expiry uses the wall clock (shared between processes); expired rows are invisible
    at once and deleted by later stores. Blocking gets poll (a cheap local read) at most every
    ``poll_max_backoff_ms``.

    Parameters:
      path: The database file (``greenroom.db`` in the working directory by default).
      namespace: As for :class:`~greenroom.results.ResultBackend`.
      encoder: As for :class:`~greenroom.results.ResultBackend`.
      use_namespace_prefix_keys: As for :class:`~greenroom.results.ResultBackend`.
      busy_timeout: How long to wait for another writer, in milliseconds.
    """

    poll_max_backoff_ms = 200
    poll_min_backoff_ms = 10

    def __init__(
        self,
        *,
        path: str | os.PathLike[str] = DEFAULT_PATH,
        namespace: str = DEFAULT_NAMESPACE,
        encoder: Encoder | None = None,
        use_namespace_prefix_keys: bool = False,
        busy_timeout: int = 10000,
    ) -> None:
        super().__init__(namespace=namespace, encoder=encoder, use_namespace_prefix_keys=use_namespace_prefix_keys)
        self.path = os.fspath(path)
        self._connections = ThreadLocalConnections(self.path, busy_timeout_ms=busy_timeout, schema=_SCHEMA)
        #: Monotonic time of the last purge; a race between threads only means an extra purge.
        self._last_purge_s = 0.0
        self._purge_lock = threading.Lock()

    def _get(self, message_key: str) -> Any:
        with translate_sqlite_errors():
            row = (
                self._connections.connection()
                .execute(
                    "SELECT value FROM greenroom_results WHERE key = ? AND expires_at > ?",
                    (message_key, current_millis()),
                )
                .fetchone()
            )
        return Missing if row is None else self._decode(bytes(row[0]))

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        data = self._encode(result)
        now_ms = current_millis()
        purge = self._should_purge()
        with translate_sqlite_errors(), self._connections.write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO greenroom_results (key, value, expires_at) VALUES (?, ?, ?)",
                (message_key, data, now_ms + int(ttl)),
            )
            if purge:
                conn.execute("DELETE FROM greenroom_results WHERE expires_at <= ?", (now_ms,))

    def _should_purge(self) -> bool:
        now_s = time.monotonic()
        with self._purge_lock:
            if now_s - self._last_purge_s < _PURGE_INTERVAL_S:
                return False
            self._last_purge_s = now_s
            return True

    def close(self) -> None:
        """Close this backend's connections (they reopen on next use)."""
        self._connections.close()
