"""The worker's consumer threads: each pulls one queue's messages into the work queue and holds its delayed ones."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict
from queue import PriorityQueue
from typing import TYPE_CHECKING, Any

from .common import Deadline, current_millis, iter_queue, q_name
from .errors import ActorNotFound, BrokerConnectionError, BrokerError
from .logging import get_logger

if TYPE_CHECKING:
    from ._consuming import Demand
    from .broker import ActorLike, Broker, Consumer, MessageProxy

__all__ = ["ConsumerThread"]

#: Milliseconds a consumer thread waits before reconnecting after an error.
DEFAULT_RESTART_DELAY_MS = 3000
#: Seconds between attempts to acknowledge a message while the broker is unreachable.
ACK_RETRY_INTERVAL_S = 5.0
#: Attempts to acknowledge a message once the worker is stopping (it is redelivered if all fail).
ACK_ATTEMPTS_WHEN_STOPPING = 3

#: Work items: (actor priority, arrival sequence, message, actor, the consumer thread that
#: delivered it). The sequence is unique, so the later fields are never compared.
_WorkItem = tuple[int, int, "MessageProxy", "ActorLike", "ConsumerThread"]
#: Delayed items: (eta ms, arrival sequence, message).
_DelayItem = tuple[int, int, "MessageProxy"]

_sequence = itertools.count()


class _PausableThread(threading.Thread):
    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.running = True
        self.paused = False
        #: Set by the thread itself once it is idle after pause().
        self.paused_event = threading.Event()
        self._stop_event = threading.Event()

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    def stop(self) -> None:
        self.running = False
        self._stop_event.set()


class ConsumerThread(_PausableThread):
    """Pulls the messages of one queue into the worker's work queue, and holds delayed messages until due."""

    def __init__(
        self,
        *,
        broker: Broker,
        queue_name: str,
        prefetch: int,
        work_queue: PriorityQueue[_WorkItem],
        worker_timeout: int,
        restart_delay_ms: int = DEFAULT_RESTART_DELAY_MS,
        demand: Demand | None = None,
    ) -> None:
        super().__init__(name=f"ConsumerThread({queue_name})")
        self.logger = get_logger(__name__, f"ConsumerThread({queue_name})")
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.work_queue = work_queue
        #: How long (ms) the broker consumer waits for a message before an idle tick.
        self.timeout_ms = worker_timeout
        self.restart_delay_ms = restart_delay_ms
        #: What the worker process can use, given to the broker consumer (delay queues excepted:
        #: their messages wait for an eta, not for a thread).
        self.demand = None if queue_name.endswith(".DQ") else demand
        self.consumer: Consumer | None = None
        # Health, written by this thread and read by the worker process's health reporter (plain
        # attributes: one writer, and a reader that only needs a recent value).
        #: Whether this thread's last call to the broker consumer went through.
        self.connected = False
        #: Monotonic time of the last successful broker round trip (a message or an idle tick).
        self.last_contact_s: float | None = None
        #: Messages with an eta, held until due. Touched by this thread, and by the thread
        #: calling Worker.stop once this one has exited.
        self.delay_queue: PriorityQueue[_DelayItem] = PriorityQueue()

    def run(self) -> None:
        self.broker.emit_after("consumer_thread_boot", self)
        while self.running:
            if self.paused:
                self.paused_event.set()
                self._wait_while_paused()
                continue
            self.paused_event.clear()
            try:
                self._consume()
            except BrokerConnectionError:
                self.connected = False
                self.logger.critical("Consumer encountered a connection error.", exc_info=True)
                self._reset()
            except Exception:
                self.connected = False
                self.logger.critical("Consumer encountered an unexpected error.", exc_info=True)
                self._reset()
        self.broker.emit_before("consumer_thread_shutdown", self)

    def _wait_while_paused(self) -> None:
        """Wait one poll interval while paused, letting the broker consumer keep its connection alive."""
        deadline = Deadline.after_ms(self.timeout_ms)
        timeout_s = self.timeout_ms / 1000
        if self.consumer is not None:
            try:
                # Without this, a broker that drops silent connections (RabbitMQ's heartbeats) would
                # deliver the prefetched messages again, to run a second time after resume().
                self.consumer.keep_alive(timeout_s)
                self._contacted()
            except Exception:
                self.connected = False
                self.logger.warning("The paused consumer lost its connection; reconnecting on resume.", exc_info=True)
                self.close()
        self._stop_event.wait(deadline.remaining_s())

    def _reset(self) -> None:
        """Hand back delayed messages, drop the broker consumer, and wait before reconnecting."""
        # The delayed messages held here were never acknowledged, so the next consumer gets them
        # again: keeping them too would run them twice. They are handed back when the broker can
        # still be reached; otherwise the broker's own recovery returns them (closed channel,
        # expired lease, dead-worker recovery).
        self.close()
        self._stop_event.wait(self.restart_delay_ms / 1000)

    def _consume(self) -> None:
        if self.consumer is None:
            self.consumer = self.broker.consume(self.queue_name, prefetch=self.prefetch, timeout=self.timeout_ms)
            self.consumer.demand = self.demand
        for message in self.consumer:
            # A consumer reports broker trouble by raising: a message or an idle tick is a contact.
            self._contacted()
            if message is not None:
                self._handle_safely(message)
            self.handle_delayed_messages()
            if not self.running or self.paused:
                return
        # A consumer that ends (rather than idling) is done: get a new one on the next round.
        self._close_consumer()

    def _contacted(self) -> None:
        self.connected = True
        self.last_contact_s = time.monotonic()

    def _handle_safely(self, message: MessageProxy) -> None:
        message.delivered_by = self.consumer
        try:
            self.handle_message(message)
        except Exception as exc:
            # One bad message must not restart the consumer: it goes to the dead letters alone.
            self.logger.error("Could not handle message %r; dead-lettering it.", message.message_id, exc_info=True)
            self._dead_letter(message, exc)

    def _dead_letter(self, message: MessageProxy, exc: Exception) -> None:
        message.fail()
        message.stuff_exception(exc)
        self.post_process_message(message)

    def handle_message(self, message: MessageProxy) -> None:
        """Park a message that has an eta; queue any other for the worker threads."""
        options = message.options
        if "eta" in options:
            eta = options["eta"]
            if eta is None:
                del options["eta"]
            else:
                if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not math.isfinite(eta):
                    self.logger.warning("Message %r has an invalid eta %r; running it now.", message.message_id, eta)
                    eta = current_millis()
                self.broker.emit_before("delay_message", message)
                self.delay_queue.put((int(eta), next(_sequence), message))
                return
        try:
            actor = self.broker.get_actor(message.actor_name)
        except ActorNotFound as exc:
            self.logger.error(
                "Received message %r for undefined actor %r; moving it to the dead letters.",
                message.message_id,
                message.actor_name,
            )
            self._dead_letter(message, exc)
            return
        self.work_queue.put((actor.priority, next(_sequence), message, actor, self))

    def handle_delayed_messages(self, now_ms: int | None = None) -> None:
        """Move every parked message whose eta is at or before ``now_ms`` back to its queue."""
        if not self.delay_queue.unfinished_tasks:
            return
        now_ms = current_millis() if now_ms is None else now_ms
        # Only this thread touches the delay queue while it runs, so peeking at the heap is safe.
        while self.delay_queue.queue and self.delay_queue.queue[0][0] <= now_ms:
            item = self.delay_queue.get_nowait()
            message = item[2]
            try:
                moved = message.message.copy(queue_name=q_name(message.queue_name))
                del moved.options["eta"]
                self.broker.enqueue(moved)
                self.post_process_message(message)
            except BrokerError:
                # The broker could not take it (now): the message stays held with the others, so
                # the consumer's reset hands it back with them instead of leaving it nowhere.
                self.delay_queue.put(item)
                raise
            except Exception as exc:
                # Only this message cannot be moved (an invalid option from a foreign producer, say):
                # resetting the consumer would bring it back first, forever. It alone is dead-lettered.
                self.logger.error(
                    "Could not move delayed message %r to its queue (%r); dead-lettering it.",
                    message.message_id,
                    exc,
                    exc_info=True,
                )
                self._dead_letter(message, exc)
            finally:
                self.delay_queue.task_done()

    def post_process_message(self, message: MessageProxy) -> None:
        """Acknowledge a processed message, or dead-letter it if it failed. Called from worker threads."""
        signal: Any = "nack" if message.failed else "ack"
        attempts = 0
        while True:
            attempts += 1
            try:
                self.broker.emit_before(signal, message)
                consumer = message.delivered_by or self.consumer
                if consumer is None:
                    raise BrokerConnectionError("the consumer is reconnecting")
                if message.failed:
                    consumer.nack(message)
                else:
                    consumer.ack(message)
                self.broker.emit_after(signal, message)
                return
            except BrokerConnectionError as exc:
                if not self.running and attempts >= ACK_ATTEMPTS_WHEN_STOPPING:
                    self.logger.error(
                        "Could not %s message %r (%s); the broker will deliver it again.",
                        signal,
                        message.message_id,
                        exc,
                    )
                    return
                self.logger.warning(
                    "Failed to %s message %r (%s); retrying in %.0f seconds.",
                    signal,
                    message.message_id,
                    exc,
                    ACK_RETRY_INTERVAL_S,
                )
                time.sleep(ACK_RETRY_INTERVAL_S)
            except Exception:
                self.logger.error(
                    "Unhandled error while post-processing message %r.", message.message_id, exc_info=True
                )
                return

    def requeue_messages(self, messages: list[MessageProxy]) -> None:
        """Hand unprocessed messages back to the broker, each through the consumer that delivered it."""
        by_consumer: defaultdict[Consumer, list[MessageProxy]] = defaultdict(list)
        for message in messages:
            consumer = message.delivered_by or self.consumer
            if consumer is not None:  # else the broker consumer was lost: the broker redelivers it
                by_consumer[consumer].append(message)
        for consumer, batch in by_consumer.items():
            try:
                consumer.requeue(batch)
            except Exception as exc:  # noqa: BLE001 - not acknowledged, so never lost
                self.logger.warning(
                    "Could not requeue %d messages (%s); the broker will deliver them again.", len(batch), exc
                )

    def _close_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            try:
                consumer.close()
            except Exception:
                self.logger.debug("Error while closing consumer.", exc_info=True)

    def close(self) -> None:
        """Hand delayed messages back to the broker and close the broker consumer."""
        delayed = [message for _, _, message in iter_queue(self.delay_queue)]
        for _ in delayed:
            self.delay_queue.task_done()
        if delayed:
            self.requeue_messages(delayed)
        self._close_consumer()
