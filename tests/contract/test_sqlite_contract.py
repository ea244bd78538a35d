from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenroom
from greenroom.broker import Broker
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings
from greenroom.testing.broker_contract import BrokerContract
from greenroom.testing.unique_jobs_contract import UniqueJobsContract


class TestSQLiteBrokerContract(BrokerContract, UniqueJobsContract):
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

    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        assert isinstance(broker, SQLiteBroker)
        return broker.get_queue_counts(queue_name).dead
