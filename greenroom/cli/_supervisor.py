"""The main process: start worker and fork processes, supervise them, act on signals.

Signal handlers only queue the signal; the supervisor loop in the main thread does the work
(forwarding, killing, restarting, reloading). The loop sleeps in one ``wait`` on every child's
exit sentinel, the control pipes of booting workers and the signal wake-up socket, so it reacts
at once to any of them without polling.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import logging
import math
import multiprocessing
import os
import queue
import signal
import socket
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from ._args import CliOptions, broker_url_from_environment
from ._child import HANDLED_SIGNALS, ChildPipes
from ._exit_codes import ExitCode
from ._fork_process import ForkSpec, run_fork
from ._log_pipes import LogForwarder
from ._reexec import hold_signals, release_signals
from ._worker_process import WorkerSpec, run_worker

__all__ = ["Supervisor", "restart_pause_s"]

#: First pause (s) before replacing a worker process that died; it doubles with each death in a row.
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


@dataclasses.dataclass
class _Child:
    """One worker position (or one fork process) and its current process."""

    index: int
    process: BaseProcess | None = None
    #: The main process's end of the control pipe; closing it tells the child to go away.
    control: Connection | None = None
    booted: bool = False
    #: Whether the control pipe still has to be watched (until the boot report arrives).
    awaiting_report: bool = False
    started_at_s: float = 0.0
    boot_deadline_s: float = math.inf
    deaths_in_a_row: int = 0
    restart_at_s: float | None = None
    #: Burst mode: the worker drained its queues and exited 0.
    done: bool = False
    exitcode: int | None = None

    @property
    def alive(self) -> bool:
        return self.process is not None


class _Launcher:
    """Starts child processes, each with a log pipe (to the forwarder) and a control pipe."""

    def __init__(self, options: CliOptions, forwarder: LogForwarder, others: Callable[[], list[_Child]]) -> None:
        self.forwarder = forwarder
        # Typed loosely: typeshed's BaseContext does not declare Process.
        self.context: Any = multiprocessing.get_context("spawn" if options.use_spawn else None)
        self._fork_start = self.context.get_start_method() == "fork"
        #: Every child of the tree, so that a forked child can close the main process's pipe ends.
        self._others = others

    def spawn(self, child: _Child, target: Callable[..., None], spec: object, name: str, *, daemon: bool) -> None:
        """Start ``target(spec, pipes)`` in a new process for ``child``."""
        log_r, log_w = self.context.Pipe(duplex=False)
        main_end, child_end = self.context.Pipe(duplex=True)
        inherited: tuple[Any, ...] = ()
        if self._fork_start:
            # A forked child gets a copy of every descriptor of this process. It must close the
            # main process's ends of the control pipes, or their children never see end-of-file.
            inherited = (log_r, main_end, *[c.control for c in self._others() if c.control is not None])
        pipes = ChildPipes(log=log_w, control=child_end, close_conns=inherited)
        process = self.context.Process(target=target, args=(spec, pipes), name=name, daemon=daemon)
        try:
            with _signals_blocked():
                process.start()
        except BaseException:
            for conn in (log_r, log_w, main_end, child_end):
                conn.close()
            raise
        log_w.close()
        child_end.close()
        self.forwarder.add(_detach(log_r))
        child.process, child.control, child.booted = process, main_end, False
        child.started_at_s, child.restart_at_s, child.exitcode = time.monotonic(), None, None


class _ForkProcesses:
    """The fork processes: ``--fork-function`` ones and those the middleware of the first worker asks for."""

    def __init__(self, launcher: _Launcher, verbose: int) -> None:
        self.launcher = launcher
        self.verbose = verbose
        self.children: list[_Child] = []
        #: Middleware fork functions reported by the first worker to boot.
        self.middleware_functions: list[str] | None = None
        self._middleware_started = False
        self._stopped = False

    def start(self, functions: list[str]) -> None:
        """Start one fork process per function (``module:name``)."""
        for function in functions:
            child = _Child(len(self.children))
            spec = ForkSpec(index=child.index, function=function, verbose=self.verbose)
            self.launcher.spawn(child, run_fork, spec, f"ForkProcess({child.index})", daemon=True)
            self.children.append(child)

    def start_middleware_forks(self) -> None:
        """Start the middleware's fork processes, once, when a worker has reported them."""
        if self.middleware_functions is not None and not self._middleware_started:
            self._middleware_started = True
            self.start(self.middleware_functions)

    def signal(self, signum: signal.Signals) -> None:
        """Send a signal to every fork process."""
        _send(self.children, signum)

    def stop(self) -> None:
        """Ask every fork process to stop, once: a second TERM makes a fork process exit with status 1."""
        if not self._stopped:
            self._stopped = True
            self.signal(signal.SIGTERM)


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
        self.workers = [_Child(i) for i in range(options.processes)]
        self.launcher = _Launcher(options, forwarder, lambda: [*self.workers, *self.forks.children])
        self.forks = _ForkProcesses(self.launcher, options.verbose)
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

    # -- top level ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start the workers, supervise until the tree is stopped; returns the exit code."""
        previous_handlers: dict[signal.Signals, Any] = {}
        code: int | None = None
        try:
            with _signals_blocked():
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
        """Release the signal wake-up socket (``run`` does it when it returns)."""
        self._wakeup_r.close()
        self._wakeup_w.close()

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
            self._restart_due_workers()
        return self._exit_code()

    # -- spawning -----------------------------------------------------------------------------

    def _spawn_worker(self, child: _Child) -> None:
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
        )
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
                self.reload, self._told_to_stop = False, True
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

    def _on_booted(self, child: _Child, middleware_forks: list[str]) -> None:
        child.booted = True
        if self.forks.middleware_functions is None:
            self.forks.middleware_functions = middleware_forks
        if self.state is _State.BOOTING and all(c.booted for c in self.workers):
            self._finish_boot()
        elif self.state is _State.RUNNING:
            self.forks.start_middleware_forks()  # the boot wait had given up before any worker booted

    def _finish_boot(self) -> None:
        self.state = _State.RUNNING
        booted = sum(c.booted for c in self.workers)
        self.forks.start(list(self.options.forks))
        self.forks.start_middleware_forks()
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
            with _signals_blocked():
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
                    logger.error("Fork process %d exited with %s.", child.index, _describe_exit(code))
        if self.state is _State.RUNNING and self.options.burst and all(c.done for c in self.workers):
            logger.info("Every worker process drained its queues.")
            self._begin_stop(signal.SIGTERM)
        if self.state is _State.STOPPING and not any(c.alive for c in self.workers):
            self.forks.stop()

    def _release(self, child: _Child) -> int:
        assert child.process is not None
        code = child.process.exitcode
        assert code is not None
        if child.control is not None:
            child.control.close()
        child.process.close()
        child.process, child.control, child.awaiting_report, child.exitcode = None, None, False, code
        return code

    def _on_worker_exit(self, child: _Child, code: int) -> None:
        if self.state in (_State.STOPPING, _State.KILLING):
            return
        # A worker that cannot boot because the code does not import or the broker cannot be
        # reached ends the run, at first boot and after a replacement or reload alike.
        cannot_boot = code in (ExitCode.IMPORT, ExitCode.CONNECTION)
        if not child.booted and (self.state is _State.BOOTING or cannot_boot):
            logger.critical("Worker process %d failed to boot (%s).", child.index, _describe_exit(code))
            self.fatal_code = code if code > 0 else int(ExitCode.KILLED)
            self._begin_stop(signal.SIGTERM)
            return
        if self.options.burst and code == 0:
            child.done = True
            return
        lived_s = time.monotonic() - child.started_at_s
        child.deaths_in_a_row = 1 if lived_s >= STABLE_AFTER_S else child.deaths_in_a_row + 1
        pause_s = restart_pause_s(child.deaths_in_a_row)
        child.restart_at_s = time.monotonic() + pause_s
        logger.error(
            "Worker process %d %s %s; starting a new one in %.1f s.",
            child.index,
            "died with" if child.booted else "failed to boot with",
            _describe_exit(code),
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
        for child in self.workers:
            if child.restart_at_s is not None:
                # It was waiting to be replaced: its crash was handled, it says nothing of this stop.
                child.restart_at_s, child.exitcode = None, None
        _send(self.workers, signum)
        if not any(c.alive for c in self.workers):
            self.forks.stop()

    def _kill_all(self) -> None:
        self.state = _State.KILLING
        _send(self.workers, signal.SIGKILL)
        self.forks.signal(signal.SIGKILL)

    def _finished(self) -> bool:
        stopping = self.state in (_State.STOPPING, _State.KILLING)
        return stopping and not any(c.alive for c in (*self.workers, *self.forks.children))

    def _exit_code(self) -> int:
        if self.fatal_code is not None:
            return self.fatal_code
        if self.state is _State.KILLING:
            return int(ExitCode.KILLED)
        codes = [c.exitcode for c in self.workers if c.exitcode]
        return int(ExitCode.KILLED) if codes else int(ExitCode.OK)


def restart_pause_s(deaths_in_a_row: int) -> float:
    """How long to wait before replacing a worker process that died ``deaths_in_a_row`` times in a row."""
    return float(min(MAX_RESTART_PAUSE_S, RESTART_PAUSE_S * 2 ** max(0, deaths_in_a_row - 1)))


def _send(children: list[_Child], signum: signal.Signals) -> None:
    for child in children:
        if child.process is not None and child.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signum)


def _detach(conn: Connection) -> int:
    """A plain descriptor for the read end of a pipe (the log forwarder owns and closes it)."""
    fd = os.dup(conn.fileno())
    conn.close()
    return fd


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Block the handled signals in this thread; a child forked meanwhile starts with them blocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
