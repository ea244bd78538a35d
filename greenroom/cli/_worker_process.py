"""The worker process: import the broker and the application, run a :class:`~greenroom.Worker`, stop on a signal."""

from __future__ import annotations

import dataclasses
import logging
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from ..broker import Broker
from ..common import q_name
from ..errors import BrokerConnectionError, QueueJoinTimeout
from ..middleware.time_limit import TimeLimit
from ..threading import is_gevent_active
from ..worker import Worker
from ._app import import_broker, import_module, import_object
from ._args import redact_url
from ._child import ChildPipes, bootstrap_child, unblock_signals, watch_parent
from ._exit_codes import RETIRED, ExitCode, StartupError
from ._frozen import StuckGuard, StuckRegistry
from ._health import start_health_reporter
from ._liveness import Board
from ._metrics import install_metrics_middleware
from ._scheduler_thread import start_scheduler
from ._warden import Warden

__all__ = ["WorkerSpec", "import_broker", "import_module", "import_object", "run_worker"]

#: How often (s) the main thread of a worker process checks whether to stop.
POLL_INTERVAL_S = 0.1
#: How often (s) a burst worker checks whether its queues are drained.
BURST_CHECK_INTERVAL_S = 0.5
#: How long (ms) the connection probe at boot waits on the broker.
PROBE_TIMEOUT_MS = 50
#: How long (ms) one burst emptiness check may wait on the broker: some brokers' ``join`` wants
#: several consecutive empty looks before it returns (RabbitMQ's takes about one second).
BURST_PROBE_TIMEOUT_MS = 3000
#: What ``Worker.stop`` gets beyond the shutdown timeout and the grace period: the warden takes
#: the last stuck message over within about this much (ms) after them.
STOP_MARGIN_MS = 1000


@dataclasses.dataclass(frozen=True)
class WorkerSpec:
    """What a worker process needs to know (picklable, for ``--use-spawn``)."""

    index: int
    broker: str
    modules: tuple[str, ...] = ()
    queues: frozenset[str] | None = None
    threads: int = 8
    shutdown_timeout_ms: int = 600_000
    burst: bool = False
    verbose: int = 0
    skip_logging: bool = False
    gevent: bool = False
    #: The broker URL from the environment, to name the broker in connection errors.
    broker_url: str | None = None
    #: Whether to run a Worker (not with ``--scheduler-only``).
    consume: bool = True
    #: Whether to run the scheduler of periodic jobs in this process.
    scheduler: bool = False
    #: Worker processes of this position that died: their messages are returned at boot.
    recover_pids: tuple[int, ...] = ()
    #: Retire after starting this many messages (None: never).
    max_tasks: int | None = None
    #: Retire once the resident memory reaches this many MB (None: never).
    max_memory_mb: int | None = None
    #: How long (ms) an actor may ignore an interrupt (time limit, shutdown timeout) before its
    #: message is taken over as failed.
    time_limit_grace_ms: int = 5000
    #: The tree's liveness board (path, slots, runs per slot) and stuck registry (a directory),
    #: shared with the main process (see ``_frozen``); None outside a tree.
    board: tuple[str, int, int] | None = None
    stuck_dir: str | None = None


class _StopState:
    """Set from signal handlers and the parent watcher; read by the main thread's poll loop.

    Plain attributes on purpose: a signal handler must not take the lock inside an ``Event``,
    which the interrupted main thread may be holding.
    """

    def __init__(self) -> None:
        self.stop_requested = False


def run_worker(spec: WorkerSpec, pipes: ChildPipes) -> None:
    """Entry point of a worker process; exits with an :class:`ExitCode`, or :data:`RETIRED`."""
    if spec.gevent and not is_gevent_active():
        # A spawned child imported greenroom (to find this function) before it could patch.
        from ._gevent import patch_and_reimport

        fresh = patch_and_reimport(__name__)
        fresh.run_worker(spec, pipes)
        return
    bootstrap_child(pipes, spec.verbose, spec.skip_logging)
    logger = logging.getLogger(f"greenroom.WorkerProcess({spec.index})")
    state = _StopState()
    _install_signal_handlers(state)
    unblock_signals()
    watch_parent(pipes.control, lambda: setattr(state, "stop_requested", True), logger)
    sys.exit(int(_boot_and_run(spec, pipes, state, logger)))


