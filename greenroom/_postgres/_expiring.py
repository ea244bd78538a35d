"""The expiring key/value tables of greenroom's schema that the Postgres results and rate-limit backends use.

Expiry uses the server's clock, shared by every process: an expired row is invisible at once and
overwritten by the next write of its key; writes delete expired rows now and then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg

from ..common import Every
from ..logging import get_logger
from ._database import Database
from ._schema import check_schema_name

__all__ = ["NOW_MS", "ExpiringTable"]

T = TypeVar("T")

#: The server's time in epoch milliseconds, fixed for the statement.
NOW_MS = "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
#: Expired rows are deleted by a write at most this often, per table instance, in seconds.
_PURGE_INTERVAL_S = 5.0


class ExpiringTable:
    """``key → value`` rows of one table of the schema (``results`` or ``rate_limits``) that expire.

    Parameters:
      url: A ``postgresql://`` URL or a libpq connection string.
      schema: The schema of greenroom's tables (created on first use, as by the broker).
      table: ``results`` or ``rate_limits``.
      retry_timeout_ms: How long an operation retries while the server cannot be reached.
    """

    def __init__(self, url: str, *, schema: str, table: str, retry_timeout_ms: int) -> None:
        name = f'"{check_schema_name(schema)}".{table}'
        self.name = name
        self.db = Database(
            url,
            schema=schema,
            retry_timeout_ms=retry_timeout_ms,
            pool_max_size=10,
            connect_timeout_s=5.0,
            logger=get_logger(__name__, table),
        )
        self.select = f"SELECT value FROM {name} WHERE key = %s AND expires_at_ms > {NOW_MS}"
        self._upsert = (
            f"INSERT INTO {name} (key, value, expires_at_ms) VALUES (%s, %s, {NOW_MS} + %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at_ms = excluded.expires_at_ms"
        )
        self._add = f"{self._upsert} WHERE {name}.expires_at_ms <= {NOW_MS} RETURNING 1"
        self._purge = f"DELETE FROM {name} WHERE expires_at_ms <= {NOW_MS}"
        #: When expired rows are purged: by the first write once the interval has passed.
        self.purges = Every(_PURGE_INTERVAL_S)

    def run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on a connection in autocommit mode (retried while the server is away)."""
        return self.db.run(operation)

    def get(self, key: str) -> Any:
        """The value of an unexpired row, or ``None``."""
        row = self.db.run(lambda conn: conn.execute(self.select, (key,)).fetchone())
        return None if row is None else row[0]

    def put(self, conn: psycopg.Connection[Any], key: str, value: Any, ttl_ms: int) -> None:
        """Write a row on ``conn`` (inside its transaction, if any), purging expired rows when due."""
        conn.execute(self._upsert, (key, value, int(ttl_ms)))
        if self.purges.due():
            conn.execute(self._purge)

    def add(self, key: str, value: Any, ttl_ms: int) -> bool:
        """Write a row unless an unexpired one has the key; whether it wrote."""
        row = self.db.run(lambda conn: conn.execute(self._add, (key, value, int(ttl_ms))).fetchone())
        return row is not None

    def close(self) -> None:
        """Close this process's idle connections (they reopen on next use)."""
        self.db.close()
