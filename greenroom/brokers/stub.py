"""An in-memory broker for tests, consumed by the real Worker."""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import defaultdict
from collections.abc import Iterable
from queue import Empty, Queue
from typing import Any

from .._operations import DeadLetter, QueueCounts, check_age, check_limit, message_id_of, requeue_payload, wanted_ids
from ..broker import Broker, Consumer, MessageProxy, decode_message
from ..common import Deadline, current_millis, dead_letter_reason, dq_name, iter_queue, join_queue, q_name
from ..errors import DecodeError, QueueJoinTimeout, QueueNotFound
from ..message import Message
from ..middleware.middleware import Middleware
from ..threading import interrupts_deferred
from ._memory_unique import MemoryUniqueKeys
from ._unique import UNIQUE_OPTIONS, with_unique_key

__all__ = ["StubBroker"]


class StubBroker(Broker):
    """A broker that keeps its queues in memory, in one process.

    ``queues`` maps each queue *and* delay queue name to a ``queue.Queue`` of encoded payloads.
    Dead-lettered messages are kept in ``dead_letters_by_queue`` (by the queue they died on, a
    delay queue included), through :attr:`graveyard`, which numbers and dates them for the
    operations API.

    Unique jobs (the ``unique_key`` option) behave as on the other brokers that keep them (see
    ``greenroom/brokers/_unique.py``), so that actors using them can be tested here.

    Parameters:
      middleware: As for :class:`~greenroom.Broker`.
      fail_fast_default: Whether :meth:`join` re-raises the exception of a dead-lettered message.
    """

    def __init__(self, middleware: list[Middleware] | None = None, *, fail_fast_default: bool = True) -> None:
        super().__init__(middleware=middleware)
        self.queues: dict[str, Queue[bytes]] = {}
        self.dead_letters_by_queue: defaultdict[str, list[MessageProxy]] = defaultdict(list)
        self.graveyard = _Graveyard(self.dead_letters_by_queue)
        self.fail_fast_default = fail_fast_default
        self.actor_options |= UNIQUE_OPTIONS
        self.unique_keys = MemoryUniqueKeys()

    @property
    def dead_letters(self) -> list[MessageProxy]:
        """Every dead-lettered message."""
        return [message for messages in self.dead_letters_by_queue.values() for message in messages]

    def _register_queue(self, queue_name: str, is_delay_queue: bool) -> None:
        self.queues[queue_name] = Queue()
        if is_delay_queue:
            self.delay_queues.add(queue_name)

    def _address(self, message: Message[Any], delay: int | None) -> Message[Any]:
        """The base class's addressing, then the message's unique key resolved into its options."""
        return with_unique_key(super()._address(message, delay), self.actors)

    def _publish(self, message: Message[Any], payload: bytes) -> Message[Any] | None:
        """Put the payload on its queue's in-memory ``Queue``, unless another message holds its unique key."""
        queue = self.queues[message.queue_name]
        with interrupts_deferred():  # a Queue torn by an interrupt would never join again
            return self.unique_keys.store(message, payload, lambda: queue.put(payload))

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
        for payload in iter_queue(self.queues[queue_name]):
            self.queues[queue_name].task_done()
            with contextlib.suppress(DecodeError):  # a raw payload of a test holds no key
                self.unique_keys.settled(Message.decode(payload), payload, on_canonical_queue=False)

    def flush_all(self) -> None:
        for queue_name in self.queues:
            self.flush(queue_name)
        self.unique_keys.clear()
        with self.graveyard.lock:
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

    # -- operations (see greenroom._operations.QueueOperations) -------------------------------------

    def get_queue_counts(self, queue_name: str) -> QueueCounts:
        """How many messages of a queue are ready, delayed, in progress and dead.

        Delayed: on the delay queue or held by a worker until their eta; in progress: taken from
        the queue and neither acknowledged nor dead-lettered yet. Raises ``QueueNotFound`` for a
        queue never declared.
        """
        name = self._known(queue_name)
        queue, delayed = self.queues[name], self.queues[dq_name(name)]
        ready = queue.qsize()
        in_progress = max(0, queue.unfinished_tasks - ready)
        return QueueCounts(ready, delayed.unfinished_tasks, in_progress, self.graveyard.count(name))

    def get_dead_letters(self, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue (its delay queue's included), oldest first."""
        return self.graveyard.listing(self._known(queue_name), check_limit(limit))

    def requeue_dead_letters(self, queue_name: str, message_ids: Iterable[str] | None = None) -> int:
        """Put dead letters back on their queue (all of them for ``None``); returns how many."""
        name = self._known(queue_name)
        return self.graveyard.requeue(name, wanted_ids(message_ids), self.queues[name])

    def purge_dead_letters(self, queue_name: str, *, older_than_ms: int | None = None) -> int:
        """Forget the dead letters of a queue (those dead at least ``older_than_ms`` ms if given); how many."""
        name = self._known(queue_name)
        return self.graveyard.purge(name, current_millis() - check_age(older_than_ms))

    def _known(self, queue_name: str) -> str:
        """The canonical name of a declared queue.

        Raises:
          QueueNotFound: When it was never declared.
        """
        name = q_name(queue_name)
        if name not in self.queues:
            raise QueueNotFound(queue_name)
        return name

    def _wait_for_acks(self, queue_name: str, wait_s: float) -> None:
        """Wait up to ``wait_s`` for the queue, then its delay queue, to have every message settled."""
        deadline = Deadline.after_s(wait_s)
        for name in (queue_name, dq_name(queue_name)):
            try:
                join_queue(self.queues[name], deadline.remaining_s())
            except QueueJoinTimeout:
                return


class _StubMessageProxy(MessageProxy):
    """A delivered message, with the payload it was read from and, once dead, its number and time."""

    def __init__(self, message: Message[Any], payload: bytes) -> None:
        super().__init__(message)
        self.payload = payload
        #: (number, epoch ms) given by the graveyard when the message is dead-lettered.
        self.grave: tuple[int, int] | None = None

    def clear_exception(self) -> None:
        """Keep the exception, so ``join(fail_fast=True)`` can raise it."""


def _dead_letter(queue_name: str, proxy: MessageProxy) -> DeadLetter:
    """What the operations API shows of a dead-lettered proxy of ``queue_name`` or its delay queue."""
    if isinstance(proxy, _StubMessageProxy) and proxy.grave is not None:
        number, dead_at_ms = proxy.grave
        payload = proxy.payload
    else:  # a proxy the stub consumer did not make (nacked by hand): no number, no time
        number, dead_at_ms = 0, 0
        payload = proxy.message.encode()
    exception = proxy.exception
    reason = "the message failed" if exception is None else dead_letter_reason(exception)
    return DeadLetter(number, queue_name, message_id_of(payload), payload, reason, dead_at_ms)


class _Graveyard:
    """The stub broker's dead letters: the lists of ``dead_letters_by_queue``, numbered and dated.

    Consumers bury messages from worker threads while operations read and edit the lists from any
    thread: ``lock`` guards the lists (edited in place, since consumers hold them) and the numbering.
    """

    def __init__(self, by_queue: defaultdict[str, list[MessageProxy]]) -> None:
        self.by_queue = by_queue
        self.lock = threading.Lock()
        self._numbers = itertools.count(1)

    def bury(self, dead_letters: list[MessageProxy], message: MessageProxy) -> None:
        """Append a message to a queue's dead letters, numbered and dated."""
        with self.lock:
            if isinstance(message, _StubMessageProxy):
                message.grave = (next(self._numbers), current_millis())
            dead_letters.append(message)

    def count(self, queue_name: str) -> int:
        """How many dead letters a queue and its delay queue have."""
        with self.lock:
            return sum(len(self.by_queue.get(name, ())) for name in (queue_name, dq_name(queue_name)))

    def listing(self, queue_name: str, limit: int) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue and its delay queue."""
        with self.lock:
            return [letter for letter, _ in self._buried(queue_name)[:limit]]

    def requeue(self, queue_name: str, message_ids: frozenset[str] | None, queue: Queue[bytes]) -> int:
        """Put dead letters back on ``queue`` (before forgetting them); returns how many."""
        with self.lock:
            chosen = [
                (letter, proxy)
                for letter, proxy in self._buried(queue_name)
                if message_ids is None or letter.message_id in message_ids
            ]
            with interrupts_deferred():  # a Queue torn by an interrupt would never join again
                for letter, _ in chosen:
                    queue.put(requeue_payload(letter.payload, queue_name))
            self._forget(queue_name, {id(proxy) for _, proxy in chosen})
        return len(chosen)

    def purge(self, queue_name: str, dead_by_ms: int) -> int:
        """Forget the dead letters that died at or before ``dead_by_ms``; returns how many."""
        with self.lock:
            doomed = [proxy for letter, proxy in self._buried(queue_name) if letter.dead_at_ms <= dead_by_ms]
            self._forget(queue_name, {id(proxy) for proxy in doomed})
        return len(doomed)

    def _buried(self, queue_name: str) -> list[tuple[DeadLetter, MessageProxy]]:
        """The dead letters of a queue and its delay queue, oldest first (under the lock)."""
        buried = [
            (_dead_letter(queue_name, proxy), proxy)
            for name in (queue_name, dq_name(queue_name))
            for proxy in self.by_queue.get(name, ())
        ]
        buried.sort(key=lambda pair: pair[0].id)
        return buried

    def _forget(self, queue_name: str, doomed: set[int]) -> None:
        """Drop the proxies whose ``id()`` is in ``doomed`` from the lists (under the lock)."""
        for name in (queue_name, dq_name(queue_name)):
            dead_letters = self.by_queue.get(name)
            if dead_letters:
                dead_letters[:] = [proxy for proxy in dead_letters if id(proxy) not in doomed]


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
        self.canonical = queue_name not in broker.delay_queues

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
            if self.canonical:
                self.broker.unique_keys.started(message)
            return _StubMessageProxy(message, payload)
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
            ),
            payload,
        )
        poison.fail()
        poison.stuff_exception(error)
        self.broker.graveyard.bury(self.dead_letters, poison)
        self.queue.task_done()

    def ack(self, message: MessageProxy) -> None:
        self._settled(message)
        self.queue.task_done()
        self.prefetch.release()

    def nack(self, message: MessageProxy) -> None:
        self.broker.graveyard.bury(self.dead_letters, message)
        self._settled(message)
        self.queue.task_done()
        self.prefetch.release()

    def _settled(self, message: MessageProxy) -> None:
        payload = message.payload if isinstance(message, _StubMessageProxy) else message.message.encode()
        self.broker.unique_keys.settled(message.message, payload, on_canonical_queue=self.canonical)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        for message in messages:
            self.queue.put(message.message.encode())
            self.queue.task_done()
            self.prefetch.release()

    def __repr__(self) -> str:
        return f"<_StubConsumer {q_name(self.queue_name)!r}>"
