"""The main process: start worker and fork processes, supervise them, act on signals.

Signal handlers only queue the signal; the supervisor loop in the main thread does the work
(forwarding, killing, restarting, reloading). The loop sleeps in one ``wait`` on every child's
exit sentinel, the control pipes of booting workers and the signal wake-up socket, so it reacts
at once to any of them without polling.
"""

from __future__ import annotations

import enum
import logging
import os
import queue
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from multiprocessing.connection import wait
from types import FrameType
from typing import Any

from .. import _settings
from ._args import CliOptions, broker_url_from_environment
from ._child import HANDLED_SIGNALS
from ._exit_codes import RETIRED, ExitCode
from ._forks import ForkProcesses
from ._frozen import FrozenWatch, StuckRegistry, stuck_directory
from ._health import health_forks
from ._launcher import Child, Launcher, describe_exit, send_signal, signals_blocked
from ._leftovers import RUN_PREFIX, hold_run_lock
from ._liveness import Board
from ._log_pipes import LogForwarder
from ._reexec import hold_signals, release_signals
from ._worker_process import WorkerSpec, run_worker

__all__ = ["Supervisor", "restart_pause_s"]

#: Pause (s) before replacing a worker process that died a second time in a row; it doubles with
#: each further death. The first death is replaced at once: its replacement returns the dead
#: process's messages while it boots, so a pause would delay them too.
RESTART_PAUSE_S = 1.0
#: The longest pause (s) before replacing a worker process.
MAX_RESTART_PAUSE_S = 60.0
#: A worker process that lived this long (s) resets the pause to its first value.
STABLE_AFTER_S = 30.0
#: Upper bound (s) on one sleep of the supervisor loop.
MAX_WAIT_S = 1.0

logger = logging.getLogger("greenroom.MainProcess")


class _State(enum.Enum):
    BOOTING = "booting"  # the first workers are booting; a boot failure ends the tree
    RUNNING = "running"
    STOPPING = "stopping"  # graceful shutdown (TERM, INT, HUP, or drained in burst mode)
    KILLING = "killing"  # second TERM: worker processes were killed


