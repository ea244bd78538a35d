"""The command-line arguments of ``greenroom`` (Dramatiq-compatible flags plus ``--burst`` and the scheduler's).

Besides :mod:`greenroom._settings`, which reads the settings the library needs, this package is
the only place where greenroom reads environment variables; what it reads is passed down as
arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from .. import __version__, _settings

__all__ = ["CliOptions", "make_argument_parser", "options_from_namespace", "redact_url"]

#: Default number of worker processes.
DEFAULT_PROCESSES = os.cpu_count() or 1
#: Default number of worker threads per process.
DEFAULT_THREADS = 8
#: Bounds (ms) of ``--worker-fork-timeout``.
MIN_FORK_TIMEOUT_MS = 10.0
MAX_FORK_TIMEOUT_MS = 1_800_000.0
#: Default of ``--time-limit-grace`` (ms).
DEFAULT_TIME_LIMIT_GRACE_MS = 5_000
#: Patterns always watched by ``--watch``; ``-i`` appends to them.
DEFAULT_WATCH_INCLUDE = ("**.py",)

_EPILOG = """\
examples:
  greenroom app                     run workers for the actors of app.py with the global broker
  greenroom app:broker              use the broker object app.broker
  greenroom app:setup               call app.setup(), then use the global broker
  greenroom app more.tasks -p 2 -t 16 -Q default emails
  greenroom app --burst             process every queued message, then exit
  greenroom app --no-scheduler      run workers only: another run enqueues the periodic jobs
  greenroom app --scheduler-only    run only the scheduler of periodic jobs, no workers
  greenroom-gevent app -p 8 -t 250  8 processes of 250 greenlets

signals: INT or TERM stop gracefully (a second one kills the workers), HUP reloads the code.
"""


@dataclasses.dataclass(frozen=True)
class CliOptions:
    """The parsed command line, typed."""

    broker: str
    modules: tuple[str, ...] = ()
    processes: int = DEFAULT_PROCESSES
    threads: int = DEFAULT_THREADS
    path: tuple[str, ...] = (".",)
    queues: frozenset[str] | None = None
    pid_file: str | None = None
    log_file: str | None = None
    skip_logging: bool = False
    use_spawn: bool = False
    forks: tuple[str, ...] = ()
    worker_fork_timeout_ms: float = 30_000.0
    worker_shutdown_timeout_ms: int = 600_000
    #: ``--max-tasks-per-child``: a worker process is replaced after starting this many messages.
    max_tasks_per_child: int | None = None
    #: ``--max-memory-per-child``: a worker process is replaced once its resident memory reaches this (MB).
    max_memory_per_child_mb: int | None = None
    #: ``--time-limit-grace``: how long (ms) an actor may ignore the interrupt of its time limit (or of
    #: the shutdown timeout) before its message counts as failed and its worker process is replaced.
    time_limit_grace_ms: int = DEFAULT_TIME_LIMIT_GRACE_MS
    watch: str | None = None
    watch_use_polling: bool = False
    include_patterns: tuple[str, ...] = DEFAULT_WATCH_INCLUDE
    exclude_patterns: tuple[str, ...] = ()
    verbose: int = 0
    burst: bool = False
    #: Whether this run schedules periodic jobs (in its first worker process).
    scheduler: bool = True
    #: Run one process that schedules and consumes nothing.
    scheduler_only: bool = False
    #: ``--health-port``: answer ``GET /healthz`` on this port (else ``greenroom_health_port``, else none).
    health_port: int | None = None
    #: ``--health-host``: where that server listens (else ``greenroom_health_host``, else 127.0.0.1).
    health_host: str | None = None


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` accepting integers of at least ``minimum``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not an integer") from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} must be at least {minimum}")
        return number

    return parse


def _fork_timeout(value: str) -> float:
    try:
        timeout_ms = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of milliseconds") from None
    if not MIN_FORK_TIMEOUT_MS <= timeout_ms <= MAX_FORK_TIMEOUT_MS:
        raise argparse.ArgumentTypeError(
            f"{value!r} is out of range ({MIN_FORK_TIMEOUT_MS:g} to {MAX_FORK_TIMEOUT_MS:g} ms)"
        )
    return timeout_ms


def _directory(value: str) -> str:
    if not os.path.isdir(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a directory")
    return os.path.abspath(value)


def _module_function(value: str) -> str:
    module, _, function = value.partition(":")
    if not module or not function:
        raise argparse.ArgumentTypeError(f"{value!r} is not of the form module:function")
    return value


def make_argument_parser(prog: str = "greenroom") -> argparse.ArgumentParser:
    """The argument parser of the ``greenroom`` command (Dramatiq's flags and destinations, plus ``--burst``)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run greenroom workers.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EPILOG,
    )
    parser.add_argument("broker", help="the broker: 'module', 'module:broker_attribute' or 'module:callable'")
    parser.add_argument("modules", metavar="module", nargs="*", help="additional modules to import in each worker")
    _add_process_arguments(parser)
    _add_scheduler_arguments(parser)
    _add_watch_arguments(parser)
    _add_health_arguments(parser)
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("--verbose", "-v", action="count", default=0, help="turn on debug logging")
    return parser


