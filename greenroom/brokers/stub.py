"""An in-memory broker for tests, consumed by the real Worker."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable
from queue import Empty, Queue
from typing import Any

from ..broker import Broker, Consumer, MessageProxy, decode_message
from ..common import Deadline, dq_name, iter_queue, join_queue, q_name
from ..errors import DecodeError, QueueJoinTimeout, QueueNotFound
from ..message import Message
from ..middleware.middleware import Middleware
from ..threading import interrupts_deferred

__all__ = ["StubBroker"]


class StubBroker(Broker):
    """A broker that keeps its queues in memory, in one process.

    ``queues`` maps each queue *and* delay queue name to a ``queue.Queue`` of encoded payloads.
    Dead-lettered messages are kept in ``dead_letters_by_queue``.

    Parameters:
      middleware: As for :class:`~greenroom.Broker`.
      fail_fast_default: Whether :meth:`join` re-raises the exception of a dead-lettered message.
    """

    def __init__(self, middleware: list[Middleware] | None = None, *, fail_fast_default: bool = True) -> None:
        super().__init__(middleware=middleware)
        self.queues: dict[str, Queue[bytes]] = {}
        self.dead_letters_by_queue: defaultdict[str, list[MessageProxy]] = defaultdict(list)
        self.fail_fast_default = fail_fast_default

    @property
    def dead_letters(self) -> list[MessageProxy]:
        """Every dead-lettered message."""
        return [message for messages in self.dead_letters_by_queue.values() for message in messages]

    def _register_queue(self, queue_name: str, is_delay_queue: bool) -> None:
        self.queues[queue_name] = Queue()
        if is_delay_queue:
            self.delay_queues.add(queue_name)

    def _publish(self, message: Message[Any], payload: bytes) -> None:
        """Put the payload on its queue's in-memory ``Queue``."""
        with interrupts_deferred():  # a Queue torn by an interrupt would never join again
            self.queues[message.queue_name].put(payload)

    def put_raw(self, queue_name: str, payload: bytes) -> None:
        """Put a raw payload on a queue, as a producer in another language would (a test helper)."""
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        self.queues[queue_name].put(payload)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 100) -> Consumer:
        try:
            queue = self.queues[queue_name]
        except KeyError:
            raise QueueNotFound(queue_name) from None
        return _StubConsumer(self, queue_name, queue, prefetch, timeout)

    def flush(self, queue_name: str) -> None:
        for _ in iter_queue(self.queues[queue_name]):
            self.queues[queue_name].task_done()

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)
        for dead_letters in self.dead_letters_by_queue.values():
            dead_letters.clear()

    def queue_is_empty(self, queue_name: str) -> bool:
        """Whether every message put on the queue and its delay queue was acknowledged or dead-lettered."""
        return not any(self.queues[name].unfinished_tasks for name in (queue_name, dq_name(queue_name)))

    def join(self, queue_name: str, *, timeout: int | None = None, fail_fast: bool | None = None) -> None:
        """Wait until every message of a queue and its delay queue was acknowledged or dead-lettered.

        Raises:
          QueueNotFound: When the queue was never declared.
          QueueJoinTimeout: When ``timeout`` ms pass first.
          Exception: With ``fail_fast``, the exception of the first dead-lettered message of the queue.
        """
        if queue_name not in self.queues:
            raise QueueNotFound(queue_name)
        # Until both are done at once: a message moved between them must not slip through.
        self._join(queue_name, timeout_ms=timeout, wait=lambda wait_s: self._wait_for_acks(queue_name, wait_s))

        if fail_fast if fail_fast is not None else self.fail_fast_default:
            for message in self.dead_letters_by_queue[queue_name]:
                raise (message.exception or Exception("Message failed with unknown error")) from None

    def _wait_for_acks(self, queue_name: str, wait_s: float) -> None:
        """Wait up to ``wait_s`` for the queue, then its delay queue, to have every message settled."""
        deadline = Deadline.after_s(wait_s)
        for name in (queue_name, dq_name(queue_name)):
            try:
                join_queue(self.queues[name], deadline.remaining_s())
            except QueueJoinTimeout:
                return


class _StubMessageProxy(MessageProxy):
    def clear_exception(self) -> None:
        """Keep the exception, so ``join(fail_fast=True)`` can raise it."""


class _StubConsumer(Consumer):
    def __init__(
        self, broker: StubBroker, queue_name: str, queue: Queue[bytes], prefetch: int, timeout_ms: int
    ) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.queue = queue
        #: Bounds the messages handed out and not yet acknowledged.
        self.prefetch = threading.BoundedSemaphore(prefetch)
        self.timeout_s = timeout_ms / 1000
        self.dead_letters = broker.dead_letters_by_queue[queue_name]

    def __next__(self) -> MessageProxy | None:
        if not self.prefetch.acquire(timeout=self.timeout_s):
            return None
        try:
            payload = self.queue.get(timeout=self.timeout_s)
        except Empty:
            self.prefetch.release()
            return None
        try:
            message = decode_message(payload, arrived_on=self.queue_name)
            return _StubMessageProxy(message)
        except DecodeError as exc:
            self._dead_letter_payload(payload, exc)
            self.prefetch.release()
            return None

    def _dead_letter_payload(self, payload: bytes, error: DecodeError) -> None:
        self.broker.logger.error("Dead-lettering an invalid payload on %r: %s", self.queue_name, error)
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else repr(payload)
        poison = _StubMessageProxy(
            Message(
                queue_name=self.queue_name,
                actor_name="",
                args=(),
                kwargs={},
                options={"dead_letter_reason": str(error), "payload": text[:1000]},
            )
        )
        poison.fail()
        poison.stuff_exception(error)
        self.dead_letters.append(poison)
        self.queue.task_done()

    def ack(self, message: MessageProxy) -> None:
        self.queue.task_done()
        self.prefetch.release()

    def nack(self, message: MessageProxy) -> None:
        self.dead_letters.append(message)
        self.queue.task_done()
        self.prefetch.release()

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        for message in messages:
            self.queue.put(message.message.encode())
            self.queue.task_done()
            self.prefetch.release()

    def __repr__(self) -> str:
        return f"<_StubConsumer {q_name(self.queue_name)!r}>"
