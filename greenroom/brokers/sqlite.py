"""The embedded SQLite broker: greenroom's default broker, durable and shared by many processes.

Every producer and worker process on one machine opens the same database file (by default
``greenroom.db`` in the working directory); nothing has to be installed or started. The file must
be on a local disk: SQLite's WAL mode does not work over network file systems.

**Delivery by lease (at-least-once).** A consumer fetches messages by *leasing* their rows in one
short ``BEGIN IMMEDIATE`` transaction (``UPDATE … SET lease_owner, lease_until_ms … RETURNING``); a
leased row is invisible to other consumers. Ack deletes the row; nack moves it to the dead letters
with the reason (the exception's ``repr``, or why the payload is invalid), kept ``dead_message_ttl``
(7 days) and then purged; requeue (a worker stopping) makes the row visible again at once. A thread
in each worker process renews, every ``renew_interval_ms`` (10 s), the leases of all the messages
the process holds — prefetched, waiting or running — so a long task is never handed to a second
worker while it runs. When a worker process dies, even by SIGKILL, its leases are no longer renewed
and its messages are delivered again once ``lease_ms`` (30 s) has passed. See :class:`SQLiteSettings`.

**Delays live in the database.** ``enqueue(delay=…)`` writes the message, with ``options.eta`` as on
every broker, to ``<queue>.DQ``, and the row's ``due_ms`` column holds the eta. The consumer of a
delay queue leases only rows that are due, so a worker keeps none of the pending delayed messages
(retries included) in memory, and a due message is moved to its queue within milliseconds of its eta.

**Durability.** The database runs in WAL mode. An enqueue commits with ``PRAGMA synchronous=FULL``
(``SQLiteSettings.synchronous``): when ``send()`` returns, the write-ahead log holding the message
has been fsync'ed, so the message survives a crash of any process (SIGKILL, OOM killer) *and* an
operating-system crash or power loss, provided the disk honours fsync. Every other write (lease,
renewal, ack, nack, requeue, purge) commits with ``synchronous=NORMAL``: it survives a process
crash, but a power loss may undo the last of them. The database stays consistent either way, and
undoing such a write only means that a message acked or dead-lettered just before the power cut is
delivered again: at-least-once delivery holds and no message is lost. With ``synchronous="NORMAL"``
enqueues are several times faster, but the last messages sent before a power loss (never before a
mere process crash) may be lost.

**Concurrency.** Each thread has its own connection (rebuilt in a forked child). A busy database is
waited for (``busy_timeout``) and retried with bounded backoff, so "database is locked" reaches the
caller only if the database stays locked for ``lock_retry_ms`` (60 s), as
:class:`~greenroom.errors.ConnectionClosed`, like every other SQLite error.

**Foreign producers** may insert rows: ``INSERT INTO greenroom_messages (queue_name, payload) VALUES
('default', '<JSON message>')`` (due at once; for a delayed message also set ``due_ms`` to its eta).
Rows that are not valid messages are dead-lettered with the reason logged; their neighbours are processed.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._process_local import ProcessLocal
from .._sqlite import Database
from ..broker import MAX_PAYLOAD_BYTES, Broker, Consumer
from ..common import current_millis, dq_name, q_name
from ..errors import QueueJoinTimeout, QueueNotFound
from ..message import Message
from ..middleware.middleware import Middleware
from ._sqlite_consumer import _LeaseKeeper, _SQLiteConsumer
from ._sqlite_tables import broker_schema
from ._sqlite_watch import ChangeWatcher

__all__ = ["DeadLetter", "QueueCounts", "SQLiteBroker", "SQLiteSettings"]

#: Ids bound per statement (SQLite's historic limit on variables is 999).
_CHUNK = 500
_SYNC_LEVELS = ("OFF", "NORMAL", "FULL", "EXTRA")
_INT64_MAX = 2**63 - 1

_INSERT = "INSERT INTO greenroom_messages (queue_name, payload, due_ms) VALUES (?, ?, ?)"
_PEEK = "SELECT due_ms FROM greenroom_messages WHERE queue_name = ? AND lease_until_ms <= ? ORDER BY due_ms, id LIMIT 1"
_LEASE = """
UPDATE greenroom_messages SET lease_owner = ?, lease_until_ms = ?
WHERE id IN (
    SELECT id FROM greenroom_messages
    WHERE queue_name = ? AND due_ms <= ? AND lease_until_ms <= ?
    ORDER BY due_ms, id LIMIT ?
)
RETURNING id, due_ms, CAST(payload AS BLOB)
"""
_DELETE = "DELETE FROM greenroom_messages WHERE id = ?"
_BURY = """
INSERT INTO greenroom_dead_letters (queue_name, message_id, payload, reason, dead_at_ms)
SELECT ?, ?, payload, ?, ? FROM greenroom_messages WHERE id = ? AND lease_owner = ?
"""
_COUNTS = """
SELECT queue_name = ?, lease_until_ms > ?, COUNT(*) FROM greenroom_messages
WHERE queue_name IN (?, ?) GROUP BY 1, 2
"""


@dataclasses.dataclass(frozen=True)
class SQLiteSettings:
    """Tuning of :class:`SQLiteBroker`; the defaults suit most applications.

    Parameters:
      lease_ms: How long a fetched message stays invisible to other consumers unless its lease is
        renewed: the longest a message of a killed worker waits before it is delivered again.
      renew_interval_ms: How often a process renews the leases of the messages it holds; at most
        half of ``lease_ms``, so that one late renewal loses nothing. 0 means a third of ``lease_ms``.
      dead_message_ttl: How long dead letters are kept before they are purged (ms).
      busy_timeout_ms: How long one SQLite statement waits for a lock another connection holds.
      lock_retry_ms: How long an operation keeps retrying, with backoff, while the database stays
        busy, before :class:`~greenroom.errors.ConnectionClosed` reaches the caller.
      synchronous: The ``PRAGMA synchronous`` level enqueues commit with; other writes use NORMAL.
      max_payload_bytes: Larger payloads are dead-lettered instead of decoded.
    """

    lease_ms: int = 30_000
    renew_interval_ms: int = 0
    dead_message_ttl: int = 7 * 24 * 3600 * 1000
    busy_timeout_ms: int = 5_000
    lock_retry_ms: int = 60_000
    synchronous: str = "FULL"
    max_payload_bytes: int = MAX_PAYLOAD_BYTES

    def __post_init__(self) -> None:
        if self.renew_interval_ms == 0:
            object.__setattr__(self, "renew_interval_ms", self.lease_ms // 3)
        if not 0 < self.renew_interval_ms <= self.lease_ms // 2:
            raise ValueError("renew_interval_ms must be positive and at most half of lease_ms")
        if self.synchronous.upper() not in _SYNC_LEVELS:
            raise ValueError(f"synchronous must be one of {', '.join(_SYNC_LEVELS)}, not {self.synchronous!r}")
        if min(self.dead_message_ttl, self.busy_timeout_ms, self.lock_retry_ms, self.max_payload_bytes) < 0:
            raise ValueError("durations and sizes must not be negative")


class QueueCounts(NamedTuple):
    """How many messages of a queue are in each state.

    ``ready``: waiting on the queue; ``delayed``: waiting on its delay queue (due or not);
    ``in_progress``: leased by a worker (prefetched or running); ``dead``: dead letters.
    """

    ready: int
    delayed: int
    in_progress: int
    dead: int


class DeadLetter(NamedTuple):
    """A dead-lettered message: ``payload`` holds the bytes as they were consumed."""

    id: int
    queue_name: str
    message_id: str | None
    payload: bytes
    reason: str
    dead_at_ms: int


def _execute(query: str, params: Sequence[Any]) -> Callable[[sqlite3.Connection], object]:
    """An operation for :meth:`Database.write` running one statement."""
    return lambda conn: conn.execute(query, params)


def _due_ms(queue_name: str, options: dict[str, Any]) -> int:
    """The row's due time: the eta of a delayed message, now for any other."""
    eta = options.get("eta")
    if (
        isinstance(eta, (int, float))
        and not isinstance(eta, bool)
        and math.isfinite(eta)
        and queue_name.endswith(".DQ")
    ):
        return max(0, min(int(eta), _INT64_MAX))
    return current_millis()


