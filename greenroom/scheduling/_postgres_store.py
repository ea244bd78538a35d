"""Leases and tick records in the PostgreSQL broker's schema (table ``schedules``).

Each operation is one statement (or one short transaction) on the broker's database, so the
fencing check and the write are atomic. Lease expiry uses the server's clock, which schedulers on
every machine share; the tick instants themselves come from the scheduler.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from .._postgres._database import Database
from .._postgres._expiring import NOW_MS
from .._postgres._schema import check_schema_name
from ._store import Claim, Holder, Lease, Recorded, ScheduleStore

__all__ = ["PostgresStore"]


class PostgresStore(ScheduleStore):
    """The store of schedulers whose broker is a PostgreSQL schema.

    Parameters:
      url: The broker's ``postgresql://`` URL.
      schema: The broker's schema.
    """

    def __init__(self, url: str, *, schema: str) -> None:
        self.table = f'"{check_schema_name(schema)}".schedules'
        self.db = Database(
            url,
            schema=schema,
            retry_timeout_ms=2000,
            pool_max_size=2,
            connect_timeout_s=5.0,
            logger=logging.getLogger("greenroom.scheduling.PostgresStore"),
        )

    def acquire(self, names: Sequence[str], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        table = self.table
        take = (
            f"UPDATE {table} SET token = token + 1, holder = %s, lease_until_ms = {NOW_MS} + %s"
            f" WHERE name = %s AND (holder IS NULL OR lease_until_ms <= {NOW_MS})"
            " RETURNING token, last_tick_ms, last_run_ms"
        )

        def operation(conn: psycopg.Connection[Any]) -> list[Lease]:
            won = []
            for name in names:
                conn.execute(f"INSERT INTO {table} (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
                row = conn.execute(take, (holder.to_json(), lease_ms, name)).fetchone()
                if row is not None:
                    won.append(Lease(name, row[0], row[1], row[2]))
            return won

        return self.db.run(operation, retry=False)

    def renew(self, leases: Sequence[Lease], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        # The token names one grant of the lease: expired but not taken since, it is still ours.
        query = (
            f"UPDATE {self.table} SET lease_until_ms = {NOW_MS} + %s"
            " WHERE name = %s AND token = %s AND holder IS NOT NULL RETURNING 1"
        )

        def operation(conn: psycopg.Connection[Any]) -> list[Lease]:
            return [lease for lease in leases if conn.execute(query, (lease_ms, lease.name, lease.token)).fetchone()]

        return self.db.run(operation, retry=False)

    def record(self, lease: Lease, tick_ms: int, *, run: bool) -> Claim:
        query = (
            f"UPDATE {self.table} SET last_tick_ms = %s,"
            " last_run_ms = CASE WHEN %s THEN %s ELSE last_run_ms END"
            " WHERE name = %s AND token = %s AND (last_tick_ms IS NULL OR last_tick_ms < %s) RETURNING 1"
        )

        def operation(conn: psycopg.Connection[Any]) -> Claim:
            if conn.execute(query, (tick_ms, run, tick_ms, lease.name, lease.token, tick_ms)).fetchone():
                return Claim.RECORDED
            current = conn.execute(f"SELECT token FROM {self.table} WHERE name = %s", (lease.name,)).fetchone()
            return Claim.TAKEN if current is not None and current[0] == lease.token else Claim.LOST

        return self.db.run(operation, durable=True, retry=False)

    def release(self, leases: Sequence[Lease], holder: Holder) -> None:
        # The token moves on: nothing the caller still records under it is accepted.
        query = (
            f"UPDATE {self.table} SET holder = NULL, lease_until_ms = 0, token = token + 1"
            " WHERE name = %s AND token = %s"
        )

        def operation(conn: psycopg.Connection[Any]) -> None:
            for lease in leases:
                conn.execute(query, (lease.name, lease.token))

        self.db.run(operation, retry=False)

    def read(self, names: Sequence[str], now_ms: int) -> Mapping[str, Recorded]:
        query = (
            f"SELECT name, holder, lease_until_ms > {NOW_MS}, last_tick_ms, last_run_ms"
            f" FROM {self.table} WHERE name = ANY(%s)"
        )

        def operation(conn: psycopg.Connection[Any]) -> dict[str, Recorded]:
            rows = {row[0]: row for row in conn.execute(query, (list(names),)).fetchall()}
            found = {}
            for name in names:
                row = rows.get(name)
                if row is None:
                    found[name] = Recorded()
                    continue
                leader = Holder.from_json(row[1]) if row[2] else None
                found[name] = Recorded(row[3], row[4], leader)
            return found

        return self.db.run(operation)

    def close(self) -> None:
        self.db.close()
