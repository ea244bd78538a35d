"""The middleware that records job status, takes progress reports and carries out cancellations."""

from __future__ import annotations

import contextvars
import dataclasses
import os
import socket
import threading
import weakref
from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option
from ..common import current_millis, q_name
from ..errors import Cancelled
from ..logging import get_logger
from ..middleware.middleware import Middleware
from ._history import argument_fields, attempt_entry
from ._minute_stores import minute_counts_for
from ._minutes import MinuteTally
from ._status import ERROR_LIMIT, State
from ._store import JobStore
from ._stores import store_for
from ._watch import CancelWatch

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy
    from ..message import Message
    from ..worker import Worker

__all__ = ["JobTracking", "current_run"]

DAY_MS = 24 * 3600 * 1000


@dataclasses.dataclass
class _Run:
    """The tracked message a worker thread (or the coroutine it waits for) is running."""

    tracking: JobTracking
    broker: Broker
    message_id: str
    thread_id: int
    #: The attempt's number (from 1) and when it started, for its entry in the status's history.
    attempt: int = 1
    started_at_ms: int = 0
    #: A retry of the message was enqueued while it ran (by the Retries middleware).
    retried: bool = False
    #: The delivery being run: how another thread that settles it (a warden taking over an actor
    #: stuck past its time limit) finds the run.
    proxy: MessageProxy | None = None


#: The run of the current thread or task: progress reports and retries find their message here.
_current: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("greenroom_job_run", default=None)


def current_run() -> _Run | None:
    """The tracked message being processed by the calling thread or coroutine, if any."""
    return _current.get()


def _error_fields(exception: BaseException | None) -> dict[str, Any]:
    if exception is None:
        return {}
    try:
        text = str(exception)
    except Exception:  # noqa: BLE001 - user code: a failing __str__ must not lose the status
        text = "(its str() failed)"
    if len(text) > ERROR_LIMIT:
        text = text[: ERROR_LIMIT - 3] + "..."
    return {"error_type": type(exception).__name__, "error_message": text}


