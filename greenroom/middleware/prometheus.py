"""Prometheus metrics for workers, exported over HTTP by a process the CLI forks.

Workers started with the ``greenroom`` command export metrics whenever ``prometheus_client`` is
installed (``pip install 'greenroom[prometheus]'``): each worker process writes its samples to a
multiprocess directory private to the run, and one exposition process serves the sum of all of them
on ``greenroom_prom_host:greenroom_prom_port`` (``0.0.0.0:9191`` by default).

The numbers are exact: every attempt to process a message counts once in ``messages_total`` and in
the duration histogram; a retry counts once in ``message_retries_total`` (when it is scheduled, not
again when it becomes due); the gauges never go below zero and lose the share of a worker process
that died.
"""

from __future__ import annotations

import functools
import glob
import os
import threading
import time
from typing import TYPE_CHECKING, Any, NamedTuple

from .. import _settings
from .._health import HEALTH_PATH, answer_health, make_threaded_server
from .._lazy import process_exists
from .._settings import PROMETHEUS_MULTIPROC_ENV
from ..common import q_name
from ..logging import get_logger
from .middleware import Middleware

if TYPE_CHECKING:
    from ..broker import Broker, MessageProxy
    from ..message import Message
    from ..worker import Worker

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Prometheus", "serve_metrics"]

#: Where the exposition server listens unless greenroom_prom_host/greenroom_prom_port say otherwise.
DEFAULT_HOST = "0.0.0.0"  # Prometheus usually scrapes from another machine
DEFAULT_PORT = 9191
#: Histogram buckets in milliseconds.
BUCKETS = (5, 10, 25, 50, 75, 100, 250, 500, 750, 1000, 2500, 5000, 7500, 10000, 30000, 60000, 600000, 900000)
#: The environment variables prometheus_client reads to find the multiprocess directory.
MULTIPROC_ENV = PROMETHEUS_MULTIPROC_ENV


class _HotSeries(NamedTuple):
    """The labelled children of one (queue, actor) pair that every processed message updates."""

    inprogress: Any
    duration: Any
    total: Any