def _add_process_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    positive = _int_at_least(1)
    add("--processes", "-p", type=positive, default=DEFAULT_PROCESSES, help="worker processes (default: CPUs)")
    add("--threads", "-t", type=positive, default=DEFAULT_THREADS, help="worker threads per process (default: 8)")
    add("--path", "-P", nargs="*", type=str, default=".", help="directories added to the import path (default: .)")
    add("--queues", "-Q", nargs="*", type=str, help="consume only these queues (default: all)")
    add("--pid-file", type=str, help="write the PID of the main process to this file")
    add("--log-file", type=str, help="append all logs to this file (default: stderr)")
    add("--skip-logging", action="store_true", help="do not configure logging in the worker processes")
    add("--use-spawn", action="store_true", help="start processes by spawning rather than forking")
    add(
        "--fork-function",
        "-f",
        action="append",
        dest="forks",
        default=[],
        type=_module_function,
        metavar="MODULE:FUNCTION",
        help="run this function in a process of its own (repeatable)",
    )
    add(
        "--worker-fork-timeout",
        type=_fork_timeout,
        default=30_000.0,
        metavar="MS",
        help="how long to wait for each worker process to boot (default: 30000)",
    )
    add(
        "--worker-shutdown-timeout",
        type=_int_at_least(0),
        default=600_000,
        metavar="MS",
        help="how long worker processes wait for running messages on shutdown; those still running are "
        "then interrupted, and taken over as failed after --time-limit-grace (default: 600000)",
    )
    _add_recycling_arguments(parser)
    add(
        "--burst",
        action="store_true",
        help="process until every consumed queue is empty (delayed messages included), then exit 0",
    )


def _add_recycling_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--max-tasks-per-child",
        type=_int_at_least(1),
        metavar="N",
        help="replace a worker process once it has started N messages (default: never)",
    )
    add(
        "--max-memory-per-child",
        type=_int_at_least(1),
        metavar="MB",
        help="replace a worker process once its resident memory reaches MB megabytes, checked every second "
        "(default: never)",
    )
    add(
        "--time-limit-grace",
        type=_int_at_least(0),
        default=DEFAULT_TIME_LIMIT_GRACE_MS,
        metavar="MS",
        help="how long an actor may ignore the interrupt of its time limit before its message counts as "
        f"failed and its worker process is replaced (default: {DEFAULT_TIME_LIMIT_GRACE_MS})",
    )


def _add_scheduler_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--no-scheduler",
        action="store_true",
        help="do not schedule periodic jobs in this run (other runs do; --burst implies it)",
    )
    group.add_argument(
        "--scheduler-only",
        action="store_true",
        help="run one process that schedules periodic jobs and runs no workers",
    )


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is out of range (1 to 65535)")
    return port


def _add_health_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--health-port",
        type=_port,
        metavar="PORT",
        help="answer GET /healthz on this port (default: greenroom_health_port; with metrics on, "
        "the metrics server answers it too)",
    )
    add("--health-host", metavar="HOST", help="where the health port listens (default: 127.0.0.1)")


def _add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--watch", type=_directory, metavar="DIR", help="reload the workers when files under DIR change")
    add("--watch-use-polling", action="store_true", help="poll the file system instead of using OS events")
    add(
        "-i",
        "--watch-include",
        action="append",
        dest="include_patterns",
        default=None,
        metavar="PATTERN",
        help="watch files matching this pattern, besides **.py (repeatable)",
    )
    add(
        "-x",
        "--watch-exclude",
        action="append",
        dest="exclude_patterns",
        default=None,
        metavar="PATTERN",
        help="ignore files matching this pattern (repeatable)",
    )


def options_from_namespace(namespace: argparse.Namespace) -> CliOptions:
    """Turn a parsed namespace (ours, or one a wrapper built with our parser) into :class:`CliOptions`."""
    path = namespace.path
    paths = (path,) if isinstance(path, str) else tuple(path or ())
    includes = list(DEFAULT_WATCH_INCLUDE)
    for pattern in getattr(namespace, "include_patterns", None) or ():
        if pattern not in includes:
            includes.append(pattern)
    return CliOptions(
        broker=namespace.broker,
        modules=tuple(namespace.modules or ()),
        processes=namespace.processes,
        threads=namespace.threads,
        path=paths,
        queues=frozenset(namespace.queues) if namespace.queues else None,
        pid_file=namespace.pid_file,
        log_file=namespace.log_file,
        skip_logging=bool(namespace.skip_logging),
        use_spawn=bool(namespace.use_spawn),
        forks=tuple(namespace.forks or ()),
        worker_fork_timeout_ms=float(namespace.worker_fork_timeout),
        worker_shutdown_timeout_ms=int(namespace.worker_shutdown_timeout),
        max_tasks_per_child=getattr(namespace, "max_tasks_per_child", None),
        max_memory_per_child_mb=getattr(namespace, "max_memory_per_child", None),
        time_limit_grace_ms=int(getattr(namespace, "time_limit_grace", DEFAULT_TIME_LIMIT_GRACE_MS)),
        watch=namespace.watch,
        watch_use_polling=bool(namespace.watch_use_polling),
        include_patterns=tuple(includes),
        exclude_patterns=tuple(getattr(namespace, "exclude_patterns", None) or ()),
        verbose=int(namespace.verbose or 0),
        burst=bool(getattr(namespace, "burst", False)),
        scheduler=not getattr(namespace, "no_scheduler", False),
        scheduler_only=bool(getattr(namespace, "scheduler_only", False)),
        health_port=getattr(namespace, "health_port", None),
        health_host=getattr(namespace, "health_host", None),
    )


def broker_url_from_environment() -> str | None:
    """The broker URL the environment configures, if any (used to name the broker in errors)."""
    return _settings.broker_url()


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        return "<unparsable URL>"
