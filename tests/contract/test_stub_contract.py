from __future__ import annotations

import pytest

from greenroom.broker import Broker
from greenroom.brokers.stub import StubBroker
from greenroom.testing.broker_contract import BrokerContract
from greenroom.testing.unique_jobs_contract import UniqueJobsContract


class TestStubBrokerContract(BrokerContract, UniqueJobsContract):
    @pytest.fixture
    def broker(self, stub_broker: StubBroker) -> Broker:
        return stub_broker

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        assert isinstance(broker, StubBroker)
        broker.put_raw(queue_name, payload)

    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        assert isinstance(broker, StubBroker)
        return len(broker.dead_letters_by_queue[queue_name])
