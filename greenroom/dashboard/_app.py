"""One dashboard application, served as ASGI, or as WSGI through an adapter."""

from __future__ import annotations

from typing import Any

from a2wsgi import ASGIMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..broker import Broker, get_broker
from ._actions import Actions
from ._errors import ErrorPages
from ._guards import AuthHook, CsrfTokens, Guard
from ._pages import Pages
from ._render import Renderer

__all__ = ["create_app", "create_wsgi_app"]


def create_app(
    broker: Broker | None = None,
    *,
    read_only: bool = False,
    auth: AuthHook | None = None,
    secret: str | bytes | None = None,
    refresh_interval_ms: int = 3000,
) -> Starlette:
    """The dashboard as an ASGI application, to serve or to mount in another one.

    Mount it under a prefix (Starlette's ``Mount("/greenroom", app=...)``, FastAPI's
    ``app.mount(...)``, Django's ASGI routing); every link follows the prefix it is mounted at.

    Parameters:
      broker: The broker to show; the global broker when omitted. Its declared queues are the
        ones listed, so pass the broker of the application whose actors are imported.
      read_only: Hide every action (cancel, requeue, purge) and refuse them.
      auth: Called with each request (a Starlette ``Request``: headers, cookies, client); the
        request is refused unless it returns true. Use :class:`~greenroom.dashboard.BasicAuth`
        for a user name and password, or your framework's session check when mounted.
      secret: The key of the CSRF tokens; processes that serve one dashboard behind a load
        balancer must share it. A random one, good for one process, when omitted.
      refresh_interval_ms: How often the pages refresh their counts.
    """
    if refresh_interval_ms < 500:
        raise ValueError(f"refresh_interval_ms must be at least 500, not {refresh_interval_ms}")
    broker = broker if broker is not None else get_broker()
    tokens = CsrfTokens(secret)
    renderer = Renderer(tokens, read_only=read_only, refresh_ms=refresh_interval_ms)
    pages = Pages(broker, renderer)
    actions = Actions(broker, tokens, read_only=read_only)
    routes = [
        Route("/", pages.overview, name="overview"),
        Route("/api/overview", pages.overview_json, name="overview_json"),
        Route("/workers", pages.workers, name="workers"),
        Route("/messages", pages.lookup, name="lookup"),
        Route("/messages/{message_id}", pages.message, name="message"),
        Route("/messages/{message_id}/cancel", actions.cancel, methods=["POST"], name="cancel"),
        Route("/dead", pages.dead_index, name="dead_index"),
        Route("/queues/{queue}/dead", pages.dead, name="dead"),
        Route("/queues/{queue}/dead/requeue", actions.requeue, methods=["POST"], name="requeue"),
        Route("/queues/{queue}/dead/purge", pages.purge_form, name="purge_form"),
        Route("/queues/{queue}/dead/purge", actions.purge, methods=["POST"], name="purge"),
        Route("/schedules", pages.schedules, name="schedules"),
        Mount("/static", StaticFiles(packages=[("greenroom.dashboard", "static")]), name="static"),
    ]
    handlers: Any = ErrorPages(renderer).handlers()
    return Starlette(routes=routes, middleware=[Middleware(Guard, auth=auth)], exception_handlers=handlers)


def create_wsgi_app(broker: Broker | None = None, **options: Any) -> Any:
    """The same dashboard as a WSGI application, to mount in Flask, Django or any WSGI server.

    Takes the arguments of :func:`create_app`. The adapter runs the dashboard on an event loop
    thread of its own; mount it under a prefix with your framework's dispatcher (Werkzeug's
    ``DispatcherMiddleware``, say) and its links follow ``SCRIPT_NAME``.
    """
    app: Any = create_app(broker, **options)  # a2wsgi types ASGI apps more narrowly than Starlette does
    return ASGIMiddleware(app)
