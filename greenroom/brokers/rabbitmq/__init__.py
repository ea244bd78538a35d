"""The RabbitMQ broker, wire-compatible with Dramatiq's (same queues, same arguments, same envelope).

Every queue ``q`` is three durable AMQP queues: ``q`` itself, ``q.DQ`` for delayed messages and
``q.XQ`` for dead letters. ``q`` and ``q.DQ`` dead-letter to ``q.XQ`` through the default exchange,
and ``q.XQ`` drops its messages after seven days. Dramatiq declares the same queues with the same
arguments, so greenroom and Dramatiq workers and producers can share them in both directions.

Enqueueing from any language
----------------------------
Once a greenroom (or Dramatiq) worker or producer has declared the queue, any AMQP 0-9-1 client
can enqueue a message. For the queue ``default``:

* publish on the **default exchange** (``""``) with **routing key** ``default`` (the queue name);
* set the property ``delivery_mode = 2`` (persistent), so the message survives a broker restart;
* the body is the UTF-8 JSON envelope, e.g.
  ``{"queue_name": "default", "actor_name": "add", "args": [1, 2], "kwargs": {}, "options": {},
  "message_id": "<a fresh uuid4>", "message_timestamp": <now in ms>}``;
* no headers and no content type are needed; with ``max_priority`` set, the optional ``priority``
  property (0..max_priority, higher first) is honoured.

Publishing to a queue that does not exist yet silently drops the message (that is how the default
exchange works): start a worker first, or declare the queue with exactly the arguments listed on
:class:`RabbitmqBroker`. Bodies that are not a valid envelope are moved to ``default.XQ``, with the
reason in a header (see ``_dead_letters.py``), and logged at ERROR level.

Publisher confirms (``confirm_delivery``)
-----------------------------------------
Without confirms (the default, as in Dramatiq), ``send()`` returns as soon as the message is
written to the socket. A message can then be lost without any error when the connection breaks at
that moment (broker restart, network cut, a proxy closing an idle connection), when the broker
refuses it (e.g. larger than its ``max_message_size``) or when the queue was deleted in the
meantime (the default exchange drops unroutable messages). With ``confirm_delivery=True`` each
``send()`` waits until RabbitMQ has taken responsibility for the message (for persistent messages
on durable queues: written it to disk), re-declares a deleted queue, retries on connection errors
and raises :class:`~greenroom.errors.ConnectionClosed` when it finally fails. The price is a round
trip per message: on a small machine about 1,400 instead of 13,000 sends per second per thread.

pika connections are not thread-safe: each producing thread gets its own connection and channel
(:attr:`RabbitmqBroker.connection` and :attr:`RabbitmqBroker.channel`, as in Dramatiq); each
consumer owns one, driven by its consumer thread, which also sends the worker threads' acks.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pika
import pika.exceptions

from ... import _settings
from ..._operations import DeadLetter, QueueCounts, check_age, check_limit, wanted_ids
from ...broker import Broker, Consumer
from ...common import dq_name, q_name, xq_name
from ...errors import ConnectionClosed
from ...message import Message
from ...middleware.middleware import Middleware
from ...threading import interrupts_deferred
from ._connections import Connections

# The broker was one module before it became this package: the names that module defined stay
# importable from here (hence the redundant aliases).
from ._consumer import MAX_PREFETCH as MAX_PREFETCH
from ._consumer import _RabbitmqConsumer
from ._consumer import _RabbitmqMessageProxy as _RabbitmqMessageProxy
from ._dead_letters import DeadLetterQueue, dead_letter_properties
from ._errors import _is_missing_queue, _translate_pika_errors

__all__ = ["RabbitmqBroker"]

#: How long dead letters are kept in ``<q>.XQ`` unless ``greenroom_dead_message_ttl`` says otherwise (7 days).
DEFAULT_DEAD_MESSAGE_TTL_MS = 7 * 24 * 3600 * 1000
#: Attempts to publish one message before giving up with ConnectionClosed.
MAX_ENQUEUE_ATTEMPTS = 6
#: Attempts to declare a queue on the server (the connection is reset between them).
MAX_DECLARE_ATTEMPTS = 2
#: AMQP queue names and message priorities are one-byte-length strings and one-byte integers.
MAX_QUEUE_NAME_BYTES = 255
MAX_MESSAGE_PRIORITY = 255
#: Properties of a message without ``broker_priority`` (pika only reads them: one instance serves all).
_PERSISTENT = pika.BasicProperties(delivery_mode=2)


def _check_queue_name_length(queue_name: str) -> None:
    """Refuse a canonical queue name whose ``.DQ`` and ``.XQ`` queues AMQP could not name.

    Raises:
      ValueError: When ``q.DQ`` (as long as ``q.XQ``) has more than 255 bytes in UTF-8.
    """
    size = len(dq_name(queue_name).encode("utf-8"))
    if size > MAX_QUEUE_NAME_BYTES:
        shown = repr(queue_name) if len(queue_name) <= 40 else repr(queue_name[:40]) + "..."
        limit = MAX_QUEUE_NAME_BYTES - len(".DQ")
        raise ValueError(
            f"Queue name {shown} is too long for RabbitMQ: its delay and dead-letter queues (<name>.DQ, "
            f"<name>.XQ) would have {size} bytes, and AMQP queue names have at most {MAX_QUEUE_NAME_BYTES} bytes; "
            f"use a name of at most {limit} bytes."
        )


def _properties(message: Message[Any]) -> Any:
    """The AMQP properties to publish a message with: persistent, and its ``broker_priority`` if set.

    Raises:
      ValueError: When ``broker_priority`` is not an integer from 0 to 255 (pika would fail to
        encode it, in the middle of whatever was publishing the message).
    """
    priority = message.options.get("broker_priority")
    if priority is None:
        return _PERSISTENT
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_MESSAGE_PRIORITY:
        raise ValueError(
            f"Cannot send message {message.message_id!r}: its option broker_priority must be an integer "
            f"from 0 to {MAX_MESSAGE_PRIORITY}, not {priority!r}."
        )
    return pika.BasicProperties(delivery_mode=2, priority=priority)


def _consume_with(broker: Broker, queue_name: str, prefetch: int, timeout: int) -> Consumer:
    """What ``consumer_class`` returns: Dramatiq's ``(broker, queue_name, prefetch, timeout)`` consumer factory."""
    return broker.consume(queue_name, prefetch, timeout)


