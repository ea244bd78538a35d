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

import os
from typing import Any, NamedTuple

from ..._operations import DeadLetter, QueueCounts
from ..._process_local import ProcessLocal
from ...broker import Consumer
from ...errors import QueueNotFound
from ...message import Message
from ...middleware.middleware import Middleware
from .._table_broker import TableBroker
from .._unique import UNIQUE_OPTIONS, unique_key_of, with_unique_key
from ._consumer import SQLiteConsumer
from ._dead_letters import DeadLetterTable
from ._leases import LeaseKeeper
from ._storage import SQLiteStorage, due_ms
from ._types import SQLiteSettings
from ._watch import ChangeWatcher

__all__ = ["DeadLetter", "QueueCounts", "SQLiteBroker", "SQLiteSettings"]


class _ProcessState(NamedTuple):
    """The threads one process of a broker runs: a forked child builds its own on first use."""

    keeper: LeaseKeeper
    watcher: ChangeWatcher


class SQLiteBroker(TableBroker):
    """A broker that keeps its queues in an SQLite database file (see the module docstring).

    The constructor opens nothing: the file, and its schema, are created on first use.

    Parameters:
      path: The database file, shared by every producer and worker process.
      middleware: As for :class:`~greenroom.Broker`.
      settings: Leases, retention, locking and durability; :class:`SQLiteSettings` defaults if omitted.
    """

    _storage: SQLiteStorage
    _dead_letters: DeadLetterTable

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
        self.actor_options |= UNIQUE_OPTIONS
        # Absolute: a later chdir() must not move the queues.
        self._storage = SQLiteStorage(os.path.abspath(self.path), self.settings, self.logger)
        self._dead_letters = DeadLetterTable(self._storage.db)
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(self._start_process)

    def _start_process(self) -> _ProcessState:
        return _ProcessState(LeaseKeeper(self._storage), ChangeWatcher(self._storage.db, self.logger))

    # -- the broker interface -----------------------------------------------------------------

    def _address(self, message: Message[Any], delay: int | None) -> Message[Any]:
        """The base class's addressing, then the message's unique key resolved into its options."""
        return with_unique_key(super()._address(message, delay), self.actors)

    def _publish(self, message: Message[Any], payload: bytes) -> Message[Any] | None:
        """Write the message's row (due at its eta on a delay queue); returns once it is durable.

        Returns the message already there instead when it holds the message's unique key.

        Raises:
          BrokerConnectionError: When the database cannot be written.
        """
        due_at_ms = due_ms(message.queue_name, message.options)
        unique = unique_key_of(message.options)
        if unique is None:
            self._storage.insert(message.queue_name, payload, due_at_ms)
            return None
        holder = self._storage.insert_unique(message.queue_name, payload, due_at_ms, message.message_id, unique)
        return None if holder is None else Message.decode(holder)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer leasing at most ``prefetch`` messages at a time; idle ticks every ``timeout`` ms."""
        if queue_name not in self.queues and queue_name not in self.delay_queues:
            raise QueueNotFound(queue_name)
        state = self._process.get()
        consumer = SQLiteConsumer(self._storage, state.watcher, state.keeper, queue_name, prefetch, timeout)
        state.keeper.add(consumer)
        return consumer

    # -- operations (see greenroom._operations.QueueOperations) -------------------------------------
    # A queue is known when it is declared here or has rows in the file: the check costs a query
    # only when an operation found nothing.

    def close(self) -> None:
        """Stop the lease keeper and the change watcher, and close this process's connections.

        The broker may be used again: the next consumer starts them anew."""
        state = self._process.peek()
        if state is not None:
            state.keeper.stop()
            state.watcher.stop()
        self._storage.db.close()
