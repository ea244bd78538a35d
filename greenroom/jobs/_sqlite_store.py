"""Job status kept in an SQLite file: the ``greenroom_jobs`` expiring table (by default the broker's own file).

Keys are ``job:<message id>`` (a JSON object, merged field by field inside one write transaction)
and ``worker:<worker id>`` (the JSON of the worker's last heartbeat).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from .._sqlite_table import ExpiringTable
from ..common import current_millis
from ._store import JobStore, WorkerInfo

__all__ = ["SQLiteJobStore"]

#: Ids bound per statement (SQLite's historic limit on variables is 999).
_CHUNK = 500


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class SQLiteJobStore(JobStore):
    """A job store in an SQLite file.

    Parameters:
      path: The database file; the SQLite broker's ``path`` keeps status beside the queues.
      busy_timeout_ms: How long a statement waits for another writer before retrying.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self.path = os.fspath(path)
        self._table = ExpiringTable(
            self.path, name="greenroom_jobs", value_type="TEXT", busy_timeout_ms=busy_timeout_ms
        )

    def update(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> None:
        self._merge(f"job:{message_id}", fields, ttl_ms)

    def _merge(self, key: str, fields: Mapping[str, Any], ttl_ms: int) -> dict[str, Any]:
        """Merge ``fields`` into the record under ``key``; the record as it was before."""
        table = self._table

        def operation(conn: sqlite3.Connection) -> dict[str, Any]:
            now_ms = current_millis()
            before = _load(table.get(key, now_ms, conn)) or {}
            table.put(conn, key, json.dumps({**before, **fields}), now_ms, ttl_ms)
            return before

        return table.write(operation)

    def get(self, message_id: str) -> dict[str, Any] | None:
        return _load(self._table.get(f"job:{message_id}", current_millis()))

    def begin(self, message_id: str, fields: Mapping[str, Any], ttl_ms: int) -> bool:
        return bool(self._merge(f"job:{message_id}", fields, ttl_ms).get("cancel_requested"))

    def cancel_requested(self, message_ids: Iterable[str]) -> set[str]:
        keys = [f"job:{message_id}" for message_id in message_ids]
        found: set[str] = set()
        now_ms = current_millis()
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            query = (
                "SELECT key FROM greenroom_jobs WHERE expires_at > ? AND json_extract(value, '$.cancel_requested') = 1"
                f" AND key IN ({', '.join('?' * len(chunk))})"
            )
            found.update(key.removeprefix("job:") for key in self._select_keys(query, (now_ms, *chunk)))
        return found

    def _select_keys(self, query: str, params: tuple[Any, ...]) -> list[str]:
        rows = self._table.db.read(lambda conn: conn.execute(query, params).fetchall())
        return [str(row[0]) for row in rows]

    def beat(self, worker_id: str, info: WorkerInfo, ttl_ms: int) -> None:
        table = self._table
        key = f"worker:{worker_id}"

        def operation(conn: sqlite3.Connection) -> None:
            table.put(conn, key, json.dumps(info), current_millis(), ttl_ms)

        table.write(operation)

    def retire(self, worker_id: str) -> None:
        key = f"worker:{worker_id}"
        self._table.write(lambda conn: conn.execute("DELETE FROM greenroom_jobs WHERE key = ?", (key,)))

    def workers(self) -> list[WorkerInfo]:
        # A range of the primary key (';' follows ':'): LIKE would read every job's row.
        query = (
            "SELECT value FROM greenroom_jobs"
            " WHERE key >= 'worker:' AND key < 'worker;' AND expires_at > ? ORDER BY key"
        )
        now_ms = current_millis()
        rows = self._table.db.read(lambda conn: conn.execute(query, (now_ms,)).fetchall())
        return [info for info in (_load(row[0]) for row in rows) if info is not None]

    def close(self) -> None:
        self._table.close()
