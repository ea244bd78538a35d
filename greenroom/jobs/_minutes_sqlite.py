"""Per-minute counts in an SQLite file: the ``greenroom_job_minutes`` expiring table beside the job status."""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from .._sqlite_table import ExpiringTable
from ..common import current_millis
from ._minutes import KEEP_MS, Counts, MinuteCounts

__all__ = ["SQLiteMinuteCounts"]

#: Keys are minutes written with this many digits, so that their text order is their order in time.
_DIGITS = 12


def _key(minute: int) -> str:
    return str(minute).zfill(_DIGITS)


def _pair(text: Any) -> tuple[int, int]:
    try:
        value = json.loads(text)
        return int(value[0]), int(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return 0, 0  # written by something else: counted as nothing rather than failing the chart


class SQLiteMinuteCounts(MinuteCounts):
    """Counts in an SQLite file, one row per minute holding ``[processed, failed]``.

    Parameters:
      path: The database file (the SQLite job store's).
      busy_timeout_ms: How long a statement waits for another writer before retrying.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 5000) -> None:
        self._table = ExpiringTable(
            path, name="greenroom_job_minutes", value_type="TEXT", busy_timeout_ms=busy_timeout_ms
        )

    def add(self, counts: Counts) -> None:
        table = self._table

        def operation(conn: sqlite3.Connection) -> None:
            now_ms = current_millis()
            for minute, (processed, failed) in sorted(counts.items()):
                key = _key(minute)
                before = _pair(table.get(key, now_ms, conn))
                table.put(conn, key, json.dumps([before[0] + processed, before[1] + failed]), now_ms, KEEP_MS)

        table.write(operation)

    def read(self, first_minute: int, last_minute: int) -> dict[int, tuple[int, int]]:
        query = "SELECT key, value FROM greenroom_job_minutes WHERE key BETWEEN ? AND ? AND expires_at > ?"
        params = (_key(first_minute), _key(last_minute), current_millis())
        rows = self._table.db.read(lambda conn: conn.execute(query, params).fetchall())
        return {int(key): _pair(value) for key, value in rows}

    def close(self) -> None:
        self._table.close()
