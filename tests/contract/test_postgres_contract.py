from __future__ import annotations

from collections.abc import Iterator

import pytest

import greenroom
from greenroom.broker import Broker
from greenroom.testing.broker_contract import BrokerContract
from greenroom.testing.unique_jobs_contract import UniqueJobsContract
from tests._postgres import URL, insert_raw, private_schema


class TestPostgresBrokerContract(BrokerContract, UniqueJobsContract):
    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        from greenroom.brokers.postgres import PostgresBroker, PostgresSettings

        with private_schema() as schema:
            settings = PostgresSettings(lease_ms=10_000, renew_interval_ms=1000)
            broker = PostgresBroker(url=URL, schema=schema, settings=settings)
            broker.emit_after("process_boot")
            greenroom.set_broker(broker)
            yield broker
            broker.close()

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        from greenroom.brokers.postgres import PostgresBroker

        assert isinstance(broker, PostgresBroker)
        broker.get_queue_counts(queue_name)  # creates the schema's tables on first use
        insert_raw(broker.url, broker.schema, queue_name, payload)

    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        from greenroom.brokers.postgres import PostgresBroker

        assert isinstance(broker, PostgresBroker)
        return broker.get_queue_counts(queue_name).dead
