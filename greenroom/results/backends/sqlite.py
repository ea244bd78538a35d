"""A results backend in an SQLite file: results with no server, across processes on one machine."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..._settings import DEFAULT_SQLITE_PATH
from ..._sqlite_table import ExpiringTable
from ...common import current_millis
from ..backend import DEFAULT_NAMESPACE, ResultBackend
from ..result import Missing

if TYPE_CHECKING:
    from ...encoder import Encoder

__all__ = ["DEFAULT_PATH", "SQLiteBackend"]

#: The default database file: the default SQLite broker's, so one file holds queues and results.
DEFAULT_PATH = DEFAULT_SQLITE_PATH


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
        self._table = ExpiringTable(
            self.path, name="greenroom_results", value_type="BLOB", busy_timeout_ms=busy_timeout
        )

    def _get(self, message_key: str) -> Any:
        data = self._table.get(message_key, current_millis())
        return Missing if data is None else self._decode(bytes(data))

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        data = self._encode(result)
        now_ms = current_millis()
        self._table.write(lambda conn: self._table.put(conn, message_key, data, now_ms, ttl))

    def close(self) -> None:
        """Close this backend's connections (they reopen on next use)."""
        self._table.close()
