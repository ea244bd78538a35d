"""Which per-minute counts go with which job store (see :mod:`greenroom.jobs._minutes`)."""

from __future__ import annotations

import sys
import threading
import weakref

from ._memory_store import MemoryJobStore
from ._minutes import MemoryMinuteCounts, MinuteCounts
from ._store import JobStore

__all__ = ["minute_counts_for"]


#: The counts kept beside each job store, built on first use; guarded by _for_store_lock.
_for_store: weakref.WeakKeyDictionary[JobStore, MinuteCounts] = weakref.WeakKeyDictionary()
_for_store_lock = threading.Lock()


def minute_counts_for(store: JobStore) -> MinuteCounts | None:
    """The per-minute counts kept beside a job store, or ``None`` for a kind of store greenroom does not know.

    Memory stores keep them in memory, SQLite stores in the ``greenroom_job_minutes`` table of
    their file, Redis stores in ``__job_minute__.<minute>`` hashes beside the status, PostgreSQL
    stores in ``minute:<minute>`` rows of their ``jobs`` table.
    """
    with _for_store_lock:
        counts = _for_store.get(store)
        if counts is None:
            counts = _counts_beside(store)
            if counts is not None:
                _for_store[store] = counts
        return counts


def _counts_beside(store: JobStore) -> MinuteCounts | None:
    if isinstance(store, MemoryJobStore):
        return MemoryMinuteCounts()
    from ._sqlite_store import SQLiteJobStore

    if isinstance(store, SQLiteJobStore):
        from ._minutes_sqlite import SQLiteMinuteCounts

        return SQLiteMinuteCounts(store.path)
    # A Redis store exists only once its module was imported: no need to import Redis to tell.
    redis_stores = sys.modules.get("greenroom.jobs._redis_store")
    if redis_stores is not None and isinstance(store, redis_stores.RedisJobStore):
        from ._minutes_redis import RedisMinuteCounts

        return RedisMinuteCounts(store.client, store.prefix)
    postgres_stores = sys.modules.get("greenroom.jobs._postgres_store")
    if postgres_stores is not None and isinstance(store, postgres_stores.PostgresJobStore):
        from ._minutes_postgres import PostgresMinuteCounts

        return PostgresMinuteCounts(store)
    return None
