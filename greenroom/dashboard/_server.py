"""The standalone dashboard server (``greenroomctl dashboard``): uvicorn on a socket bound to loopback by default."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn

from ..broker import Broker
from ..logging import get_logger
from ._app import create_app
from ._guards import AuthHook, BasicAuth

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "DashboardServer", "serve"]

#: Where the dashboard listens unless told otherwise: this machine only.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 9180


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (bound here, so that port 0 gives a free port known before the server starts)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class DashboardServer:
    """The dashboard served over HTTP by uvicorn, in the calling thread (:meth:`run`) or a thread of its own.

    The socket is bound in the constructor, so :attr:`url` is known at once (``port=0`` picks a
    free port).

    Parameters:
      broker: The broker to show; the global broker when omitted.
      host: The address to listen on; loopback unless given. Listening elsewhere without a user
        and password logs a warning: anyone who reaches the port may requeue and purge.
      port: The port (9180).
      user: With ``password``, the credentials every request must carry (HTTP Basic).
      password: See ``user``.
      options: More arguments of :func:`~greenroom.dashboard.create_app` (``read_only``,
        ``secret``, ``refresh_interval_ms``, or an ``auth`` hook instead of user and password).
    """

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        user: str | None = None,
        password: str | None = None,
        **options: Any,
    ) -> None:
        logger = get_logger(__name__, type(self))
        if (user is None) != (password is None):
            raise ValueError("give the dashboard both a user and a password, or neither")
        auth: AuthHook | None = options.pop("auth", None)
        if user is not None and password is not None:
            auth = BasicAuth(user, password)
        if auth is None and not _is_loopback(host):
            logger.warning("The dashboard listens on %s with no user and password: whoever reaches it may act.", host)
        self.app = create_app(broker, auth=auth, **options)
        self.socket = _bind(host, port)
        bound_host, bound_port = self.socket.getsockname()[:2]
        shown_host = f"[{bound_host}]" if ":" in bound_host else bound_host
        #: Where the dashboard answers.
        self.url = f"http://{shown_host}:{bound_port}/"
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Serve until interrupted (INT or TERM when called in the main thread) or :meth:`stop`."""
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self.socket.close()

    def start(self, timeout_s: float = 10.0) -> None:
        """Serve from a daemon thread; returns once the server accepts connections.

        Raises:
          RuntimeError: When it has not started within ``timeout_s``.
        """
        self._thread = threading.Thread(target=self.run, name="greenroom-dashboard", daemon=True)
        self._thread.start()
        deadline_s = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() >= deadline_s:
                self.stop()
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to finish its requests and stop; waits for its thread when it has one."""
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None


def serve(
    broker: Broker | None = None,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    **options: Any,
) -> None:
    """Serve the dashboard of ``broker`` on ``host:port`` (127.0.0.1:9180) until interrupted.

    Takes the keyword arguments of :class:`DashboardServer` (``user``, ``password``,
    ``read_only``, ``secret``, ``refresh_interval_ms``). This is what ``greenroomctl dashboard`` runs.
    """
    server = DashboardServer(broker, host=host, port=port, **options)
    get_logger(__name__).info("The greenroom dashboard is at %s", server.url)
    server.run()
