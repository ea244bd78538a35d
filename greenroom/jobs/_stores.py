"""Which job store a broker's status lives in."""

from __future__ import annotations

import sys
import weakref

from ..broker import Broker
from ..errors import GreenroomError
from ._memory_store import MemoryJobStore
from ._store import JobStore

__all__ = ["JobStoreNotConfigured", "configured_store", "store_for"]

#: The store each broker's status lives in, built on first use.
_stores: weakref.WeakKeyDictionary[Broker, JobStore] = weakref.WeakKeyDictionary()


class JobStoreNotConfigured(GreenroomError):
    """The broker keeps no job status of its own (RabbitMQ) and no store was configured for it."""


def configured_store(broker: Broker) -> JobStore | None:
    """The store given to the broker's ``JobTracking`` middleware, if one was."""
    for middleware in broker.middleware:
        store = getattr(middleware, "job_store", None)
        if isinstance(store, JobStore):
            return store
    return None


def store_for(broker: Broker) -> JobStore:
    """The store holding ``broker``'s job status: the configured one, else the broker's own storage.

    The SQLite broker keeps status in its database file, the Redis broker beside its queues, the
    PostgreSQL broker in its schema's ``jobs`` table, the stub broker in memory.

    Raises:
      JobStoreNotConfigured: For a broker without storage of its own (RabbitMQ) when no store
        was given to its ``JobTracking`` middleware.
    """
    store = configured_store(broker) or _stores.get(broker)
    if store is not None:
        return store
    store = _own_store(broker)
    return _stores.setdefault(broker, store)


def _own_store(broker: Broker) -> JobStore:
    """A store in the broker's own storage.

    A broker of a class exists only once the class's module is imported, so each branch asks
    ``sys.modules`` first: status on SQLite must not need redis-py (nor psycopg) installed, and
    ``import greenroom`` loads no broker library.
    """
    if "greenroom.brokers.stub" in sys.modules:
        from ..brokers.stub import StubBroker

        if isinstance(broker, StubBroker):
            return MemoryJobStore()
    if "greenroom.brokers.sqlite" in sys.modules:
        from ..brokers.sqlite import SQLiteBroker
        from ._sqlite_store import SQLiteJobStore

        if isinstance(broker, SQLiteBroker):
            return SQLiteJobStore(broker.path, busy_timeout_ms=broker.settings.busy_timeout_ms)
    if "greenroom.brokers.redis" in sys.modules:
        from ..brokers.redis import RedisBroker
        from ._redis_store import RedisJobStore

        if isinstance(broker, RedisBroker):
            return RedisJobStore(broker.client, broker.namespace)
    if "greenroom.brokers.postgres" in sys.modules:
        from ..brokers.postgres import PostgresBroker
        from ._postgres_store import PostgresJobStore

        if isinstance(broker, PostgresBroker):
            return PostgresJobStore(broker.url, schema=broker.schema)
    raise JobStoreNotConfigured(
        f"{type(broker).__name__} keeps no job status of its own: add "
        "JobTracking(store=RedisJobStore.from_url(...)), JobTracking(store=SQLiteJobStore(path)) or "
        "JobTracking(store=PostgresJobStore(url)) "
        "to the broker, in producers and workers alike"
    )
