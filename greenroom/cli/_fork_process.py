"""Fork processes: run ``--fork-function`` functions and middleware ``forks`` (e.g. Prometheus exposition)."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
from types import FrameType

from ._app import import_object
from ._child import ChildPipes, bootstrap_child, unblock_signals, watch_parent
from ._exit_codes import ExitCode

__all__ = ["ForkSpec", "run_fork"]


@dataclasses.dataclass(frozen=True)
class ForkSpec:
    """What a fork process needs to know (picklable, for ``--use-spawn``)."""

    index: int
    function: str
    verbose: int = 0
    skip_logging: bool = False


def run_fork(spec: ForkSpec, pipes: ChildPipes) -> None:
    """Entry point of a fork process: import ``module:function``, run it, exit with what it returns."""
    bootstrap_child(pipes, spec.verbose, spec.skip_logging)
    logger = logging.getLogger(f"greenroom.ForkProcess({spec.index})")
    _install_signal_handlers()
    unblock_signals()
    # The function may block anywhere; the only way to stop it is the TERM handler's SystemExit.
    watch_parent(pipes.control, lambda: os.kill(os.getpid(), signal.SIGTERM), logger)
    try:
        _, function = import_object(spec.function)
    except ImportError as exc:
        logger.critical("Could not import the fork function %r: %s", spec.function, exc)
        sys.exit(int(ExitCode.IMPORT))
    if not callable(function):
        logger.critical("The fork function %r is not callable.", spec.function)
        sys.exit(int(ExitCode.IMPORT))
    logger.info("Fork process running %s.", spec.function)
    result = function()
    sys.exit(result if isinstance(result, int) else int(ExitCode.OK))


def _install_signal_handlers() -> None:
    stopping = False

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            return  # a repeat (a process-group TERM arrives twice): the main process escalates with SIGKILL
        stopping = True
        # Raised in the main thread, wherever the fork function is blocked.
        sys.exit(int(ExitCode.OK))

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_stop)
