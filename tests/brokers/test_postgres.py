"""PostgresBroker behaviour beyond the contract suite: schema, URLs, operations, notifications, forks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers._url import broker_from_url
from greenroom.errors import BrokerError, ConnectionClosed
from greenroom.testing import wait_for
from tests._postgres import URL, insert_raw, private_schema
from tests.conftest import in_forked_child

psycopg = pytest.importorskip("psycopg")

from greenroom.brokers.postgres import PostgresBroker, PostgresSettings, QueueCounts, migrate  # noqa: E402

TIMEOUT_S = 30.0


@pytest.fixture
def schema() -> Iterator[str]:
    with private_schema() as name:
        yield name


@pytest.fixture
def make_broker(schema: str) -> Iterator[Callable[..., PostgresBroker]]:
    """Brokers on the test's schema (``PostgresSettings`` from keyword arguments), closed at the end."""
    brokers: list[PostgresBroker] = []
    workers: list[Worker] = []

    def make(**settings: Any) -> PostgresBroker:
        broker = PostgresBroker(url=URL, schema=schema, settings=PostgresSettings(**settings))
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)
        brokers.append(broker)
        return broker

    make.workers = workers  # type: ignore[attr-defined]
    yield make
    for worker in workers:
        worker.stop(timeout=10_000)
    for broker in brokers:
        broker.close()


def start_worker(make_broker: Any, broker: PostgresBroker, **kwargs: Any) -> Worker:
    kwargs.setdefault("worker_timeout", 100)
    kwargs.setdefault("worker_threads", 2)
    worker = Worker(broker, **kwargs)
    worker.start()
    make_broker.workers.append(worker)
    return worker


def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(URL, autocommit=True) as conn:
        return list(conn.execute(sql, params).fetchall())


def execute(sql: str) -> None:
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(sql)


# -- creating the broker and its tables ----------------------------------------------------------


@pytest.mark.parametrize("url", ["postgresql://nobody@127.0.0.1:9/nowhere", "postgres://nobody@127.0.0.1:9/nowhere"])
def test_urls_name_the_broker_which_opens_nothing_until_used(url: str) -> None:
    broker = broker_from_url(url)
    assert isinstance(broker, PostgresBroker)

    @greenroom.actor(broker=broker)
    def noop() -> None:
        pass

    fast = PostgresBroker(url=url, settings=PostgresSettings(retry_timeout_ms=300, connect_timeout_s=1))
    fast.declare_actor(noop)
    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        fast.enqueue(noop.message())
    assert time.monotonic() - started < 10


def test_concurrent_starters_create_the_schema_once(schema: str) -> None:
    barrier = threading.Barrier(6)
    versions: list[int] = []

    def start() -> None:
        barrier.wait(TIMEOUT_S)
        versions.append(migrate(URL, schema=schema))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert versions == [1] * 6
    assert query(f'SELECT version FROM "{schema}".schema_version') == [(1,)]
    assert migrate(URL, schema=schema) == 1  # and again, idempotently


def test_a_schema_from_a_newer_greenroom_is_refused(schema: str) -> None:
    migrate(URL, schema=schema)
    execute(f'INSERT INTO "{schema}".schema_version (version) VALUES (99)')
    broker = PostgresBroker(url=URL, schema=schema)
    try:
        with pytest.raises(BrokerError, match="version 99"):
            broker.get_queue_counts("default")
    finally:
        broker.close()
    with pytest.raises(ValueError, match="schema"):
        PostgresBroker(url=URL, schema='drop"me')


def test_schemas_keep_applications_apart(make_broker: Any) -> None:
    with private_schema() as other_schema:
        mine = make_broker()
        other = PostgresBroker(url=URL, schema=other_schema)
        try:
            mine.declare_queue("default")
            other.declare_queue("default")

            @greenroom.actor(broker=mine)
            def job() -> None:
                pass

            job.send()
            assert mine.get_queue_counts("default").ready == 1
            assert other.get_queue_counts("default").ready == 0
        finally:
            other.close()


# -- what an operator sees ---------------------------------------------------------------------


def test_counts_dead_letters_with_reasons_and_their_purge(make_broker: Any) -> None:
    broker = make_broker(lease_ms=1200, renew_interval_ms=200, dead_message_ttl=1500)
    release = threading.Event()

    @greenroom.actor(broker=broker, max_retries=0)
    def fail() -> None:
        raise RuntimeError("boom")

    @greenroom.actor(broker=broker)
    def hold() -> None:
        release.wait(TIMEOUT_S)

    fail.send()
    hold.send()
    hold.send_with_options(delay=60_000)
    start_worker(make_broker, broker, worker_threads=1)
    try:
        wait_for(lambda: broker.get_queue_counts("default") == QueueCounts(0, 1, 1, 1), TIMEOUT_S)
    finally:
        release.set()
    (dead,) = broker.get_dead_letters("default")
    assert dead.reason == "RuntimeError('boom')"
    assert dead.queue_name == "default"
    assert b'"actor_name":"fail"' in dead.payload.replace(b" ", b"")
    # The delayed message waits in the table, leased by nobody; the dead letter is purged in time.
    wait_for(lambda: broker.get_queue_counts("default") == QueueCounts(0, 1, 0, 0), TIMEOUT_S)
    assert broker.get_dead_letters("default") == []


