"""Each broker's schedule store keeps the contract: one lease holder, fenced tick records, a handover."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenroom.scheduling._store import Claim, Holder, Lease, ScheduleStore
from greenroom.testing import wait_for
from tests.conftest import redis_client_for
from tests.scheduling.conftest import delete_streams, unique_name

LEASE_MS = 300
ALICE = Holder("alice-id", "host-a", 101)
BOB = Holder("bob-id", "host-b", 202)


class Pair:
    """Two stores on one backend, as two processes would have, and how a holder dies."""

    def __init__(self, a: ScheduleStore, b: ScheduleStore, kill_a: Callable[[], None], clock_ms: Callable[[], int]):
        self.a = a
        self.b = b
        self.kill_a = kill_a
        self.clock_ms = clock_ms
        self.name = unique_name()

    def acquire_b_after_a_died(self) -> list[Lease]:
        """B's lease, once A (dead) no longer holds it."""
        self.kill_a()
        won: list[Lease] = []

        def b_wins() -> bool:
            won.extend(self.b.acquire([self.name], BOB, LEASE_MS, self.clock_ms()))
            return bool(won)

        wait_for(b_wins, timeout_s=10, interval_s=0.05)
        return won


@pytest.fixture(params=["memory", "sqlite", "redis", "rabbitmq", "postgres"])
def pair(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Pair]:
    kind = request.param
    stores: list[ScheduleStore] = []
    cleanups: list[Callable[[], None]] = []
    if kind == "memory":
        from greenroom.scheduling._memory_store import MemoryStore

        shared = MemoryStore()
        skew = [0]
        result = Pair(shared, shared, lambda: skew.__setitem__(0, 10 * LEASE_MS), lambda: now_ms() + skew[0])
    elif kind == "sqlite":
        from greenroom.scheduling._sqlite_store import SQLiteStore

        path = str(tmp_path / "broker.db")
        stores = [SQLiteStore(path), SQLiteStore(path)]
        # A dead holder stops renewing: its lease runs out after LEASE_MS of the shared wall clock.
        result = Pair(stores[0], stores[1], lambda: None, now_ms)
    elif kind == "redis":
        import redis

        from greenroom.scheduling._redis_store import RedisStore

        namespace = unique_name()
        _, cleanup = redis_client_for(namespace)
        cleanups.append(cleanup)
        stores = [RedisStore(redis.Redis(), namespace), RedisStore(redis.Redis(), namespace)]
        result = Pair(stores[0], stores[1], lambda: None, now_ms)
    elif kind == "postgres":
        from greenroom.scheduling._postgres_store import PostgresStore
        from tests._postgres import URL, private_schema

        schemas = contextlib.ExitStack()
        schema = schemas.enter_context(private_schema())
        cleanups.append(schemas.close)
        stores = [PostgresStore(URL, schema=schema), PostgresStore(URL, schema=schema)]
        # A dead holder stops renewing: its lease runs out after LEASE_MS of the server's clock.
        result = Pair(stores[0], stores[1], lambda: None, now_ms)
    else:
        from greenroom.brokers.rabbitmq import RabbitmqBroker
        from greenroom.scheduling import store_for

        url = request.getfixturevalue("amqp_url")
        brokers = [RabbitmqBroker(url=url), RabbitmqBroker(url=url)]
        cleanups.extend(broker.close for broker in brokers)
        stores = [store_for(broker) for broker in brokers]
        # The lease goes with its holder's connection.
        result = Pair(stores[0], stores[1], stores[0].close, now_ms)
        cleanups.append(lambda: delete_streams(url, [result.name]))
    yield result
    for store in stores:
        store.close()
    for cleanup in cleanups:
        cleanup()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_one_holder_at_a_time_and_the_record_survives_a_change_of_holder(pair: Pair) -> None:
    (lease,) = pair.a.acquire([pair.name], ALICE, LEASE_MS, pair.clock_ms())
    assert lease.last_tick_ms is None
    assert pair.b.acquire([pair.name], BOB, LEASE_MS, pair.clock_ms()) == []
    assert pair.a.record(lease, 5000, run=True) is Claim.RECORDED
    lease.last_tick_ms = lease.last_run_ms = 5000
    assert pair.a.record(lease, 5000, run=True) is Claim.TAKEN
    assert pair.a.record(lease, 6000, run=False) is Claim.RECORDED  # skipped: the record moves, not the last run
    lease.last_tick_ms = 6000
    recorded = pair.b.read([pair.name], pair.clock_ms())[pair.name]
    assert (recorded.last_tick_ms, recorded.last_run_ms) == (6000, 5000)
    assert recorded.leader is not None
    assert recorded.leader.pid == ALICE.pid
    (taken,) = pair.acquire_b_after_a_died()
    assert (taken.last_tick_ms, taken.last_run_ms) == (6000, 5000)
    # The old holder comes back and carries on: fenced off.
    assert pair.a.record(lease, 7000, run=True) is Claim.LOST
    assert pair.a.renew([lease], ALICE, LEASE_MS, pair.clock_ms()) == []
    assert pair.b.record(taken, 7000, run=True) is Claim.RECORDED


def test_renewing_keeps_the_lease_and_releasing_hands_it_over(pair: Pair) -> None:
    (lease,) = pair.a.acquire([pair.name], ALICE, LEASE_MS, pair.clock_ms())
    deadline_s = time.monotonic() + 3 * LEASE_MS / 1000
    while time.monotonic() < deadline_s:
        assert pair.a.renew([lease], ALICE, LEASE_MS, pair.clock_ms()) == [lease]
        assert pair.b.acquire([pair.name], BOB, LEASE_MS, pair.clock_ms()) == []
        time.sleep(LEASE_MS / 1000 / 5)  # renewing at a fifth of the lease, as the scheduler does
    pair.a.release([lease], ALICE)
    assert pair.a.record(lease, 1000, run=True) is Claim.LOST
    (taken,) = pair.b.acquire([pair.name], BOB, LEASE_MS, pair.clock_ms())
    assert taken.token != lease.token or pair.a is not pair.b
    assert pair.b.read([pair.name], pair.clock_ms())[pair.name].leader == BOB


class _StopDispatching(Exception):
    pass


def test_ending_a_stream_read_keeps_the_connection_and_its_leases(amqp_url: str) -> None:
    import pika

    from greenroom.scheduling._rabbitmq_stream import _end_read

    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    stream = f"greenroom.schedule.{unique_name()}"
    try:
        writer = connection.channel()
        writer.queue_declare(stream, durable=True, arguments={"x-queue-type": "stream"})
        for _ in range(50):
            writer.basic_publish("", stream, b"{}")
        reader = connection.channel()
        reader.basic_qos(prefetch_count=100)

        def take_one(channel: Any, method: Any, properties: Any, body: bytes) -> None:
            raise _StopDispatching  # leaves the other deliveries pending in pika

        reader.basic_consume(stream, take_one, arguments={"x-stream-offset": "first"})
        with pytest.raises(_StopDispatching):
            connection.process_data_events(5)
        # Closing the channel from this side, pika would reject the pending deliveries, and
        # RabbitMQ would close the whole connection for it.
        _end_read(reader)
        connection.process_data_events(0.2)
        assert connection.is_open
        writer.basic_publish("", stream, b"{}")
    finally:
        if connection.is_open:
            connection.channel().queue_delete(stream)
            connection.close()
