"""The greenroom dashboard: queues, workers, messages, dead letters and schedules in a browser.

Needs the ``dashboard`` extra (``pip install 'greenroom[dashboard]'``): Starlette for the web
layer, Jinja2 for the templates, uvicorn to serve it standalone and a2wsgi to mount it in a
WSGI application. ``import greenroom`` never imports this package.

- :func:`serve` runs it standalone (what ``greenroomctl dashboard`` does), on 127.0.0.1:9180
  unless told otherwise.
- :func:`create_app` returns it as an ASGI application to mount (FastAPI, Starlette, Django
  under ASGI), :func:`create_wsgi_app` as a WSGI one (Flask, Django).

It reads everything through the operations API of the broker and :mod:`greenroom.jobs` (status,
workers, per-minute counts), so it shows what ``greenroomctl`` shows, on every broker.
"""

from __future__ import annotations

try:
    import a2wsgi  # noqa: F401
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        f"the greenroom dashboard needs the 'dashboard' extra: pip install 'greenroom[dashboard]' ({exc})"
    ) from exc

from ._app import create_app, create_wsgi_app
from ._guards import AuthHook, BasicAuth
from ._server import DEFAULT_HOST, DEFAULT_PORT, DashboardServer, serve

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "AuthHook",
    "BasicAuth",
    "DashboardServer",
    "create_app",
    "create_wsgi_app",
    "serve",
]
