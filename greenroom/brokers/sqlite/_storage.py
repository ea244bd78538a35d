"""The SQLite broker's storage layer: every statement it runs on the tables of ``_schema.sql``.

:class:`SQLiteStorage` is what the broker, its consumers and its lease keeper say to the database,
through public methods, over the shared connection layer :class:`~greenroom._sqlite.Database`
(a connection per thread, rebuilt in a forked child; busy waits, retries and one error translator).
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from ..._operations import DeadLetter, QueueCounts
from ..._sqlite import Database
from ...common import current_millis, dq_name, q_name
from .._table_broker import eta_ms
from .._unique import UniqueKey
from ._tables import broker_schema
from ._types import SQLiteSettings

__all__ = ["LeasedRow", "SQLiteStorage"]

#: (row id, due time in ms, payload, whether it holds a unique key it lets go when leased) of a
#: row a consumer leased.
LeasedRow = tuple[int, int, bytes, int]

#: Ids bound per statement (SQLite's historic limit on variables is 999).
_CHUNK = 500

_INSERT = "INSERT INTO greenroom_messages (queue_name, payload, due_ms) VALUES (?, ?, ?)"
_PEEK = "SELECT due_ms FROM greenroom_messages WHERE queue_name = ? AND lease_until_ms <= ? ORDER BY due_ms, id LIMIT 1"
_LEASE = """
UPDATE greenroom_messages SET lease_owner = ?, lease_until_ms = ?
WHERE id IN (
    SELECT id FROM greenroom_messages
    WHERE queue_name = ? AND due_ms <= ? AND lease_until_ms <= ?
    ORDER BY due_ms, id LIMIT ?
)
RETURNING id, due_ms, CAST(payload AS BLOB), unique_held AND NOT unique_until_finished
"""
# Unique jobs (see brokers/_unique.py): a retry or a delayed message moved to its queue (the same
# message id) finds its predecessor, which lets the key go; a lease on a queue (not a delay queue)
# lets go of the key of a message that does not keep it until it is finished.
_HAND_ON_KEY = "UPDATE greenroom_messages SET unique_held = 0 WHERE unique_key = ? AND message_id = ?"
_KEY_HOLDER = "SELECT CAST(payload AS BLOB) FROM greenroom_messages WHERE unique_key = ? AND unique_held"
_INSERT_UNIQUE = """
INSERT INTO greenroom_messages (queue_name, payload, due_ms, message_id, unique_key, unique_held, unique_until_finished)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_LET_KEYS_GO = "UPDATE greenroom_messages SET unique_held = 0 WHERE id IN ({})"
_DELETE = "DELETE FROM greenroom_messages WHERE id = ?"
_BURY = """
INSERT INTO greenroom_dead_letters (queue_name, message_id, payload, reason, dead_at_ms)
SELECT ?, ?, payload, ?, ? FROM greenroom_messages WHERE id = ? AND lease_owner = ?
"""
# Nack and requeue act only on rows the caller still holds: a lease that lapsed (a frozen process)
# may have passed to another consumer, which is running the message. An ack deletes regardless.
_UNLEASE = "UPDATE greenroom_messages SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ? AND id IN ({})"
_RENEW = "UPDATE greenroom_messages SET lease_until_ms = ? WHERE lease_owner IN ({})"
# Counting reads only indexes, in one statement (one snapshot): the rows of a queue (?1) and of its
# delay queue (?2) from the index by due time, the leased ones (a lease running after ?3) from the
# small index of leased rows (named: the planner, without statistics, would walk the large one).
_COUNTS = """
SELECT
    (SELECT COUNT(*) FROM greenroom_messages WHERE queue_name = ?1),
    (SELECT COUNT(*) FROM greenroom_messages WHERE queue_name = ?2),
    (SELECT COUNT(*) FROM greenroom_messages INDEXED BY greenroom_messages_by_owner
        WHERE lease_owner IS NOT NULL AND queue_name = ?1 AND lease_until_ms > ?3),
    (SELECT COUNT(*) FROM greenroom_messages INDEXED BY greenroom_messages_by_owner
        WHERE lease_owner IS NOT NULL AND queue_name = ?2 AND lease_until_ms > ?3),
    (SELECT COUNT(*) FROM greenroom_dead_letters WHERE queue_name = ?1)
"""
_HAS_MESSAGES = "SELECT EXISTS (SELECT 1 FROM greenroom_messages WHERE queue_name IN (?, ?))"
_DEAD_LETTERS = (
    "SELECT id, queue_name, message_id, CAST(payload AS BLOB), reason, dead_at_ms"
    " FROM greenroom_dead_letters WHERE queue_name = ? ORDER BY id LIMIT ?"
)


