"""The health server of its own: a fork process answering ``GET /healthz`` on ``--health-port``.

The metrics exposition server answers ``/healthz`` as well; this one lets a run with metrics off
(or one that keeps probes apart from scrapes) be probed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler

from .. import _settings
from .._health import DEFAULT_HEALTH_HOST, HEALTH_PATH, answer_health, make_threaded_server

__all__ = ["serve_health"]

logger = logging.getLogger("greenroom.HealthServer")


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == HEALTH_PATH:
        return answer_health(start_response)
    body = b"Not found: this server answers GET /healthz.\n"
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def serve_health() -> int:
    """Answer ``/healthz`` for the run (a CLI fork function); blocks until the process is terminated.

    Reads the port, the host and the record directory from the environment the main process prepared.
    """
    port = _settings.health_port()
    if port is None or _settings.health_dir() is None:
        logger.error("No health port or record directory is set; there is nothing to serve.")
        return 1
    host = _settings.health_host() or DEFAULT_HEALTH_HOST
    try:
        server = make_threaded_server(host, port, _app, _QuietHandler)
    except OSError as exc:
        logger.error("Cannot serve health checks on %s:%d: %s", host, port, exc.strerror or exc)
        return 1
    logger.info("Serving health checks on http://%s:%d%s.", host, port, HEALTH_PATH)
    server.serve_forever()
    return 0
