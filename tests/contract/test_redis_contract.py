from __future__ import annotations

from greenroom.broker import Broker
from greenroom.brokers.redis import RedisBroker
from greenroom.testing.broker_contract import BrokerContract
from greenroom.testing.unique_jobs_contract import UniqueJobsContract
from tests.contract._harnesses import RedisHarness


class TestRedisBrokerContract(RedisHarness, BrokerContract, UniqueJobsContract):
    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        assert isinstance(broker, RedisBroker)
        return broker.dead_letter_count(queue_name)
