"""Inside a worker process: the reasons to replace it, watched, and the actors that ignore their interrupts.

The :class:`Warden` thread of a worker process closes the worker's task budget (its threads then
take no new message, and the process retires: it stops gracefully and exits with
:data:`~greenroom.cli._exit_codes.RETIRED` so that the main process replaces it at once) when

- the process's resident memory reached ``--max-memory-per-child``, or
- an actor ignored the interrupt of its time limit for ``--time-limit-grace`` after its deadline,
  typically stuck in a blocking call that the interrupt cannot reach (greenroom's interrupt is an
  asynchronous exception: it lands only when the thread runs Python code again). The message of
  such a run is taken over: it is settled as failed from the warden's thread, through the normal
  middleware path, so its retry policy applies (retried, or dead-lettered when retries are
  exhausted), and it is acknowledged; the stuck thread is abandoned to the process's exit.

A thread beside the warden beats on the tree's liveness board every round (see ``_liveness``): the
main process kills a process whose beat stopped while one of its actors is overdue (a process
frozen in C code that holds the GIL, where nothing inside it can act; see ``_frozen``).

While the process stops, the warden escalates the same way: actors still running when
``--worker-shutdown-timeout`` has passed are interrupted with :class:`~greenroom.middleware.Shutdown`,
and those still running a grace period later are taken over as failed.

(``--max-tasks-per-child`` is counted by the worker threads themselves, see
:class:`~greenroom._task_budget.TaskBudget`: a count kept here would let them start more meanwhile.)
"""

from __future__ import annotations

import logging
import os
import resource
import sys
import threading
import time

from ..middleware.shutdown import Shutdown
from ..middleware.time_limit import TimeLimit, TimeLimitExceeded
from ..threading import interrupt
from ..worker import Worker
from ._liveness import Board

__all__ = ["Warden", "resident_memory_mb"]

#: How often (s) the warden looks at the running actors.
CHECK_INTERVAL_S = 0.1
#: How often (s) the warden reads the resident memory of the process.
MEMORY_INTERVAL_S = 1.0
#: Bytes in the megabyte of ``--max-memory-per-child`` (a mebibyte, as ``ps`` and ``top`` count).
BYTES_PER_MB = 1024 * 1024


