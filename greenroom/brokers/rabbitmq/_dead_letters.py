"""The dead letters of ``<q>.XQ`` on RabbitMQ: how greenroom writes them, and the operations API on them.

**Why dead letters are published.** Rejecting a message (``basic_nack`` without requeue) makes
RabbitMQ move it to ``q.XQ`` through the queue's dead-letter exchange, but nothing can ride along:
its ``x-death`` header says ``rejected``, never why. So a greenroom consumer publishes the failed
body to ``q.XQ`` itself, with the reason and the time in headers (:func:`dead_letter_properties`),
and then acknowledges the message, as the retries middleware publishes a retry before it
acknowledges. Publishing first means that a failure in between leaves a duplicate dead letter (or
the message runs again), never a lost message. When the publish fails the consumer rejects the
message as before; dead letters of Dramatiq workers arrive that way too, and :func:`read_letter`
falls back to their ``x-death`` header.

**Reading without losing.** AMQP has no way to look at a queue without taking messages, so the
operations take the dead letters from the head of ``q.XQ`` with ``basic_get`` on a channel of their
own and give back the ones they keep with ``basic_nack(requeue=True)``; a classic queue puts a
message given back where it was, so the order stays. Nothing is lost if the process dies meanwhile:
the server gives back whatever a closed channel held. Nobody consumes ``q.XQ`` (neither greenroom
nor Dramatiq workers), but two operations at the same time do not see the messages the other holds.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Set
from contextlib import contextmanager
from typing import Any

import pika

from ..._operations import DeadLetter, QueueCounts, message_id_of, read_payload, requeue_payload
from ...common import current_millis, dq_name, q_name, xq_name
from ...errors import ConnectionClosed, QueueNotFound
from ._connections import Connections, _close_quietly
from ._errors import _is_missing_queue, _translate_pika_errors

__all__ = ["DEAD_AT_HEADER", "REASON_HEADER", "DeadLetterQueue", "dead_letter_properties", "read_letter"]

#: Header of a dead letter greenroom published: why the message died.
REASON_HEADER = "greenroom-reason"
#: Header of a dead letter greenroom published: when it died, in epoch milliseconds.
DEAD_AT_HEADER = "greenroom-dead-at-ms"
#: Header of a dead letter greenroom published: the queue it was consumed from (``q`` or ``q.DQ``).
QUEUE_HEADER = "greenroom-queue"
#: Messages a purge looks at beyond the count of ``q.XQ`` at its start: the server may count a
#: message a moment late. The bound keeps the loop finite while messages keep dying.
_LATE = 100


def dead_letter_properties(queue_name: str, reason: str) -> Any:
    """The properties of a dead letter published on ``<queue>.XQ``: persistent, reason and time in headers."""
    headers = {REASON_HEADER: reason, DEAD_AT_HEADER: current_millis(), QUEUE_HEADER: queue_name}
    return pika.BasicProperties(delivery_mode=2, headers=headers)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _epoch_ms(value: object) -> int:
    """An AMQP timestamp (pika decodes it as an aware datetime; seconds elsewhere) in ms; 0 if absent."""
    if isinstance(value, datetime.datetime):
        when = value if value.tzinfo is not None else value.replace(tzinfo=datetime.timezone.utc)
        return int(when.timestamp() * 1000)
    if isinstance(value, int) and not isinstance(value, bool):
        return value * 1000
    return 0


def _reason_and_time(properties: Any) -> tuple[str, int]:
    """Why and when (epoch ms) a dead letter died, from greenroom's headers or RabbitMQ's ``x-death``."""
    headers = properties.headers or {}
    reason, dead_at_ms = headers.get(REASON_HEADER), headers.get(DEAD_AT_HEADER)
    if reason is not None and isinstance(dead_at_ms, int):
        return _text(reason), dead_at_ms
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        latest = deaths[0]  # RabbitMQ puts the latest death first
        cause, origin = _text(latest.get("reason", "?")), _text(latest.get("queue", "?"))
        return f"{cause} on {origin!r}, dead-lettered by RabbitMQ (no reason recorded)", _epoch_ms(latest.get("time"))
    return "", _epoch_ms(properties.timestamp)


def read_letter(position: int, queue_name: str, properties: Any, body: bytes) -> DeadLetter:
    """The dead letter at ``position`` (from the head of ``<queue>.XQ``), as the operations API shows it."""
    reason, dead_at_ms = _reason_and_time(properties)
    return DeadLetter(position, queue_name, message_id_of(body), body, reason, dead_at_ms)


def _requeue_properties(payload: bytes) -> Any:
    """Persistent, with the message's ``broker_priority`` when it has a valid one."""
    message = read_payload(payload)
    priority = None if message is None else message.options.get("broker_priority")
    if isinstance(priority, int) and not isinstance(priority, bool) and 0 <= priority <= 255:
        return pika.BasicProperties(delivery_mode=2, priority=priority)
    return pika.BasicProperties(delivery_mode=2)


