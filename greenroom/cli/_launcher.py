"""Starting the children of the main process: each with a log pipe and a control pipe.

A :class:`Child` is one position of the tree (a worker process, a fork process) and the process
that currently fills it; the :class:`Launcher` starts processes for positions, with the handled
signals blocked around the fork so that a child receives them only once it has its handlers.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from ._args import CliOptions
from ._child import HANDLED_SIGNALS, ChildPipes
from ._log_pipes import LogForwarder

__all__ = ["Child", "Launcher", "describe_exit", "send_signal", "signals_blocked"]


@dataclasses.dataclass
class Child:
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
    #: The pid of the last process in this position, kept once it exited.
    last_pid: int | None = None
    #: Processes of this position that died holding messages: the next one returns them at boot.
    dead_pids: tuple[int, ...] = ()
    #: Whether the main process killed the current process because it froze (see ``_frozen``).
    killed_frozen: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None


class Launcher:
    """Starts child processes, each with a log pipe (to the forwarder) and a control pipe."""

    def __init__(self, options: CliOptions, forwarder: LogForwarder, others: Callable[[], list[Child]]) -> None:
        self.forwarder = forwarder
        # Typed loosely: typeshed's BaseContext does not declare Process.
        self.context: Any = multiprocessing.get_context("spawn" if options.use_spawn else None)
        self._fork_start = self.context.get_start_method() == "fork"
        #: Every child of the tree, so that a forked child can close the main process's pipe ends.
        self._others = others

    def spawn(self, child: Child, target: Callable[..., None], spec: object, name: str, *, daemon: bool) -> None:
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
            with signals_blocked():
                process.start()
        except BaseException:
            for conn in (log_r, log_w, main_end, child_end):
                conn.close()
            raise
        log_w.close()
        child_end.close()
        self.forwarder.add(detach(log_r))
        child.process = process
        child.control = main_end
        child.booted = False
        child.started_at_s = time.monotonic()
        child.restart_at_s = None
        child.exitcode = None
        child.killed_frozen = False


def send_signal(children: list[Child], signum: signal.Signals) -> None:
    for child in children:
        if child.process is not None and child.process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.process.pid, signum)


def detach(conn: Connection) -> int:
    """A plain descriptor for the read end of a pipe (the log forwarder owns and closes it)."""
    fd = os.dup(conn.fileno())
    conn.close()
    return fd


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


@contextlib.contextmanager
def signals_blocked() -> Iterator[None]:
    """Block the handled signals in this thread; a child forked meanwhile starts with them blocked."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