def test_a_poison_row_among_a_hundred_is_dead_lettered_alone(make_broker: Any) -> None:
    broker = make_broker()
    seen: list[int] = []

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        seen.append(n)

    poison = b'{"queue_name": "default", "actor_name": "record", "args": 7}'
    broker.get_queue_counts("default")  # creates the tables
    for n in range(100):
        if n == 50:
            insert_raw(URL, broker.schema, "default", poison)
        else:
            insert_raw(URL, broker.schema, "default", record.message(n).encode())
    start_worker(make_broker, broker, worker_threads=4)
    wait_for(lambda: len(seen) == 99 and broker.get_queue_counts("default").dead == 1, TIMEOUT_S)
    (dead,) = broker.get_dead_letters("default")
    assert dead.payload == poison
    assert dead.reason  # why it is not a message
    assert dead.message_id is None
    assert sorted(seen) == [n for n in range(100) if n != 50]


# -- waking up ---------------------------------------------------------------------------------


def test_notifications_start_messages_without_waiting_for_the_poll(make_broker: Any) -> None:
    broker = make_broker(poll_interval_ms=60_000)
    started: dict[int, float] = {}

    @greenroom.actor(broker=broker)
    def stamp(n: int) -> None:
        started[n] = time.monotonic()

    start_worker(make_broker, broker)
    assert broker.wait_until_listening()
    delays = []
    for n in range(5):
        sent = time.monotonic()
        stamp.send(n)
        wait_for(lambda n=n: n in started, 10)
        delays.append(started[n] - sent)
    assert max(delays) < 2.0, delays  # the poll would take 60 s


def test_the_fallback_poll_covers_a_lost_notification(make_broker: Any) -> None:
    broker = make_broker(poll_interval_ms=300)
    seen: list[int] = []

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        seen.append(n)

    broker.get_queue_counts("default")
    execute(f'ALTER TABLE "{broker.schema}".messages DISABLE TRIGGER messages_notify')
    start_worker(make_broker, broker)
    assert broker.wait_until_listening()
    insert_raw(URL, broker.schema, "default", record.message(1).encode())
    wait_for(lambda: seen == [1], 10)


def test_the_listener_comes_back_after_its_connection_is_killed(make_broker: Any) -> None:
    broker = make_broker(poll_interval_ms=60_000)
    seen: list[int] = []

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        seen.append(n)

    start_worker(make_broker, broker)
    assert broker.wait_until_listening()
    listen = f'LISTEN "greenroom:{broker.schema}"'
    killed = query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = %s", listen)
    assert killed == [(True,)]
    wait_for(lambda: query("SELECT 1 FROM pg_stat_activity WHERE query = %s", listen) == [(1,)], TIMEOUT_S)
    assert broker.wait_until_listening()
    record.send(1)
    wait_for(lambda: seen == [1], 10)


# -- processes ---------------------------------------------------------------------------------


def test_a_forked_child_sends_on_connections_of_its_own(make_broker: Any) -> None:
    broker = make_broker()

    @greenroom.actor(broker=broker)
    def job() -> None:
        pass

    job.send()  # the parent's pool now has a connection

    def send_in_child() -> str:
        job.send()
        return "sent"

    assert in_forked_child(send_in_child) == "sent"
    job.send()  # the parent's connection still works
    assert broker.get_queue_counts("default").ready == 3


def test_dead_letters_are_requeued_and_purged(make_broker: Any) -> None:
    broker = make_broker()
    runs: list[int] = []

    @greenroom.actor(broker=broker, max_retries=0)
    def fail_first(n: int) -> None:
        runs.append(n)
        if runs.count(n) == 1:
            raise RuntimeError(f"first run of {n}")

    first, second, third = (fail_first.send(n) for n in range(3))
    start_worker(make_broker, broker)
    wait_for(lambda: broker.get_queue_counts("default").dead == 3, TIMEOUT_S)
    assert broker.requeue_dead_letters("default", [second.message_id, "no-such-id"]) == 1
    wait_for(lambda: runs.count(1) == 2, TIMEOUT_S)
    assert broker.purge_dead_letters("default", older_than_ms=3_600_000) == 0  # none is an hour old
    assert broker.requeue_dead_letters("default") == 2
    wait_for(lambda: sorted(runs) == [0, 0, 1, 1, 2, 2], TIMEOUT_S)
    broker.join("default", timeout=int(TIMEOUT_S * 1000))
    assert broker.get_queue_counts("default") == QueueCounts(0, 0, 0, 0)
    assert {first.message_id, third.message_id} <= {first.message_id, second.message_id, third.message_id}
    fail_first.send(9)
    wait_for(lambda: broker.get_queue_counts("default").dead == 1, TIMEOUT_S)
    assert broker.purge_dead_letters("default") == 1
    with pytest.raises(greenroom.errors.QueueNotFound):
        broker.get_queue_counts("never-declared")


def test_greenroomctl_migrate_creates_the_schema(schema: str, capsys: pytest.CaptureFixture[str]) -> None:
    from greenroom.ctl import main

    assert main(["migrate", "--url", URL, "--schema", schema, "--json"]) == 0
    assert query(f'SELECT version FROM "{schema}".schema_version') == [(1,)]
    assert '"version": 1' in capsys.readouterr().out


def test_one_process_at_a_time_vacuums_the_messages_table(make_broker: Any) -> None:
    broker = make_broker(vacuum_interval_ms=200, lease_ms=3000, renew_interval_ms=1000)

    @greenroom.actor(broker=broker)
    def job() -> None:
        pass

    broker.get_queue_counts("default")
    table = f'"{broker.schema}".messages'

    def vacuums() -> int:
        row = query("SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = %s::regclass", table)
        return int(row[0][0]) if row else 0

    before = vacuums()
    start_worker(make_broker, broker)  # its lease keeper vacuums every 200 ms
    wait_for(lambda: vacuums() > before, TIMEOUT_S, interval_s=0.1)
    # While another session holds the vacuum lock, the keeper leaves the table alone.
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(26486, hashtext(%s))", (broker.schema,))
        assert broker.wait_until_listening()
        job.send()
        wait_for(lambda: broker.get_queue_counts("default").ready == 0, TIMEOUT_S)
