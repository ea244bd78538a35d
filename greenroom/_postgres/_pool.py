"""A small pool of psycopg connections: no thread of its own, and no waiting to reconnect.

A connection is taken from the idle ones (the most recently used first) or opened at once in the
calling thread; at most ``max_size`` are out at a time. A connection that comes back broken is
closed, and so are the idle ones, which a restarted or unreachable server has broken as well: the
next caller connects anew, as soon as the server is back. (psycopg_pool reconnects from threads of
its own with a growing backoff, up to seconds after the server returned, and runs four threads
per pool in every worker process; this pool needs neither.)
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq

from ..errors import ConnectionClosed

__all__ = ["ConnectionPool"]


class ConnectionPool:
    """Connections of one kind (their settings are ``connect``'s) for one process.

    Parameters:
      connect: Opens a connection in autocommit mode.
      max_size: Most connections out at once; callers beyond wait.
    """

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], max_size: int) -> None:
        self._connect = connect
        self.max_size = max_size
        #: Idle connections, the most recently used last. Touched by every thread that gets or
        #: puts back a connection: guarded by _lock.
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        #: One permit per connection that may be out.
        self._permits = threading.BoundedSemaphore(max_size)

    def get(self, timeout_s: float) -> psycopg.Connection[Any]:
        """An idle connection, or a new one.

        Raises:
          ConnectionClosed: When all ``max_size`` connections stay out for ``timeout_s``.
          psycopg.OperationalError: When a new connection cannot be opened.
        """
        if not self._permits.acquire(timeout=timeout_s):
            raise ConnectionClosed(f"all {self.max_size} PostgreSQL connections stayed busy for {timeout_s:.1f} s")
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            return conn
        try:
            return self._connect()
        except BaseException:
            self._permits.release()
            raise

    def put(self, conn: psycopg.Connection[Any]) -> None:
        """Take a connection back: kept when it is sound and idle, else closed (with the idle ones if broken)."""
        try:
            broken = conn.closed or conn.pgconn.status != pq.ConnStatus.OK
            if not broken and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                conn.close()  # a transaction left open by an interrupted caller: never hand it on
                return
            if not broken:
                with self._lock:
                    self._idle.append(conn)
                return
            conn.close()
            self._close_idle()
        finally:
            self._permits.release()

    def _close_idle(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def close(self) -> None:
        """Close the idle connections; those out are closed when they come back broken, or kept."""
        self._close_idle()
