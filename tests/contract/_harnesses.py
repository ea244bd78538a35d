"""A broker for each suite of tests/contract, and how a foreign producer puts raw bytes on its queues."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenroom
from greenroom.broker import Broker
from greenroom.brokers.redis import RedisBroker
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings

REDIS_URL = "redis://127.0.0.1:6379/0"


class SQLiteHarness:
    """A broker on a file of the test's own, with leases short enough to renew during a test."""

    @pytest.fixture
    def broker(self, tmp_path: Path) -> Iterator[Broker]:
        broker = SQLiteBroker(
            tmp_path / "contract.db", settings=SQLiteSettings(lease_ms=10_000, renew_interval_ms=1000)
        )
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)
        yield broker
        broker.close()

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        assert isinstance(broker, SQLiteBroker)
        broker.get_queue_counts(queue_name)  # creates the database and its schema on first use
        with sqlite3.connect(broker.path) as conn:
            conn.execute("INSERT INTO greenroom_messages (queue_name, payload) VALUES (?, ?)", (queue_name, payload))
        conn.close()


class RedisHarness:
    """A broker on the shared Redis, in a namespace of the test's own."""

    @pytest.fixture
    def broker(self, redis_namespace: str) -> Iterator[Broker]:
        broker = RedisBroker(url=REDIS_URL, namespace=redis_namespace)
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)
        yield broker
        broker.close()

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        assert isinstance(broker, RedisBroker)
        redis_id = str(uuid.uuid4())
        prefix = f"{broker.namespace}:"
        broker.client.execute_command("HSET", f"{prefix}{queue_name}.msgs", redis_id, payload)
        broker.client.execute_command("RPUSH", f"{prefix}{queue_name}", redis_id)