def _install_signal_handlers(state: _StopState) -> None:
    def on_stop(signum: int, frame: FrameType | None) -> None:
        # Repeats are ignored: a TERM sent to the whole process group (systemd, supervisord)
        # reaches a worker twice, once directly and once forwarded. The main process kills the
        # workers itself (SIGKILL) when it gets a second TERM.
        state.stop_requested = True

    # INT is ignored: Ctrl-C reaches the whole process group and the main process forwards it as TERM.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGHUP, on_stop)


def _boot_and_run(spec: WorkerSpec, pipes: ChildPipes, state: _StopState, logger: logging.Logger) -> int:
    try:
        board = Board(*spec.board) if spec.board is not None else None
        broker, worker, forks = _boot(spec, board)
    except StartupError as failure:
        logger.critical("%s", failure)
        _report(pipes, ("failed", int(failure.code)))
        return failure.code
    except Exception:  # process top level: any other boot error crashes this worker
        logger.critical("Worker process failed to boot.", exc_info=True)
        _report(pipes, ("failed", int(ExitCode.KILLED)))
        return ExitCode.KILLED
    _report(pipes, ("booted", forks))
    scheduler = start_scheduler(broker, logger) if spec.scheduler else None
    health = start_health_reporter(spec.index, worker)
    warden = _start_warden(spec, broker, worker, logger, board)
    logger.info("Worker process is ready for action." if worker is not None else "Scheduler process is ready.")
    _wait_until_stopped(spec, broker, worker, state, logger)
    # Set by the worker threads (max_tasks) or the warden (memory, an actor stuck past its time limit).
    retire_reason = worker.budget.reason if worker is not None else None
    if retire_reason is not None:
        logger.info("Worker process retires: %s. The main process replaces it.", retire_reason)
    logger.info("Stopping worker process...")
    if health is not None:
        health.stop()  # a stopping process takes no more work: /healthz stops counting it at once
    if scheduler is not None:
        # First: its leases go to another run at once, rather than when they expire.
        scheduler.stop()
    if worker is not None and warden is not None:
        warden.shutting_down(spec.shutdown_timeout_ms)
        worker.stop(timeout=spec.shutdown_timeout_ms + spec.time_limit_grace_ms + STOP_MARGIN_MS)
    broker.close()
    if warden is not None:
        warden.stop()  # last: it beats until the end, so the main process can tell slow from frozen
    logger.info("Worker process stopped.")
    return RETIRED if retire_reason is not None else ExitCode.OK


def _start_warden(
    spec: WorkerSpec, broker: Broker, worker: Worker | None, logger: logging.Logger, board: Board | None
) -> Warden | None:
    if worker is None:
        return None
    time_limit = next((m for m in broker.middleware if isinstance(m, TimeLimit)), None)
    warden = Warden(
        worker,
        time_limit,
        max_memory_mb=spec.max_memory_mb,
        grace_ms=spec.time_limit_grace_ms,
        logger=logger,
        board=(board, spec.index) if board is not None else None,
    )
    warden.start()
    return warden


def _recover(broker: Broker, pids: tuple[int, ...]) -> None:
    """Return the messages that worker processes of this tree held when they died (this host)."""
    host = socket.gethostname()
    for pid in pids:
        if broker.recover_process(host, pid):
            logging.getLogger("greenroom.WorkerProcess").warning(
                "Returned the messages of dead worker process %d to their queues.", pid
            )


def _boot(spec: WorkerSpec, board: Board | None) -> tuple[Broker, Worker | None, list[str]]:
    try:
        broker = import_broker(spec.broker)
        install_metrics_middleware(broker)
        if board is not None and spec.stuck_dir is not None:
            time_limit = next((m for m in broker.middleware if isinstance(m, TimeLimit)), None)
            broker.add_middleware(StuckGuard(StuckRegistry(spec.stuck_dir, board), spec.index, time_limit))
        broker.emit_after("process_boot")
        for module in spec.modules:
            import_module(module)
    except ImportError as exc:
        raise StartupError(ExitCode.IMPORT, f"Could not import {_describe_import(spec, exc)}: {exc}") from exc
    forks = [f"{fork.__module__}:{fork.__qualname__}" for m in broker.middleware for fork in m.forks]
    worker = None
    if spec.consume:
        worker = Worker(
            broker,
            queues=set(spec.queues) if spec.queues else None,
            worker_threads=spec.threads,
            max_tasks=spec.max_tasks,
        )
    try:
        _check_connection(broker, spec)
        _recover(broker, spec.recover_pids)
        if worker is not None:
            worker.start()
    except (BrokerConnectionError, OSError) as exc:
        where = _describe_broker(broker, spec)
        raise StartupError(ExitCode.CONNECTION, _scrub(f"Cannot connect to the broker {where}: {exc}", spec)) from exc
    return broker, worker, forks