def due_ms(queue_name: str, options: dict[str, Any]) -> int:
    """A new row's due time: the eta of a delayed message, now for any other."""
    eta = eta_ms(queue_name, options)
    return current_millis() if eta is None else eta


class SQLiteStorage:
    """The broker's tables in one database file.

    Parameters:
      path: The database file (absolute: a later ``chdir()`` must not move the queues).
      settings: Leases, retention, locking and durability.
      logger: Where the connection layer reports.
    """

    def __init__(self, path: str, settings: SQLiteSettings, logger: logging.Logger) -> None:
        self.settings = settings
        self.logger = logger
        self.db = Database(
            path,
            busy_timeout_ms=settings.busy_timeout_ms,
            lock_retry_ms=settings.lock_retry_ms,
            synchronous=settings.synchronous,
            logger=logger,
            schema=broker_schema(path),
        )

    # -- producing --------------------------------------------------------------------------------

    def insert(self, queue_name: str, payload: bytes, due_at_ms: int) -> None:
        """Store a message; returns once it is durable (see ``SQLiteSettings.synchronous``)."""
        self.db.write_statement(_INSERT, (queue_name, payload, due_at_ms), durable=True)

    def insert_unique(
        self, queue_name: str, payload: bytes, due_at_ms: int, message_id: str, unique: UniqueKey
    ) -> bytes | None:
        """Store a message unless another one holds its unique key; ``None``, or the holder's payload.

        A message whose predecessor (same id and key: a retry, or a delayed message moved to its
        queue) is still stored takes the key over, or is stored without it if another message holds it.
        """

        def operation(conn: sqlite3.Connection) -> bytes | None:
            successor = conn.execute(_HAND_ON_KEY, (unique.key, message_id)).rowcount > 0
            holder = conn.execute(_KEY_HOLDER, (unique.key,)).fetchone()
            if holder is not None and not successor:
                return bytes(holder[0])
            held = holder is None
            conn.execute(
                _INSERT_UNIQUE, (queue_name, payload, due_at_ms, message_id, unique.key, held, unique.until_finished)
            )
            return None

        result: bytes | None = self.db.write(operation, durable=True)
        return result

    # -- consuming --------------------------------------------------------------------------------

    def peek(self, queue_name: str, now_ms: int) -> int | None:
        """The due time of the first row of a queue that nobody holds, or ``None`` (a read: no write lock)."""
        row = self.db.read(lambda conn: conn.execute(_PEEK, (queue_name, now_ms)).fetchone())
        return None if row is None else int(row[0])

    def lease(self, queue_name: str, owner: str, limit: int) -> list[LeasedRow]:
        """Lease up to ``limit`` due rows of a queue for ``owner``, in due order."""

        def operation(conn: sqlite3.Connection) -> list[LeasedRow]:
            # The time is read once the write lock is held: waiting for it must not shorten the lease.
            now_ms = current_millis()
            params = (owner, now_ms + self.settings.lease_ms, queue_name, now_ms, now_ms, limit)
            leased: list[LeasedRow] = conn.execute(_LEASE, params).fetchall()
            if not queue_name.endswith(".DQ"):
                letting_go = [row[0] for row in leased if row[3]]
                if letting_go:  # only messages with a unique key: no cost for the others
                    conn.execute(_LET_KEYS_GO.format(", ".join("?" * len(letting_go))), letting_go)
            return leased

        rows: list[LeasedRow] = self.db.write(operation)
        rows.sort(key=lambda row: (row[1], row[0]))  # RETURNING promises no order
        return rows

    def delete(self, row_id: int) -> None:
        """Forget a row: its message was processed."""
        self.db.write_statement(_DELETE, (row_id,))

    def bury(self, row_id: int, owner: str, queue_name: str, message_id: str | None, reason: str) -> bool:
        """Move a row ``owner`` holds to the dead letters of its canonical queue, with the reason;
        False when ``owner`` no longer held it (its lease lapsed and passed to another consumer)."""
        params = (q_name(queue_name), message_id, reason, current_millis(), row_id, owner)

        def operation(conn: sqlite3.Connection) -> bool:
            if conn.execute(_BURY, params).rowcount:
                conn.execute(_DELETE, (row_id,))
                return True
            return False

        buried: bool = self.db.write(operation)
        return buried

    def unlease(self, owner: str, row_ids: list[int]) -> None:
        """Make rows ``owner`` still holds visible again at once."""
        self._in_chunks(_UNLEASE, row_ids, owner)

    def unlease_process(self, process: str) -> int:
        """Make every row leased by a consumer of ``process`` (``host:pid``) visible again; how many."""
        pattern = process.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
        query = (
            "UPDATE greenroom_messages SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner LIKE ? ESCAPE '\\'"
        )
        return self.db.write_statement(query, (pattern,))

    def renew(self, owners: list[str], until_ms: int) -> None:
        """Extend the leases of every row the ``owners`` hold to ``until_ms``."""
        self._in_chunks(_RENEW, owners, until_ms)

    def purge_dead_letters(self, older_than_ms: int) -> None:
        """Drop the dead letters buried before ``older_than_ms``."""
        self.db.write_statement("DELETE FROM greenroom_dead_letters WHERE dead_at_ms < ?", (older_than_ms,))

    def _in_chunks(self, template: str, values: list[Any], *leading: Any) -> None:
        """Run ``template`` (``{}`` stands for the ``IN`` list) for each chunk of ``values``."""
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            self.db.write_statement(template.format(", ".join("?" * len(chunk))), (*leading, *chunk))

    # -- looking at queues ------------------------------------------------------------------------

    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue, of its delay queue, and its dead letters."""
        name = q_name(queue_name)

        def operation(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM greenroom_messages WHERE queue_name IN (?, ?)", (name, dq_name(name)))
            conn.execute("DELETE FROM greenroom_dead_letters WHERE queue_name = ?", (name,))

        self.db.write(operation)

    def has_messages(self, queue_name: str) -> bool:
        """Whether a queue or its delay queue holds a row: ready, delayed or in progress."""
        name = q_name(queue_name)
        return bool(self.db.read(lambda conn: conn.execute(_HAS_MESSAGES, (name, dq_name(name))).fetchone()[0]))

    def counts(self, queue_name: str) -> QueueCounts:
        """How many messages of a queue are ready, delayed, in progress and dead."""
        name = q_name(queue_name)
        now_ms = current_millis()

        def operation(conn: sqlite3.Connection) -> QueueCounts:
            queued, delayed, leased, leased_delayed, dead = conn.execute(
                _COUNTS, (name, dq_name(name), now_ms)
            ).fetchone()
            return QueueCounts(queued - leased, delayed - leased_delayed, leased + leased_delayed, dead)

        return self.db.read(operation)

    def dead_letters(self, queue_name: str, limit: int) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue."""
        rows = self.db.read(lambda conn: conn.execute(_DEAD_LETTERS, (q_name(queue_name), limit)).fetchall())
        return [DeadLetter(*row) for row in rows]