class SQLiteBroker(Broker):
    """A broker that keeps its queues in an SQLite database file (see the module docstring).

    The constructor opens nothing: the file, and its schema, are created on first use.

    Parameters:
      path: The database file, shared by every producer and worker process.
      middleware: As for :class:`~greenroom.Broker`.
      settings: Leases, retention, locking and durability; :class:`SQLiteSettings` defaults if omitted.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = "greenroom.db",
        *,
        middleware: list[Middleware] | None = None,
        settings: SQLiteSettings | None = None,
    ) -> None:
        super().__init__(middleware=middleware)
        self.path = os.fspath(path)
        if self.path in ("", ":memory:") or self.path.startswith("file:"):
            raise ValueError("SQLiteBroker needs the path of a database file that every process can open")
        self.settings = settings or SQLiteSettings()
        self.queues: set[str] = set()
        path = os.path.abspath(self.path)  # a later chdir() must not move the queues
        self._db = Database(
            path,
            busy_timeout_ms=self.settings.busy_timeout_ms,
            lock_retry_ms=self.settings.lock_retry_ms,
            synchronous=self.settings.synchronous,
            logger=self.logger,
            schema=broker_schema(path),
        )
        # The lease keeper and the change watcher run threads of this process: a forked child
        # builds its own on first use and leaves the parent's alone.
        self._keeper: ProcessLocal[_LeaseKeeper] = ProcessLocal(lambda: _LeaseKeeper(self))
        self._watcher: ProcessLocal[ChangeWatcher] = ProcessLocal(lambda: ChangeWatcher(self._db, self.logger))

    # -- the broker interface -----------------------------------------------------------------

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Write a message to its queue (or, with ``delay`` ms, to its delay queue); returns once it is durable.

        Raises:
          QueueNotFound: When the message's queue was never declared.
          BrokerConnectionError: When the database cannot be written.
        """
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
        if q_name(queue_name) not in self.queues:
            raise QueueNotFound(queue_name)
        self.emit_before("enqueue", message, delay)
        payload = message.encode()
        row = (queue_name, payload, _due_ms(queue_name, message.options))
        self._db.write(_execute(_INSERT, row), durable=True)
        self.emit_after("enqueue", message, delay)
        return message

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer leasing at most ``prefetch`` messages at a time; idle ticks every ``timeout`` ms."""
        if queue_name not in self.queues and queue_name not in self.delay_queues:
            raise QueueNotFound(queue_name)
        consumer = _SQLiteConsumer(self, queue_name, prefetch, timeout)
        self._lease_keeper().add(consumer)
        return consumer

    def flush(self, queue_name: str) -> None:
        """Drop every message of a queue, of its delay queue, and its dead letters."""
        name = q_name(queue_name)

        def operation(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM greenroom_messages WHERE queue_name IN (?, ?)", (name, dq_name(name)))
            conn.execute("DELETE FROM greenroom_dead_letters WHERE queue_name = ?", (name,))

        self._db.write(operation)

    def flush_all(self) -> None:
        """Drop every message and dead letter of every declared queue."""
        for queue_name in self.get_declared_queues():
            self.flush(queue_name)

    def join(self, queue_name: str, *, timeout: int | None = None) -> None:
        """Wait until a queue and its delay queue hold no message: none ready, delayed or in progress.

        Raises:
          QueueNotFound: When the queue was never declared.
          QueueJoinTimeout: When ``timeout`` ms pass first.
        """
        name = q_name(queue_name)
        if name not in self.queues:
            raise QueueNotFound(queue_name)
        deadline_s = None if timeout is None else time.monotonic() + timeout / 1000
        query = "SELECT EXISTS (SELECT 1 FROM greenroom_messages WHERE queue_name IN (?, ?))"
        seen_version: int | None = None
        while True:
            # Rows only disappear through commits, so the table is read again only after one.
            version = self._db.data_version()
            if version != seen_version:
                seen_version = version
                if not self._db.read(lambda conn: conn.execute(query, (name, dq_name(name))).fetchone()[0]):
                    return
            if deadline_s is not None and time.monotonic() >= deadline_s:
                raise QueueJoinTimeout(queue_name)
            time.sleep(0.01)

    def get_queue_counts(self, queue_name: str) -> QueueCounts:
        """How many messages of a queue are ready, delayed, in progress and dead (see :class:`QueueCounts`)."""
        name = q_name(queue_name)
        now_ms = current_millis()

        def operation(conn: sqlite3.Connection) -> QueueCounts:
            counts = {(1, 0): 0, (0, 0): 0, (1, 1): 0, (0, 1): 0}
            for is_canonical, leased, count in conn.execute(_COUNTS, (name, now_ms, name, dq_name(name))):
                counts[(is_canonical, leased)] = count
            dead = conn.execute("SELECT COUNT(*) FROM greenroom_dead_letters WHERE queue_name = ?", (name,))
            in_progress = counts[(1, 1)] + counts[(0, 1)]
            return QueueCounts(counts[(1, 0)], counts[(0, 0)], in_progress, dead.fetchone()[0])

        return self._db.read(operation)

    def get_dead_letters(self, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue, with the reason each was dead-lettered."""
        query = (
            "SELECT id, queue_name, message_id, CAST(payload AS BLOB), reason, dead_at_ms"
            " FROM greenroom_dead_letters WHERE queue_name = ? ORDER BY id LIMIT ?"
        )
        rows = self._db.read(lambda conn: conn.execute(query, (q_name(queue_name), limit)).fetchall())
        return [DeadLetter(*row) for row in rows]

    def close(self) -> None:
        """Stop the lease keeper and the change watcher, and close this process's connections.

        The broker may be used again: the next consumer starts them anew."""
        keeper = self._keeper.peek()
        if keeper is not None:
            keeper.stop()
        watcher = self._watcher.peek()
        if watcher is not None:
            watcher.stop()
        self._db.close()

    def _lease_keeper(self) -> _LeaseKeeper:
        """This process's lease keeper."""
        return self._keeper.get()

    # -- primitives used by the consumer and the lease keeper ---------------------------------

    def _change_watcher(self) -> ChangeWatcher:
        """This process's change watcher: it nudges idle consumers when their queue may have new work."""
        return self._watcher.get()

    def _peek(self, queue_name: str, now_ms: int) -> int | None:
        """The due time of the first row nobody holds, or None."""
        row = self._db.read(lambda conn: conn.execute(_PEEK, (queue_name, now_ms)).fetchone())
        return None if row is None else int(row[0])

    def _lease(self, queue_name: str, owner: str, limit: int) -> list[tuple[int, int, bytes]]:
        def operation(conn: sqlite3.Connection) -> list[tuple[int, int, bytes]]:
            # The time is read once the write lock is held: waiting for it must not shorten the lease.
            now_ms = current_millis()
            params = (owner, now_ms + self.settings.lease_ms, queue_name, now_ms, now_ms, limit)
            return conn.execute(_LEASE, params).fetchall()

        rows: list[tuple[int, int, bytes]] = self._db.write(operation)
        rows.sort(key=lambda row: (row[1], row[0]))  # RETURNING promises no order
        return rows

    def _delete(self, row_id: int) -> None:
        self._db.write(_execute(_DELETE, (row_id,)))

    def _bury(self, row_id: int, owner: str, queue_name: str, message_id: str | None, reason: str) -> None:
        """Move a row the caller holds to the dead letters."""
        params = (q_name(queue_name), message_id, reason, current_millis(), row_id, owner)

        def operation(conn: sqlite3.Connection) -> bool:
            if conn.execute(_BURY, params).rowcount:
                conn.execute(_DELETE, (row_id,))
                return True
            return False

        if not self._db.write(operation):
            self.logger.warning("Row %d was no longer leased by this worker; it was not dead-lettered here.", row_id)

    def _in_chunks(self, template: str, values: list[Any], *leading: Any) -> None:
        """Run ``template`` (``{}`` stands for the ``IN`` list) for each chunk of ``values``."""
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            self._db.write(_execute(template.format(", ".join("?" * len(chunk))), (*leading, *chunk)))

    def _purge_dead_letters(self, older_than_ms: int) -> None:
        self._db.write(_execute("DELETE FROM greenroom_dead_letters WHERE dead_at_ms < ?", (older_than_ms,)))

    def _forget(self, consumer: _SQLiteConsumer) -> None:
        self._lease_keeper().discard(consumer)
