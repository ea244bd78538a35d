"""Per-thread SQLite connections, and the expiring key/value table that the SQLite results and
rate-limiter backends keep in them.

Each thread gets its own connection (SQLite connections must not be shared between threads
without a global lock, which is what drives "database is locked" in other task queues), opened
lazily on first use in WAL mode with a busy timeout. Write transactions use ``BEGIN IMMEDIATE`` so
that two writers never both hold a read lock and then deadlock upgrading it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._fork_gate import sqlite_operation
from ._process_local import ProcessLocal
from .errors import ConnectionClosed, ConnectionFailed

__all__ = ["ExpiringTable", "ThreadLocalConnections", "translate_sqlite_errors"]

#: Expired rows are deleted by a write at most this often, per table instance, in seconds.
_PURGE_INTERVAL_S = 5.0


@contextmanager
def translate_sqlite_errors() -> Iterator[None]:
    """Turn SQLite errors (a locked or unreadable database) into :class:`ConnectionClosed`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise ConnectionClosed(f"SQLite operation failed: {exc}") from exc


class _OpenConnections:
    """The connections one process opened: each thread's own, and all of them for close()."""

    def __init__(self) -> None:
        #: Each thread's connection; only ever touched by its own thread.
        self.local = threading.local()
        #: Every connection opened, so close() can close them all; guarded by lock.
        self.all: list[sqlite3.Connection] = []
        self.lock = threading.Lock()


class ThreadLocalConnections:
    """Lazily opened, per-thread connections to one SQLite database file.

    Parameters:
      path: The database file (created on first use); ``":memory:"`` is refused because each
        connection would see a different database.
      busy_timeout_ms: How long a statement waits for another writer before failing.
      schema: Statements run once per connection (idempotent ``CREATE ... IF NOT EXISTS``).
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 10000, schema: str = "") -> None:
        self.path = os.fspath(path)
        if self.path == ":memory:":
            raise ValueError("an in-memory SQLite database cannot be shared between connections; use a file path")
        self.busy_timeout_ms = busy_timeout_ms
        self.schema = schema
        # After a fork the parent's connections must not be used, nor even closed (a close in the
        # child can drop locks or remove the WAL the parent still uses): ProcessLocal gives the
        # child connections of its own and keeps the parent's referenced.
        self._process: ProcessLocal[_OpenConnections] = ProcessLocal(_OpenConnections)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        state = self._process.get()
        conn: sqlite3.Connection | None = getattr(state.local, "conn", None)
        if conn is None:
            conn = self._open()
            state.local.conn = conn
            with state.lock:
                state.all.append(conn)
        return conn

    def _open(self) -> sqlite3.Connection:
        try:
            directory = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(directory, exist_ok=True)
            # isolation_level=None: we issue BEGIN ourselves, so reads never hold a transaction open.
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None)
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            self._enable_wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
            if self.schema:
                with self._write(conn):
                    for statement in self.schema.split(";"):
                        if statement.strip():
                            conn.execute(statement)
        except (sqlite3.Error, OSError) as exc:
            raise ConnectionFailed(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL mode (once per file; it persists).

        Changing the journal mode needs the database to itself and does not always go through the
        busy handler, so while another connection (maybe in another process) is busy, retry
        within the busy timeout.
        """
        deadline_s = time.monotonic() + self.busy_timeout_ms / 1000
        delay_s = 0.005
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or time.monotonic() >= deadline_s:
                    raise
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, 0.1)

    @staticmethod
    @contextmanager
    def _write(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            # BEGIN inside the try: whatever ends the block after it, the transaction is rolled
            # back rather than left open (which would lock out every other writer).
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on error).

        Neither a fork nor an actor's interrupt happens inside it (see :mod:`greenroom._fork_gate`).
        """
        with sqlite_operation(), self._write(self.connection()) as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, for reads that neither a fork nor an interrupt may tear."""
        with sqlite_operation():
            yield self.connection()

    def close(self) -> None:
        """Close every connection opened so far (they reopen on next use)."""
        state = self._process.reset()  # threads open new connections from now on
        if state is None:
            return
        with state.lock:
            connections, state.all = state.all, []
        with sqlite_operation():  # a close may checkpoint the WAL: not across a fork
            for conn in connections:
                try:
                    conn.close()
                except sqlite3.ProgrammingError:
                    pass  # closed from another thread than its own: SQLite refuses, the GC closes it


class ExpiringTable:
    """A ``key → value`` table of an SQLite file whose rows expire.

    Expiry uses the wall clock (shared between processes): an expired row is invisible at once and
    overwritten by the next write of its key. Keys are mostly unique (message ids, buckets,
    barriers), so a write also deletes the expired rows, at most every few seconds per instance.

    Parameters:
      path: The database file, as for :class:`ThreadLocalConnections`.
      name: The table's name.
      value_type: The SQL type of the ``value`` column.
      busy_timeout_ms: As for :class:`ThreadLocalConnections`.
    """

    def __init__(self, path: str | os.PathLike[str], *, name: str, value_type: str, busy_timeout_ms: int) -> None:
        self.name = name
        schema = (
            f"CREATE TABLE IF NOT EXISTS {name} (key TEXT PRIMARY KEY, value {value_type} NOT NULL,"
            f" expires_at INTEGER NOT NULL) WITHOUT ROWID;"
            f" CREATE INDEX IF NOT EXISTS {name}_expiry ON {name} (expires_at)"
        )
        self.connections = ThreadLocalConnections(path, busy_timeout_ms=busy_timeout_ms, schema=schema)
        self._select = f"SELECT value FROM {name} WHERE key = ? AND expires_at > ?"
        self._insert = f"INSERT OR REPLACE INTO {name} (key, value, expires_at) VALUES (?, ?, ?)"
        self._purge = f"DELETE FROM {name} WHERE expires_at <= ?"
        #: Monotonic time of the last purge; guarded by _purge_lock.
        self._last_purge_s = 0.0
        self._purge_lock = threading.Lock()

    def get(self, key: str, now_ms: int, conn: sqlite3.Connection | None = None) -> Any:
        """The value of an unexpired row, or None; read on ``conn`` (within its transaction) if given."""
        with translate_sqlite_errors():
            if conn is not None:
                row = conn.execute(self._select, (key, now_ms)).fetchone()
            else:
                with self.connections.read() as own:
                    row = own.execute(self._select, (key, now_ms)).fetchone()
        return None if row is None else row[0]

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction on this thread's connection, with SQLite errors translated."""
        with translate_sqlite_errors(), self.connections.write() as conn:
            yield conn

    def put(self, conn: sqlite3.Connection, key: str, value: Any, now_ms: int, ttl_ms: int) -> None:
        """Write a row inside a :meth:`write` transaction, purging expired rows when a purge is due."""
        conn.execute(self._insert, (key, value, now_ms + int(ttl_ms)))
        if self._purge_due():
            conn.execute(self._purge, (now_ms,))

    def _purge_due(self) -> bool:
        now_s = time.monotonic()
        with self._purge_lock:
            if now_s - self._last_purge_s < _PURGE_INTERVAL_S:
                return False
            self._last_purge_s = now_s
            return True

    def close(self) -> None:
        """Close the table's connections (they reopen on next use)."""
        self.connections.close()
