"""What worker and fork processes share: closing inherited handles, output redirection, watching the parent."""

from __future__ import annotations

import dataclasses
import logging
import random
import signal
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait

from ._log_pipes import configure_child_logging, redirect_child_output

__all__ = ["HANDLED_SIGNALS", "ChildPipes", "bootstrap_child", "unblock_signals", "watch_parent"]

#: The signals the main process blocks while it starts a child, so that the child receives them
#: only once it has installed its own handlers.
HANDLED_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGHUP})


@dataclasses.dataclass
class ChildPipes:
    """The pipe ends a child receives.

    Parameters:
      log: Write end of the child's log pipe.
      control: The child's end of its control pipe: the child reports its boot on it, and sees
        end-of-file there when the main process is gone.
      close_conns: Pipe ends the child inherited through ``fork`` that belong to the main process:
        as long as a child holds the main process's end of a control pipe, the child at the other
        end never sees end-of-file there. (Read ends of log pipes may stay open: only write ends
        decide end-of-file. Under gevent, closing a descriptor the inherited event loop watches
        would even abort the child.)
    """

    log: Connection
    control: Connection
    close_conns: tuple[Connection, ...] = ()


def bootstrap_child(pipes: ChildPipes, verbose: int, skip_logging: bool) -> None:
    """Make a fresh child process independent of the main process's handles and route its output."""
    signal.set_wakeup_fd(-1)
    for conn in pipes.close_conns:
        conn.close()
    redirect_child_output(pipes.log.fileno())
    pipes.log.close()
    configure_child_logging(verbose, skip_logging)
    # A forked child starts with its parent's random state; every worker must draw differently.
    random.seed()


def unblock_signals() -> None:
    """Let the signals the main process blocked around the fork through (after handlers are installed)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED_SIGNALS)


def watch_parent(control: Connection, on_gone: Callable[[], None], logger: logging.Logger) -> threading.Thread:
    """Call ``on_gone`` from a daemon thread once the main process's end of ``control`` is closed."""

    def run() -> None:
        while True:
            try:
                # wait() first: it goes through select, which gevent makes cooperative; a bare
                # read would block every greenlet of the process.
                wait([control])
                control.recv_bytes()
            except (EOFError, OSError):
                break
        logger.warning("The main process is gone; shutting down.")
        on_gone()

    thread = threading.Thread(target=run, name="ParentWatcher", daemon=True)
    thread.start()
    return thread
