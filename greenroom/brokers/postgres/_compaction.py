"""Rebuilding the messages table's indexes once vacuums can no longer bring them back to size.

Acknowledged rows are deleted, and a vacuum frees the index pages they emptied, but a B-tree never
gives a page back to the file system: after a burst of a million messages the indexes of an empty
table keep the size they had at the burst's peak. So when a vacuum finds the table nearly empty
(at most :data:`SMALL_TABLE_ROWS` rows, a rebuild of a few milliseconds) and its indexes larger than
``reindex_over_bytes``, the worker process that ran it rebuilds them with ``REINDEX TABLE
CONCURRENTLY``. That takes no lock that stops inserts, leases or deletes, but it waits for every
transaction older than itself; so it runs on a thread and a connection of its own, never on the
lease keeper's, under a ``lock_timeout``. A rebuild that gives up (or whose process dies) leaves
invalid copies of the indexes behind (``…_ccnew``, ``…_ccold``); the next attempt drops them first.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from ...errors import GreenroomError
from ._storage import IndexState, PostgresStorage

__all__ = ["IndexCompactor", "SMALL_TABLE_ROWS"]

#: The most rows a table may hold for its indexes to be rebuilt.
SMALL_TABLE_ROWS = 1000
#: How long a rebuild waits for one lock (or for an older transaction) before it gives up.
LOCK_TIMEOUT_MS = 2000
#: How long a whole rebuild may take.
STATEMENT_TIMEOUT_MS = 60_000
#: The pause (s) after a failed rebuild, doubled after each further failure in a row, up to the longest.
FIRST_PAUSE_S = 10.0
LONGEST_PAUSE_S = 3600.0


class IndexCompactor:
    """Rebuilds the indexes of one schema's messages table, on a thread of its own, when they are due.

    One per broker and process, driven by the lease keeper after each vacuum this process ran.

    Parameters:
      storage: The broker's tables (their statements, connections and settings).
    """

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Cleared for good when the server refuses rebuilds (privilege, a server before 12).
        self.enabled = storage.settings.reindex_over_bytes > 0
        #: The indexes' size after the last rebuild of the empty table: they must grow well beyond
        #: it to be rebuilt again, whatever ``reindex_over_bytes`` says.
        self._size_after_rebuild = 0
        #: Rebuilds that failed in a row, and the earliest (monotonic s) the next may start.
        self._failures = 0
        self._not_before_s = 0.0

    def start_if_due(self) -> bool:
        """Start a rebuild unless one runs or none is due (one query); whether one was started.

        Never raises: a failed look is logged, and the next vacuum looks again.
        """
        if not self.enabled or self.running or time.monotonic() < self._not_before_s:
            return False
        try:
            state = self.storage.index_state(SMALL_TABLE_ROWS + 1)
        except GreenroomError as exc:
            self.storage.logger.debug("Could not look at the indexes of the messages table: %s", exc)
            return False
        if not (state.leftovers > 0 or self._due(state)):
            return False
        with self._lock:
            if self.running:
                return False
            self._thread = threading.Thread(target=self.compact, name="greenroom-postgres-reindex", daemon=True)
            self._thread.start()
        return True

    def _due(self, state: IndexState) -> bool:
        threshold = max(self.storage.settings.reindex_over_bytes, 2 * self._size_after_rebuild)
        return state.index_bytes > threshold and state.rows <= SMALL_TABLE_ROWS

    @property
    def running(self) -> bool:
        """Whether a rebuild started by :meth:`start_if_due` is still going."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def join(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for a rebuild in progress."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)

    def compact(self) -> bool:
        """Drop what failed rebuilds left, then rebuild the indexes if still due; whether they were rebuilt.

        Never raises: what went wrong is logged. After a failure the next attempt waits, twice as
        long after each failure in a row (from 10 s up to an hour): a transaction of the
        application that stays open makes every rebuild give up.
        """
        logger = self.storage.logger
        try:
            with self.storage.db.connect() as conn:
                rebuilt = self._compact_on(conn)
        except (  # the server never will: no privilege, or no REINDEX CONCURRENTLY (before 12)
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.FeatureNotSupported,
            psycopg.errors.SyntaxError,
        ) as exc:
            self.enabled = False
            logger.warning("Not rebuilding the indexes of the messages table: %s", exc)
        except psycopg.Error as exc:  # a timeout, a lost connection: try again later
            self._failures += 1
            pause_s = min(FIRST_PAUSE_S * 2 ** (self._failures - 1), LONGEST_PAUSE_S)
            self._not_before_s = time.monotonic() + pause_s
            logger.warning(
                "Could not rebuild the indexes of the messages table (trying again in %.0f s): %r", pause_s, exc
            )
        else:
            self._failures = 0
            return rebuilt
        return False

    def _compact_on(self, conn: psycopg.Connection[Any]) -> bool:
        storage = self.storage
        statements = storage.sql
        schema = storage.db.schema
        row = conn.execute(statements.try_vacuum_lock, (schema,)).fetchone()
        if not (row and row[0]):
            return False  # another process vacuums or rebuilds the table now
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(LOCK_TIMEOUT_MS))
            conn.execute(sql.SQL("SET statement_timeout = {}").format(STATEMENT_TIMEOUT_MS))
            for namespace, name in conn.execute(statements.leftover_indexes).fetchall():
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(sql.Identifier(namespace, name)))
            state = storage.index_state(SMALL_TABLE_ROWS + 1, conn)
            if not self._due(state):
                return False
            conn.execute(statements.reindex)
            after = storage.index_state(SMALL_TABLE_ROWS + 1, conn)
            # Only an empty table's rebuilt size is the floor to double: one rebuilt with rows
            # still in it would keep the emptied table's indexes above their empty size for good.
            self._size_after_rebuild = after.index_bytes if state.rows == 0 else 0
            storage.logger.info(
                "Rebuilt the indexes of %s.messages: %d bytes before, %d after.",
                schema,
                state.index_bytes,
                after.index_bytes,
            )
            return True
        finally:
            conn.execute(statements.vacuum_unlock, (schema,))