class DeadLetterQueue:
    """The operations API on ``q``, ``q.DQ`` and ``q.XQ`` (see the module docstring).

    Each operation runs on a channel of its own, on the calling thread's connection.

    Parameters:
      connections: The broker's connections.
      declare: Declares a canonical queue's three queues on the server; their ready counts.
      declared: The canonical names of the queues declared in this process (created on the server
        if missing); any other queue must exist on the server, or ``QueueNotFound`` is raised.
    """

    def __init__(
        self, connections: Connections, declare: Callable[[str], tuple[int, int, int]], declared: Set[str]
    ) -> None:
        self.connections = connections
        self.declare = declare
        self.declared = declared

    @contextmanager
    def _channel(self, doing: str, *, confirm: bool = False) -> Iterator[Any]:
        """A channel for one operation; closing it gives back whatever it still holds."""
        connection = self.connections.thread_connection()
        with _translate_pika_errors(doing):
            channel = connection.channel()
            if confirm:
                channel.confirm_delivery()
        try:
            with _translate_pika_errors(doing):
                yield channel
        finally:
            _close_quietly(channel)

    def counts(self, queue_name: str) -> QueueCounts:
        """The ready messages of ``q``, ``q.DQ`` and ``q.XQ``; in progress is unknown (``None``).

        Raises:
          QueueNotFound: When the queue is not declared here and one of the three is missing on the server.
        """
        name = q_name(queue_name)
        if name in self.declared:
            ready, delayed, dead = self.declare(name)
            return QueueCounts(ready, delayed, None, dead)
        try:
            with self._channel(f"looking at queue {name!r}") as channel:
                ready, delayed, dead = (
                    channel.queue_declare(queue, passive=True).method.message_count
                    for queue in (name, dq_name(name), xq_name(name))
                )
        except ConnectionClosed as exc:
            if _is_missing_queue(exc):
                raise QueueNotFound(queue_name) from exc
            raise
        return QueueCounts(ready, delayed, None, dead)

    def peek(self, queue_name: str, limit: int) -> list[DeadLetter]:
        """The first ``limit`` dead letters of ``q.XQ``, taken and given back in their places."""
        name = q_name(queue_name)
        self.counts(name)  # QueueNotFound for an unknown queue; creates a declared one's queues
        letters: list[DeadLetter] = []
        with self._channel(f"reading the dead letters of {name!r}") as channel:
            for position in range(limit):
                method, properties, body = channel.basic_get(xq_name(name), auto_ack=False)
                if method is None:
                    break
                letters.append(read_letter(position, name, properties, body))
            if letters:
                channel.basic_nack(0, multiple=True, requeue=True)
        return letters

    def requeue(self, queue_name: str, message_ids: frozenset[str] | None) -> int:
        """Publish dead letters on ``q`` (confirmed) and only then acknowledge them; gives back the others.

        Goes through as many dead letters as ``q.XQ`` counts when the call starts, from its head: a
        dead letter the server had not counted yet is left for the next call.
        """
        name = q_name(queue_name)
        total = self.counts(name).dead
        moved = kept = 0
        with self._channel(f"requeueing the dead letters of {name!r}", confirm=True) as channel:
            # No more than the count: a requeued message that dies again at once comes back at the tail.
            for _ in range(total):
                method, _properties, body = channel.basic_get(xq_name(name), auto_ack=False)
                if method is None:
                    break
                if message_ids is not None and message_id_of(body) not in message_ids:
                    kept += 1
                    continue
                payload = requeue_payload(body, name)
                # Confirmed and routable, or this raises and the channel's close gives the dead letter back.
                channel.basic_publish("", name, payload, _requeue_properties(payload), mandatory=True)
                channel.basic_ack(method.delivery_tag)
                moved += 1
            if kept:
                channel.basic_nack(0, multiple=True, requeue=True)
        return moved

    def purge(self, queue_name: str, older_than_ms: int) -> int:
        """Delete the dead letters that died ``older_than_ms`` or more ago (0: all of them, at once).

        A dead letter whose time is unknown (no greenroom header, no ``x-death``) counts as old.
        """
        name = q_name(queue_name)
        total = self.counts(name).dead
        if not older_than_ms:
            with self._channel(f"purging the dead letters of {name!r}") as channel:
                return int(channel.queue_purge(xq_name(name)).method.message_count)
        dead_by_ms = current_millis() - older_than_ms
        deleted = kept = 0
        with self._channel(f"purging the dead letters of {name!r}") as channel:
            for _ in range(total + _LATE):
                method, properties, _body = channel.basic_get(xq_name(name), auto_ack=False)
                if method is None:
                    break
                if _reason_and_time(properties)[1] <= dead_by_ms:
                    channel.basic_ack(method.delivery_tag)
                    deleted += 1
                else:
                    kept += 1
            if kept:
                channel.basic_nack(0, multiple=True, requeue=True)
        return deleted