class Prometheus(Middleware):
    """Count processed, failed, retried and dead-lettered messages, and time them.

    Metrics (labels ``queue_name`` and ``actor_name``; the queue is the canonical name):
    ``<prefix>_messages_total``, ``<prefix>_message_errors_total``, ``<prefix>_message_retries_total``,
    ``<prefix>_message_rejects_total`` (counters), ``<prefix>_messages_inprogress``,
    ``<prefix>_delayed_messages_inprogress`` (gauges) and ``<prefix>_message_duration_milliseconds``
    (histogram).

    ``prometheus_client`` must be imported after the multiprocess directory is set in the
    environment, so the metrics are built when the middleware is constructed, which the CLI does in
    each worker process after setting it.

    Parameters:
      prefix: The metric name prefix; ``"dramatiq"`` keeps dashboards built for Dramatiq.
    """

    def __init__(self, *, prefix: str = "greenroom") -> None:
        import prometheus_client as prom

        self.logger = get_logger(__name__, type(self))
        self.prefix = prefix
        #: A private registry: several brokers in one process must not clash in the global one.
        self.registry = prom.CollectorRegistry(auto_describe=True)
        labels = ("queue_name", "actor_name")
        counter = functools.partial(prom.Counter, labelnames=labels, registry=self.registry)
        # livesum: the exposition sums the live worker processes, and a dead one's share goes away.
        gauge = functools.partial(prom.Gauge, labelnames=labels, registry=self.registry, multiprocess_mode="livesum")
        self.total = counter(f"{prefix}_messages", "The total number of messages processed.")
        self.errors = counter(f"{prefix}_message_errors", "The total number of errored messages.")
        self.retries = counter(f"{prefix}_message_retries", "The total number of retried messages.")
        self.rejects = counter(f"{prefix}_message_rejects", "The total number of dead-lettered messages.")
        self.inprogress = gauge(f"{prefix}_messages_inprogress", "The number of messages in progress.")
        self.delayed = gauge(f"{prefix}_delayed_messages_inprogress", "The number of delayed messages in memory.")
        self.duration = prom.Histogram(
            f"{prefix}_message_duration_milliseconds",
            "The time spent processing messages.",
            labels,
            buckets=BUCKETS,
            registry=self.registry,
        )
        #: (queue_name as sent, actor_name) → the series every processed message updates. Resolving
        #: labels costs more than updating a sample, so it is done once per pair, not per message.
        #: Worker threads read and fill it without a lock: two threads that miss at once build the
        #: same children (``labels`` returns the existing one) and store equal tuples.
        self._hot: dict[tuple[str, str], _HotSeries] = {}
        #: id of the message proxy → monotonic start (two copies of one message may run at once);
        #: only messages counted in progress are here, which keeps the gauge from going negative
        #: on skips. Worker threads touch it, under _lock.
        self._started: dict[int, float] = {}
        #: message_id of delayed messages held by this process, under _lock.
        self._delayed: set[str] = set()
        self._lock = threading.Lock()

    @property
    def forks(self) -> list[Any]:
        return [serve_metrics]

    def _labels(self, message: MessageProxy | Message[Any]) -> tuple[str, str]:
        return q_name(message.queue_name), message.actor_name

    def _hot_series(self, message: MessageProxy) -> _HotSeries:
        key = (message.queue_name, message.actor_name)
        series = self._hot.get(key)
        if series is None:
            labels = (q_name(key[0]), key[1])
            series = _HotSeries(
                self.inprogress.labels(*labels), self.duration.labels(*labels), self.total.labels(*labels)
            )
            self._hot[key] = series
        return series

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        # A retry is enqueued onto the delay queue once; moving it back when due is not a retry.
        if "retries" in message.options and message.queue_name.endswith(".DQ"):
            self.retries.labels(*self._labels(message)).inc()

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            if message.message_id in self._delayed:
                return
            self._delayed.add(message.message_id)
        self.delayed.labels(*self._labels(message)).inc()

    def _forget_delayed(self, message: MessageProxy) -> None:
        with self._lock:
            if message.message_id not in self._delayed:
                return
            self._delayed.discard(message.message_id)
        self.delayed.labels(*self._labels(message)).dec()

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._started[id(message)] = time.monotonic()
        self._hot_series(message).inprogress.inc()

    def after_process_message(
        self, broker: Broker, message: MessageProxy, *, result: Any = None, exception: BaseException | None = None
    ) -> None:
        series = self._hot_series(message)
        with self._lock:
            start = self._started.pop(id(message), None)
        if start is not None:
            series.inprogress.dec()
            series.duration.observe((time.monotonic() - start) * 1000)
        else:
            series.duration.observe(0)
        series.total.inc()
        if exception is not None:
            self.errors.labels(*self._labels(message)).inc()

    after_skip_message = after_process_message

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        self._forget_delayed(message)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        self._forget_delayed(message)
        self.rejects.labels(*self._labels(message)).inc()

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # Delayed messages were handed back to the broker; their share of the gauge goes with them.
        with self._lock:
            held, self._delayed = self._delayed, set()
        if held:
            self.logger.debug("Handed back %d delayed messages.", len(held))
        directory = _settings.prometheus_multiproc_dir()
        if directory:
            _remove_live_files(directory, os.getpid())


def _remove_live_files(directory: str, pid: int) -> None:
    """Drop the gauge files of a process, as prometheus_client's ``mark_process_dead`` does."""
    for path in glob.glob(os.path.join(directory, f"gauge_live*_{pid}.db")):
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def _remove_dead_processes(directory: str) -> None:
    """Drop the live-gauge files of worker processes that no longer exist (killed, crashed)."""
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        pid_text = os.path.basename(path)[: -len(".db")].rsplit("_", 1)[-1]
        if pid_text.isdigit() and not process_exists(int(pid_text)):
            _remove_live_files(directory, int(pid_text))


def serve_metrics() -> int:
    """Serve the metrics of every worker process of this run over HTTP (a CLI fork function).

    ``GET /healthz`` answers whether the run can work (see :mod:`greenroom._health`); every other
    path serves the metrics. Reads ``greenroom_prom_host``, ``greenroom_prom_port`` and the
    multiprocess directory from the environment the CLI prepared. Blocks until the process is
    terminated.
    """
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    import prometheus_client as prom
    from prometheus_client import multiprocess

    logger = get_logger(__name__, "serve_metrics")
    directory = _settings.prometheus_multiproc_dir()
    if directory is None:
        logger.error("No multiprocess directory is set; metrics cannot be collected.")
        return 1
    host = _settings.prom_host() or DEFAULT_HOST
    port = _settings.prom_port()
    if port is None:
        port = DEFAULT_PORT

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == HEALTH_PATH:
            return answer_health(start_response)
        _remove_dead_processes(directory)
        registry = prom.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return prom.make_wsgi_app(registry)(environ, start_response)

    class _QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            logger.debug(format, *args)

    try:
        # Threaded: a health probe must not wait behind a slow scrape.
        server: WSGIServer = make_threaded_server(host, port, app, _QuietHandler)
    except OSError as exc:
        logger.error("Cannot serve metrics on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    logger.info("Serving metrics on http://%s:%d.", host, port)
    server.serve_forever()
    return 0