def resident_memory_mb() -> float:
    """The resident memory of this process in MB.

    Linux reports the current figure in ``/proc``; elsewhere the peak (``ru_maxrss``) stands in
    for it, which can only make a process retire sooner.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / BYTES_PER_MB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Kilobytes on Linux and the BSDs, bytes on macOS.
    return peak / BYTES_PER_MB if sys.platform == "darwin" else peak * 1024 / BYTES_PER_MB


class Warden:
    """Watches one worker process for the reasons to replace it (see the module docstring).

    Parameters:
      worker: The process's worker.
      time_limit: The broker's time limit middleware, if it has one (no stuck runs are found without it).
      max_memory_mb: Retire once the resident memory reaches this many MB; None for no limit.
      grace_ms: How long an actor may ignore its time limit's interrupt (after its deadline), or the
        shutdown interrupt, before its message is taken over.
      logger: The worker process's logger.
      board: The tree's liveness board and this process's slot on it; None outside a tree.
    """

    def __init__(
        self,
        worker: Worker,
        time_limit: TimeLimit | None,
        *,
        max_memory_mb: int | None,
        grace_ms: int,
        logger: logging.Logger,
        board: tuple[Board, int] | None = None,
    ) -> None:
        self.worker = worker
        self.board = board
        self.time_limit = time_limit
        self.max_memory_mb = max_memory_mb
        self.grace_s = grace_ms / 1000
        self.logger = logger
        self._next_memory_check_s = 0.0
        self._warned_memory = False
        #: When (monotonic s) the actors still running are interrupted; set by the thread that
        #: stops the worker (shutting_down), read by the warden thread (one plain assignment).
        self._shutdown_deadline_s: float | None = None
        #: (thread ident, message id) → when the shutdown interrupt was sent; warden thread only.
        self._shutdown_interrupts: dict[tuple[int, str], float] = {}
        self._stopped = threading.Event()
        self._threads = [threading.Thread(target=self._watch, name="greenroom-warden", daemon=True)]
        if board is not None:
            # A thread of its own, so that a slow take-over (a broker that takes its time) never
            # holds a beat back: the beat stops only when the whole process does.
            self._threads.append(threading.Thread(target=self._beat, name="greenroom-beat", daemon=True))

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop watching and beating (once the worker has stopped)."""
        self._stopped.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(1 + CHECK_INTERVAL_S)

    def shutting_down(self, timeout_ms: int) -> None:
        """The worker starts stopping: actors still running in ``timeout_ms`` are to be interrupted."""
        self._shutdown_deadline_s = time.monotonic() + timeout_ms / 1000

    def run_once(self, now_s: float) -> None:
        """One look at the process: its memory, overdue actors, the shutdown deadline."""
        if self.max_memory_mb is not None and now_s >= self._next_memory_check_s:
            self._next_memory_check_s = now_s + MEMORY_INTERVAL_S
            self._check_memory()
        if self.time_limit is not None:
            for thread_id, message_id in self.time_limit.overdue(now_s, self.grace_s):
                self._take_over_overdue(thread_id, message_id)
        deadline_s = self._shutdown_deadline_s
        if deadline_s is not None and now_s >= deadline_s:
            self._escalate_shutdown(now_s)

    def _beat(self) -> None:
        assert self.board is not None
        board, index = self.board
        pid = os.getpid()
        while True:
            board.beat(index, time.monotonic(), pid)
            if self._stopped.wait(CHECK_INTERVAL_S):
                return

    def _watch(self) -> None:
        while not self._stopped.wait(CHECK_INTERVAL_S):
            try:
                self.run_once(time.monotonic())
            except Exception:  # thread top level: one failed look must not end the watching
                self.logger.exception("The worker process's warden failed a check.")

    def _check_memory(self) -> None:
        assert self.max_memory_mb is not None
        resident_mb = resident_memory_mb()
        if resident_mb < self.max_memory_mb:
            return
        if self.worker.budget.taken == 0:
            # A fresh process already over the limit would only be replaced by another one like it.
            if not self._warned_memory:
                self._warned_memory = True
                self.logger.warning(
                    "Resident memory is %.0f MB before any message ran, above --max-memory-per-child (%d MB): "
                    "the limit applies once a message has run.",
                    resident_mb,
                    self.max_memory_mb,
                )
            return
        self.worker.budget.close(f"its resident memory reached {resident_mb:.0f} MB (limit {self.max_memory_mb} MB)")

    def _take_over_overdue(self, thread_id: int, message_id: str) -> None:
        grace_ms = round(self.grace_s * 1000)
        error = TimeLimitExceeded(f"the actor still ran {grace_ms} ms after its time limit, ignoring its interrupt")
        if not self.worker.take_over(thread_id, message_id, error):
            return  # it ended meanwhile, or was taken over before
        self.logger.error(
            "Message %s ignored its time limit for %d ms: it counts as failed (its retry policy applies), "
            "and this worker process is replaced.",
            message_id,
            grace_ms,
        )
        self.worker.budget.close("an actor ignored its time limit")

    def _escalate_shutdown(self, now_s: float) -> None:
        for run in self.worker.running_messages():
            interrupted_at_s = self._shutdown_interrupts.get(run)
            if interrupted_at_s is None:
                self._shutdown_interrupts[run] = now_s
                self.logger.warning("Message %s still runs at the shutdown timeout; interrupting it.", run[1])
                # False when the run already had its one interrupt: the take-over below still comes.
                interrupt(run[0], Shutdown, run[1])
            elif interrupted_at_s + self.grace_s <= now_s:
                error = Shutdown("the actor still ran after the worker's shutdown timeout and its grace period")
                if self.worker.take_over(run[0], run[1], error):
                    self.logger.error(
                        "Message %s ignored the shutdown interrupt: it counts as failed (its retry policy applies).",
                        run[1],
                    )
