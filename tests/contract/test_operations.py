"""The operations API (counts, dead letters: list, requeue, purge) on every broker, on real servers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pika
import pytest

import greenroom
from greenroom.broker import Broker
from greenroom.brokers.stub import StubBroker
from greenroom.common import current_millis
from greenroom.errors import ConnectionClosed
from greenroom.message import Message
from greenroom.testing import wait_for
from greenroom.testing.operations_contract import OperationsContract
from tests.conftest import service_unavailable
from tests.contract._harnesses import RedisHarness, SQLiteHarness


class TestStubOperations(OperationsContract):
    @pytest.fixture
    def broker(self, stub_broker: StubBroker) -> Broker:
        return stub_broker

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        assert isinstance(broker, StubBroker)
        broker.declare_queue(queue_name)
        broker.put_raw(queue_name, payload)


class TestSQLiteOperations(SQLiteHarness, OperationsContract):
    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        broker.declare_queue(queue_name)
        super().put_raw(broker, queue_name, payload)


class TestRedisOperations(RedisHarness, OperationsContract):
    pass


class TestRabbitmqOperations(OperationsContract):
    """In the test process's own virtual host, on queues of each test's own."""

    in_progress_known = False

    @pytest.fixture
    def broker(self, rabbitmq_vhost: str) -> Iterator[Broker]:
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=rabbitmq_vhost)
        try:
            _ = broker.connection
        except ConnectionClosed as exc:
            service_unavailable("RabbitMQ", exc)
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)
        yield broker
        broker.close()

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        assert isinstance(broker, RabbitmqBroker)
        broker.declare_queue(queue_name, ensure=True)
        connection = pika.BlockingConnection(broker.parameters)
        try:
            properties = pika.BasicProperties(delivery_mode=2)
            connection.channel().basic_publish(exchange="", routing_key=queue_name, body=payload, properties=properties)
        finally:
            connection.close()

    def test_dead_letters_rabbitmq_routed_itself_are_listed_and_requeued(self, broker: Broker, queue_name: str) -> None:
        """A message rejected without requeue (as Dramatiq's consumers do) reaches q.XQ through the queue's
        dead-letter exchange, with only RabbitMQ's x-death header to tell why and when."""
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        assert isinstance(broker, RabbitmqBroker)
        broker.declare_queue(queue_name, ensure=True)
        message: Message[Any] = Message(queue_name, "work", (), {}, {"retries": 4}, "rejected-1")
        started_s = current_millis() // 1000
        self.put_raw(broker, queue_name, message.encode())
        connection = pika.BlockingConnection(broker.parameters)
        try:
            channel = connection.channel()
            method, _, _ = channel.basic_get(queue_name, auto_ack=False)
            assert method is not None
            channel.basic_nack(method.delivery_tag, requeue=False)
        finally:
            connection.close()

        wait_for(lambda: broker.get_queue_counts(queue_name).dead == 1, 30)
        [letter] = broker.get_dead_letters(queue_name)
        assert (letter.id, letter.message_id, letter.actor_name) == (0, "rejected-1", "work")
        assert letter.reason.startswith(f"rejected on {queue_name!r}")
        assert started_s * 1000 <= letter.dead_at_ms <= current_millis()

        assert broker.requeue_dead_letters(queue_name, ["rejected-1"]) == 1
        counts = broker.get_queue_counts(queue_name)
        assert (counts.ready, counts.dead) == (1, 0)
        connection = pika.BlockingConnection(broker.parameters)
        try:
            _, _, body = connection.channel().basic_get(queue_name, auto_ack=True)
        finally:
            connection.close()
        assert body is not None
        again = Message.decode(body)
        assert (again.message_id, again.options) == ("rejected-1", {})
