"""Unique jobs beyond the contract suite: batches, transactions, bad options, and SQLite files made before them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom.broker import Broker
from greenroom.brokers.sqlite import SQLiteBroker
from tests._postgres import URL, private_schema


@pytest.fixture(params=["stub", "sqlite", "redis", "postgres"])
def broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    if request.param == "stub":
        from greenroom.brokers.stub import StubBroker

        stub = StubBroker()
        yield stub
        stub.close()
    elif request.param == "sqlite":
        made: Broker = SQLiteBroker(tmp_path / "unique.db")
        yield made
        made.close()
    elif request.param == "redis":
        from greenroom.brokers.redis import RedisBroker

        namespace = request.getfixturevalue("redis_namespace")
        made = RedisBroker(url="redis://127.0.0.1:6379/0", namespace=namespace)
        yield made
        made.close()
    else:
        from greenroom.brokers.postgres import PostgresBroker

        with private_schema() as schema:
            made = PostgresBroker(url=URL, schema=schema)
            yield made
            made.close()


def test_a_batch_keeps_unique_keys(broker: Broker) -> None:
    @greenroom.actor(broker=broker)
    def job(n: int) -> None:
        pass

    held = job.send_with_options(args=(0,), unique_key="k0")
    sent = broker.enqueue_many(
        [job.message_with_options(args=(n,), unique_key=f"k{n % 3}") for n in range(6)] + [job.message(9)]
    )
    assert sent[0].message_id == held.message_id  # k0 was taken before the batch
    assert sent[3].message_id == held.message_id
    assert sent[4].message_id == sent[1].message_id  # k1: the batch's first one holds it
    assert sent[5].message_id == sent[2].message_id
    assert len({message.message_id for message in sent}) == 4  # k0, k1, k2 and the keyless one


def test_bad_unique_options_are_refused(broker: Broker) -> None:
    @greenroom.actor(broker=broker)
    def job() -> None:
        pass

    with pytest.raises(ValueError, match="unique_key"):
        job.send_with_options(unique_key="")
    with pytest.raises(ValueError, match="unique_until"):
        job.send_with_options(unique_key="k", unique_until="never")


def test_a_rolled_back_transaction_holds_no_key() -> None:
    psycopg = pytest.importorskip("psycopg")
    from greenroom.brokers.postgres import PostgresBroker

    with private_schema() as schema:
        broker = PostgresBroker(url=URL, schema=schema)
        try:

            @greenroom.actor(broker=broker)
            def job() -> None:
                pass

            with psycopg.connect(URL) as conn:
                with broker.transaction(conn):
                    inside = job.send_with_options(unique_key="order-1")
                    assert job.send_with_options(unique_key="order-1").message_id == inside.message_id
                conn.rollback()
            after = job.send_with_options(unique_key="order-1")
            assert after.message_id != inside.message_id
            assert broker.get_queue_counts("default").ready == 1
        finally:
            broker.close()


def test_an_sqlite_file_of_version_1_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    script = (Path(greenroom.__file__).parent / "brokers" / "sqlite" / "_schema.sql").read_text()
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.executescript(script)
        conn.execute("INSERT INTO greenroom_messages (queue_name, payload) VALUES ('default', x'00')")
    conn.close()
    broker = SQLiteBroker(path)
    try:

        @greenroom.actor(broker=broker)
        def job() -> Any:
            pass

        first = job.send_with_options(unique_key="k")
        assert job.send_with_options(unique_key="k").message_id == first.message_id
        assert broker.get_queue_counts("default").ready == 2  # the old row is still there
    finally:
        broker.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    conn.close()
