"""greenroom's one way to use an SQLite file (the broker, the results and the rate-limit backends).

One connection per thread, rebuilt in a forked child; WAL mode; short ``BEGIN IMMEDIATE``
transactions retried while the database is busy, neither forked across nor torn by an interrupt;
and sqlite3 errors translated into greenroom's broker errors in one place."""

from __future__ import annotations

import contextlib
import logging
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from ._fork_gate import sqlite_operation
from ._process_local import ProcessLocal
from .errors import BrokerError, ConnectionClosed, ConnectionFailed

__all__ = ["Database", "Schema"]

#: Creates or checks the tables of a database on a connection (run once per process).
Schema = Callable[[sqlite3.Connection], None]
#: ``UPDATE … RETURNING`` appeared in SQLite 3.35.
_MIN_SQLITE_VERSION = (3, 35, 0)
#: Primary result codes meaning "another connection holds a lock": SQLITE_BUSY and SQLITE_LOCKED.
_BUSY_CODES = (5, 6)

T = TypeVar("T")


def _translated(path: str, exc: sqlite3.Error) -> BrokerError:
    """The broker error an sqlite3 error stands for (the only place that decides)."""
    if isinstance(exc, sqlite3.OperationalError):
        if "unable to open" in str(exc):
            return ConnectionFailed(f"cannot open the SQLite database {path!r}: {exc}")
        if _is_busy(exc):
            return ConnectionClosed(f"the SQLite database {path!r} stayed busy for too long: {exc}")
    return ConnectionClosed(f"SQLite database {path!r}: {exc}")


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in _BUSY_CODES
    return "locked" in str(exc) or "busy" in str(exc)


class _ThreadConnection:
    """One thread's connection and what is needed to reuse it safely."""

    __slots__ = ("conn", "generation", "synchronous", "thread")

    def __init__(self, conn: sqlite3.Connection, generation: int) -> None:
        self.conn = conn
        self.generation = generation
        self.synchronous = "NORMAL"
        self.thread = threading.current_thread()


class _ProcessConnections:
    """The connections one process holds to a database file, one per thread."""

    def __init__(self) -> None:
        #: Guards connections and generation; taken by any thread.
        self.lock = threading.Lock()
        self.local = threading.local()
        #: Every open connection of this process, so close() can close them.
        self.connections: list[_ThreadConnection] = []
        #: Bumped by close(): a thread whose connection is older opens a new one.
        self.generation = 0


