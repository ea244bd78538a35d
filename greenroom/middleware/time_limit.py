"""Interrupt actors that run longer than their time limit."""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .._options import NO_OPTIONS, resolve_option, select_options
from ..logging import get_logger
from ..threading import Interrupt, current_platform, interrupt, is_gevent_active, supported_platforms
from .middleware import Middleware

if TYPE_CHECKING:
    from ..actor import Actor
    from ..broker import Broker, MessageProxy

__all__ = ["TimeLimit", "TimeLimitExceeded"]

#: The shortest sleep of the watchdog, and how soon it retries a run that had not started yet.
_RETRY_S = 0.005


class TimeLimitExceeded(Interrupt):
    """Raised into an actor's thread when it exceeds its time limit."""


class TimeLimit(Middleware):
    """Raise :class:`TimeLimitExceeded` into actors that exceed ``time_limit`` ms.

    A watchdog thread, started by ``after_process_boot``, checks the running messages at least
    every ``interval`` ms and sooner when a deadline is closer. The exception is raised
    asynchronously through :func:`greenroom.threading.interrupt`: it reaches the actor's own
    Python code at once, waits for a blocking C call to return, and never lands outside the actor
    (in hooks, logging or the acknowledgement) nor inside greenroom's own critical sections. Under
    gevent the watchdog is a greenlet and the exception is thrown into the actor's greenlet.

    An actor stuck where the exception cannot land (a blocking call that never returns) keeps
    running; :meth:`overdue` names such runs, and the ``greenroom`` command replaces the worker
    process of one that is still running a grace period after its deadline.

    Parameters:
      time_limit: The default limit in milliseconds (``float("inf")`` for none).
      interval: The longest the watchdog sleeps between checks, in milliseconds.
    """

    def __init__(self, *, time_limit: float = 600000, interval: int = 1000) -> None:
        self.logger = get_logger(__name__, type(self))
        self.time_limit = time_limit
        self.interval = interval
        #: Thread ident → (monotonic deadline in s, message id). Worker threads add and remove
        #: their own entry under _lock; the watchdog removes an entry once it interrupted its run.
        self._deadlines: dict[int, tuple[float, str]] = {}
        #: Thread ident → (deadline in s, message id) of the runs interrupted and not ended yet.
        #: The watchdog adds entries, worker threads remove their own; both under _lock.
        self._interrupted: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()
        #: Actor name → the options of this middleware that the actor sets (read once, at declaration).
        self._actor_options: dict[str, Mapping[str, Any]] = {}
        self._watchdog: threading.Thread | None = None
        self._watchdog_lock = threading.Lock()
        self._stopped = threading.Event()

    @property
    def actor_options(self) -> set[str]:
        return {"time_limit"}

    def after_process_boot(self, broker: Broker) -> None:
        if current_platform not in supported_platforms and not is_gevent_active():  # pragma: no cover
            warnings.warn("TimeLimit cannot interrupt threads on this platform.", RuntimeWarning, stacklevel=2)
            return
        with self._watchdog_lock:  # boot may be emitted more than once: start one watchdog
            if self._watchdog is None or not self._watchdog.is_alive():
                self._stopped.clear()
                self._watchdog = threading.Thread(target=self._watch, name="greenroom-time-limit", daemon=True)
                self._watchdog.start()

    def after_declare_actor(self, broker: Broker, actor: Actor[Any, Any]) -> None:
        self._actor_options[actor.actor_name] = select_options(actor.options, self.actor_options)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        actor_options = self._actor_options.get(message.actor_name, NO_OPTIONS)
        limit_ms = resolve_option("time_limit", message.options, actor_options, self.time_limit)
        if limit_ms is None or limit_ms == float("inf"):
            return
        with self._lock:
            self._deadlines[threading.get_ident()] = (time.monotonic() + limit_ms / 1000, message.message_id)

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        with self._lock:
            ident = threading.get_ident()
            if self._deadlines.pop(ident, None) is None and self._interrupted.pop(ident, None) is None:
                # Settled by another thread: a worker process's warden taking over an actor that
                # ignored its interrupt. Its run is found by its message among the interrupted
                # ones (a retry of it that started meanwhile cannot be among them yet).
                stuck = [t for t, (_, message_id) in self._interrupted.items() if message_id == message.message_id]
                for thread_id in stuck:
                    del self._interrupted[thread_id]

    after_skip_message = after_process_message

    def run_once(self, now_s: float) -> float:
        """Interrupt every run whose deadline is at or before ``now_s`` (monotonic seconds).

        A deadline that passed while its actor was not running yet (other hooks before it) stays
        until the actor starts, and is then interrupted at the next check.

        Returns:
          How long to sleep, in seconds, before the next check.
        """
        next_check_s = self.interval / 1000
        with self._lock:
            entries = list(self._deadlines.items())
        for thread_id, entry in entries:
            deadline_s, message_id = entry
            if deadline_s > now_s:
                next_check_s = min(next_check_s, deadline_s - now_s)
                continue
            if not interrupt(thread_id, TimeLimitExceeded, message_id):
                next_check_s = min(next_check_s, _RETRY_S)
                continue
            with self._lock:
                if self._deadlines.get(thread_id) == entry:
                    del self._deadlines[thread_id]
                    self._interrupted[thread_id] = entry
            self.logger.warning("Time limit exceeded. Raised TimeLimitExceeded in worker thread %r.", thread_id)
            self.logger.debug("Interrupted message %s.", message_id)
        return max(next_check_s, _RETRY_S)

    def current_deadline(self) -> float | None:
        """The deadline (monotonic seconds) of the calling thread's run, if it has one."""
        entry = self._deadlines.get(threading.get_ident())
        return entry[0] if entry is not None else None

    def overdue(self, now_s: float, grace_s: float) -> list[tuple[int, str]]:
        """The runs interrupted for their time limit that still run ``grace_s`` after their deadline.

        Returns:
          (thread ident, message id) of each: an actor that ignores its interrupt, typically stuck
          in a blocking call the interrupt cannot reach.
        """
        with self._lock:
            entries = list(self._interrupted.items())
        return [
            (thread_id, message_id) for thread_id, (deadline_s, message_id) in entries if deadline_s + grace_s <= now_s
        ]

    def _watch(self) -> None:
        sleep_s = self.interval / 1000
        while not self._stopped.wait(sleep_s):
            sleep_s = self.run_once(time.monotonic())
            # A deadline registered after this check is seen within one interval; short limits
            # therefore get a tighter cadence while any deadline is pending.
            if self._deadlines:
                sleep_s = min(sleep_s, 0.05)
