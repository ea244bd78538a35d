from __future__ import annotations

from greenroom.broker import Broker
from greenroom.testing.broker_contract import BrokerContract
from greenroom.testing.unique_jobs_contract import UniqueJobsContract
from tests.contract._harnesses import SQLiteHarness


class TestSQLiteBrokerContract(SQLiteHarness, BrokerContract, UniqueJobsContract):
    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        return broker.get_queue_counts(queue_name).dead
