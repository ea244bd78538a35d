"""The worker: consumer threads pull messages from the broker, worker threads run actors."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from queue import Empty, PriorityQueue
from typing import TYPE_CHECKING, Any

from . import _settings
from ._capacity import Capacity
from ._concurrency import ConcurrencyLimits, Slot
from ._consumer_thread import (
    ACK_ATTEMPTS_WHEN_STOPPING as ACK_ATTEMPTS_WHEN_STOPPING,
)
from ._consumer_thread import (
    ACK_RETRY_INTERVAL_S as ACK_RETRY_INTERVAL_S,
)
from ._consumer_thread import (
    DEFAULT_RESTART_DELAY_MS,
    ConsumerThread,
    _PausableThread,
    _WorkItem,
)
from ._options import NO_OPTIONS, resolve_option
from .common import Deadline, is_expected, iter_queue, join_all, join_queue, q_name
from .errors import (
    QueueJoinTimeout,
    RateLimitExceeded,
    Retry,
    SkipMessage,
)
from .logging import get_logger
from .threading import run_interruptible

if TYPE_CHECKING:
    from .broker import ActorLike, Broker, MessageProxy

__all__ = ["ConsumerThread", "Worker", "WorkerThread"]


#: What WorkerThread._enter returns for a message parked until its actor has a free slot.
_PARKED = object()


class Worker:
    """Consume every declared queue (or the whitelisted ones) and run the actors of the messages.

    Parameters:
      broker: The broker to consume from.
      queues: Canonical queue names to consume; all queues when empty or ``None``.
      worker_timeout: How long (ms) threads wait for work before checking whether to stop.
      worker_threads: How many threads run actors.
      queue_prefetch: Unacknowledged messages per queue. When neither this nor the environment
        sets it, prefetch adapts: consumers take what idle threads will start, plus a buffer of
        up to as many messages as there are threads when tasks are short (see
        :class:`~greenroom._capacity.Capacity`), so a busy process leaves messages to processes
        with idle threads. A value given here (or in the environment) is used as it is.
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
        # Values not given here come from the environment (greenroom._settings), then the defaults.
        self.worker_timeout = worker_timeout or _settings.worker_timeout_ms() or 1000
        self.worker_threads = worker_threads
        fixed_prefetch = queue_prefetch or _settings.queue_prefetch()
        self.queue_prefetch = fixed_prefetch or min(2 * worker_threads, 65535)
        self.delay_prefetch = delay_prefetch or _settings.delay_queue_prefetch() or min(1000 * worker_threads, 65535)
        self.restart_delay_ms = _settings.restart_delay_ms() or DEFAULT_RESTART_DELAY_MS
        #: Queue name → its consumer thread; written by whichever thread declares a queue, under _lock.
        self.consumers: dict[str, ConsumerThread] = {}
        self.workers: list[WorkerThread] = []
        self.work_queue: PriorityQueue[_WorkItem] = PriorityQueue()
        #: What this process can use: consumers take no more than its idle threads and a buffer.
        self.capacity = Capacity(worker_threads, self.work_queue, self.queue_prefetch - worker_threads)
        #: Whether consumers follow the capacity (no fixed prefetch was asked for).
        self.adaptive_prefetch = not fixed_prefetch
        #: Slots of actors with ``max_concurrency``, shared by the processes of a ``greenroom`` tree.
        self.limits = ConcurrencyLimits(self.work_queue, _settings.tree_id())
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
                demand=self.capacity if self.adaptive_prefetch else None,
            )
            consumer.start()
            self.consumers[queue_name] = consumer

    def _add_worker(self) -> None:
        worker = WorkerThread(
            broker=self.broker,
            work_queue=self.work_queue,
            worker_timeout=self.worker_timeout,
            capacity=self.capacity,
            limits=self.limits,
        )
        worker.start()
        self.workers.append(worker)

    def pause(self, timeout_s: float = 60.0) -> None:
        """Stop taking new work and wait (up to ``timeout_s``) until every thread is idle.

        Consumers stop fetching but keep their broker connection; prefetched messages stay in
        memory and run after :meth:`resume`.
        """
        for child in self._threads():
            child.pause()
        deadline = Deadline.after_s(timeout_s)
        for child in self._threads():
            while child.is_alive() and not child.paused_event.wait(0.05):
                if deadline.expired():
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
        deadline = Deadline.after_ms(timeout)

        # Worker threads stop first: each finishes only the message it is running and takes no new
        # one. Consumer threads keep running meanwhile, because some brokers (RabbitMQ) only
        # service their connection, heartbeats and acks from the consumer thread; whatever they
        # still receive waits in memory and is handed back below.
        for worker in self.workers:
            worker.stop()
        join_all(self.workers, timeout_ms=_remaining_ms(deadline))
        for consumer in consumers:
            consumer.stop()
        # Consumer threads leave within one poll; they get that long even when the running tasks
        # used up the budget, so none is still fetching when the messages are handed back.
        join_all(consumers, timeout_ms=max(_remaining_ms(deadline), self.worker_timeout + 1000))

        self.limits.stop()
        by_consumer: defaultdict[ConsumerThread, list[MessageProxy]] = defaultdict(list)
        for _, _, message, _, consumer in iter_queue(self.work_queue):
            by_consumer[consumer].append(message)
            self.work_queue.task_done()
        for _, _, message, _, consumer in self.limits.take_parked():
            by_consumer[consumer].append(message)
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
        deadline = Deadline.after_s(timeout_s)
        try:
            # While one queue is joined, work can arrive in another (a retry parked in a delay
            # queue, a due message fetched into the work queue): repeat until all are idle at once.
            while True:
                queues: list[PriorityQueue[Any]] = [c.delay_queue for c in list(self.consumers.values())]
                queues.append(self.work_queue)
                for queue in queues:
                    join_queue(queue, timeout_s=deadline.remaining_s())
                if all(queue.unfinished_tasks == 0 for queue in queues) and not self.limits.parked:
                    return
                if self.limits.parked:
                    wait_for_parked_s = min(0.05, deadline.remaining_s() or 0.0)
                    if deadline.expired():
                        raise QueueJoinTimeout("parked messages")
                    time.sleep(wait_for_parked_s)
        except QueueJoinTimeout as exc:
            raise TimeoutError("worker did not become idle in time") from exc


