"""The store each kind of broker coordinates its schedulers through."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from ._book import book_of
from ._store import ScheduleStore

if TYPE_CHECKING:
    from ..broker import Broker
    from ..brokers.rabbitmq import RabbitmqBroker

__all__ = ["store_for"]


def _loaded(module: str) -> bool:
    """Whether ``module`` is imported: a broker of one of its classes exists only if it is.

    Checking first keeps this function from importing the drivers (redis-py, pika) of brokers
    that are not in use.
    """
    return module in sys.modules


def store_for(broker: Broker) -> ScheduleStore:
    """A new store on the broker's own storage (the stub broker's is shared within the process).

    Raises:
      TypeError: For a broker greenroom has no store for.
    """
    if _loaded("greenroom.brokers.sqlite"):
        from ..brokers.sqlite import SQLiteBroker

        if isinstance(broker, SQLiteBroker):
            from ._sqlite_store import SQLiteStore

            return SQLiteStore(os.path.abspath(broker.path), synchronous=broker.settings.synchronous)
    if _loaded("greenroom.brokers.redis"):
        from ..brokers.redis import RedisBroker

        if isinstance(broker, RedisBroker):
            from ._redis_store import RedisStore

            return RedisStore(broker.client, broker.namespace)
    if _loaded("greenroom.brokers.rabbitmq"):
        from ..brokers.rabbitmq import RabbitmqBroker

        if isinstance(broker, RabbitmqBroker):
            from ._rabbitmq_store import RabbitmqStore

            return RabbitmqStore(lambda: broker.connection, lambda: _forget_connection(broker))
    if _loaded("greenroom.brokers.postgres"):
        from ..brokers.postgres import PostgresBroker

        if isinstance(broker, PostgresBroker):
            from ._postgres_store import PostgresStore

            return PostgresStore(broker.url, schema=broker.schema)
    if _loaded("greenroom.brokers.stub"):
        from ..brokers.stub import StubBroker

        if isinstance(broker, StubBroker):
            return book_of(broker).memory_store
    raise TypeError(f"greenroom cannot coordinate schedules on a {type(broker).__name__}")


def _forget_connection(broker: RabbitmqBroker) -> None:
    """Close the calling thread's connection of the broker (it opens a new one when next needed)."""
    del broker.connection
