"""``RabbitmqBroker.connection`` and ``.channel``: the calling thread's, opened on read, closed on ``del``.

The first fixture is written the way test suites written for Dramatiq commonly set up their
broker: read ``broker.connection`` to decide whether RabbitMQ is there, and tear down with ``del``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import greenroom
from greenroom import ConnectionClosed, Worker
from greenroom.brokers.rabbitmq import RabbitmqBroker
from tests.brokers.test_rabbitmq import delete_queues, free_port
from tests.conftest import in_forked_child, service_unavailable

pytestmark = pytest.mark.usefixtures("rabbitmq_vhost")


def check_rabbitmq(broker: RabbitmqBroker) -> None:
    """Skip (fail in CI) unless the broker can connect: the probe Dramatiq users write."""
    try:
        broker.connection  # noqa: B018 - reading it opens the connection, which is the check
    except Exception as exc:  # any failure to connect means "not reachable"
        service_unavailable("RabbitMQ", exc)


@pytest.fixture
def rabbitmq_broker(rabbitmq_vhost: str) -> Iterator[RabbitmqBroker]:
    broker = RabbitmqBroker(url=rabbitmq_vhost, max_priority=10)
    check_rabbitmq(broker)
    broker.emit_after("process_boot")
    greenroom.set_broker(broker)
    yield broker
    broker.flush_all()
    connection = broker.connection
    del broker.connection
    del broker.connection  # a second time: nothing is open any more, and that is fine
    del broker.channel  # likewise for the channel, which went with its connection
    assert not connection.is_open
    broker.close()


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = f"gr_conn_{uuid.uuid4().hex[:12]}"
    yield name
    delete_queues(name)


def test_a_dramatiq_style_fixture_runs_an_actor(rabbitmq_broker: RabbitmqBroker, queue_name: str) -> None:
    done = threading.Event()

    @greenroom.actor(queue_name=queue_name)
    def ping() -> None:
        done.set()

    worker = Worker(rabbitmq_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        ping.send()
        assert done.wait(30)
        rabbitmq_broker.join(queue_name, min_successes=2, timeout=30000)
    finally:
        worker.stop(timeout=20000)


def test_reading_opens_once_per_thread(rabbitmq_broker: RabbitmqBroker) -> None:
    connection = rabbitmq_broker.connection
    assert connection.is_open
    assert rabbitmq_broker.connection is connection
    channel = rabbitmq_broker.channel
    assert channel.is_open
    assert rabbitmq_broker.channel is channel
    others: list[Any] = []
    thread = threading.Thread(target=lambda: others.append(rabbitmq_broker.connection))
    thread.start()
    thread.join(30)
    assert len(others) == 1
    assert others[0] is not connection
    assert others[0].is_open
    # Deleting closes only the calling thread's connection and channel.
    del rabbitmq_broker.connection
    assert not connection.is_open
    assert not channel.is_open
    assert others[0].is_open
    # The next read opens a new one, and the broker publishes again.
    assert rabbitmq_broker.connection is not connection
    assert rabbitmq_broker.connection.is_open


def test_deleting_the_channel_keeps_the_connection(rabbitmq_broker: RabbitmqBroker, queue_name: str) -> None:
    connection = rabbitmq_broker.connection
    channel = rabbitmq_broker.channel
    del rabbitmq_broker.channel
    del rabbitmq_broker.channel
    assert not channel.is_open
    assert connection.is_open
    assert rabbitmq_broker.connection is connection
    fresh = rabbitmq_broker.channel
    assert fresh is not channel
    assert fresh.is_open
    rabbitmq_broker.declare_queue(queue_name, ensure=True)
    assert rabbitmq_broker.get_queue_message_counts(queue_name) == (0, 0, 0)


def test_deleting_before_any_read_opens_nothing(rabbitmq_vhost: str) -> None:
    broker = RabbitmqBroker(url=rabbitmq_vhost)
    del broker.channel
    del broker.connection
    del broker.connection
    del broker.channel
    assert broker._connections._process.get().opened == set()


def test_a_closed_connection_is_replaced_on_read(rabbitmq_broker: RabbitmqBroker, queue_name: str) -> None:
    connection = rabbitmq_broker.connection
    connection.close()
    assert rabbitmq_broker.connection is not connection
    assert rabbitmq_broker.connection.is_open
    rabbitmq_broker.declare_queue(queue_name, ensure=True)


def test_reading_without_a_server_raises_connection_closed() -> None:
    broker = RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    with pytest.raises(ConnectionClosed):
        broker.connection  # noqa: B018 - the read is what raises
    with pytest.raises(ConnectionClosed):
        broker.channel  # noqa: B018
    del broker.connection  # nothing was opened: still harmless


def test_a_forked_child_leaves_the_parents_connection_alone(rabbitmq_broker: RabbitmqBroker, queue_name: str) -> None:
    connection = rabbitmq_broker.connection
    rabbitmq_broker.declare_queue(queue_name, ensure=True)

    def in_child() -> str:
        # The inherited connection shares the parent's socket: the child must forget it, not close it.
        del rabbitmq_broker.connection
        own = rabbitmq_broker.connection
        return "own" if own is not connection and own.is_open else "inherited"

    assert in_forked_child(in_child) == "own"
    assert rabbitmq_broker.connection is connection
    # The parent's socket still works: a close frame from the child would have ended it.
    channel = connection.channel()
    channel.queue_declare(queue_name, passive=True)
    channel.close()
    assert connection.is_open


def test_consumer_class_builds_a_consumer(rabbitmq_broker: RabbitmqBroker, queue_name: str) -> None:
    rabbitmq_broker.declare_queue(queue_name)
    consumer = rabbitmq_broker.consumer_class(rabbitmq_broker, queue_name, 1, 100)
    try:
        assert next(consumer) is None  # an idle tick: the queue is empty
    finally:
        consumer.close()
