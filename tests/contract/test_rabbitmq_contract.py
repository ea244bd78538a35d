from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest

from greenroom.broker import Broker
from greenroom.brokers.rabbitmq import RabbitmqBroker
from greenroom.errors import ConnectionClosed
from greenroom.testing.broker_contract import BrokerContract
from tests._rabbitmq_vhost import URL
from tests.brokers.test_rabbitmq import default_queue_lock
from tests.conftest import service_unavailable

#: Every test runs in a virtual host of this test process's own.
pytestmark = pytest.mark.usefixtures("rabbitmq_vhost")


class TestRabbitmqBrokerContract(BrokerContract):
    """The contract suite on the shared RabbitMQ.

    Its tests use the queue "default": it is flushed around each test, and a file lock keeps them
    from running at the same time as other tests using it under pytest-xdist.
    """

    @pytest.fixture
    def broker(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
        with default_queue_lock(tmp_path_factory):
            broker = RabbitmqBroker(url=URL)
            try:
                broker.flush("default")
            except ConnectionClosed as exc:
                service_unavailable("RabbitMQ", exc)
            broker.emit_after("process_boot")
            yield broker
            broker.flush("default")
            broker.close()

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        assert isinstance(broker, RabbitmqBroker)
        broker.declare_queue(queue_name, ensure=True)
        # A plain AMQP publish, as a producer in another language would do it.
        connection = pika.BlockingConnection(pika.URLParameters(URL))
        try:
            connection.channel().basic_publish(
                exchange="", routing_key=queue_name, body=payload, properties=pika.BasicProperties(delivery_mode=2)
            )
        finally:
            connection.close()

    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        assert isinstance(broker, RabbitmqBroker)
        return broker.get_queue_message_counts(queue_name)[2]
