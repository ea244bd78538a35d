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
import socket
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from ..broker import MAX_PAYLOAD_BYTES, Broker, Consumer, MessageProxy, decode_message
from ..common import current_millis, dead_letter_reason, dq_name, q_name
from ..errors import DecodeError, QueueJoinTimeout, QueueNotFound
from ..message import Message
from ..middleware.middleware import Middleware
from ._sqlite_db import Database

__all__ = ["DeadLetter", "QueueCounts", "SQLiteBroker", "SQLiteSettings"]

#: An idle consumer checks ``PRAGMA data_version`` (a cheap read) at intervals growing to this (s).
_MAX_POLL_S = 0.05
_MIN_POLL_S = 0.002
#: Even with no commit anywhere, consumers look again this often (s): leases expire silently.
_RECHECK_S = 1.0
#: How often the lease keeper purges expired dead letters (ms).
_PURGE_INTERVAL_MS = 60_000
#: Ids bound per statement (SQLite's historic limit on variables is 999).
_CHUNK = 500
#: Rows leased per transaction at most, so that no write transaction holds the lock for long.
_MAX_LEASE_BATCH = 500
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
# Nack and requeue act only on rows the caller still holds: a lease that lapsed (a frozen process)
# may have passed to another consumer, which is running the message. An ack deletes regardless.
_UNLEASE = "UPDATE greenroom_messages SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ? AND id IN ({})"
_RENEW = "UPDATE greenroom_messages SET lease_until_ms = ? WHERE lease_owner IN ({})"
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
        self._db = Database(
            os.path.abspath(self.path),  # a later chdir() must not move the queues
            busy_timeout_ms=self.settings.busy_timeout_ms,
            lock_retry_ms=self.settings.lock_retry_ms,
            synchronous=self.settings.synchronous,
            logger=self.logger,
        )
        #: Guards _keeper; taken by consumer threads and by close().
        self._keeper_lock = threading.Lock()
        self._keeper_pid = os.getpid()
        self._keeper: _LeaseKeeper | None = None

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
        """Stop the lease keeper and close this process's connections; the broker may be used again."""
        if self._keeper is not None and self._keeper_pid == os.getpid():
            self._keeper.stop()
        self._db.close()

    def _lease_keeper(self) -> _LeaseKeeper:
        if os.getpid() != self._keeper_pid:
            # A forked child inherits the keeper but not its thread; it needs its own. The lock
            # is replaced too: a parent thread may have held it at fork time.
            self._keeper_lock = threading.Lock()
            self._keeper, self._keeper_pid = None, os.getpid()
        with self._keeper_lock:
            if self._keeper is None:
                self._keeper = _LeaseKeeper(self)
            return self._keeper

    # -- primitives used by the consumer and the lease keeper ---------------------------------

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


class _SQLiteMessageProxy(MessageProxy):
    """A consumed message and the row it was leased from."""

    def __init__(self, message: Message[Any], row_id: int, consumer: _SQLiteConsumer) -> None:
        super().__init__(message)
        self._row_id = row_id
        #: The consumer that leased the row: it is the one to tell when the row is released,
        #: whichever consumer the worker acks through.
        self._consumer = consumer
        self._released = False


