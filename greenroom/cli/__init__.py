"""The ``greenroom`` command line: a main process supervising worker processes (SPEC §6).

``main`` is a composition of small steps: parse the arguments, prepare the environment of the
main process (import path, PID file, logging), run the supervisor until the tree stops, shut the
log stream down, and re-execute the same command when ``HUP`` asked for a reload. The main
process never imports the application: worker processes do.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import NoReturn

from .. import __version__, _settings
from .._concurrency import remove_slots
from ..threading import is_gevent_active
from ._args import CliOptions, make_argument_parser, options_from_namespace
from ._exit_codes import ExitCode, StartupError
from ._frozen import remove_stuck
from ._health import prepare_health
from ._leftovers import remove_leftovers
from ._log_pipes import LogForwarder, LogOutput, configure_main_logging
from ._metrics import prepare_metrics_directory
from ._pidfile import PidFileError, remove_pidfile, write_pidfile
from ._reexec import reexec, take_held_signals
from ._supervisor import Supervisor
from ._watch import check_watch_prerequisites, start_watcher

__all__ = ["ExitCode", "main", "make_argument_parser"]

logger = logging.getLogger("greenroom.MainProcess")


def main(args: argparse.Namespace | None = None) -> int:
    """Run the ``greenroom`` command.

    Parameters:
      args: A namespace parsed with :func:`make_argument_parser`; ``sys.argv`` is parsed when ``None``
        (a bad flag then prints the usage and exits with status 2).

    Returns:
      The exit code (see :class:`ExitCode`).
    """
    options = parse_args(args)
    # The worker processes of this tree share max_concurrency slots (a HUP re-exec keeps the pid).
    os.environ[_settings.TREE_ID_ENV] = str(os.getpid())
    try:
        output = prepare_environment(options)
    except StartupError as exc:
        sys.stderr.write(f"greenroom: {exc}\n")
        return int(exc.code)
    return run(options, output)


def parse_args(args: argparse.Namespace | None) -> CliOptions:
    """Typed options from a pre-parsed namespace, or from ``sys.argv``."""
    namespace = make_argument_parser().parse_args() if args is None else args
    return options_from_namespace(namespace)


def prepare_environment(options: CliOptions) -> LogOutput:
    """Set up the main process: import path, ``--watch`` checks, PID file, metrics and health, and the log stream.

    Raises:
      StartupError: When one of them is not possible.
    """
    if options.scheduler_only and options.burst:
        raise StartupError(ExitCode.IMPORT, "--scheduler-only cannot be combined with --burst (nothing to drain)")
    for path in options.path:
        sys.path.insert(0, path)
    if options.watch:
        problem = check_watch_prerequisites()
        if problem:
            raise StartupError(ExitCode.IMPORT, problem)
    if options.pid_file:
        _write_pidfile(options.pid_file)
    metrics_directory = prepare_metrics_directory()
    prepare_health(options, metrics=metrics_directory is not None)
    try:
        output = LogOutput(options.log_file)
    except OSError as exc:
        raise StartupError(ExitCode.IMPORT, f"cannot open the log file {options.log_file!r}: {exc.strerror}") from exc
    if not options.skip_logging:
        configure_main_logging(output, options.verbose)
    return output


def _write_pidfile(path: str) -> None:
    try:
        write_pidfile(path)
    except PidFileError as exc:
        raise StartupError(ExitCode.PIDFILE, str(exc)) from exc
    atexit.register(remove_pidfile, path, os.getpid())


def run(options: CliOptions, output: LogOutput) -> int:
    """Supervise the worker and fork processes until they stop; returns the exit code."""
    logger.info("Greenroom %r is booting up.", __version__)
    for path in remove_leftovers():
        logger.info("Removed %s, left by a greenroom whose main process is gone.", path)
    forwarder = LogForwarder(output)
    stop_watching: list[Callable[[], None]] = []
    supervisor = Supervisor(
        options,
        forwarder,
        gevent=is_gevent_active(),
        on_ready=lambda: stop_watching.extend(_start_watching(options)),
        held_signals=take_held_signals(),
    )
    try:
        code = supervisor.run()
    finally:
        for stop in stop_watching:
            stop()
        forwarder.stop()
    if supervisor.reload:
        _reexec(output, supervisor.held_signals)  # the same tree goes on: its slots stay
    tree_id = _settings.tree_id()
    if tree_id is not None:
        remove_slots(tree_id)
        remove_stuck(tree_id)
    logger.info("Greenroom stopped (exit code %d).", code)
    output.close()
    return code


def _start_watching(options: CliOptions) -> list[Callable[[], None]]:
    if not options.watch:
        return []
    logger.info("Watching %s for changes.", options.watch)
    # The PID is taken now: under gevent, a forked worker inherits the watcher as a greenlet.
    main_pid = os.getpid()
    return [
        start_watcher(
            options.watch,
            # Under gevent an inotify read would block the whole main process; polling yields.
            polling=options.watch_use_polling or is_gevent_active(),
            include=options.include_patterns,
            exclude=options.exclude_patterns,
            on_change=lambda: os.kill(main_pid, signal.SIGHUP),  # through the supervisor's handler
        )
    ]


def _reexec(output: LogOutput, held: frozenset[signal.Signals]) -> NoReturn:
    """Replace this process with a fresh run of the same command: new code, same PID."""
    logger.info("Reloading: starting greenroom again.")
    output.close()
    reexec(held)