def _remaining_ms(deadline: Deadline) -> int:
    return int((deadline.remaining_s() or 0.0) * 1000)


class WorkerThread(_PausableThread):
    """Runs actors for the messages in the work queue."""

    def __init__(
        self,
        *,
        broker: Broker,
        work_queue: PriorityQueue[_WorkItem],
        worker_timeout: int,
        capacity: Capacity | None = None,
        limits: ConcurrencyLimits | None = None,
    ) -> None:
        super().__init__(name="WorkerThread")
        self.logger = get_logger(__name__, "WorkerThread")
        self.broker = broker
        self.work_queue = work_queue
        self.timeout_s = worker_timeout / 1000
        self.capacity = capacity
        self.limits = limits

    def run(self) -> None:
        self.broker.emit_after("worker_thread_boot", self)
        while self.running:
            if self.paused:
                self.paused_event.set()
                self._stop_event.wait(self.timeout_s)
                continue
            self.paused_event.clear()
            try:
                item = self.work_queue.get(timeout=self.timeout_s)
            except Empty:
                continue
            _, _, message, actor, consumer = item
            slot = self._enter(actor, item)
            if slot is _PARKED:
                self.work_queue.task_done()
                continue
            try:
                self.process_message(message, actor, consumer)
            except BaseException:
                self.logger.error("Unexpected error after processing message %r.", message.message_id, exc_info=True)
            finally:
                if slot is not None:
                    self.limits.leave(actor.actor_name, slot)  # type: ignore[union-attr]
                self.work_queue.task_done()
        self.broker.emit_before("worker_thread_shutdown", self)

    def _enter(self, actor: ActorLike, item: _WorkItem) -> Slot | None:
        """A slot of the actor's ``max_concurrency``; None when it has no limit; ``_PARKED`` when
        every slot is taken (the item is parked and this thread takes other work)."""
        limit = actor.options.get("max_concurrency")
        if self.limits is None or limit is None:
            return None
        slot = self.limits.enter(actor.actor_name, limit)
        if slot is None:
            self.limits.park(actor.actor_name, item)
            return _PARKED
        return slot

    def process_message(
        self, message: MessageProxy, actor: ActorLike | None = None, consumer: ConsumerThread | None = None
    ) -> None:
        """Run one message through the middleware and its actor, then acknowledge or dead-letter it.

        ``consumer`` is the consumer thread that delivered the message; the message is settled
        through it, whatever queue name its payload claims.
        """
        broker = self.broker
        started_s = time.monotonic()
        if self.capacity is not None:
            self.capacity.started()
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
            # Counted as done before the ack: the ack wakes a consumer waiting for room.
            if self.capacity is not None:
                self.capacity.finished(time.monotonic() - started_s)
            if consumer is not None:
                consumer.post_process_message(message)
            else:
                self.logger.error("Message %r has no consumer to settle it through.", message.message_id)
            message.clear_exception()

    def _log_failure(self, message: MessageProxy, actor: ActorLike | None, exc: BaseException) -> None:
        if isinstance(exc, RateLimitExceeded):
            self.logger.debug("Rate limit exceeded in message %s: %s.", message, exc)
            return
        if isinstance(exc, Retry):
            return
        throws = resolve_option("throws", message.options, actor.options if actor is not None else NO_OPTIONS, None)
        if is_expected(exc, throws):
            self.logger.info("Failed to process message %s with expected exception %s.", message, type(exc).__name__)
        else:
            self.logger.error("Failed to process message %s with unhandled exception.", message, exc_info=exc)