class Database:
    """An SQLite database file, as seen from one process.

    Nothing is opened until the first :meth:`read` or :meth:`write`; the schema is created then.

    Parameters:
      path: The database file; ``":memory:"`` is refused (each connection would see another database).
      busy_timeout_ms: How long one statement waits for a lock another connection holds.
      lock_retry_ms: How long an operation is retried, with backoff, while the database stays busy.
      synchronous: The ``PRAGMA synchronous`` level of durable writes; other writes use NORMAL.
      logger: Where busy retries are logged (at DEBUG).
      schema: Creates or checks the tables, on the first connection of each process.
      create_directory: Create the file's directory if it is missing.
    """

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int,
        lock_retry_ms: int,
        synchronous: str = "NORMAL",
        logger: logging.Logger,
        schema: Schema | None = None,
        create_directory: bool = False,
    ) -> None:
        if path in ("", ":memory:"):
            raise ValueError("an in-memory SQLite database cannot be shared between connections; use a file path")
        self.path = path
        self.schema = schema
        self.create_directory = create_directory
        self.busy_timeout_ms = busy_timeout_ms
        self.lock_retry_ms = lock_retry_ms
        self.synchronous = synchronous.upper()
        self.logger = logger
        # A connection must not be used, or even closed, in a forked child: SQLite's POSIX locks
        # belong to the parent, and a close may checkpoint or remove the WAL the parent still
        # uses. ProcessLocal gives a child connections of its own and keeps the parent's
        # referenced, so the GC never closes them there.
        self._process: ProcessLocal[_ProcessConnections] = ProcessLocal(_ProcessConnections)
        self._schema_ready = False

    def _connection(self) -> _ThreadConnection:
        state = self._process.get()
        current: _ThreadConnection | None = getattr(state.local, "connection", None)
        if current is None or current.generation != state.generation:
            current = self._open(state)
            state.local.connection = current
        return current

    def _open(self, state: _ProcessConnections) -> _ThreadConnection:
        if sqlite3.sqlite_version_info < _MIN_SQLITE_VERSION:
            raise BrokerError(
                f"greenroom needs SQLite >= 3.35 (UPDATE … RETURNING), this Python has {sqlite3.sqlite_version}"
            )
        if self.create_directory:
            try:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            except OSError as exc:
                raise ConnectionFailed(f"cannot create the directory of {self.path!r}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE … COMMIT
                check_same_thread=False,  # still one connection per thread; close() may close it from another
            )
        except sqlite3.Error as exc:
            raise _translated(self.path, exc) from exc
        try:
            self._retry(lambda: self._prepare(conn))
        except BaseException:
            conn.close()
            raise
        with state.lock:
            # Connections of threads that have ended can be closed: nothing else uses them.
            for old in state.connections:
                if not old.thread.is_alive():
                    with contextlib.suppress(sqlite3.Error):
                        old.conn.close()
            state.connections = [c for c in state.connections if c.thread.is_alive()]
            connection = _ThreadConnection(conn, state.generation)
            state.connections.append(connection)
        return connection

    def _prepare(self, conn: sqlite3.Connection) -> None:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BrokerError(f"the SQLite database {self.path!r} cannot use WAL mode (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=NORMAL")
        if self._schema_ready:
            return
        if self.schema is not None:
            try:
                self.schema(conn)
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        self._schema_ready = True

    def _retry(self, attempt: Callable[[], T]) -> T:
        """Run ``attempt``, retrying with bounded backoff while the database is busy.

        Each attempt is one :func:`~greenroom._fork_gate.sqlite_operation`: no fork happens and no
        interrupt lands while it runs; the backoff between attempts is outside it.
        """
        give_up_s = time.monotonic() + self.lock_retry_ms / 1000
        backoff_s = 0.005
        while True:
            try:
                with sqlite_operation():
                    return attempt()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= give_up_s:
                    raise _translated(self.path, exc) from exc
                self.logger.debug("SQLite is busy (%s); retrying in about %.3f s.", exc, backoff_s)
            except sqlite3.Error as exc:
                raise _translated(self.path, exc) from exc
            time.sleep(backoff_s * random.uniform(0.5, 1.0))
            backoff_s = min(backoff_s * 2, 0.5)

    def write(self, operation: Callable[[sqlite3.Connection], T], *, durable: bool = False) -> T:
        """Run ``operation`` in a short ``BEGIN IMMEDIATE`` transaction and return its result.

        ``durable`` commits with the configured ``synchronous`` level instead of NORMAL. The whole
        transaction is retried while the database is busy, so ``operation`` may run more than once.

        Raises:
          BrokerConnectionError: When the database cannot be opened or written.
        """
        level = self.synchronous if durable else "NORMAL"

        def attempt() -> T:
            conn = self._writer(level)
            try:
                # BEGIN inside the try: whatever ends the attempt after it, the transaction is
                # rolled back rather than left open (which would lock out every other writer).
                conn.execute("BEGIN IMMEDIATE")
                result = operation(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
            return result

        return self._retry(attempt)

    def write_statement(self, query: str, params: Sequence[Any], *, durable: bool = False) -> int:
        """Run one writing statement as a transaction of its own; how many rows it changed.

        The same as :meth:`write` with an operation of one statement, for a third of the calls
        into SQLite: a lone statement outside ``BEGIN`` takes the write lock when it starts, as
        ``BEGIN IMMEDIATE`` would, and commits when it ends, so no transaction can be left open.
        """
        level = self.synchronous if durable else "NORMAL"
        rowcount: int = self._retry(lambda: self._writer(level).execute(query, params).rowcount)
        return rowcount

    def _writer(self, level: str) -> sqlite3.Connection:
        """This thread's connection, committing with the ``synchronous`` ``level``."""
        connection = self._connection()
        if connection.synchronous != level:
            connection.conn.execute(f"PRAGMA synchronous={level}")  # not allowed inside a transaction
            connection.synchronous = level
        return connection.conn

    def read(self, operation: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``operation`` outside any write transaction (WAL readers never wait for writers)."""
        return self._retry(lambda: operation(self._connection().conn))

    def data_version(self) -> int:
        """A number that changes whenever another connection commits: a cheap way to notice new work."""
        version: int = self.read(lambda conn: conn.execute("PRAGMA data_version").fetchone()[0])
        return version

    def close(self) -> None:
        """Close this process's connections; threads open new ones when they next need one."""
        state = self._process.get()
        with state.lock:
            connections, state.connections = state.connections, []
            state.generation += 1
        with sqlite_operation():  # a close may checkpoint the WAL: not across a fork
            for connection in connections:
                with contextlib.suppress(sqlite3.Error):
                    connection.conn.close()
