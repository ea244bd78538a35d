"""The worker: consumer threads pull messages from the broker, worker threads run actors."""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import defaultdict
from queue import Empty, PriorityQueue
from typing import TYPE_CHECKING, Any

from .common import current_millis, getenv_int, is_expected, iter_queue, join_all, join_queue, q_name
from .errors import ActorNotFound, BrokerConnectionError, BrokerError, QueueJoinTimeout, RateLimitExceeded, Retry
from .logging import get_logger
from .middleware.middleware import SkipMessage
from .threading import run_interruptible

if TYPE_CHECKING:
    from .actor import Actor
    from .broker import Broker, Consumer, MessageProxy

__all__ = ["ConsumerThread", "Worker", "WorkerThread"]

#: Milliseconds a consumer thread waits before reconnecting after an error.
DEFAULT_RESTART_DELAY_MS = 3000
#: Seconds between attempts to acknowledge a message while the broker is unreachable.
ACK_RETRY_INTERVAL_S = 5.0
#: Attempts to acknowledge a message once the worker is stopping (it is redelivered if all fail).
ACK_ATTEMPTS_WHEN_STOPPING = 3

#: Work items: (actor priority, arrival sequence, message, actor, the consumer thread that
#: delivered it). The sequence is unique, so the later fields are never compared.
_WorkItem = tuple[int, int, "MessageProxy", "Actor[Any, Any]", "ConsumerThread"]
#: Delayed items: (eta ms, arrival sequence, message).
_DelayItem = tuple[int, int, "MessageProxy"]

_sequence = itertools.count()


