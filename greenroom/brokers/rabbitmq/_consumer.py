"""The RabbitMQ consumer and its message proxy: one connection per consumed queue, driven by one thread."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal, Protocol

from ...broker import Consumer, MessageProxy, decode_message
from ...common import dead_letter_reason, q_name, xq_name
from ...errors import ConnectionClosed, DecodeError
from ...message import Message
from ._connections import Connections
from ._errors import _is_missing_queue, _translate_pika_errors

__all__ = ["MAX_PREFETCH", "_RabbitmqConsumer", "_RabbitmqMessageProxy"]

#: AMQP's prefetch count is a 16-bit field.
MAX_PREFETCH = 65535

_Action = Literal["ack", "nack", "requeue"]
_consumer_ids = itertools.count(1)


class _RabbitmqMessageProxy(MessageProxy):
    """A delivered message, with its AMQP delivery tag, redelivered flag and body."""

    def __init__(self, message: Message[Any], *, tag: int, redelivered: bool, consumer_id: int, body: bytes) -> None:
        super().__init__(message)
        self.redelivered = redelivered
        self.delivery_tag = tag
        #: Delivery tags are only meaningful on the channel that delivered the message.
        self.consumer_id = consumer_id
        #: The body as delivered: what a nack publishes on the dead-letter queue.
        self.body = body


class _ConsumerBroker(Protocol):
    """What a consumer uses of its :class:`~greenroom.brokers.rabbitmq.RabbitmqBroker`.

    The broker's package imports this module, so the consumer names its broker through this
    protocol rather than importing the package back.
    """

    @property
    def logger(self) -> logging.Logger: ...

    @property
    def queues_pending(self) -> set[str]:
        """Canonical names of the queues to declare (again) on the server."""
        ...

    def dead_letter(self, queue_name: str, body: bytes, reason: str) -> None:
        """Publish a body on ``<queue>.XQ`` with the reason (raises ``ConnectionClosed`` when it cannot)."""
        ...


class _RabbitmqConsumer(Consumer):
    """Consumes one queue on a connection of its own.

    The thread iterating the consumer drives the connection. ``ack``, ``nack`` and ``requeue`` may
    be called from any thread: they queue a request and wake that thread with pika's only
    thread-safe call, ``add_callback_threadsafe``; ``close`` executes what is still queued.
    """

    def __init__(
        self, broker: _ConsumerBroker, connections: Connections, queue_name: str, prefetch: int, timeout_ms: int
    ) -> None:
        self.broker = broker
        #: The broker's connections: this consumer's own is opened and closed through them.
        self.connections = connections
        self.logger = broker.logger
        self.queue_name = queue_name
        self.timeout_s = timeout_ms / 1000
        self.consumer_id = next(_consumer_ids)
        #: Deliveries received and not yet handed out. Connection thread only.
        self._deliveries: deque[tuple[int, bool, bytes]] = deque()
        #: Guards _unacked, _requests and _wake_scheduled (worker threads, join, connection thread).
        self._lock = threading.Lock()
        #: Delivery tags received and not yet settled.
        self._unacked: set[int] = set()
        self._requests: deque[tuple[_Action, int]] = deque()
        self._wake_scheduled = self._cancelled = self._closed = False
        self._owner = threading.get_ident()
        self.prefetch = min(max(prefetch, 1), MAX_PREFETCH)
        #: The prefetch count of the consumer; 0 until consuming starts, at the first __next__.
        self._qos = 0
        self._connection = connections.open()
        try:
            with _translate_pika_errors(f"consuming {queue_name!r}"):
                self._channel = self._connection.channel()
        except ConnectionClosed:
            connections.discard(self._connection)
            raise

    def _start(self) -> None:
        """Set the prefetch count and start consuming (RabbitMQ starts pushing at once)."""
        try:
            with _translate_pika_errors(f"consuming {self.queue_name!r}"):
                self._apply_prefetch()
                self._channel.add_on_cancel_callback(self._on_cancel)
                self._channel.basic_consume(self.queue_name, self._on_delivery)
        except ConnectionClosed as exc:
            if _is_missing_queue(exc):
                self.broker.queues_pending.add(q_name(self.queue_name))  # deleted since it was declared
            raise

    def _apply_prefetch(self) -> None:
        """Set the prefetch count of the consumer about to start.

        RabbitMQ fixes a consumer's prefetch count when it starts consuming (``basic.qos`` without
        ``global`` applies to consumers started after it), so it cannot follow :attr:`demand` as
        the fetching brokers do. Fairness between processes comes from RabbitMQ itself, which
        hands deliveries to the consumers of a queue in turn.
        """
        self._channel.basic_qos(prefetch_count=self.prefetch)
        self._qos = self.prefetch

    def _on_delivery(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        with self._lock:
            self._unacked.add(method.delivery_tag)
        self._deliveries.append((method.delivery_tag, bool(method.redelivered), body))

    def _on_cancel(self, _frame: Any) -> None:
        # RabbitMQ cancels consumers of a deleted queue: re-declare it when reconnecting.
        self._cancelled = True
        self.broker.queues_pending.add(q_name(self.queue_name))

    def unacked_count(self) -> int:
        """How many deliveries this consumer holds unsettled (any thread)."""
        with self._lock:
            return len(self._unacked)

    def __next__(self) -> MessageProxy | None:
        self._owner = threading.get_ident()
        if not self._qos:
            self._start()
        self._run_requests()
        if not self._deliveries:
            self._check_open()
            with _translate_pika_errors(f"consuming {self.queue_name!r}"):
                # Returns early when a delivery or a thread-safe callback (an ack) arrives.
                self._connection.process_data_events(time_limit=self.timeout_s)
        while self._deliveries:
            tag, redelivered, body = self._deliveries.popleft()
            try:
                message = decode_message(body, arrived_on=self.queue_name)
            except DecodeError as exc:
                self._reject_poison(tag, redelivered, body, exc)
                continue
            return _RabbitmqMessageProxy(
                message, tag=tag, redelivered=redelivered, consumer_id=self.consumer_id, body=body
            )
        self._check_open()
        return None

    def keep_alive(self, timeout_s: float) -> None:
        """Drive the connection for ``timeout_s`` seconds without handing out messages (worker paused).

        RabbitMQ closes a connection whose heartbeats go unanswered, and then delivers everything
        this consumer holds unacknowledged again, although the paused worker still holds those
        messages in memory: they would run twice. Servicing the connection answers heartbeats and
        sends the acknowledgements of the messages that finish meanwhile. Deliveries that arrive
        wait, unacknowledged, for the next ``__next__``.

        Raises:
          ConnectionClosed: When the connection or the channel is lost.
        """
        self._owner = threading.get_ident()
        deadline_s = time.monotonic() + timeout_s
        while True:
            self._run_requests()
            self._check_open()
            remaining_s = deadline_s - time.monotonic()
            if remaining_s <= 0:
                return
            with _translate_pika_errors(f"keeping the consumer of {self.queue_name!r} alive"):
                # Returns early for each delivery or acknowledgement request: loop until the deadline.
                self._connection.process_data_events(time_limit=remaining_s)

    def _check_open(self) -> None:
        if self._cancelled:
            raise ConnectionClosed(f"RabbitMQ cancelled the consumer of {self.queue_name!r} (was it deleted?)")
        if self._closed or not self._channel.is_open or not self._connection.is_open:
            raise ConnectionClosed(f"the connection consuming {self.queue_name!r} is closed")

    def _reject_poison(self, tag: int, redelivered: bool, body: bytes, error: DecodeError) -> None:
        self.logger.error(
            "Dead-lettering an invalid payload from %r to %r (delivery tag %d, redelivered=%s, %d bytes "
            "starting with %r): %s",
            *(self.queue_name, xq_name(self.queue_name), tag, redelivered, len(body), body[:200], error),
        )
        action: _Action = "ack" if self._publish_dead_letter(body, str(error)) else "nack"
        with self._lock:
            self._requests.append((action, tag))  # sent on this thread by the next _run_requests

    def _publish_dead_letter(self, body: bytes, reason: str) -> bool:
        """Publish a dead letter with its reason; whether it was (if not, the caller rejects the message,
        and RabbitMQ dead-letters it without the reason). See ``_dead_letters.py``."""
        try:
            self.broker.dead_letter(self.queue_name, body, reason)
        except ConnectionClosed as exc:
            self.logger.warning("Could not publish a dead letter of %r (%s); rejecting it.", self.queue_name, exc)
            return False
        return True

    # -- settling (any thread) ------------------------------------------------------------------

    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a processed message."""
        self._request("ack", message)

    def nack(self, message: MessageProxy) -> None:
        """Dead-letter a failed message: publish it on ``q.XQ`` with the ``repr`` of its exception as the
        reason, then acknowledge it; reject it (RabbitMQ then dead-letters it, reason-less) when the
        publish fails."""
        # Not once closed: the server delivers the message again, and a dead letter would double it.
        if isinstance(message, _RabbitmqMessageProxy) and message.consumer_id == self.consumer_id and not self._closed:
            exception = message.exception
            reason = "the message failed" if exception is None else dead_letter_reason(exception)
            if self._publish_dead_letter(message.body, reason):
                self._request("ack", message)
                return
        self._request("nack", message)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand prefetched, unprocessed messages back to the queue right away.

        They return to the head of the queue, flagged as redelivered (closing the consumer would
        return them too; doing it explicitly keeps them safe if the consumer stays open).
        """
        for message in messages:
            self._request("requeue", message)

    def _request(self, action: _Action, message: MessageProxy) -> None:
        if not isinstance(message, _RabbitmqMessageProxy) or message.consumer_id != self.consumer_id:
            msg = "Cannot %s message %r: it came on an earlier connection, so RabbitMQ delivers it again."
            self.logger.warning(msg, action, message.message_id)
            return
        tag = message.delivery_tag
        with self._lock:
            self._requests.append((action, tag))
            wake = not self._wake_scheduled and threading.get_ident() != self._owner
            self._wake_scheduled = self._wake_scheduled or wake
        if not wake:
            return  # the connection thread runs the queued requests on its next __next__ or close
        try:
            with _translate_pika_errors("scheduling an acknowledgement"):
                self._connection.add_callback_threadsafe(self._run_requests)
        except ConnectionClosed as exc:
            # The channel is gone, and with it the delivery: RabbitMQ delivers the message again.
            self.logger.warning("Could not %s message %r (%s).", action, message.message_id, exc)

    def _run_requests(self) -> None:
        """Execute queued acks, nacks and requeues. Connection thread only."""
        with self._lock:
            self._wake_scheduled = False
            if not self._requests:
                return
            requests = list(self._requests)
            self._requests.clear()
            known = [(action, tag) for action, tag in requests if tag in self._unacked]
            acked = {tag for action, tag in known if action == "ack"}
            # One multiple=True ack settles all outstanding tags <= upto in one frame: each is acked here.
            first_unsettled = min(self._unacked - acked, default=float("inf")) if len(acked) > 1 else 0
            upto = max((tag for tag in acked if tag < first_unsettled), default=0)
            self._unacked.difference_update(tag for _, tag in known)
        if len(known) < len(requests):
            # Settling a tag twice would make RabbitMQ close the channel.
            self.logger.warning("Ignoring %d acknowledgements of unknown delivery tags.", len(requests) - len(known))
        with _translate_pika_errors(f"acknowledging messages of {self.queue_name!r}"):
            if upto:
                self._channel.basic_ack(upto, multiple=True)
            for action, tag in known:
                if action != "ack":
                    self._channel.basic_nack(tag, requeue=action == "requeue")
                elif tag > upto:
                    self._channel.basic_ack(tag)

    def close(self) -> None:
        """Send the acknowledgements still queued, then close the channel and the connection.

        RabbitMQ returns every delivery that was not acknowledged to its queue.
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self._channel.is_open and self._connection.is_open:
                self._run_requests()
                with _translate_pika_errors(f"closing the consumer of {self.queue_name!r}"):
                    self._channel.close()
        except ConnectionClosed as exc:
            self.logger.debug("Error while closing the consumer of %r: %s", self.queue_name, exc)
        finally:
            self.connections.discard(self._connection)
            with self._lock:
                self._unacked.clear()

    def __repr__(self) -> str:
        return f"<_RabbitmqConsumer {self.queue_name!r} #{self.consumer_id}>"
