"""The Postgres broker's storage layer: every statement it runs, through the shared connection layer.

:class:`PostgresStorage` is what the broker, its consumers and its lease keeper say to the database,
through public methods, over :class:`~greenroom._postgres.Database` (pools per process, retries
while the server is away, one error translator). Enqueues may run on a caller's connection instead,
inside the caller's transaction (see :meth:`PostgresBroker.transaction`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg

from ..._postgres import Database, Operation, channel
from ...broker import DeadLetter, QueueCounts
from ...common import dq_name, q_name
from ...errors import BrokerError
from .._table_broker import eta_ms
from .._unique import UniqueKey
from ._sql import Statements
from ._types import PostgresSettings

__all__ = ["IndexState", "LeasedRow", "NewRow", "PostgresStorage", "due_ms"]

#: Rows one batch statement inserts at most.
_BATCH = 1000
#: Times a unique insert is tried again when the holder of its key vanished between two statements.
_KEY_RACES = 10


class LeasedRow(NamedTuple):
    """A row a consumer leased."""

    id: int
    due_ms: int
    payload: bytes


class NewRow(NamedTuple):
    """A row to insert: ``due_ms`` is ``None`` for a message due at once (the server's time then)."""

    queue_name: str
    payload: bytes
    due_ms: int | None
    message_id: str


class IndexState(NamedTuple):
    """What decides whether the messages table's indexes are rebuilt (see ``_compaction.py``)."""

    #: The size of its indexes, valid or not.
    index_bytes: int
    #: How many rows it holds, counted up to the limit asked for.
    rows: int
    #: How many invalid index copies failed rebuilds left behind.
    leftovers: int


def due_ms(queue_name: str, options: dict[str, Any]) -> int | None:
    """A new row's due time: the eta of a message on a delay queue, ``None`` (due now, by the
    server's clock) for any other."""
    return eta_ms(queue_name, options)


def _atomically(conn: psycopg.Connection[Any]) -> contextlib.AbstractContextManager[Any]:
    """A block whose statements commit together, inside the caller's transaction if there is one.

    On a connection in autocommit mode that is ``conn.transaction()`` (a savepoint inside a
    ``with conn.transaction():`` of the caller's). On one that is not (Django's in ``atomic``,
    SQLAlchemy's in a session, psycopg's default), the statements simply join the transaction
    the connection is in or starts: ``conn.transaction()`` there would commit it on its own.
    """
    return conn.transaction() if conn.autocommit else contextlib.nullcontext()


class PostgresStorage:
    """The broker's tables in one schema.

    Parameters:
      db: The connections (and the schema's name).
      settings: Leases, retention, retries.
    """

    def __init__(self, db: Database, settings: PostgresSettings) -> None:
        self.db = db
        self.settings = settings
        self.logger = db.logger
        self.sql = Statements(db.schema)
        #: Where new and handed-back rows are announced.
        self.channel = channel(db.schema)

    def _write(self, operation: Operation[Any], conn: psycopg.Connection[Any] | None) -> Any:
        """Run an enqueue on the caller's connection when given, else durably on a pooled one."""
        if conn is not None:
            return self.db.run_on(conn, operation)
        return self.db.run(operation, durable=True)

    # -- producing --------------------------------------------------------------------------------

    def insert(self, row: NewRow, conn: psycopg.Connection[Any] | None = None) -> None:
        """Store a message; returns once it is committed (or, on ``conn``, written in its transaction)."""
        self._write(lambda c: c.execute(self.sql.insert, row), conn)

    def insert_many(self, rows: Sequence[NewRow], conn: psycopg.Connection[Any] | None = None) -> None:
        """Store messages in one transaction (all of them or none), a thousand per statement."""

        def operation(c: psycopg.Connection[Any]) -> None:
            # In pipeline mode the server inserts one chunk while the next is converted and sent.
            with c.pipeline(), _atomically(c):
                for start in range(0, len(rows), _BATCH):
                    chunk = rows[start : start + _BATCH]
                    c.execute(self.sql.insert_many, [list(column) for column in zip(*chunk, strict=True)])

        if rows:
            self._write(operation, conn)

    def insert_unique(
        self, row: NewRow, unique: UniqueKey, conn: psycopg.Connection[Any] | None = None
    ) -> bytes | None:
        """Store a message unless another one holds its unique key; ``None``, or the holder's payload.

        A message whose predecessor (same id and key: it is a retry, or a delayed message moved to
        its queue) is still stored takes the key over from it, and is stored without holding the
        key should another message hold it already.

        Raises:
          BrokerError: When the key changed hands more than ``_KEY_RACES`` times meanwhile.
        """

        def operation(c: psycopg.Connection[Any]) -> bytes | None:
            with _atomically(c):
                successor = c.execute(self.sql.hand_on_key, (unique.key, row.message_id)).rowcount > 0
                for _ in range(_KEY_RACES):
                    params = (*row, unique.key, True, unique.until_finished)
                    if c.execute(self.sql.insert_unique, params).fetchone() is not None:
                        return None
                    if successor:
                        c.execute(self.sql.insert_unique, (*row, unique.key, False, unique.until_finished))
                        return None
                    holder = c.execute(self.sql.key_holder, (unique.key,)).fetchone()
                    if holder is not None:
                        return bytes(holder[0])
            raise BrokerError(f"the unique key {unique.key!r} kept changing hands; the message was not sent")

        result: bytes | None = self._write(operation, conn)
        return result

    # -- consuming --------------------------------------------------------------------------------

    def lease(self, queue_name: str, owner: str, limit: int, acked: Sequence[int] = ()) -> list[LeasedRow]:
        """Lease up to ``limit`` due rows of a queue for ``owner``, in due order (no retry: consumers fail fast).

        The rows ``acked`` are deleted in the same statement: their messages were processed.
        """
        params = {
            "acked": list(acked),
            "owner": owner,
            "lease_ms": self.settings.lease_ms,
            "started": not queue_name.endswith(".DQ"),
            "queue": queue_name,
            "limit": limit,
        }
        rows = self.db.run(lambda c: c.execute(self.sql.lease, params).fetchall(), retry=False)
        leased = [LeasedRow(row[0], row[1], bytes(row[2])) for row in rows]
        leased.sort(key=lambda row: (row.due_ms, row.id))  # RETURNING promises no order
        return leased

    def next_due_in_ms(self, queue_name: str) -> int | None:
        """Milliseconds until the first row of a queue that nobody holds is due (≤ 0: now), or ``None``."""
        row = self.db.run(lambda c: c.execute(self.sql.next_due, (queue_name,)).fetchone(), retry=False)
        return None if row is None else int(row[0])

    def delete_many(self, row_ids: Sequence[int], *, retry: bool = True) -> None:
        """Forget rows: their messages were processed."""
        self.db.run(lambda c: c.execute(self.sql.delete, (list(row_ids),)), retry=retry)

    def bury(self, row_id: int, owner: str, queue_name: str, message_id: str | None, reason: str) -> bool:
        """Move a row ``owner`` holds to the dead letters of its canonical queue; whether it still held it."""
        params = {"id": row_id, "owner": owner, "queue": q_name(queue_name), "message_id": message_id, "reason": reason}
        buried: int = self.db.run(lambda c: c.execute(self.sql.bury, params).rowcount)
        return buried > 0

    def unlease(self, owner: str, row_ids: list[int]) -> None:
        """Make rows ``owner`` still holds visible again at once, and wake their queues' consumers."""
        if row_ids:
            self.db.run(lambda c: c.execute(self.sql.unlease, (row_ids, owner, self.channel)))

    def unlease_process(self, process: str) -> int:
        """Make every row leased by a consumer of ``process`` (``host:pid``) visible again; how many."""
        params = (f"{process}:", self.channel)

        def operation(c: psycopg.Connection[Any]) -> int:
            row = c.execute(self.sql.release_process, params).fetchone()
            return int(row[0]) if row is not None else 0

        released: int = self.db.run(operation)
        return released

    def renew(self, row_ids: list[int], owners: list[str]) -> None:
        """Extend by a lease the leases of the rows listed that the ``owners`` still hold."""
        if row_ids:
            self.db.run(lambda c: c.execute(self.sql.renew, (self.settings.lease_ms, row_ids, owners)))

    def purge_dead_letters(self) -> None:
        """Drop the dead letters older than ``dead_message_ttl``."""
        self.db.run(lambda c: c.execute(self.sql.purge, (self.settings.dead_message_ttl,)))

    def vacuum(self) -> bool:
        """Vacuum the messages table unless another process is doing it; whether this one did."""

        def operation(c: psycopg.Connection[Any]) -> bool:
            row = c.execute(self.sql.try_vacuum_lock, (self.db.schema,)).fetchone()
            if not (row and row[0]):
                return False
            try:
                c.execute(self.sql.vacuum)
            finally:
                c.execute(self.sql.vacuum_unlock, (self.db.schema,))
            return True

        done: bool = self.db.run(operation, retry=False)
        return done

    def index_state(self, row_limit: int, conn: psycopg.Connection[Any] | None = None) -> IndexState:
        """The size of the messages table's indexes, its rows (counted up to ``row_limit``), and
        the leftovers of failed rebuilds; on ``conn`` if given."""

        def operation(c: psycopg.Connection[Any]) -> IndexState:
            row = c.execute(self.sql.index_state, (row_limit,)).fetchone() or (0, 0, 0)
            return IndexState(int(row[0]), int(row[1]), int(row[2]))

        if conn is not None:
            return operation(conn)
        state: IndexState = self.db.run(operation, retry=False)
        return state

    # -- looking at queues ------------------------------------------------------------------------

    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue, of its delay queue, and its dead letters."""
        name = q_name(queue_name)

        def operation(c: psycopg.Connection[Any]) -> None:
            with c.transaction():
                c.execute(self.sql.flush, ([name, dq_name(name)],))
                c.execute(self.sql.flush_dead, (name,))

        self.db.run(operation)

    def has_messages(self, queue_name: str) -> bool:
        """Whether a queue or its delay queue holds a row: ready, delayed or in progress."""
        name = q_name(queue_name)
        row = self.db.run(lambda c: c.execute(self.sql.has_messages, ([name, dq_name(name)],)).fetchone())
        return bool(row and row[0])

    def counts(self, queue_name: str) -> QueueCounts:
        """How many messages of a queue are ready, delayed, in progress and dead."""
        name = q_name(queue_name)

        def operation(c: psycopg.Connection[Any]) -> QueueCounts:
            counts = {(True, False): 0, (False, False): 0, (True, True): 0, (False, True): 0}
            for is_canonical, leased, count in c.execute(self.sql.counts, (name, [name, dq_name(name)])):
                counts[(is_canonical, leased)] = count
            row = c.execute(self.sql.dead_count, (name,)).fetchone()
            in_progress = counts[(True, True)] + counts[(False, True)]
            return QueueCounts(counts[(True, False)], counts[(False, False)], in_progress, row[0] if row else 0)

        result: QueueCounts = self.db.run(operation)
        return result

    def dead_letters(self, queue_name: str, limit: int) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue."""
        params = (q_name(queue_name), limit)
        rows = self.db.run(lambda c: c.execute(self.sql.dead_letters, params).fetchall())
        return [DeadLetter(row[0], row[1], row[2], bytes(row[3]), row[4], row[5]) for row in rows]