class Worker:
    """Consume every declared queue (or the whitelisted ones) and run the actors of the messages.

    Parameters:
      broker: The broker to consume from.
      queues: Canonical queue names to consume; all queues when empty or ``None``.
      worker_timeout: How long (ms) threads wait for work before checking whether to stop.
      worker_threads: How many threads run actors.
      queue_prefetch: Unacknowledged messages per queue (default: twice the threads).
      delay_prefetch: Unacknowledged delayed messages per delay queue (default: 1000 × threads).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        queues: set[str] | list[str] | None = None,
        worker_timeout: int | None = None,
        worker_threads: int = 8,
        queue_prefetch: int | None = None,
        delay_prefetch: int | None = None,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.broker = broker
        self.consumer_whitelist = set(queues) if queues else None
        self.worker_timeout = worker_timeout or getenv_int("greenroom_worker_timeout") or 1000
        self.worker_threads = worker_threads
        self.queue_prefetch = queue_prefetch or getenv_int("greenroom_queue_prefetch") or min(2 * worker_threads, 65535)
        self.delay_prefetch = (
            delay_prefetch or getenv_int("greenroom_delay_queue_prefetch") or min(1000 * worker_threads, 65535)
        )
        self.restart_delay_ms = getenv_int("greenroom_restart_delay") or DEFAULT_RESTART_DELAY_MS
        #: Queue name → its consumer thread; written by whichever thread declares a queue, under _lock.
        self.consumers: dict[str, ConsumerThread] = {}
        self.workers: list[WorkerThread] = []
        self.work_queue: PriorityQueue[_WorkItem] = PriorityQueue()
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> None:
        """Start consumer and worker threads (non-blocking)."""
        self.broker.emit_before("worker_boot", self)
        self._started = True
        self.broker.add_queue_listener(self._on_queue_declared)
        for _ in range(self.worker_threads):
            self._add_worker()
        self.broker.emit_after("worker_boot", self)

    def _on_queue_declared(self, queue_name: str, is_delay_queue: bool) -> None:
        if self.consumer_whitelist is not None and q_name(queue_name) not in self.consumer_whitelist:
            return
        prefetch = self.delay_prefetch if is_delay_queue or queue_name.endswith(".DQ") else self.queue_prefetch
        with self._lock:
            if queue_name in self.consumers or not self._started:
                return
            consumer = ConsumerThread(
                broker=self.broker,
                queue_name=queue_name,
                prefetch=prefetch,
                work_queue=self.work_queue,
                worker_timeout=self.worker_timeout,
                restart_delay_ms=self.restart_delay_ms,
            )
            consumer.start()
            self.consumers[queue_name] = consumer

    def _add_worker(self) -> None:
        worker = WorkerThread(broker=self.broker, work_queue=self.work_queue, worker_timeout=self.worker_timeout)
        worker.start()
        self.workers.append(worker)

    def pause(self, timeout_s: float = 60.0) -> None:
        """Stop taking new work and wait (up to ``timeout_s``) until every thread is idle.

        Consumers stop fetching but keep their broker connection; prefetched messages stay in
        memory and run after :meth:`resume`.
        """
        for child in self._threads():
            child.pause()
        deadline_s = time.monotonic() + timeout_s
        for child in self._threads():
            while child.is_alive() and not child.paused_event.wait(0.05):
                if time.monotonic() >= deadline_s:
                    raise TimeoutError(f"{child.name} did not pause in time")

    def resume(self) -> None:
        """Take work again after :meth:`pause`."""
        for child in self._threads():
            child.resume()

    def _threads(self) -> list[ConsumerThread | WorkerThread]:
        with self._lock:
            return [*self.consumers.values(), *self.workers]

    def stop(self, timeout: int = 600000) -> None:
        """Stop gracefully, handing every message not yet processed back to the broker.

        Worker threads finish the message they are running (up to ``timeout`` ms) and take no
        new one; then the consumers stop, and every message still in memory (prefetched, or
        delayed and held) is handed back to the broker.
        """
        self.broker.emit_before("worker_shutdown", self)
        self.logger.info("Shutting down...")
        self.broker.remove_queue_listener(self._on_queue_declared)
        with self._lock:
            self._started = False
            consumers = list(self.consumers.values())
        deadline_s = time.monotonic() + timeout / 1000

        # Worker threads stop first: each finishes only the message it is running and takes no new
        # one. Consumer threads keep running meanwhile, because some brokers (RabbitMQ) only
        # service their connection, heartbeats and acks from the consumer thread; whatever they
        # still receive waits in memory and is handed back below.
        for worker in self.workers:
            worker.stop()
        join_all(self.workers, timeout_ms=_remaining_ms(deadline_s))
        for consumer in consumers:
            consumer.stop()
        # Consumer threads leave within one poll; they get that long even when the running tasks
        # used up the budget, so none is still fetching when the messages are handed back.
        join_all(consumers, timeout_ms=max(_remaining_ms(deadline_s), self.worker_timeout + 1000))

        by_consumer: defaultdict[ConsumerThread, list[MessageProxy]] = defaultdict(list)
        for _, _, message, _, consumer in iter_queue(self.work_queue):
            by_consumer[consumer].append(message)
            self.work_queue.task_done()
        for consumer, messages in by_consumer.items():
            self.logger.debug("Handing %d unprocessed messages back to %r.", len(messages), consumer.queue_name)
            consumer.requeue_messages(messages)
        for consumer in consumers:
            consumer.close()
        self.broker.emit_after("worker_shutdown", self)
        self.logger.info("Worker has been shut down.")

    def join(self, timeout_s: float = 600.0) -> None:
        """Wait until no message is waiting or running in this worker (a test helper).

        Only in-memory work is considered: pair it with ``broker.join(queue)``.
        """
        deadline_s = time.monotonic() + timeout_s
        try:
            # While one queue is joined, work can arrive in another (a retry parked in a delay
            # queue, a due message fetched into the work queue): repeat until all are idle at once.
            while True:
                queues: list[PriorityQueue[Any]] = [c.delay_queue for c in list(self.consumers.values())]
                queues.append(self.work_queue)
                for queue in queues:
                    join_queue(queue, timeout_s=max(0.0, deadline_s - time.monotonic()))
                if all(queue.unfinished_tasks == 0 for queue in queues):
                    return
        except QueueJoinTimeout as exc:
            raise TimeoutError("worker did not become idle in time") from exc


def _remaining_ms(deadline_s: float) -> int:
    return max(0, int((deadline_s - time.monotonic()) * 1000))


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
    ) -> None:
        super().__init__(name=f"ConsumerThread({queue_name})")
        self.logger = get_logger(__name__, f"ConsumerThread({queue_name})")
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.work_queue = work_queue
        self.worker_timeout = worker_timeout
        self.restart_delay_ms = restart_delay_ms
        self.consumer: Consumer | None = None
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
                self.logger.critical("Consumer encountered a connection error.", exc_info=True)
                self._reset()
            except Exception:
                self.logger.critical("Consumer encountered an unexpected error.", exc_info=True)
                self._reset()
        self.broker.emit_before("consumer_thread_shutdown", self)

    def _wait_while_paused(self) -> None:
        """Wait one poll interval while paused, letting the broker consumer keep its connection alive."""
        timeout_s = self.worker_timeout / 1000
        deadline_s = time.monotonic() + timeout_s
        if self.consumer is not None:
            try:
                # Without this, a broker that drops silent connections (RabbitMQ's heartbeats) would
                # deliver the prefetched messages again, to run a second time after resume().
                self.consumer.keep_alive(timeout_s)
            except Exception:
                self.logger.warning("The paused consumer lost its connection; reconnecting on resume.", exc_info=True)
                self.close()
        self._stop_event.wait(max(0.0, deadline_s - time.monotonic()))

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
            self.consumer = self.broker.consume(self.queue_name, prefetch=self.prefetch, timeout=self.worker_timeout)
        for message in self.consumer:
            if message is not None:
                self._handle_safely(message)
            self.handle_delayed_messages()
            if not self.running or self.paused:
                return
        # A consumer that ends (rather than idling) is done: get a new one on the next round.
        self._close_consumer()

    def _handle_safely(self, message: MessageProxy) -> None:
        message._delivered_by = self.consumer
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
                moved = message._message.copy(queue_name=q_name(message.queue_name))
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
                consumer = message._delivered_by or self.consumer
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
            consumer = message._delivered_by or self.consumer
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


class WorkerThread(_PausableThread):
    """Runs actors for the messages in the work queue."""

    def __init__(
        self,
        *,
        broker: Broker,
        work_queue: PriorityQueue[_WorkItem],
        worker_timeout: int,
    ) -> None:
        super().__init__(name="WorkerThread")
        self.logger = get_logger(__name__, "WorkerThread")
        self.broker = broker
        self.work_queue = work_queue
        self.timeout_s = worker_timeout / 1000

    def run(self) -> None:
        self.broker.emit_after("worker_thread_boot", self)
        while self.running:
            if self.paused:
                self.paused_event.set()
                self._stop_event.wait(self.timeout_s)
                continue
            self.paused_event.clear()
            try:
                _, _, message, actor, consumer = self.work_queue.get(timeout=self.timeout_s)
            except Empty:
                continue
            try:
                self.process_message(message, actor, consumer)
            except BaseException:
                self.logger.error("Unexpected error after processing message %r.", message.message_id, exc_info=True)
            finally:
                self.work_queue.task_done()
        self.broker.emit_before("worker_thread_shutdown", self)

    def process_message(
        self, message: MessageProxy, actor: Actor[Any, Any] | None = None, consumer: ConsumerThread | None = None
    ) -> None:
        """Run one message through the middleware and its actor, then acknowledge or dead-letter it.

        ``consumer`` is the consumer thread that delivered the message; the message is settled
        through it, whatever queue name its payload claims.
        """
        broker = self.broker
        try:
            if actor is None:
                actor = broker.get_actor(message.actor_name)
            broker.emit_before("process_message", message)
            result = None
            if not message.failed:
                # Interrupts (time limit, shutdown) are armed for the actor's own code only.
                result = run_interruptible(message.message_id, actor, message.args, message.kwargs)
        except SkipMessage as exc:
            if message.failed:
                message.stuff_exception(exc)
            self.logger.warning("Message %s was skipped.", message)
            broker.emit_after("skip_message", message)
        except BaseException as exc:  # noqa: BLE001 - interrupts and SystemExit are message failures too
            message.stuff_exception(exc)
            self._log_failure(message, actor, exc)
            broker.emit_after("process_message", message, exception=exc)
        else:
            if result is not None and not broker.has_results_middleware and "pipe_target" not in message.options:
                self.logger.warning(
                    "Actor %r returned a value that was discarded; add the Results middleware to keep it.",
                    message.actor_name,
                )
            broker.emit_after("process_message", message, result=result)
        finally:
            if consumer is not None:
                consumer.post_process_message(message)
            else:
                self.logger.error("Message %r has no consumer to settle it through.", message.message_id)
            message.clear_exception()

    def _log_failure(self, message: MessageProxy, actor: Actor[Any, Any] | None, exc: BaseException) -> None:
        if isinstance(exc, RateLimitExceeded):
            self.logger.debug("Rate limit exceeded in message %s: %s.", message, exc)
            return
        if isinstance(exc, Retry):
            return
        throws = message.options.get("throws") or (actor.options.get("throws") if actor is not None else None)
        if is_expected(exc, throws):
            self.logger.info("Failed to process message %s with expected exception %s.", message, type(exc).__name__)
        else:
            self.logger.error("Failed to process message %s with unhandled exception.", message, exc_info=exc)