class Supervisor:
    """Runs the process tree for one invocation of the command.

    Parameters:
      options: The command line.
      forwarder: The thread that writes the children's logs (started by :meth:`run`).
      gevent: Whether worker processes run under gevent.
      on_ready: Called once the first workers have booted (starts the file watcher).
      held_signals: Signals the re-exec of a reload left blocked (see ``_reexec``); they are
        unblocked once the handlers are installed.

    After :meth:`run`, ``reload`` says whether the caller must re-execute the command for a
    reload; the handled signals are then blocked in the main thread (``held_signals`` names
    those that were not blocked before), so that none can end the process before the new image
    has installed its handlers.
    """

    def __init__(
        self,
        options: CliOptions,
        forwarder: LogForwarder,
        *,
        gevent: bool = False,
        on_ready: Callable[[], None] | None = None,
        held_signals: frozenset[signal.Signals] = frozenset(),
    ) -> None:
        self.options = options
        self.forwarder = forwarder
        self.gevent = gevent
        self.on_ready = on_ready
        # With --scheduler-only, one process that schedules and consumes nothing.
        self.workers = [Child(i) for i in range(1 if options.scheduler_only else options.processes)]
        self.launcher = Launcher(options, forwarder, lambda: [*self.workers, *self.forks.children])
        self.forks = ForkProcesses(self.launcher, options.verbose)
        #: Signals received, queued by the handler, handled by the loop (SimpleQueue.put is reentrant).
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.state = _State.BOOTING
        self.reload = False
        self.held_signals = held_signals
        #: Whether INT or TERM was received (a second one kills the worker processes).
        self._told_to_stop = False
        self.fatal_code: int | None = None
        self._wakeup_r, self._wakeup_w = socket.socketpair()
        for sock in (self._wakeup_r, self._wakeup_w):
            sock.setblocking(False)
        #: When (monotonic s) the graceful stop began.
        self._stopping_since_s: float | None = None
        # The liveness board lives in a directory of this run's own; the stuck registry in the
        # tree's (a reload keeps its marks), made when the first mark is written.
        self._runtime_dir = tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{os.getpid()}-")
        try:
            self._run_lock = hold_run_lock(self._runtime_dir)
            board_path = os.path.join(self._runtime_dir, "liveness")
            self.board = Board.create(board_path, len(self.workers), options.threads)
        except BaseException:
            shutil.rmtree(self._runtime_dir, ignore_errors=True)
            raise
        registry = StuckRegistry(stuck_directory(_settings.tree_id() or str(os.getpid())), self.board)
        grace_s = options.time_limit_grace_ms / 1000
        shutdown_s = options.worker_shutdown_timeout_ms / 1000
        self.frozen = FrozenWatch(self.board, registry, grace_s, shutdown_s, logger)

    # -- top level ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers, supervise until the tree is stopped; returns the exit code."""
        previous_handlers: dict[signal.Signals, Any] = {}
        code: int | None = None
        try:
            with signals_blocked():
                # Threads inherit the blocked mask, so signals reach the main thread only.
                self.forwarder.start()
                previous_handlers = self._install_signal_handlers()
                self.spawn_workers()
            # Signals that came during the re-exec were kept pending for the handlers: here they are.
            release_signals(self.held_signals)
            self.held_signals = frozenset()
            code = self.supervise()
            return code
        finally:
            # A reload whose stop went wrong (a worker process crashed meanwhile) ends the run instead.
            self.reload = self.reload and code == ExitCode.OK
            if self.reload:
                self._hold_signals_for_reexec()
            signal.set_wakeup_fd(-1)
            for signum, handler in previous_handlers.items():
                signal.signal(signum, handler)
            if not self.reload:
                # A TERM cancelled the reload: what still comes goes to the previous handlers.
                release_signals(self.held_signals)
                self.held_signals = frozenset()
            self.close()

    def _hold_signals_for_reexec(self) -> None:
        """Block the handled signals from now until the new image has its handlers (``_reexec``)."""
        self.held_signals = hold_signals()
        # The loop has ended: a signal caught since its last look is only queued. A TERM or INT
        # there still means "stop", as during the rest of the reload; another HUP changes nothing.
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            if signum != signal.SIGHUP and self.reload:
                logger.info("Received %s; stopping instead of reloading.", signal.Signals(signum).name)
                self.reload = False

    def close(self) -> None:
        """Release the signal wake-up socket and the run's directory (``run`` does it when it returns)."""
        self._wakeup_r.close()
        self._wakeup_w.close()
        self.board.close()
        os.close(self._run_lock)
        shutil.rmtree(self._runtime_dir, ignore_errors=True)

    def _install_signal_handlers(self) -> dict[signal.Signals, Any]:
        def on_signal(signum: int, frame: FrameType | None) -> None:
            self.signals.put(signum)

        previous = {signum: signal.signal(signum, on_signal) for signum in HANDLED_SIGNALS}
        signal.set_wakeup_fd(self._wakeup_w.fileno(), warn_on_full_buffer=False)
        return previous

    def spawn_workers(self) -> None:
        """Start every worker process; their boot reports are handled by the loop."""
        for child in self.workers:
            self._spawn_worker(child)

    def supervise(self) -> int:
        """The loop: wait for an event, act on it, until every process is gone."""
        while not self._finished():
            self._wait()
            self._handle_signals()
            self._read_reports()
            self._reap()
            self._check_boot_deadlines()
            self._check_frozen()
            self._restart_due_workers()
        return self._exit_code()

    def _check_frozen(self) -> None:
        try:
            self.frozen.check(self.workers, time.monotonic(), self._stopping_since_s)
        except Exception:  # the loop must go on: one failed look is retried on the next turn
            logger.exception("Could not look for frozen worker processes.")

    # -- spawning -----------------------------------------------------------------------------

    def _spawn_worker(self, child: Child) -> None:
        options = self.options
        spec = WorkerSpec(
            index=child.index,
            broker=options.broker,
            modules=options.modules,
            queues=options.queues,
            threads=options.threads,
            shutdown_timeout_ms=options.worker_shutdown_timeout_ms,
            burst=options.burst,
            verbose=options.verbose,
            skip_logging=options.skip_logging,
            gevent=self.gevent,
            broker_url=broker_url_from_environment(),
            consume=not options.scheduler_only,
            # Burst runs only drain queues; otherwise the first worker process of a run schedules.
            scheduler=options.scheduler_only or (options.scheduler and not options.burst and child.index == 0),
            recover_pids=child.dead_pids,
            max_tasks=options.max_tasks_per_child,
            max_memory_mb=options.max_memory_per_child_mb,
            time_limit_grace_ms=options.time_limit_grace_ms,
            board=(self.board.path, self.board.slots, self.board.runs_per_slot),
            stuck_dir=str(self.frozen.registry.directory),
        )
        self.board.clear(child.index)
        self.launcher.spawn(child, run_worker, spec, f"WorkerProcess({child.index})", daemon=False)
        child.awaiting_report = True
        child.boot_deadline_s = time.monotonic() + options.worker_fork_timeout_ms / 1000

    # -- events -------------------------------------------------------------------------------

    def _wait(self) -> None:
        waitables: list[Any] = [self._wakeup_r]
        for child in (*self.workers, *self.forks.children):
            if child.process is not None:
                waitables.append(child.process.sentinel)
                if child.awaiting_report and child.control is not None:
                    waitables.append(child.control)
        wait(waitables, timeout=self._next_timeout_s())
        try:
            while self._wakeup_r.recv(512):
                pass
        except OSError:
            pass  # nothing left to read (BlockingIOError)

    def _next_timeout_s(self) -> float:
        now_s = time.monotonic()
        moments = [c.restart_at_s for c in self.workers if c.restart_at_s is not None]
        if self.state is _State.BOOTING:
            moments += [c.boot_deadline_s for c in self.workers if not c.booted]
        return max(0.0, min([MAX_WAIT_S, *(m - now_s for m in moments)]))

    def _handle_signals(self) -> None:
        while True:
            try:
                signum = self.signals.get_nowait()
            except queue.Empty:
                return
            self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self.state in (_State.STOPPING, _State.KILLING):
            if signum == signal.SIGHUP:
                return
            if self.reload and not self._told_to_stop:
                # TERM during a reload: the graceful stop already under way becomes the final one.
                logger.info("Received %s; stopping instead of reloading.", name)
                self.reload = False
                self._told_to_stop = True
                return
            logger.warning("Received %s again; killing the worker processes.", name)
            self._kill_all()
            return
        self._told_to_stop = signum != signal.SIGHUP
        if signum == signal.SIGHUP:
            logger.info("Received SIGHUP; reloading the worker processes.")
            self.reload = True
        else:
            logger.info("Received %s; stopping gracefully.", name)
        self._begin_stop(signal.SIGHUP if signum == signal.SIGHUP else signal.SIGTERM)

    def _read_reports(self) -> None:
        for child in self.workers:
            while child.awaiting_report and child.control is not None and child.control.poll(0):
                try:
                    event, detail = child.control.recv()
                except (EOFError, OSError):
                    child.awaiting_report = False  # it died; _reap handles it
                    break
                child.awaiting_report = False
                if event == "booted":
                    self._on_booted(child, list(detail))

    def _on_booted(self, child: Child, middleware_forks: list[str]) -> None:
        child.booted = True
        child.dead_pids = ()  # the new process returned their messages while it booted
        if self.forks.middleware_functions is None:
            self.forks.middleware_functions = middleware_forks
        if self.state is _State.BOOTING and all(c.booted for c in self.workers):
            self._finish_boot()
        elif self.state is _State.RUNNING:
            self.forks.start_middleware_forks()  # the boot wait had given up before any worker booted

    def _finish_boot(self) -> None:
        self.state = _State.RUNNING
        booted = sum(c.booted for c in self.workers)
        self.forks.start([*self.options.forks, *health_forks()])
        self.forks.start_middleware_forks()
        if self.options.scheduler_only:
            logger.info("Greenroom is ready: the scheduler process is running (no workers).")
        else:
            logger.info(
                "Greenroom is ready: %d of %d worker processes with %d threads each.",
                booted,
                len(self.workers),
                self.options.threads,
            )
        if self.on_ready is not None:
            # The file watcher's threads inherit the blocked mask: a signal must never reach one
            # of them once the main thread has blocked it for a re-exec and restored the default
            # dispositions, which would end the process.
            with signals_blocked():
                self.on_ready()

    def _check_boot_deadlines(self) -> None:
        if self.state is not _State.BOOTING:
            return
        now_s = time.monotonic()
        late = [c for c in self.workers if not c.booted and c.boot_deadline_s <= now_s]
        if late:
            # As Dramatiq does: stop waiting and carry on; a late worker is marked booted when it reports.
            logger.warning(
                "Worker processes %s did not boot within %g ms; not waiting for them any longer.",
                [c.index for c in late],
                self.options.worker_fork_timeout_ms,
            )
            self._finish_boot()

    # -- exits --------------------------------------------------------------------------------

    def _reap(self) -> None:
        for child in self.workers:
            if child.process is not None and child.process.exitcode is not None:
                self._on_worker_exit(child, self._release(child))
        for child in self.forks.children:
            if child.process is not None and child.process.exitcode is not None:
                code = self._release(child)
                if self.state in (_State.BOOTING, _State.RUNNING):
                    logger.error("Fork process %d exited with %s.", child.index, describe_exit(code))
        if self.state is _State.RUNNING and self.options.burst and all(c.done for c in self.workers):
            logger.info("Every worker process drained its queues.")
            self._begin_stop(signal.SIGTERM)
        if self.state is _State.STOPPING and not any(c.alive for c in self.workers):
            self.forks.stop()

    def _release(self, child: Child) -> int:
        assert child.process is not None
        code = child.process.exitcode
        assert code is not None
        child.last_pid = child.process.pid
        if child.control is not None:
            child.control.close()
        child.process.close()
        child.process = None
        child.control = None
        child.awaiting_report = False
        child.exitcode = code
        return code

    def _on_worker_exit(self, child: Child, code: int) -> None:
        if self.state in (_State.STOPPING, _State.KILLING):
            return
        # A worker that cannot boot because the code does not import or the broker cannot be
        # reached ends the run, at first boot and after a replacement or reload alike.
        cannot_boot = code in (ExitCode.IMPORT, ExitCode.CONNECTION)
        if not child.booted and (self.state is _State.BOOTING or cannot_boot):
            logger.critical("Worker process %d failed to boot (%s).", child.index, describe_exit(code))
            self.fatal_code = code if code > 0 else int(ExitCode.KILLED)
            self._begin_stop(signal.SIGTERM)
            return
        if self.options.burst and code == 0:
            child.done = True
            return
        if child.booted and child.last_pid is not None:
            # Its unacknowledged messages go back at once, when the replacement boots, rather
            # than after the broker's heartbeat or lease timeout. (A retired process handed all
            # of its messages back; should a hand-back have failed, this returns them too.)
            child.dead_pids = (*child.dead_pids, child.last_pid)
        if code == RETIRED and child.booted:
            # It retired on purpose: no pause, and not a death in a row.
            child.restart_at_s = time.monotonic()
            logger.info("Worker process %d retired; starting a new one.", child.index)
            return
        if child.killed_frozen:
            # Killed for freezing (see _frozen): replaced at once, not a death in a row.
            child.restart_at_s = time.monotonic()
            logger.info("Worker process %d was killed for freezing; starting a new one.", child.index)
            return
        lived_s = time.monotonic() - child.started_at_s
        child.deaths_in_a_row = 1 if lived_s >= STABLE_AFTER_S else child.deaths_in_a_row + 1
        pause_s = restart_pause_s(child.deaths_in_a_row)
        child.restart_at_s = time.monotonic() + pause_s
        logger.error(
            "Worker process %d %s %s; starting a new one in %.1f s.",
            child.index,
            "died with" if child.booted else "failed to boot with",
            describe_exit(code),
            pause_s,
        )

    def _restart_due_workers(self) -> None:
        if self.state not in (_State.BOOTING, _State.RUNNING):
            return
        now_s = time.monotonic()
        for child in self.workers:
            if child.restart_at_s is not None and child.restart_at_s <= now_s:
                logger.info("Starting a new worker process %d.", child.index)
                try:
                    self._spawn_worker(child)
                except OSError as exc:  # fork failed (no memory, process limit): try again later
                    child.deaths_in_a_row += 1
                    child.restart_at_s = now_s + restart_pause_s(child.deaths_in_a_row)
                    logger.error("Could not start worker process %d: %s.", child.index, exc)

    # -- stopping -----------------------------------------------------------------------------

    def _begin_stop(self, signum: signal.Signals) -> None:
        self.state = _State.STOPPING
        if self._stopping_since_s is None:
            self._stopping_since_s = time.monotonic()
        for child in self.workers:
            if child.restart_at_s is not None:
                # It was waiting to be replaced: its crash was handled, it says nothing of this stop.
                child.restart_at_s = None
                child.exitcode = None
        send_signal(self.workers, signum)
        if not any(c.alive for c in self.workers):
            self.forks.stop()

    def _kill_all(self) -> None:
        self.state = _State.KILLING
        send_signal(self.workers, signal.SIGKILL)
        self.forks.signal(signal.SIGKILL)

    def _finished(self) -> bool:
        stopping = self.state in (_State.STOPPING, _State.KILLING)
        return stopping and not any(c.alive for c in (*self.workers, *self.forks.children))

    def _exit_code(self) -> int:
        if self.fatal_code is not None:
            return self.fatal_code
        if self.state is _State.KILLING:
            return int(ExitCode.KILLED)
        # A worker process that retired as the stop began has nothing to report either.
        codes = [c.exitcode for c in self.workers if c.exitcode and c.exitcode != RETIRED]
        return int(ExitCode.KILLED) if codes else int(ExitCode.OK)


def restart_pause_s(deaths_in_a_row: int) -> float:
    """How long to wait before replacing a worker process that died ``deaths_in_a_row`` times in a row."""
    if deaths_in_a_row <= 1:
        return 0.0
    return float(min(MAX_RESTART_PAUSE_S, RESTART_PAUSE_S * 2 ** (deaths_in_a_row - 2)))
