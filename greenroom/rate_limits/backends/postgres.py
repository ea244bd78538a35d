"""A rate-limiter backend on PostgreSQL: the ``rate_limits`` table of greenroom's schema."""

from __future__ import annotations

from typing import Any

import psycopg

from ..._postgres import DEFAULT_SCHEMA, NOW_MS, ExpiringTable
from ..backend import Compute, UpdatingBackend

__all__ = ["PostgresBackend"]

#: The first key of the advisory locks an update takes (the second is the hash of a counter's
#: name): "gs" in ASCII, beside the "gr" of schema migrations.
_LOCK_CLASS = 0x6773


class PostgresBackend(UpdatingBackend):
    """Counters in the ``rate_limits`` table of greenroom's schema in a PostgreSQL database.

    An update is one transaction that first takes a transaction-level advisory lock on each key it
    reads (in sorted order, so two updates never wait on each other in a circle), then reads,
    computes and writes: atomic across every process that uses the table. Expiry uses the server's
    clock; an expired row counts as absent. Barriers block by polling.

    Parameters:
      url: A ``postgresql://`` URL or a libpq connection string.
      schema: The schema of greenroom's tables (shared with the Postgres broker, if wanted).
      retry_timeout: How long, in milliseconds, an operation retries while the server is away.
    """

    poll_max_backoff_ms = 100

    def __init__(self, *, url: str = "postgresql://", schema: str = DEFAULT_SCHEMA, retry_timeout: int = 5000) -> None:
        self.url = url
        self.schema = schema
        self._table = ExpiringTable(url, schema=schema, table="rate_limits", retry_timeout_ms=retry_timeout)
        name = self._table.name
        self._lock = "SELECT pg_advisory_xact_lock(%s, hashtext(k)) FROM unnest(%s::text[]) AS k ORDER BY k"
        self._sum = f"SELECT COALESCE(sum(value), 0) FROM {name} WHERE key = ANY(%s) AND expires_at_ms > {NOW_MS}"

    def add(self, key: str, value: int, ttl: int) -> bool:
        return self._table.add(key, value, ttl)

    def _update(self, key: str, ttl: int, compute: Compute, others: list[str]) -> bool:
        """In one transaction, under advisory locks: set ``key`` to ``compute(current, others_sum)`` unless None."""

        def operation(conn: psycopg.Connection[Any]) -> bool:
            with conn.transaction():
                conn.execute(self._lock, (_LOCK_CLASS, sorted({key, *others})))
                row = conn.execute(self._table.select, (key,)).fetchone()
                current = 0 if row is None else int(row[0])
                others_sum = 0
                if others:
                    summed = conn.execute(self._sum, (others,)).fetchone()
                    others_sum = int(summed[0]) if summed else 0
                new_value = compute(current, others_sum)
                if new_value is None:
                    return False
                self._table.put(conn, key, new_value, ttl)
                return True

        return self._table.run(operation)

    def wait_notify(self, key: str, ttl: int) -> None:
        self._table.run(lambda conn: self._table.put(conn, key, 1, ttl))

    def _is_notified(self, key: str) -> bool:
        return self._table.get(key) is not None

    def close(self) -> None:
        """Close this backend's idle connections (they reopen on next use)."""
        self._table.close()