def _build_parameters(
    url: str | Sequence[str] | None, parameters: Sequence[Mapping[str, Any]] | None, conn_kwargs: dict[str, Any]
) -> list[Any]:
    if url is not None:
        if parameters is not None or conn_kwargs:
            raise RuntimeError("pass either url, parameters or connection keyword arguments, not several of them")
        urls = url.split(";") if isinstance(url, str) else list(url)
        built = [pika.URLParameters(u.strip()) for u in urls if u.strip()]
        if not built:
            raise ValueError("url names no RabbitMQ server")
        return built
    if parameters is not None:
        if conn_kwargs:
            raise RuntimeError("pass either parameters or connection keyword arguments, not both")
        return [pika.ConnectionParameters(**p) for p in parameters]
    return [pika.ConnectionParameters(**conn_kwargs)]


class RabbitmqBroker(Broker):
    """A broker backed by RabbitMQ (needs the ``rabbitmq`` extra: pika).

    Queues are declared on the server lazily, on the first enqueue or consume, all durable:

    ============ ===================================================================================
    queue        arguments
    ============ ===================================================================================
    ``q``        ``x-dead-letter-exchange: ""``, ``x-dead-letter-routing-key: "q.XQ"``,
                 and ``x-max-priority: max_priority`` when set
    ``q.DQ``     the same as ``q``
    ``q.XQ``     ``x-message-ttl: dead_message_ttl``
    ============ ===================================================================================

    Every client declaring these queues must use exactly the same arguments (RabbitMQ refuses a
    mismatching redeclaration): give greenroom and Dramatiq the same ``max_priority``.

    AMQP limits what can be sent: a queue name has at most 252 bytes (``q.DQ`` and ``q.XQ`` have
    three more, and AMQP names have at most 255), and a message's ``broker_priority`` is an integer
    from 0 to 255 (RabbitMQ treats one above ``max_priority`` as ``max_priority``). Anything else is
    refused with :class:`ValueError` when the queue is declared or the message sent.

    Parameters:
      confirm_delivery: Wait for a publisher confirm on every enqueue (see the module documentation).
      url: An ``amqp://`` or ``amqps://`` URL; several URLs (a list, or one string separated by ``;``)
        are tried in order when connecting.
      middleware: As for :class:`~greenroom.Broker`.
      max_priority: Enables the ``broker_priority`` message option (``1..255``; higher runs first).
      parameters: A list of dicts of pika ``ConnectionParameters`` arguments, tried in order.
      dead_message_ttl: Milliseconds dead letters are kept (default: ``greenroom_dead_message_ttl``,
        else 7 days).
      conn_kwargs: pika ``ConnectionParameters`` arguments (``host``, ``port``, ``credentials``...).

    Raises:
      ValueError: When ``max_priority`` is out of range.
      RuntimeError: When ``url`` is combined with other connection settings, or ``parameters``
        with keyword arguments.
    """

    def __init__(
        self,
        *,
        confirm_delivery: bool = False,
        url: str | Sequence[str] | None = None,
        middleware: list[Middleware] | None = None,
        max_priority: int | None = None,
        parameters: Sequence[Mapping[str, Any]] | None = None,
        dead_message_ttl: int | None = None,
        **conn_kwargs: Any,
    ) -> None:
        if max_priority is not None and not 0 < max_priority <= 255:
            raise ValueError("max_priority must be a value between 1 and 255")
        #: The pika connection parameters, tried in order when connecting (as in Dramatiq).
        self.parameters = _build_parameters(url, parameters, conn_kwargs)
        super().__init__(middleware=middleware)
        self.confirm_delivery = confirm_delivery
        self.max_priority = max_priority
        ttl = dead_message_ttl or _settings.dead_message_ttl_ms()
        self.dead_message_ttl = ttl or DEFAULT_DEAD_MESSAGE_TTL_MS
        #: Canonical names of the declared queues.
        self.queues: set[str] = set()
        #: Declared queues not yet (or no longer) known to exist on the server. Any thread adds and
        #: discards names; single set operations are atomic, and a stale answer only costs a redeclare.
        self.queues_pending: set[str] = set()
        #: Every connection of this broker, and each thread's producer connection and channel.
        self._connections = Connections(self.parameters)
        #: Guards _consumers, touched by every consuming thread and by join.
        self._lock = threading.Lock()
        self._consumers: weakref.WeakSet[_RabbitmqConsumer] = weakref.WeakSet()
        #: The operations API on q, q.DQ and q.XQ.
        self._dead_letters = DeadLetterQueue(self._connections, self._declare_on_server, self.queues)

    # -- connections ----------------------------------------------------------------------------

    @property
    def connection(self) -> Any:
        """The calling thread's ``pika.BlockingConnection``, opened on first use.

        Reading it is a cheap way to check that RabbitMQ is reachable. ``del broker.connection``
        closes and forgets the calling thread's connection and channel (other threads keep theirs);
        it does nothing when none is open. Which connection object is returned may change whenever
        the broker reconnects.

        Raises:
          ConnectionClosed: When no server could be reached.
        """
        return self._connections.thread_connection()

    @connection.deleter
    def connection(self) -> None:
        self._connections.drop_thread_connection()

    @property
    def channel(self) -> Any:
        """The calling thread's ``pika`` channel on :attr:`connection`, opened on first use.

        With ``confirm_delivery`` the channel is in publisher-confirm mode. ``del broker.channel``
        closes and forgets the calling thread's channel but keeps its connection; it does nothing
        when none is open.

        Raises:
          ConnectionClosed: When no server could be reached or the channel could not be opened.
        """
        return self._connections.thread_channel(confirm_delivery=self.confirm_delivery)

    @channel.deleter
    def channel(self) -> None:
        self._connections.drop_thread_channel()

    @property
    def consumer_class(self) -> Callable[[Any, str, int, int], Consumer]:
        """Builds a consumer: ``consumer_class(broker, queue_name, prefetch, timeout)`` is ``broker.consume``."""
        return _consume_with

    def close(self) -> None:
        """Close every connection this broker opened, in any thread (errors are ignored).

        Call it once producing and consuming threads are done with the broker: pika connections
        are not thread-safe. The broker reconnects if it is used again.
        """
        self._connections.close_all()

    # -- queues ---------------------------------------------------------------------------------

    def _declare_on_server(self, queue_name: str) -> tuple[int, int, int]:
        """Declare ``q``, ``q.DQ`` and ``q.XQ`` and return their ready message counts."""
        _check_queue_name_length(queue_name)  # before ``q`` exists, so that a refusal leaves nothing behind
        # Exactly Dramatiq's arguments: RabbitMQ refuses a redeclaration with different ones.
        arguments: dict[str, Any] = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": xq_name(queue_name)}
        if self.max_priority:
            arguments["x-max-priority"] = self.max_priority
        xq_arguments = {"x-message-ttl": self.dead_message_ttl}
        for attempt in range(1, MAX_DECLARE_ATTEMPTS + 1):
            try:
                channel = self.channel
                with _translate_pika_errors(f"declaring queue {queue_name!r}"):
                    counts = (
                        channel.queue_declare(queue_name, durable=True, arguments=arguments),
                        channel.queue_declare(dq_name(queue_name), durable=True, arguments=arguments),
                        channel.queue_declare(xq_name(queue_name), durable=True, arguments=xq_arguments),
                    )
                self.queues_pending.discard(queue_name)
                return counts[0].method.message_count, counts[1].method.message_count, counts[2].method.message_count
            except ConnectionClosed:
                self._connections.drop_thread_connection()
                if attempt == MAX_DECLARE_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def declare_queue(self, queue_name: str, *, ensure: bool = False) -> None:
        """Declare a queue and its delay queue (idempotent).

        Parameters:
          queue_name: The queue; a ``.DQ``/``.XQ`` suffix is ignored.
          ensure: Also make sure the queues exist on the server.

        Raises:
          ValueError: When the name of ``q.DQ`` or ``q.XQ`` would exceed AMQP's 255 bytes; the
            queue is then neither declared here nor on the server.
          ConnectionClosed: With ``ensure``, when the server could not be reached.
        """
        queue_name = q_name(queue_name)
        _check_queue_name_length(queue_name)
        super().declare_queue(queue_name)
        if ensure and queue_name in self.queues_pending:
            self._declare_on_server(queue_name)

    def _register_queue(self, queue_name: str, is_delay_queue: bool) -> None:
        if not is_delay_queue:
            # Pending before it shows in self.queues: it is created on the server on first use.
            self.queues_pending.add(queue_name)
        super()._register_queue(queue_name, is_delay_queue)

    # -- producing ------------------------------------------------------------------------------

    def _require_queue(self, queue_name: str) -> None:
        """Declare a queue nobody declared yet (RabbitMQ routes only to queues that exist)."""
        if queue_name not in self.queues:
            self.declare_queue(queue_name)

    def _publish(self, message: Message[Any], payload: bytes) -> None:
        """Publish a persistent message with the default exchange, retrying a lost connection a few times.

        Raises:
          ValueError: When the ``broker_priority`` option is not an integer from 0 to 255, or the
            queue name is too long for RabbitMQ; nothing is published then.
          ConnectionClosed: When the message could not be published after several attempts.
        """
        self._send(message.queue_name, payload, _properties(message))

    def dead_letter(self, queue_name: str, body: bytes, reason: str) -> None:
        """Publish a failed message's body on ``<queue>.XQ``, with the reason and the time in its headers.

        Consumers call this before they acknowledge the message (see ``_dead_letters.py``), from the
        thread that settles it, on that thread's producer connection.

        Raises:
          ConnectionClosed: When it could not be published after several attempts.
        """
        self._send(xq_name(queue_name), body, dead_letter_properties(queue_name, reason))

    def _send(self, queue_name: str, payload: bytes, properties: Any) -> None:
        """Publish on the default exchange, declaring the queue first if it is pending, retrying a few times."""
        canonical_name = q_name(queue_name)
        for attempt in range(1, MAX_ENQUEUE_ATTEMPTS + 1):
            try:
                # Inside an actor, an interrupt waits until the publish is done: pika's frames for
                # one message must not be cut in the middle on a connection the thread reuses.
                with interrupts_deferred():
                    if canonical_name in self.queues_pending:
                        self._declare_on_server(canonical_name)
                    channel = self.channel
                    with _translate_pika_errors(f"publishing to {queue_name!r}"):
                        # The default exchange routes by queue name; mandatory makes unroutable visible.
                        channel.basic_publish("", queue_name, payload, properties, mandatory=self.confirm_delivery)
                break
            except ConnectionClosed as exc:
                if isinstance(exc.__cause__, pika.exceptions.UnroutableError):
                    # Returned as unroutable: the queue was deleted under us, declare it again.
                    self.queues_pending.add(canonical_name)
                else:
                    self._connections.drop_thread_connection()
                if attempt == MAX_ENQUEUE_ATTEMPTS:
                    raise
                self.logger.debug("Publishing to %r failed (%s); retrying.", queue_name, exc)
                # A short, growing pause rides out a broker restart or a failover to another node.
                time.sleep(0.05 * 2**attempt)

    # -- consuming ------------------------------------------------------------------------------

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer with its own connection, holding at most ``prefetch`` unacknowledged messages.

        ``__next__`` returns ``None`` after ``timeout`` ms without a message.

        Raises:
          ConnectionClosed: When the server could not be reached.
        """
        self.declare_queue(queue_name, ensure=True)
        consumer = _RabbitmqConsumer(self, self._connections, queue_name, prefetch, timeout)
        with self._lock:
            self._consumers.add(consumer)
        return consumer

    # -- inspection (tests and tools) -----------------------------------------------------------

    def get_queue_message_counts(self, queue_name: str) -> tuple[int, int, int]:
        """The ready (not unacknowledged) message counts of ``q``, ``q.DQ`` and ``q.XQ``, declaring them."""
        return self._declare_on_server(q_name(queue_name))

    def _unacked_count(self, queue_name: str) -> int:
        """Messages of ``q`` and ``q.DQ`` delivered to this process's consumers and not yet settled."""
        names = {queue_name, dq_name(queue_name)}
        with self._lock:
            consumers = list(self._consumers)
        return sum(c.unacked_count() for c in consumers if c.queue_name in names)

    def flush(self, queue_name: str) -> None:
        """Drop the ready messages of ``q``, ``q.DQ`` and ``q.XQ`` (unacknowledged ones stay)."""
        queue_name = q_name(queue_name)
        for name in (queue_name, dq_name(queue_name), xq_name(queue_name)):
            try:
                channel = self.channel
                with _translate_pika_errors(f"purging {name!r}"):
                    channel.queue_purge(name)
            except ConnectionClosed as exc:
                if not _is_missing_queue(exc):
                    raise  # a missing queue has nothing to purge; reading self.channel next reopens it

    def join(
        self, queue_name: str, min_successes: int = 10, idle_time: int = 100, *, timeout: int | None = None
    ) -> None:
        """Wait until ``q`` and ``q.DQ`` look empty on ``min_successes`` checks in a row (a test helper).

        A check counts the ready messages on the server plus the messages this process's consumers
        hold unacknowledged (running, waiting in the worker, or delayed in memory). Messages held by
        other processes' consumers are not seen, and a message on the wire between the server and a
        consumer is briefly invisible: the repeated checks, ``idle_time`` ms apart, cover that.

        Raises:
          QueueJoinTimeout: When ``timeout`` ms pass first.
        """
        self._join(q_name(queue_name), timeout_ms=timeout, interval_s=idle_time / 1000, checks=min_successes)

    def queue_is_empty(self, queue_name: str) -> bool:
        """Whether ``q`` and ``q.DQ`` hold no ready message and this process's consumers none unacknowledged."""
        ready, delayed, _ = self.get_queue_message_counts(q_name(queue_name))
        return ready + delayed + self._unacked_count(q_name(queue_name)) == 0

    # -- operations (see greenroom._operations.QueueOperations and _dead_letters.py) ----------------
    # A queue is known when declared here (then created on the server if missing) or when q, q.DQ
    # and q.XQ exist on the server; QueueNotFound otherwise.

    def get_queue_counts(self, queue_name: str) -> QueueCounts:
        """The ready messages of ``q`` (ready), ``q.DQ`` (delayed) and ``q.XQ`` (dead), as the server counts them.

        ``in_progress`` is ``None``: AMQP tells nobody how many messages other connections hold
        unacknowledged, and counting this process's alone would mislead. For the same reason,
        ``delayed`` leaves out the delayed messages a worker already holds until their eta (workers
        take them from ``q.DQ`` as soon as they can), and ``ready`` the messages workers prefetched.
        Without publisher confirms a message sent a moment ago may not be counted yet.
        """
        return self._dead_letters.counts(queue_name)

    def get_dead_letters(self, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The first ``limit`` dead letters of ``q.XQ``, taken with ``basic_get`` and given back in place.

        ``id`` is a position from the head of ``q.XQ`` (RabbitMQ has no ids). The reason is read
        from the headers greenroom's consumers write; dead letters that RabbitMQ routed itself (from
        Dramatiq workers, say) only say ``rejected``, from their ``x-death`` header.
        """
        return self._dead_letters.peek(queue_name, check_limit(limit))

    def requeue_dead_letters(self, queue_name: str, message_ids: Iterable[str] | None = None) -> int:
        """Publish dead letters back on ``q``, each confirmed before its dead letter is acknowledged
        (``None``: all of them); returns how many."""
        return self._dead_letters.requeue(queue_name, wanted_ids(message_ids))

    def purge_dead_letters(self, queue_name: str, *, older_than_ms: int | None = None) -> int:
        """Delete the dead letters of ``q.XQ`` (``queue.purge``), or only those dead ``older_than_ms`` ago."""
        return self._dead_letters.purge(queue_name, check_age(older_than_ms))