class JobTracking(Middleware):
    """Record each message's status, take progress reports, and cancel messages on request.

    Add it last, to the broker of producers and workers alike: ``broker.add_middleware(JobTracking())``.
    Status lives in the broker's own storage (SQLite file, Redis), in memory for the stub broker,
    or in ``store`` (required with RabbitMQ). The actor (or message) option ``track=False`` leaves
    a message untracked: no status, no progress, and it cannot be cancelled.

    Parameters:
      store: Where status is kept; the broker's own storage when omitted.
      status_ttl: Milliseconds a finished message's status is kept (7 days).
      active_ttl: Milliseconds the status of a message that has not finished is kept (30 days:
        longer than any delay a message is sent with in practice).
      poll_interval: Milliseconds between two looks for cancellations of the messages running in
        this process (a running message is interrupted within about this long plus a poll).
      heartbeat_interval: Milliseconds between two heartbeats of the worker process (``greenroomctl
        workers``); a process that misses three counts as gone.
      progress_interval: The fewest milliseconds between two progress writes of one message.
    """

    def __init__(
        self,
        *,
        store: JobStore | None = None,
        status_ttl: int = 7 * DAY_MS,
        active_ttl: int = 30 * DAY_MS,
        poll_interval: int = 250,
        heartbeat_interval: int = 2000,
        progress_interval: int = 250,
    ) -> None:
        self.logger = get_logger(__name__, type(self))
        self.job_store = store
        self.status_ttl = status_ttl
        self.active_ttl = active_ttl
        self.progress_interval = progress_interval
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"
        self.watch = CancelWatch(self, poll_interval_ms=poll_interval, heartbeat_interval_ms=heartbeat_interval)
        #: Each worker thread's current run.
        self._local = threading.local()
        #: The same runs by message id, for a thread settling a message it did not run.
        self._runs: dict[str, _Run] = {}
        self._runs_lock = threading.Lock()
        #: Attempts that ended in this process, per minute, until the watch thread stores them.
        self.minutes = MinuteTally()
        #: The store of each broker this middleware serves, when none was given.
        self._broker_stores: weakref.WeakKeyDictionary[Broker, JobStore] = weakref.WeakKeyDictionary()

    @property
    def actor_options(self) -> set[str]:
        # sensitive: the message's arguments are never stored with its status (nor shown by the dashboard).
        return {"track", "sensitive"}

    def store(self, broker: Broker) -> JobStore:
        """The store status is written to (the broker's, found once: several hooks of every message ask)."""
        if self.job_store is not None:
            return self.job_store
        store = self._broker_stores.get(broker)
        if store is None:
            store = self._broker_stores.setdefault(broker, store_for(broker))
        return store

    def tracks(self, broker: Broker, message: Message[Any] | MessageProxy) -> bool:
        """Whether a message is tracked (its ``track`` option, else its actor's, else yes)."""
        actor = broker.actors.get(message.actor_name)
        return bool(resolve_option("track", message.options, actor.options if actor is not None else NO_OPTIONS, True))

    # -- producers ------------------------------------------------------------------------------

    def before_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # Written before the message is published, never after: a worker may take it, and record
        # that it runs, before a write made after the publish would land (and undo that).
        if not self.tracks(broker, message):
            return
        run = _current.get()
        if run is None and message.options.get("retries"):
            with self._runs_lock:  # a warden retrying the message of an actor it took over
                run = self._runs.get(message.message_id)
        retries = message.options.get("retries", 0)
        failure: dict[str, Any] = {}
        if run is not None and run.message_id == message.message_id:
            run.retried = True  # a retry of the message this thread runs (or settles)
            if retries and run.proxy is not None:
                failure = _error_fields(run.proxy.exception)  # the attempt's, as the retry waits
        delayed = message.queue_name.endswith(".DQ")
        state = State.RETRYING if retries else State.DELAYED if delayed else State.ENQUEUED
        fields = {
            "state": state,
            "actor_name": message.actor_name,
            "queue_name": q_name(message.queue_name),
            "enqueued_at_ms": message.message_timestamp,
            "eta_ms": message.options.get("eta") if delayed else None,
            **failure,
        }
        if not retries:  # a retry has the arguments its first send recorded
            actor = broker.actors.get(message.actor_name)
            actor_options = actor.options if actor is not None else NO_OPTIONS
            fields.update(argument_fields(message.args, message.kwargs, message.options, actor_options))
        self.store(broker).update(message.message_id, fields, self.active_ttl)

    # -- workers ----------------------------------------------------------------------------------

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self.watch.start(broker, worker)

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self.watch.stop(worker)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if not self.tracks(broker, message):
            return
        attempt = message.options.get("retries", 0) + 1
        started_at_ms = current_millis()
        fields = {
            "state": State.RUNNING,
            "actor_name": message.actor_name,
            "queue_name": q_name(message.queue_name),
            "attempts": attempt,
            "started_at_ms": started_at_ms,
            "finished_at_ms": None,
            "worker": self.worker_name,
            **attempt_entry(attempt, started_at_ms=started_at_ms, worker=self.worker_name, outcome=State.RUNNING),
        }
        cancelled = self.store(broker).begin(message.message_id, fields, self.active_ttl)
        run = _Run(self, broker, message.message_id, threading.get_ident(), attempt, started_at_ms, proxy=message)
        with self._runs_lock:
            previous: _Run | None = getattr(self._local, "run", None)
            if previous is not None and self._runs.get(previous.message_id) is previous:
                del self._runs[previous.message_id]  # never settled (its ack failed): forget it
            self._runs[message.message_id] = run
        _current.set(run)
        self._local.run = run
        if cancelled:
            self.logger.info("Message %s was cancelled before it started.", message.message_id)
            raise Cancelled()
        self.watch.add(run)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        if isinstance(exception, Cancelled):
            message.fail()  # dead-lettered even without the Retries middleware (which never retries it)
        self._leave(message)

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self._leave(message)

    def _leave(self, message: MessageProxy) -> None:
        """The actor is done: stop watching for its cancellation (its progress is written at the end).

        The run stays current until the message is settled: a retry the Retries middleware enqueues
        after this hook is recognised as one by :meth:`before_enqueue`.
        """
        run = self._run_settled_here(message)
        if run is not None:
            self.watch.discard(run)

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        run = self._finish(message)
        if run is None:
            return
        exception = message.exception
        if exception is None:
            self._write_end(broker, run, State.SUCCEEDED, None)
        elif run.retried:
            self._write_end(broker, run, State.RETRYING, exception)
        else:
            self._write_end(broker, run, State.FAILED, exception)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        run = self._finish(message)
        if run is None:
            return
        exception = message.exception
        state = State.CANCELLED if isinstance(exception, Cancelled) else State.FAILED
        self._write_end(broker, run, state, exception)

    def _finish(self, message: MessageProxy) -> _Run | None:
        """The run this thread settled, if it is the message's (a delayed message moved to its queue is not)."""
        run = self._run_settled_here(message)
        if run is None:
            return None
        with self._runs_lock:
            if self._runs.get(run.message_id) is run:
                del self._runs[run.message_id]
        if getattr(self._local, "run", None) is run:
            self._local.run = None
            _current.set(None)
        return run

    def _run_settled_here(self, message: MessageProxy) -> _Run | None:
        """The run of ``message`` that the calling thread settles, if any.

        Usually the thread's own. A worker process's warden settles the message of an actor stuck
        past its time limit from its own thread (see ``Worker.take_over``): it finds that run by
        the message's id, and only for the very delivery the run began with.
        """
        run: _Run | None = getattr(self._local, "run", None)
        if run is not None and run.message_id == message.message_id:
            return run
        with self._runs_lock:
            run = self._runs.get(message.message_id)
        return run if run is not None and run.proxy is message else None

    def _write_end(self, broker: Broker, run: _Run, state: str, exception: BaseException | None) -> None:
        now_ms = current_millis()
        self.minutes.count(failed=exception is not None, now_ms=now_ms)
        error = _error_fields(exception)
        fields: dict[str, Any] = {"state": state, **error}
        fields.update(self.watch.take_progress(run.message_id))
        fields.update(
            attempt_entry(
                run.attempt,
                started_at_ms=run.started_at_ms,
                worker=self.worker_name,
                outcome=state,
                finished_at_ms=now_ms,
                error=error,
                exception=exception,
            )
        )
        if state == State.RETRYING:
            # The retry wrote its state and this attempt's error before it was published, and
            # another worker may have started it, or even finished it, since: only this attempt's
            # entry in the history is written, nothing the retry's own writes say.
            entry = {name: value for name, value in fields.items() if name.startswith("attempt_")}
            self.store(broker).update(run.message_id, entry, self.active_ttl)
            return
        fields["finished_at_ms"] = now_ms
        self.store(broker).update(run.message_id, fields, self.status_ttl)

    def flush_minutes(self, broker: Broker) -> None:
        """Add the attempts that ended in this process to the per-minute counts beside the store."""
        self.minutes.flush(minute_counts_for(self.store(broker)))

    # -- progress -------------------------------------------------------------------------------

    def report_progress(self, run: _Run, fraction: float, note: str | None) -> None:
        """Record progress now, or within :attr:`progress_interval` ms if one was written just before."""
        fields = {"progress": fraction, "progress_note": note}
        if self.watch.hold_progress(run.message_id, fields, self.progress_interval):
            return
        self.store(run.broker).update(run.message_id, fields, self.active_ttl)
