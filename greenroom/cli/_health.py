"""Health wiring for the CLI: the run's record directory, each worker process's reporter, the health server.

The main process prepares ``greenroom-health-<main pid>`` in the temporary directory whenever
someone will read it (metrics are on, so the exposition server answers ``/healthz``, or a health
port is set), and removes it when the run ends; directories of runs whose main process was killed
are removed at the next start. Each worker process then runs a :class:`HealthReporter` thread that
renews its record (see :mod:`greenroom._health`) about once a second. With a health port, a fork
process of its own answers ``/healthz`` (:mod:`greenroom.cli._health_server`).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import tempfile
import threading
import time

from .. import _settings
from .._health import DEFAULT_HEALTH_HOST, ProcessRecord, remove_record, timeout_s, write_record
from ..worker import Worker
from ._args import CliOptions
from ._exit_codes import ExitCode, StartupError
from ._metrics import sweep_dead_runs

__all__ = ["HEALTH_SERVER", "HealthReporter", "health_forks", "prepare_health", "start_health_reporter"]

#: Each run's record directory is ``<temporary directory>/greenroom-health-<main pid>``.
_RUN_PREFIX = "greenroom-health-"
#: Seconds between two records of a worker process.
REPORT_INTERVAL_S = 1.0
#: The fork function of the health server of its own.
HEALTH_SERVER = "greenroom.cli._health_server:serve_health"


def prepare_health(options: CliOptions, metrics: bool) -> str | None:
    """Create this run's empty record directory and point the environment of the children at it.

    Parameters:
      options: The command line: ``--health-port`` and ``--health-host`` go to the health server.
      metrics: Whether the metrics server runs (it answers ``/healthz`` too).

    Returns:
      The directory, or ``None`` when nothing would read it (metrics off, no health port).

    Raises:
      StartupError: When ``greenroom_health_port`` or ``greenroom_health_timeout`` is not valid.
    """
    port = _health_port(options)
    try:
        timeout_s()  # checked here, where a bad value can stop the run with one line
    except ValueError as exc:
        raise StartupError(ExitCode.IMPORT, str(exc)) from exc
    if port is not None:
        # The health server is a fork process: it reads them from the environment, as serve_metrics does.
        os.environ["greenroom_health_port"] = str(port)
        os.environ["greenroom_health_host"] = options.health_host or _settings.health_host() or DEFAULT_HEALTH_HOST
    if not metrics and port is None:
        return None
    base = tempfile.gettempdir()
    sweep_dead_runs(base, _RUN_PREFIX)
    directory = os.path.join(base, f"{_RUN_PREFIX}{os.getpid()}")
    # A reload re-executes this process with the same pid: records of the old workers go.
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)
    os.environ[_settings.HEALTH_DIR_ENV] = directory
    atexit.register(shutil.rmtree, directory, True)
    return directory


def _health_port(options: CliOptions) -> int | None:
    if options.health_port is not None:
        return options.health_port
    try:
        port = _settings.health_port()
    except ValueError as exc:
        raise StartupError(ExitCode.IMPORT, str(exc)) from exc
    if port is not None and not 1 <= port <= 65535:
        raise StartupError(ExitCode.IMPORT, f"greenroom_health_port {port} is out of range (1 to 65535)")
    return port


def health_forks() -> list[str]:
    """The fork function of the health server, when the run has a health port (after :func:`prepare_health`)."""
    return [HEALTH_SERVER] if _settings.health_port() is not None else []


class HealthReporter:
    """Renews the health record of this worker process from a daemon thread, until :meth:`stop`.

    Parameters:
      directory: The run's record directory.
      index: The position of this worker process in the tree.
      worker: Its worker; ``None`` when it consumes nothing (``--scheduler-only``).
    """

    def __init__(self, directory: str, index: int, worker: Worker | None) -> None:
        self.directory = directory
        self.index = index
        self.worker = worker
        self.pid = os.getpid()
        #: Set by the process's main thread to stop the reporter thread.
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="HealthReporter", daemon=True)
        self.logger = logging.getLogger(f"greenroom.WorkerProcess({index})")

    def start(self) -> None:
        self.report()
        self.thread.start()

    def stop(self) -> None:
        """Stop reporting and remove the record: a stopping process can no longer work."""
        self.stopping.set()
        self.thread.join(REPORT_INTERVAL_S * 5)
        remove_record(self.directory, self.pid)

    def record(self) -> ProcessRecord:
        """What this process says of itself now."""
        # Consumer threads are added by whichever thread declares a queue: take a copy.
        consumers = list(self.worker.consumers.values()) if self.worker is not None else []
        contacts = [c.last_contact_s for c in consumers if c.last_contact_s is not None]
        now_s = time.monotonic()
        return ProcessRecord(
            pid=self.pid,
            index=self.index,
            written_s=time.time(),
            consumers=len(consumers),
            connected=sum(c.connected for c in consumers),
            contact_age_s=round(now_s - max(contacts), 3) if contacts else None,
        )

    def report(self) -> None:
        """Write the record once; a failure is logged and the next round tries again."""
        try:
            write_record(self.directory, self.record())
        except OSError as exc:
            # Not fatal: a process that cannot report for long counts as unable to work, as it should.
            self.logger.warning("Cannot write the health record (%s).", exc)

    def _run(self) -> None:
        while not self.stopping.wait(REPORT_INTERVAL_S):
            try:
                self.report()
            except Exception:  # the thread's top level: a dead reporter would make a healthy process look wedged
                self.logger.exception("Unexpected error while reporting health; trying again.")


def start_health_reporter(index: int, worker: Worker | None) -> HealthReporter | None:
    """Start reporting this worker process's health, when the run collects it."""
    directory = _settings.health_dir()
    if directory is None:
        return None
    reporter = HealthReporter(directory, index, worker)
    reporter.start()
    return reporter
