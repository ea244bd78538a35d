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
from ._task_budget import TaskBudget
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
#: How often (s) Worker.stop looks whether a worker thread it waits for was abandoned (take_over).
_JOIN_POLL_S = 0.05


class _TakenOver(BaseException):
    """Raised in a worker thread whose actor returned after another thread settled its message."""


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
      max_tasks: Start at most this many messages. Then the threads take no new message and
        ``budget.spent`` is set: the owner stops the worker (the ``greenroom`` command replaces
        the process). ``None`` for no limit.
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
        max_tasks: int | None = None,
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
        #: The messages the threads may still start; closing it makes them take no new one.
        self.budget = TaskBudget(max_tasks)
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
            budget=self.budget,
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
        delayed and held) is handed back to the broker. A thread whose message another thread
        settled (:meth:`take_over`) is not waited for.
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
        self._join_workers(deadline)
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

    def _join_workers(self, deadline: Deadline) -> None:
        """Wait until each worker thread has left or was abandoned (:meth:`take_over`), or the deadline."""
        for worker in self.workers:
            while worker.is_alive() and not worker.abandoned.is_set() and not deadline.expired():
                worker.join(deadline.left_s(_JOIN_POLL_S))
            if worker.abandoned.is_set() and worker.is_alive():
                self.logger.warning(
                    "Leaving behind worker thread %r, whose message was settled without it.", worker.ident
                )

    def running_messages(self) -> list[tuple[int, str]]:
        """The (thread ident, message id) of every actor running now and not taken over."""
        return [run for worker in list(self.workers) if (run := worker.current_run()) is not None]

    def take_over(self, thread_id: int, message_id: str, exception: BaseException) -> bool:
        """Settle the message a worker thread runs as failed with ``exception``, without that thread.

        For an actor that ignores its interrupt (stuck in a blocking call): the message goes through
        the failure path from the calling thread (``after_process_message`` with ``exception``, so
        the retry policy applies, then the ack or the dead-lettering), and the worker thread is
        abandoned: if its actor ever returns, the thread settles nothing and leaves. The thread is
        lost to the worker, so the caller should replace the worker (its process).

        Returns:
          Whether ``message_id`` was running on thread ``thread_id`` and this call settled it.
        """
        for worker in list(self.workers):
            if worker.ident == thread_id:
                return worker.take_over(message_id, exception)
        return False

    def is_idle(self) -> bool:
        """Whether no message waits or runs in this worker: none in its work queue or delay queues
        (in memory until their eta), none parked for a concurrency slot."""
        queues: list[PriorityQueue[Any]] = [c.delay_queue for c in list(self.consumers.values())]
        queues.append(self.work_queue)
        return all(queue.unfinished_tasks == 0 for queue in queues) and not self.limits.parked

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
                if self.is_idle():
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
        budget: TaskBudget | None = None,
    ) -> None:
        super().__init__(name="WorkerThread")
        self.logger = get_logger(__name__, "WorkerThread")
        self.broker = broker
        self.work_queue = work_queue
        self.timeout_s = worker_timeout / 1000
        self.capacity = capacity
        self.limits = limits
        self.budget = budget
        #: The message whose actor runs now, with what settles it: set and cleared by this thread
        #: around the actor call, read by the thread calling take_over; both under _run_lock.
        self._current: tuple[MessageProxy, ActorLike, ConsumerThread | None] | None = None
        #: Whether another thread claimed the running message (take_over); under _run_lock.
        self._taken_over = False
        self._run_lock = threading.Lock()
        #: Set once another thread has settled this thread's message: nobody needs to wait for it.
        self.abandoned = threading.Event()

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
            if self.budget is not None and not self.budget.take():
                # The worker is to be replaced: the message waits with the others to be handed back.
                self._put_back(actor, slot, item)
                break
            try:
                self.process_message(message, actor, consumer)
            except BaseException:
                self.logger.error("Unexpected error after processing message %r.", message.message_id, exc_info=True)
            finally:
                if slot is not None:
                    self.limits.leave(actor.actor_name, slot)  # type: ignore[union-attr]
                self.work_queue.task_done()
        self.broker.emit_before("worker_thread_shutdown", self)

    def _put_back(self, actor: ActorLike, slot: Slot | None, item: _WorkItem) -> None:
        if slot is not None:
            self.limits.leave(actor.actor_name, slot)  # type: ignore[union-attr]
        self.work_queue.put(item)
        self.work_queue.task_done()

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
        taken_over = False
        try:
            if actor is None:
                actor = broker.get_actor(message.actor_name)
            broker.emit_before("process_message", message)
            result = None
            if not message.failed:
                result = self._run_actor(message, actor, consumer)
        except _TakenOver:
            taken_over = True  # settled by take_over meanwhile: nothing is left to do with it
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
            if not taken_over:
                self._settle(message, consumer)

    def _run_actor(self, message: MessageProxy, actor: ActorLike, consumer: ConsumerThread | None) -> Any:
        """Call the actor, interruptible, where :meth:`take_over` can claim its message."""
        with self._run_lock:
            self._current = (message, actor, consumer)
        try:
            # Interrupts (time limit, shutdown) are armed for the actor's own code only.
            return run_interruptible(message.message_id, actor, message.args, message.kwargs)
        finally:
            with self._run_lock:
                self._current = None
                taken_over = self._taken_over
            if taken_over:
                raise _TakenOver  # whatever the actor returned or raised, the message is settled

    def _settle(self, message: MessageProxy, consumer: ConsumerThread | None) -> None:
        if consumer is not None:
            consumer.post_process_message(message)
        else:
            self.logger.error("Message %r has no consumer to settle it through.", message.message_id)
        message.clear_exception()

    def current_run(self) -> tuple[int, str] | None:
        """This thread's ident and the id of the message whose actor it runs, if any (and not taken over)."""
        with self._run_lock:
            current = self._current
            if current is None or self._taken_over or self.ident is None:
                return None
            return self.ident, current[0].message_id

    def take_over(self, message_id: str, exception: BaseException) -> bool:
        """Settle the running message ``message_id`` as failed with ``exception``, from the calling thread.

        See :meth:`Worker.take_over`. This thread takes no further message.
        """
        with self._run_lock:
            current = self._current
            if current is None or self._taken_over or current[0].message_id != message_id:
                return False
            self._taken_over = True
        self.stop()
        message, actor, consumer = current
        try:
            message.stuff_exception(exception)
            self._log_failure(message, actor, exception)
            self.broker.emit_after("process_message", message, exception=exception)
            self._settle(message, consumer)
        finally:
            self.abandoned.set()
        return True

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
