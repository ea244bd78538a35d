from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

import greenroom
from greenroom.broker import Broker
from greenroom.brokers.redis import RedisBroker
from greenroom.testing.broker_contract import BrokerContract
from greenroom.testing.unique_jobs_contract import UniqueJobsContract

REDIS_URL = "redis://127.0.0.1:6379/0"


class TestRedisBrokerContract(BrokerContract, UniqueJobsContract):
    @pytest.fixture
    def broker(self, redis_namespace: str) -> Iterator[Broker]:
        broker = RedisBroker(url=REDIS_URL, namespace=redis_namespace)
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)
        yield broker
        broker.close()

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        assert isinstance(broker, RedisBroker)
        message_id = str(uuid.uuid4())
        prefix = f"{broker.namespace}:"
        broker.client.execute_command("HSET", f"{prefix}{queue_name}.msgs", message_id, payload)
        broker.client.execute_command("RPUSH", f"{prefix}{queue_name}", message_id)

    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        assert isinstance(broker, RedisBroker)
        return broker.dead_letter_count(queue_name)