def _describe_import(spec: WorkerSpec, exc: ImportError) -> str:
    if exc.name and exc.name in (*spec.modules, spec.broker.partition(":")[0]):
        return f"module {exc.name!r}"
    return f"the broker {spec.broker!r}" if not spec.modules else f"{spec.broker!r} and {list(spec.modules)!r}"


def _describe_broker(broker: Broker, spec: WorkerSpec) -> str:
    """Name the broker and where it lives, never with a password."""
    name = type(broker).__name__
    url = getattr(broker, "url", None) or spec.broker_url
    if isinstance(url, str) and url:
        return f"{name} at {redact_url(url)}"
    path = getattr(broker, "path", None)
    if isinstance(path, str):
        return f"{name} at sqlite:///{path}"
    # redis-py keeps the address in its pool; other brokers name it in their error message.
    pool = getattr(getattr(broker, "client", None), "connection_pool", None)
    address = getattr(pool, "connection_kwargs", None)
    if isinstance(address, dict) and "host" in address:
        return f"{name} at redis://{address['host']}:{address.get('port', 6379)}/{address.get('db', 0)}"
    return name


def _scrub(text: str, spec: WorkerSpec) -> str:
    """``text`` without the password of the configured broker URL, should a driver quote it."""
    try:
        password = urlsplit(spec.broker_url).password if spec.broker_url else None
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


def _check_connection(broker: Broker, spec: WorkerSpec) -> None:
    """Touch the broker once so that an unreachable one fails the boot instead of looping in consumers."""
    queues = sorted(q for q in broker.get_declared_queues() if not spec.queues or q_name(q) in spec.queues)
    if queues:
        _queue_is_empty(broker, q_name(queues[0]), PROBE_TIMEOUT_MS)


def _queue_is_empty(broker: Broker, queue_name: str, timeout_ms: int) -> bool:
    """Whether a queue and its delay queue hold no message (waiting, delayed or unacknowledged).

    ``Broker.join`` is the one emptiness test every broker implements; a timeout turns it into a probe.
    """
    try:
        broker.join(queue_name, timeout=timeout_ms)
    except QueueJoinTimeout:
        return False
    return True


def _wait_until_stopped(
    spec: WorkerSpec, broker: Broker, worker: Worker | None, state: _StopState, logger: logging.Logger
) -> None:
    next_check_s = time.monotonic() + BURST_CHECK_INTERVAL_S
    drained_before = False
    while not state.stop_requested:
        if worker is None:
            time.sleep(POLL_INTERVAL_S)
        elif worker.budget.spent.wait(POLL_INTERVAL_S):
            return  # the worker is to be replaced (see the warden)
        if spec.burst and worker is not None and time.monotonic() >= next_check_s:
            # Two drained checks in a row: a message moving from the broker into the worker's
            # memory between the probes of one check cannot make both look empty.
            drained = _is_drained(broker, worker)
            if drained and drained_before:
                logger.info("Queues are drained.")
                return
            drained_before = drained
            next_check_s = time.monotonic() + BURST_CHECK_INTERVAL_S


def _is_drained(broker: Broker, worker: Worker) -> bool:
    if not worker.is_idle():
        return False
    try:
        queues = {q_name(name) for name in list(worker.consumers)}
        if not all(_queue_is_empty(broker, queue, BURST_PROBE_TIMEOUT_MS) for queue in queues):
            return False
    except Exception:  # a failing probe (broker down) just means "not drained yet"
        logging.getLogger(__name__).debug("Emptiness probe failed.", exc_info=True)
        return False
    return worker.is_idle()


def _report(pipes: ChildPipes, message: tuple[str, Any]) -> None:
    try:
        pipes.control.send(message)
    except OSError:
        pass  # the main process is gone; the parent watcher stops this process