class _SQLiteConsumer(Consumer):
    """Leases the rows of one queue, at most ``prefetch`` at a time."""

    def __init__(self, broker: SQLiteBroker, queue_name: str, prefetch: int, timeout_ms: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_s = timeout_ms / 1000
        #: Names this consumer's leases in the database; host and pid tell an operator who holds a row.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        #: Leased messages not handed out yet; only the consumer thread touches it.
        self._buffer: deque[_SQLiteMessageProxy] = deque()
        #: Rows leased and not yet acked, nacked or requeued (buffered ones included). The
        #: consumer thread adds, worker threads release: guarded by _lock.
        self._lock = threading.Lock()
        self._held = 0
        self._closed = False
        #: Set when a row is released, so a consumer waiting for a free slot fetches at once.
        self._wake = threading.Event()
        self._seen_version: int | None = None
        self._next_check_s = 0.0

    @property
    def held(self) -> int:
        """How many rows this consumer holds leased (prefetched, waiting or running)."""
        return self._held

    def __next__(self) -> MessageProxy | None:
        deadline_s = time.monotonic() + self.timeout_s
        poll_s = _MIN_POLL_S
        while True:
            if self._buffer:
                return self._buffer.popleft()
            now_s = time.monotonic()
            free = self.prefetch - self._held
            if free > 0 and self._should_fetch(now_s) and self._fetch(free):
                poll_s = _MIN_POLL_S
                continue
            if now_s >= deadline_s:
                return None
            wait_s = min(poll_s, deadline_s - now_s)
            if free > 0:
                wait_s = min(wait_s, max(0.0, self._next_check_s - now_s))
            self._wake.wait(wait_s)
            poll_s = min(poll_s * 2, _MAX_POLL_S)

    def _should_fetch(self, now_s: float) -> bool:
        woken = self._wake.is_set()
        self._wake.clear()
        version = self.broker._db.data_version()
        changed = version != self._seen_version
        self._seen_version = version
        return woken or changed or now_s >= self._next_check_s

    def _fetch(self, free: int) -> bool:
        """Lease up to ``free`` due rows; False when none is due (and when to look again is set)."""
        now_ms = current_millis()
        due_ms = self.broker._peek(self.queue_name, now_ms)  # a read: no write lock when there is nothing to do
        if due_ms is None or due_ms > now_ms:
            wait_s = _RECHECK_S if due_ms is None else min(_RECHECK_S, (due_ms - now_ms) / 1000)
            self._next_check_s = time.monotonic() + wait_s
            return False
        rows = self.broker._lease(self.queue_name, self.owner, min(free, _MAX_LEASE_BATCH))
        with self._lock:
            self._held += len(rows)
        self._next_check_s = 0.0  # more may be due: peek again on the next call
        for index, (row_id, _, payload) in enumerate(rows):
            try:
                self._admit(row_id, payload)
            except BaseException:
                self._give_back([row[0] for row in rows[index:]])
                raise
        return bool(rows)

    def _give_back(self, row_ids: list[int]) -> None:
        """Release rows leased but not admitted (an error in the middle of a batch)."""
        with self._lock:
            self._held -= len(row_ids)
        try:
            self.broker._in_chunks(_UNLEASE, row_ids, self.owner)
        except Exception:  # noqa: BLE001 - they are no longer renewed: their leases lapse instead
            self.broker.logger.warning("Could not release %d leased rows; their leases will lapse.", len(row_ids))

    def _admit(self, row_id: int, payload: bytes | None) -> None:
        try:
            message = decode_message(payload or b"", max_bytes=self.broker.settings.max_payload_bytes)
            if message.queue_name != self.queue_name:
                reason = f"message names queue {message.queue_name!r} but was on {self.queue_name!r}"
                raise DecodeError(reason, payload, None)
        except DecodeError as exc:
            self.broker.logger.error("Dead-lettering row %d of queue %r: %s", row_id, self.queue_name, exc)
            self.broker._bury(row_id, self.owner, self.queue_name, None, str(exc))
            with self._lock:
                self._held -= 1
            return
        self._buffer.append(_SQLiteMessageProxy(message, row_id, self))

    def _release(self, proxy: _SQLiteMessageProxy) -> None:
        with self._lock:
            if proxy._released:
                return
            proxy._released = True
            self._held -= 1
            forget = self._closed and self._held == 0
        self._wake.set()
        if forget:
            self.broker._forget(self)

    @staticmethod
    def _proxy(message: MessageProxy) -> _SQLiteMessageProxy:
        if not isinstance(message, _SQLiteMessageProxy):
            raise TypeError(f"{message!r} was not consumed from an SQLite broker")
        return message

    def ack(self, message: MessageProxy) -> None:
        proxy = self._proxy(message)
        self.broker._delete(proxy._row_id)
        proxy._consumer._release(proxy)

    def nack(self, message: MessageProxy) -> None:
        proxy = self._proxy(message)
        reason = dead_letter_reason(proxy._exception) if proxy._exception is not None else "the message failed"
        self.broker._bury(proxy._row_id, proxy._consumer.owner, proxy.queue_name, proxy.message_id, reason)
        proxy._consumer._release(proxy)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        proxies = [self._proxy(message) for message in messages]
        for owner in {proxy._consumer.owner for proxy in proxies}:
            rows = [proxy._row_id for proxy in proxies if proxy._consumer.owner == owner]
            self.broker._in_chunks(_UNLEASE, rows, owner)
        for proxy in proxies:
            proxy._consumer._release(proxy)

    def close(self) -> None:
        buffered = list(self._buffer)
        self._buffer.clear()
        try:
            if buffered:
                self.requeue(buffered)
        except Exception:  # noqa: BLE001 - not renewed any more, so their leases lapse and they come back
            self.broker.logger.warning("Could not hand back %d messages; their leases will lapse.", len(buffered))
            with self._lock:
                self._held -= len(buffered)
        with self._lock:
            self._closed = True
            forget = self._held == 0
        # Rows still held are being processed: their leases are renewed until they are acked.
        if forget:
            self.broker._forget(self)

    def __repr__(self) -> str:
        return f"<_SQLiteConsumer {self.queue_name!r} owner={self.owner!r} held={self._held}>"


class _LeaseKeeper:
    """Renews the leases of the rows this process holds, and purges expired dead letters.

    One per broker and process, its thread started by the first consumer and stopped by
    :meth:`SQLiteBroker.close` (the next consumer starts it again).
    """

    def __init__(self, broker: SQLiteBroker) -> None:
        self.broker = broker
        #: Consumers whose rows to renew: added by consumer threads, removed by whichever thread
        #: releases the last row of a closed consumer. Guarded by _lock, as is _thread.
        self._consumers: set[_SQLiteConsumer] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._last_purge_ms = 0

    def add(self, consumer: _SQLiteConsumer) -> None:
        with self._lock:
            self._consumers.add(consumer)
            if self._thread is None or not self._thread.is_alive():
                self._stop_event = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop_event,), name="greenroom-sqlite-leases", daemon=True
                )
                self._thread.start()

    def discard(self, consumer: _SQLiteConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop_event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.broker.settings.lock_retry_ms / 1000 + 5)

    def _run(self, stop_event: threading.Event) -> None:
        interval_s = self.broker.settings.renew_interval_ms / 1000
        while not stop_event.wait(interval_s):
            try:
                self.run_once()
            except Exception:  # thread top level: log, and keep renewing at the next interval
                self.broker.logger.exception("Could not renew leases; retrying in %.1f s.", interval_s)

    def run_once(self, now_ms: int | None = None) -> None:
        """Renew the leases of every row held in this process, and purge dead letters when due."""
        now_ms = current_millis() if now_ms is None else now_ms
        settings = self.broker.settings
        with self._lock:
            owners = [consumer.owner for consumer in self._consumers if consumer.held > 0]
        if owners:
            self.broker._in_chunks(_RENEW, owners, now_ms + settings.lease_ms)
        if now_ms - self._last_purge_ms >= min(_PURGE_INTERVAL_MS, settings.dead_message_ttl):
            self.broker._purge_dead_letters(now_ms - settings.dead_message_ttl)
            self._last_purge_ms = now_ms
