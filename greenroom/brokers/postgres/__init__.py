"""A broker on PostgreSQL: messages that exist if and only if the application's transaction commits.

Messages are rows of ``<schema>.messages`` (``greenroom`` by default), created with the schema on
first use (see :func:`migrate`). Producers insert; every insert notifies the channel
``greenroom:<schema>`` when it commits, and the listener of each worker process wakes the consumers
of that queue (LISTEN/NOTIFY), which also look every ``poll_interval_ms`` should a notification be
lost.

**Delivery by lease (at-least-once).** A consumer leases due rows with ``UPDATE … FROM (SELECT …
FOR NO KEY UPDATE SKIP LOCKED)``: concurrent consumers take different rows without waiting on one
another. Ack deletes the row (the table holds only the work in flight): the consumer's next lease
statement does, so one round trip both settles the messages processed meanwhile and fetches
their successors, and worker threads never wait for the server; nack moves it to
``<schema>.dead_letters`` with the reason, kept ``dead_message_ttl`` and then purged; requeue (a worker
stopping) makes the row visible again at once. A thread in each worker process renews the leases of
everything the process holds, so a long task is never handed to a second worker while it runs; the
messages of a killed worker come back once ``lease_ms`` has passed. Lease times are the server's.

**Delays live in the table**: a delayed message is a row of ``<queue>.DQ`` due at its ``eta``; the
delay queue's consumer leases only rows that are due, so workers hold none in memory.

**Transactional enqueue.** ``with broker.transaction(conn): actor.send(...)`` writes the messages
through the caller's psycopg connection, inside its transaction: after a commit they are there (and
workers are notified), after a rollback they never existed.

**Unique jobs.** ``send_with_options(unique_key=…)`` or the actor option ``unique_key`` (a string or a
function of the arguments): while a message holding the key is queued or delayed (and, with
``unique_until="finished"``, running), a send returns that message instead of adding one. A partial
unique index keeps it so (see :mod:`greenroom.brokers._unique`).

**Foreign producers**: ``INSERT INTO greenroom.messages (queue_name, payload) VALUES ('default',
'<JSON message>')`` from any language; the insert wakes the workers. Rows that are not valid
messages are dead-lettered with the reason logged; their neighbours are processed.

**Connection loss.** Producers and acknowledgements retry for ``retry_timeout_ms`` (5 s), then raise
:class:`~greenroom.errors.ConnectionClosed`; consumers fail fast and the worker reconnects them.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

import psycopg

from ..._postgres import DEFAULT_SCHEMA, Database, migrate
from ..._process_local import ProcessLocal
from ...broker import Consumer, DeadLetter, QueueCounts
from ...errors import QueueNotFound
from ...message import Message
from ...middleware.middleware import Middleware
from .._table_broker import TableBroker
from .._unique import UNIQUE_OPTIONS, unique_key_of, with_unique_key
from ._acks import AckBatcher
from ._consumer import PostgresConsumer
from ._dead_letters import DeadLetterTable
from ._leases import LeaseKeeper
from ._listen import Listener
from ._storage import NewRow, PostgresStorage, due_ms
from ._transaction import bound_connection, sending_through
from ._types import PostgresSettings

__all__ = ["DEFAULT_SCHEMA", "DeadLetter", "PostgresBroker", "PostgresSettings", "QueueCounts", "migrate"]


class _ProcessState(NamedTuple):
    """What one process of a broker has of its own (threads, locks): a forked child builds its own on first use."""

    keeper: LeaseKeeper
    listener: Listener
    acks: AckBatcher


class PostgresBroker(TableBroker):
    """A broker that keeps its queues in tables of a PostgreSQL database (see the module docstring).

    The constructor opens nothing: connections, and the schema's tables, are made on first use.

    Parameters:
      url: A ``postgresql://`` (or ``postgres://``) URL, or a libpq connection string.
      middleware: As for :class:`~greenroom.Broker`.
      schema: The schema of the tables; applications may keep several side by side.
      settings: Leases, retention, retries, pools; :class:`PostgresSettings` defaults if omitted.
    """

    _storage: PostgresStorage
    _dead_letters: DeadLetterTable

    def __init__(
        self,
        *,
        url: str = "postgresql://",
        middleware: list[Middleware] | None = None,
        schema: str = DEFAULT_SCHEMA,
        settings: PostgresSettings | None = None,
    ) -> None:
        super().__init__(middleware=middleware)
        self.url = url
        self.schema = schema
        self.settings = settings or PostgresSettings()
        self.queues: set[str] = set()
        self.actor_options |= UNIQUE_OPTIONS
        db = Database(
            url,
            schema=schema,
            retry_timeout_ms=self.settings.retry_timeout_ms,
            pool_max_size=self.settings.pool_max_size,
            connect_timeout_s=self.settings.connect_timeout_s,
            durable_enqueue=self.settings.durable_enqueue,
            logger=self.logger,
        )
        self._storage = PostgresStorage(db, self.settings)
        self._dead_letters = DeadLetterTable(db)
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(self._start_process)

    def _start_process(self) -> _ProcessState:
        listener = Listener(self._storage.db, self._storage.channel)
        return _ProcessState(LeaseKeeper(self._storage), listener, AckBatcher(self._storage))

    # -- sending ----------------------------------------------------------------------------------

    def transaction(self, connection: psycopg.Connection[Any]) -> AbstractContextManager[psycopg.Connection[Any]]:
        """Send this broker's messages through ``connection``, inside its current transaction, until the block ends.

        ``with broker.transaction(conn): actor.send(...)``: after ``conn`` commits, the messages are
        there and workers are woken; after a rollback they never existed. The block neither begins
        nor ends a transaction: that is the caller's (``with conn.transaction():``, Django's
        ``atomic``, an SQLAlchemy session). Other threads keep sending on the broker's connections.

        Raises:
          TypeError: When ``connection`` is not a psycopg 3 connection.
        """
        return sending_through(self, connection)

    def _address(self, message: Message[Any], delay: int | None) -> Message[Any]:
        """The base class's addressing, then the message's unique key resolved into its options."""
        return with_unique_key(super()._address(message, delay), self.actors)

    def _publish(self, message: Message[Any], payload: bytes) -> Message[Any] | None:
        """Insert the message's row (due at its eta on a delay queue); the message holding its unique key instead.

        Raises:
          ConnectionClosed: When the server stayed unreachable for ``retry_timeout_ms``.
          BrokerError: When the server refused the insert.
        """
        row = NewRow(message.queue_name, payload, due_ms(message.queue_name, message.options), message.message_id)
        conn = bound_connection(self)
        unique = unique_key_of(message.options)
        if unique is None:
            self._storage.insert(row, conn)
            return None
        holder = self._storage.insert_unique(row, unique, conn)
        return None if holder is None else Message.decode(holder)

    def enqueue_many(self, messages: Iterable[Message[Any]], *, delay: int | None = None) -> list[Message[Any]]:
        """Send many messages in one transaction, a thousand rows per statement; returns the copies sent.

        Messages with a unique key are sent one by one after the others (each may come back as the
        message already holding its key).
        """
        conn = bound_connection(self)
        sent: list[Message[Any]] = []
        rows: list[NewRow] = []
        unique: list[int] = []  # positions in sent of messages with a unique key, sent on their own
        for message in messages:
            message = self._address(message, delay)
            self.emit_before("enqueue", message, delay)
            if unique_key_of(message.options) is not None:
                unique.append(len(sent))
            else:
                due = due_ms(message.queue_name, message.options)
                rows.append(NewRow(message.queue_name, message.encode(), due, message.message_id))
            sent.append(message)
        self._storage.insert_many(rows, conn)
        return self._finish_batch(sent, unique, delay)

    # -- consuming --------------------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer leasing at most ``prefetch`` messages at a time; idle ticks every ``timeout`` ms."""
        if queue_name not in self.queues and queue_name not in self.delay_queues:
            raise QueueNotFound(queue_name)
        state = self._process.get()
        consumer = PostgresConsumer(
            self._storage, state.listener, state.acks, state.keeper, queue_name, prefetch, timeout
        )
        state.keeper.add(consumer)
        return consumer

    # -- operations (see greenroom._operations.QueueOperations) -------------------------------------
    # A queue is known when it is declared here or has rows in the schema: the check costs a query
    # only when an operation found nothing.

    def wait_until_listening(self, timeout_s: float = 10.0) -> bool:
        """Whether this process's listener is (or becomes, within ``timeout_s``) subscribed to notifications."""
        return self._process.get().listener.listening.wait(timeout_s)

    def close(self) -> None:
        """Stop the lease keeper and the listener, and close this process's idle connections.

        The broker may be used again: the next consumer starts them anew."""
        state = self._process.peek()
        if state is not None:
            state.keeper.stop()
            state.listener.stop()
        self._storage.db.close()
