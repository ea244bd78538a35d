"""The Postgres broker rebuilds the indexes of its messages table once a vacuum cannot shrink them.

After a burst, the indexes of an empty table keep their peak size (a vacuum reuses the pages it
frees, never returns them); the worker process that vacuums rebuilds them concurrently, without
stopping producers or consumers, and cleans up after a rebuild that gave up.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.testing import wait_for
from tests._postgres import URL, private_schema

psycopg = pytest.importorskip("psycopg")

from greenroom.brokers.postgres import (  # noqa: E402
    PostgresBroker,
    PostgresSettings,
    _compaction,
    migrate,
)

TIMEOUT_S = 60.0


@pytest.fixture
def schema() -> Iterator[str]:
    with private_schema() as name:
        yield name


def make_broker(schema: str, **settings: Any) -> PostgresBroker:
    broker = PostgresBroker(url=URL, schema=schema, settings=PostgresSettings(**settings))
    broker.emit_after("process_boot")
    return broker


def sizes(schema: str) -> tuple[int, int]:
    """The heap and index sizes of the messages table, after a VACUUM."""
    table = f'"{schema}".messages'
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f"VACUUM {table}")
        row = conn.execute(f"SELECT pg_relation_size('{table}'), pg_indexes_size('{table}')").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def invalid_indexes(schema: str) -> list[str]:
    """The invalid indexes of the messages table and of its TOAST table."""
    table = f'"{schema}".messages'
    with psycopg.connect(URL, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE NOT indisvalid AND indrelid IN "
            "(%s::regclass, (SELECT reltoastrelid FROM pg_class WHERE oid = %s::regclass))",
            (table, table),
        ).fetchall()
    return [row[0] for row in rows]


def fill_and_empty(broker: PostgresBroker, schema: str, count: int) -> Any:
    """Grow the indexes with ``count`` rows, then delete them all (as acks would); the rows' actor."""

    @greenroom.actor(broker=broker, queue_name="bloat")
    def bloat(n: int) -> None:
        pass

    broker.enqueue_many(bloat.message(n) for n in range(count))
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(f'DELETE FROM "{schema}".messages')
    return bloat


def test_a_worker_shrinks_the_indexes_back_to_their_empty_size_after_a_drain(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test's own VACUUMs (in sizes()) may make a rebuild give up: it is then tried again soon.
    monkeypatch.setattr(_compaction, "FIRST_PAUSE_S", 0.5)
    broker = make_broker(schema, vacuum_interval_ms=200, reindex_over_bytes=64 * 1024)
    done: list[int] = []

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        done.append(n)

    broker.get_queue_counts("default")  # creates the tables
    _, empty_indexes = sizes(schema)
    broker.enqueue_many(record.message(n) for n in range(20_000))
    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: len(done) == 20_000, timeout_s=TIMEOUT_S)
        # Right after the drain the indexes hold the burst's pages; the worker rebuilds them.
        wait_for(lambda: sizes(schema)[1] <= 2 * empty_indexes, timeout_s=TIMEOUT_S, interval_s=0.25)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    # (The heap is the server's: a vacuum gives its empty pages back unless another session's
    # snapshot, on this shared server, still needs the deleted rows.)
    assert sizes(schema)[1] <= 2 * empty_indexes
    assert sorted(done) == list(range(20_000))
    assert invalid_indexes(schema) == []


def test_a_table_holding_many_rows_keeps_its_indexes(schema: str) -> None:
    broker = make_broker(schema, reindex_over_bytes=8 * 1024)
    try:
        bloat = fill_and_empty(broker, schema, 5_000)
        broker.enqueue_many(bloat.message(n) for n in range(2_000))
        before = sizes(schema)[1]
        compactor = _compaction.IndexCompactor(broker._storage)
        assert not compactor.start_if_due()
        assert not compactor.compact()
        assert sizes(schema)[1] >= before  # not rebuilt
    finally:
        broker.close()


def test_a_rebuild_that_gives_up_is_cleaned_up_by_the_next(schema: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_compaction, "LOCK_TIMEOUT_MS", 300)
    monkeypatch.setattr(_compaction, "FIRST_PAUSE_S", 0.5)
    broker = make_broker(schema, reindex_over_bytes=64 * 1024)
    try:
        migrate(URL, schema=schema)
        _, empty_indexes = sizes(schema)
        fill_and_empty(broker, schema, 20_000)
        compactor = _compaction.IndexCompactor(broker._storage)
        # An application transaction holding a snapshot: a concurrent rebuild must wait for it.
        with psycopg.connect(URL) as holder:
            holder.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            holder.execute(f'SELECT count(*) FROM "{schema}".messages')
            assert not compactor.compact()  # gave up after its lock timeout
            assert any("pg_toast" in name for name in invalid_indexes(schema))  # the TOAST index's copy too
            holder.rollback()
        assert not compactor.start_if_due()  # not before its pause
        wait_for(compactor.start_if_due, timeout_s=TIMEOUT_S, interval_s=0.1)  # the leftovers alone make it due
        compactor.join(TIMEOUT_S)
        assert invalid_indexes(schema) == []
        assert sizes(schema)[1] <= 2 * empty_indexes
    finally:
        broker.close()


def test_rebuilds_while_messages_flow_lose_none(schema: str, caplog: pytest.LogCaptureFixture) -> None:
    """Producers and a draining worker run through repeated rebuilds: every message is processed."""
    caplog.set_level(logging.INFO, logger="greenroom")
    broker = make_broker(schema, vacuum_interval_ms=50, reindex_over_bytes=8 * 1024)
    done: set[int] = set()
    lock = threading.Lock()

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        with lock:
            done.add(n)

    worker = Worker(broker, worker_threads=4, worker_timeout=50)
    worker.start()
    try:
        for start in range(0, 6_000, 200):
            broker.enqueue_many(record.message(n) for n in range(start, start + 200))
            for n in range(start, start + 20):
                record.send(10_000 + n)
            wait_for(lambda: broker.get_queue_counts("default").ready < 400, timeout_s=TIMEOUT_S)
        expected = set(range(6_000)) | {10_000 + n for start in range(0, 6_000, 200) for n in range(start, start + 20)}
        wait_for(lambda: done == expected, timeout_s=TIMEOUT_S, message=f"missing: {len(expected - done)}")
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    rebuilds = [r for r in caplog.records if r.getMessage().startswith("Rebuilt the indexes")]
    assert len(rebuilds) >= 2
    assert invalid_indexes(schema) == []
