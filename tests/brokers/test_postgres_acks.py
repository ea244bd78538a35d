"""How the Postgres broker deletes the rows of acknowledged messages: with the consumer's next statement.

An ack returns at once; the row goes with the consumer's next lease (or a plain delete when there
is no room to lease), with ``keep_alive`` while the worker is paused, or with ``close``. Once the
consumer is closed, an ack deletes its row itself before returning.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import greenroom
from greenroom.errors import ConnectionClosed
from tests._postgres import URL, private_schema

psycopg = pytest.importorskip("psycopg")

from greenroom.brokers.postgres import PostgresBroker  # noqa: E402


@pytest.fixture
def broker() -> Iterator[PostgresBroker]:
    with private_schema() as schema:
        broker = PostgresBroker(url=URL, schema=schema)
        broker.emit_after("process_boot")
        try:
            yield broker
        finally:
            broker.close()


@pytest.fixture
def noop(broker: PostgresBroker) -> Any:
    @greenroom.actor(broker=broker)
    def noop(n: int) -> None:
        pass

    return noop


def stored_ids(broker: PostgresBroker) -> set[int]:
    with psycopg.connect(URL, autocommit=True) as conn:
        return {row[0] for row in conn.execute(f'SELECT id FROM "{broker.schema}".messages')}


def test_the_next_lease_deletes_the_rows_acked_before_it(broker: PostgresBroker, noop: Any) -> None:
    for n in range(3):
        noop.send(n)
    consumer = broker.consume("default", prefetch=1, timeout=1000)
    try:
        first = next(consumer)
        assert first is not None
        consumer.ack(first)  # returns without a round trip of its own
        second = next(consumer)  # leases the next row, deleting the first
        assert second is not None
        assert first.row_id not in stored_ids(broker)
        assert second.row_id in stored_ids(broker)
        consumer.ack(second)
    finally:
        consumer.close()  # deletes the second
    assert len(stored_ids(broker)) == 1
    assert broker.get_queue_counts("default").in_progress == 0


def test_acks_with_no_room_to_lease_are_deleted_on_their_own(broker: PostgresBroker, noop: Any) -> None:
    noop.send(1)
    consumer = broker.consume("default", prefetch=1, timeout=50)
    try:
        message = next(consumer)
        assert message is not None
        consumer.ack(message)
        assert next(consumer) is None  # the queue is empty: an idle tick, after the delete
        assert stored_ids(broker) == set()
    finally:
        consumer.close()


def test_a_paused_consumer_keeps_deleting_acked_rows(broker: PostgresBroker, noop: Any) -> None:
    noop.send(1)
    consumer = broker.consume("default", prefetch=1, timeout=1000)
    try:
        message = next(consumer)
        assert message is not None
        consumer.ack(message)
        consumer.keep_alive(0.05)
        assert stored_ids(broker) == set()
    finally:
        consumer.close()


def test_an_ack_after_close_deletes_its_row_before_returning(broker: PostgresBroker, noop: Any) -> None:
    noop.send(1)
    consumer = broker.consume("default", prefetch=1, timeout=1000)
    message = next(consumer)
    assert message is not None
    consumer.close()  # the message is still running: its row stays leased
    assert stored_ids(broker) == {message.row_id}
    consumer.ack(message)
    assert stored_ids(broker) == set()


def test_acks_survive_a_failed_lease_and_are_deleted_on_close(
    broker: PostgresBroker, noop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    noop.send(1)
    noop.send(2)
    consumer: Any = broker.consume("default", prefetch=1, timeout=1000)
    message = next(consumer)
    assert message is not None
    consumer.ack(message)

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionClosed("PostgreSQL: gone")

    monkeypatch.setattr(consumer.storage, "lease", unreachable)
    with pytest.raises(ConnectionClosed):
        next(consumer)
    assert message.row_id in consumer.held_rows()  # still renewed meanwhile
    consumer.close()  # what a consumer thread does before it reconnects
    assert message.row_id not in stored_ids(broker)
    assert len(stored_ids(broker)) == 1


def test_a_worker_leaves_no_acked_row_behind(broker: PostgresBroker) -> None:
    seen: list[int] = []

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        seen.append(n)

    broker.enqueue_many(record.message(n) for n in range(200))
    worker = greenroom.Worker(broker, worker_threads=4, worker_timeout=100)
    worker.start()
    try:
        broker.join("default", timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    assert sorted(seen) == list(range(200))
    assert stored_ids(broker) == set()
