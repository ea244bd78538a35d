"""Job status kept in PostgreSQL: the ``jobs`` table of the broker's schema (JSON records, merged in SQL).

Keys are ``job:<message id>`` and ``worker:<worker id>``, as in the SQLite store; a merge is one
``INSERT … ON CONFLICT`` statement, so concurrent writers of different fields never undo each other.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb

from .._postgres._expiring import NOW_MS, ExpiringTable
from ._store import JobStore, WorkerInfo

__all__ = ["PostgresJobStore"]

T = TypeVar("T")


class PostgresJobStore(JobStore):
    """A job store in a PostgreSQL schema (the Postgres broker's, by default).

    Parameters:
      url: A ``postgresql://`` URL.
      schema: The schema of greenroom's tables.
      retry_timeout_ms: How long an operation retries while the server cannot be reached.
    """

    def __init__(self, url: str, *, schema: str = "greenroom", retry_timeout_ms: int = 5000) -> None:
        self._table = ExpiringTable(url, schema=schema, table="jobs", retry_timeout_ms=retry_timeout_ms)
        name = self._table.name
        live = f"{name}.expires_at_ms > {NOW_MS}"
        self._merge = (
            f"INSERT INTO {name} (key, value, expires_at_ms) VALUES (%s, %s, {NOW_MS} + %s)"
            " ON CONFLICT (key) DO UPDATE SET"
            f" value = CASE WHEN {live} THEN {name}.value || excluded.value ELSE excluded.value END,"
            " expires_at_ms = excluded.expires_at_ms"
            " RETURNING coalesce((value ->> 'cancel_requested')::boolean, false)"
        )
        self._flags = (
            f"SELECT key FROM {name} WHERE key = ANY(%s) AND expires_at_ms > {NOW_MS}"
            " AND (value ->> 'cancel_requested')::boolean"
        )
        # The range lets the primary key find the worker records under any collation (LIKE alone
        # reads every job's row unless the collation is "C"); LIKE keeps exactly the prefix.
        self._workers = (
            f"SELECT value FROM {name} WHERE key >= 'worker' AND key < 'workes' AND key LIKE 'worker:%%'"
            f" AND expires_at_ms > {NOW_MS} ORDER BY key"
        )

    @property
    def table_name(self) -> str:
        """The schema-qualified name of the table records live in."""
        return self._table.name

    def run(self, operation: Callable[[psycopg.Connection[Any]], T]) -> T:
        """Run ``operation`` on one of the store's connections (autocommit; retried while the server is away)."""
        return self._table.run(operation)

    def _merge_fields(self, key: str, fields: Mapping[str, Any], ttl_ms: int) -> bool:
        params = (key, Jsonb(dict(fields)), int(ttl_ms))
        row = self._table.run(lambda conn: conn.execute(self._merge, params).fetchone())
        return bool(row and row[0])

    def update(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> None:
        self._merge_fields(f"job:{message_id}", fields, ttl_ms)

    def begin(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> bool:
        # The merged record keeps the flag (fields never carry it): what RETURNING reads is the old one.
        return self._merge_fields(f"job:{message_id}", fields, ttl_ms)

    def get(self, message_id: str) -> dict[str, Any] | None:
        value = self._table.get(f"job:{message_id}")
        return _record(value)

    def cancel_requested(self, message_ids: Iterable[str]) -> set[str]:
        keys = [f"job:{message_id}" for message_id in message_ids]
        if not keys:
            return set()
        rows = self._table.run(lambda conn: conn.execute(self._flags, (keys,)).fetchall())
        return {str(row[0]).removeprefix("job:") for row in rows}

    def beat(self, worker_id: str, info: WorkerInfo, ttl_ms: int) -> None:
        key = f"worker:{worker_id}"
        self._table.run(lambda conn: self._table.put(conn, key, Jsonb(dict(info)), ttl_ms))

    def retire(self, worker_id: str) -> None:
        key = f"worker:{worker_id}"
        self._table.run(lambda conn: conn.execute(f"DELETE FROM {self._table.name} WHERE key = %s", (key,)))

    def workers(self) -> list[WorkerInfo]:
        rows = self._table.run(lambda conn: conn.execute(self._workers).fetchall())
        return [record for record in (_record(row[0]) for row in rows) if record is not None]

    def close(self) -> None:
        self._table.close()


def _record(value: Any) -> dict[str, Any] | None:
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None
