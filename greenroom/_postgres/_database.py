"""The PostgreSQL connections of one broker or backend: pools per process, retries, one error translator.

:class:`Database` is what the Postgres broker's storage layer, its listener and the Postgres results
and rate-limit backends talk through. Each process has its own pools (a forked child opens its own
connections: a socket shared with the parent would interleave both processes' messages), and the
schema's tables are created or upgraded by the first operation (see :mod:`._schema`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

import psycopg

from .._process_local import ProcessLocal
from ..common import Deadline
from ..errors import BrokerError, ConnectionClosed
from ..threading import interrupts_deferred
from ._pool import ConnectionPool
from ._schema import applied_version, apply_migrations, check_schema_name, known_migrations

__all__ = ["Database", "translate_errors"]

T = TypeVar("T")
#: An operation run on a connection.
Operation = Callable[[psycopg.Connection[Any]], T]

#: TCP keepalives: a server that vanished (its host died) is noticed within about 10 s even by a
#: connection that only waits, such as the broker's listener.
_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3}


class translate_errors:
    """Turn psycopg's errors into greenroom's: a lost or refused connection into ``ConnectionClosed``,
    any other error of the server into ``BrokerError``, the cause chained. (A class: it guards every send.)"""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            raise ConnectionClosed(f"PostgreSQL: {exc}") from exc
        if isinstance(exc, psycopg.Error):
            raise BrokerError(f"PostgreSQL: {exc}") from exc


class _Pools(NamedTuple):
    """One process's connections: enqueues commit as the settings say, everything else without
    waiting for the disk (an acknowledgement undone by a server crash means a message runs again)."""

    durable: ConnectionPool
    fast: ConnectionPool


class Database:
    """The connections to one schema of one PostgreSQL database.

    Parameters:
      url: A ``postgresql://`` URL or a libpq connection string.
      schema: The schema of greenroom's tables (created on first use).
      retry_timeout_ms: How long :meth:`run` retries while the server cannot be reached.
      pool_max_size: Most connections of each pool per process.
      connect_timeout_s: How long opening one connection may take.
      durable_enqueue: Whether the durable pool's commits wait for the disk (``synchronous_commit``).
      logger: Where reconnections are reported.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str,
        retry_timeout_ms: int,
        pool_max_size: int,
        connect_timeout_s: float,
        durable_enqueue: bool = True,
        logger: logging.Logger,
    ) -> None:
        self.url = url
        self.schema = check_schema_name(schema)
        self.retry_timeout_ms = retry_timeout_ms
        self.pool_max_size = pool_max_size
        self.connect_timeout_s = connect_timeout_s
        self.durable_enqueue = durable_enqueue
        self.logger = logger
        self._pools: ProcessLocal[_Pools] = ProcessLocal(self._make_pools)
        #: Set once this broker found its tables up to date (a forked child may trust its parent).
        self._schema_ready = threading.Event()
        self._schema_lock = threading.Lock()

    # -- connections --------------------------------------------------------------------------------

    def connect(self, *, synchronous_commit: bool = True) -> psycopg.Connection[Any]:
        """A new connection in autocommit mode (the pools' kind; the listener's own).

        Raises:
          psycopg.OperationalError: When the server cannot be reached in ``connect_timeout_s``.
        """
        timeout = max(1, round(self.connect_timeout_s))  # libpq takes whole seconds
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=timeout, application_name="greenroom", **_KEEPALIVES
        )
        if not synchronous_commit:
            conn.execute("SET synchronous_commit = off")
        return conn

    def _make_pools(self) -> _Pools:
        def durable() -> psycopg.Connection[Any]:
            return self.connect(synchronous_commit=self.durable_enqueue)

        def fast() -> psycopg.Connection[Any]:
            return self.connect(synchronous_commit=False)

        return _Pools(ConnectionPool(durable, self.pool_max_size), ConnectionPool(fast, self.pool_max_size))

    def close(self) -> None:
        """Close this process's idle connections (they are opened again on next use)."""
        pools = self._pools.peek()
        if pools is not None:
            pools.durable.close()
            pools.fast.close()

    # -- operations ---------------------------------------------------------------------------------

    def run(self, operation: Operation[T], *, durable: bool = False, retry: bool = True) -> T:
        """Run ``operation`` on a pooled connection in autocommit mode; its result.

        Parameters:
          operation: Runs its statements (in ``conn.transaction()`` when they must be atomic).
          durable: Use the pool whose commits wait for the disk as the settings say (enqueues).
          retry: Retry, with backoff, for ``retry_timeout_ms`` while the server cannot be reached.
            The operation may then run twice: only retry operations for which that is harmless.

        Inside an actor, an interrupt waits until the operation is over.

        Raises:
          ConnectionClosed: When the server could not be reached (for ``retry_timeout_ms``).
          BrokerError: When the server refused the operation.
        """
        if not self._schema_ready.is_set():
            self.ensure_schema()
        return self._retrying(operation, durable, retry)

    def run_on(self, conn: psycopg.Connection[Any], operation: Operation[T]) -> T:
        """Run ``operation`` on a caller's connection, inside its transaction; errors translated, never retried."""
        if not self._schema_ready.is_set():
            self.ensure_schema()
        with interrupts_deferred(), translate_errors():
            return operation(conn)

    def ensure_schema(self) -> None:
        """Create or upgrade the tables unless this broker already found them up to date."""
        with self._schema_lock:
            if self._schema_ready.is_set():
                return
            latest = known_migrations()[-1][0]

            def install(conn: psycopg.Connection[Any]) -> None:
                if applied_version(conn, self.schema) != latest:
                    apply_migrations(conn, self.schema)

            self._retrying(install, True, True)
            self._schema_ready.set()

    def _retrying(self, operation: Operation[T], durable: bool, retry: bool) -> T:
        deadline = Deadline.after_ms(self.retry_timeout_ms if retry else 0)
        attempt = 0
        while True:
            try:
                return self._once(operation, durable, deadline)
            except ConnectionClosed as exc:
                if deadline.expired():
                    raise
                if attempt == 0:
                    self.logger.warning("PostgreSQL is unreachable (%s); retrying.", exc)
                time.sleep(deadline.left_s(min(0.05 * 2**attempt, 1.0)))
                attempt += 1

    def _once(self, operation: Operation[T], durable: bool, deadline: Deadline) -> T:
        pools = self._pools.get()
        pool = pools.durable if durable else pools.fast
        with interrupts_deferred(), translate_errors():
            conn = pool.get(max(deadline.remaining_s() or 0.0, self.connect_timeout_s))
            try:
                return operation(conn)
            finally:
                pool.put(conn)
