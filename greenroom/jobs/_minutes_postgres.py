"""Per-minute counts in PostgreSQL: ``minute:<minute>`` rows of the ``jobs`` table beside the job status."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from .._postgres._expiring import NOW_MS
from ._minutes import KEEP_MS, Counts, MinuteCounts
from ._postgres_store import PostgresJobStore

__all__ = ["PostgresMinuteCounts"]

#: Keys hold minutes written with this many digits, so that their text order is their order in time.
_DIGITS = 12


def _key(minute: int) -> str:
    return f"minute:{str(minute).zfill(_DIGITS)}"


def _pair(value: Any) -> tuple[int, int]:
    try:
        return int(value[0]), int(value[1])
    except (TypeError, ValueError, IndexError, KeyError):
        return 0, 0  # written by something else: counted as nothing rather than failing the chart


class PostgresMinuteCounts(MinuteCounts):
    """Counts in the job store's table, one row per minute holding ``[processed, failed]``, added in SQL.

    Parameters:
      store: The PostgreSQL job store whose table keeps them.
    """

    def __init__(self, store: PostgresJobStore) -> None:
        self._store = store
        table = store.table_name
        self._add = (
            f"INSERT INTO {table} (key, value, expires_at_ms) VALUES (%s, %s, {NOW_MS} + %s)"
            " ON CONFLICT (key) DO UPDATE SET value = jsonb_build_array("
            f"({table}.value ->> 0)::bigint + (excluded.value ->> 0)::bigint,"
            f" ({table}.value ->> 1)::bigint + (excluded.value ->> 1)::bigint),"
            " expires_at_ms = excluded.expires_at_ms"
        )
        self._read = f"SELECT key, value FROM {table} WHERE key BETWEEN %s AND %s AND expires_at_ms > {NOW_MS}"

    def add(self, counts: Counts) -> None:
        rows = [
            (_key(minute), Jsonb([processed, failed]), KEEP_MS)
            for minute, (processed, failed) in sorted(counts.items())
        ]

        def operation(conn: psycopg.Connection[Any]) -> None:
            with conn.transaction():
                for row in rows:
                    conn.execute(self._add, row)

        self._store.run(operation)

    def read(self, first_minute: int, last_minute: int) -> dict[int, tuple[int, int]]:
        params = (_key(first_minute), _key(last_minute))
        rows = self._store.run(lambda conn: conn.execute(self._read, params).fetchall())
        return {int(str(key).removeprefix("minute:")): _pair(value) for key, value in rows}

    def close(self) -> None:
        """Nothing of its own: the job store's connections are the store's to close."""
