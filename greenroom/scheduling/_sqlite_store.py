"""Leases and tick records in the SQLite broker's database file (table ``greenroom_schedules``).

Every operation is one short ``BEGIN IMMEDIATE`` transaction through greenroom's shared SQLite
layer, so the fencing check and the write are atomic. Lease expiry uses the wall clock: all the
processes sharing the file run on one machine, so they read the same clock.
"""

from __future__ import annotations

import importlib.resources
import logging
import sqlite3
from collections.abc import Mapping, Sequence

from .._sqlite import Database
from ._store import Claim, Holder, Lease, Recorded, ScheduleStore

__all__ = ["SQLiteStore"]

#: How long one statement waits for another writer, and how long a busy database is retried:
#: short, since a lease lasts seconds; the scheduler tries again on its next round.
BUSY_TIMEOUT_MS = 1000
LOCK_RETRY_MS = 2000


def _apply_schema(conn: sqlite3.Connection) -> None:
    script = importlib.resources.files(__package__ or "greenroom.scheduling").joinpath("_sqlite_schema.sql")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(script.read_text(encoding="utf-8"))
    conn.execute("COMMIT")


class SQLiteStore(ScheduleStore):
    """The store of schedulers whose broker is an SQLite file.

    Parameters:
      path: The broker's database file.
      synchronous: The broker's durability of enqueues; tick records are written as durably, so
        a power loss cannot forget a tick whose message survived.
    """

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        self.db = Database(
            path,
            busy_timeout_ms=BUSY_TIMEOUT_MS,
            lock_retry_ms=LOCK_RETRY_MS,
            synchronous=synchronous,
            logger=logging.getLogger("greenroom.scheduling.SQLiteStore"),
            schema=_apply_schema,
        )

    def acquire(self, names: Sequence[str], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        # Standby schedulers ask a few times a second: a read (which never waits for writers)
        # spares the broker's writers a write lock while the leases are held.
        free = [name for name in names if self._is_free(name, now_ms)]
        if not free:
            return []

        def operation(conn: sqlite3.Connection) -> list[Lease]:
            won = []
            for name in free:
                conn.execute("INSERT OR IGNORE INTO greenroom_schedules (name) VALUES (?)", (name,))
                row = conn.execute(
                    "UPDATE greenroom_schedules SET token = token + 1, holder = ?, lease_until_ms = ?"
                    " WHERE name = ? AND (holder IS NULL OR lease_until_ms <= ?)"
                    " RETURNING token, last_tick_ms, last_run_ms",
                    (holder.to_json(), now_ms + lease_ms, name, now_ms),
                ).fetchone()
                if row is not None:
                    won.append(Lease(name, row[0], row[1], row[2]))
            return won

        return self.db.write(operation)

    def _is_free(self, name: str, now_ms: int) -> bool:
        def operation(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT holder IS NULL OR lease_until_ms <= ? FROM greenroom_schedules WHERE name = ?", (now_ms, name)
            ).fetchone()
            return row is None or bool(row[0])

        return self.db.read(operation)

    def renew(self, leases: Sequence[Lease], holder: Holder, lease_ms: int, now_ms: int) -> list[Lease]:
        def operation(conn: sqlite3.Connection) -> list[Lease]:
            kept = []
            for lease in leases:
                # The token names one grant of the lease: expired but not taken since, it is still ours.
                row = conn.execute(
                    "UPDATE greenroom_schedules SET lease_until_ms = ?"
                    " WHERE name = ? AND token = ? AND holder IS NOT NULL RETURNING 1",
                    (now_ms + lease_ms, lease.name, lease.token),
                ).fetchone()
                if row is not None:
                    kept.append(lease)
            return kept

        return self.db.write(operation)

    def record(self, lease: Lease, tick_ms: int, *, run: bool) -> Claim:
        def operation(conn: sqlite3.Connection) -> Claim:
            row = conn.execute(
                "UPDATE greenroom_schedules SET last_tick_ms = ?,"
                " last_run_ms = CASE WHEN ? THEN ? ELSE last_run_ms END"
                " WHERE name = ? AND token = ? AND (last_tick_ms IS NULL OR last_tick_ms < ?) RETURNING 1",
                (tick_ms, run, tick_ms, lease.name, lease.token, tick_ms),
            ).fetchone()
            if row is not None:
                return Claim.RECORDED
            current = conn.execute("SELECT token FROM greenroom_schedules WHERE name = ?", (lease.name,)).fetchone()
            return Claim.TAKEN if current is not None and current[0] == lease.token else Claim.LOST

        return self.db.write(operation, durable=True)

    def release(self, leases: Sequence[Lease], holder: Holder) -> None:
        def operation(conn: sqlite3.Connection) -> None:
            for lease in leases:
                conn.execute(
                    # The token moves on: nothing the caller still records under it is accepted.
                    "UPDATE greenroom_schedules SET holder = NULL, lease_until_ms = 0, token = token + 1"
                    " WHERE name = ? AND token = ?",
                    (lease.name, lease.token),
                )

        self.db.write(operation)

    def read(self, names: Sequence[str], now_ms: int) -> Mapping[str, Recorded]:
        def operation(conn: sqlite3.Connection) -> dict[str, Recorded]:
            found = {}
            for name in names:
                row = conn.execute(
                    "SELECT holder, lease_until_ms, last_tick_ms, last_run_ms FROM greenroom_schedules WHERE name = ?",
                    (name,),
                ).fetchone()
                if row is None:
                    found[name] = Recorded()
                    continue
                leader = Holder.from_json(row[0]) if row[1] > now_ms else None
                found[name] = Recorded(row[2], row[3], leader)
            return found

        return self.db.read(operation)

    def close(self) -> None:
        self.db.close()
