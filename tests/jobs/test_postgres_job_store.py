"""The PostgreSQL job store and the per-minute counts beside it, on the shared server (a schema of their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenroom.jobs import minute_counts_for
from greenroom.jobs._postgres_store import PostgresJobStore
from tests._postgres import URL, private_schema


@pytest.fixture
def store() -> Iterator[PostgresJobStore]:
    with private_schema() as schema:
        store = PostgresJobStore(URL, schema=schema)
        yield store
        store.close()


def test_records_merge_field_by_field_and_cancellation_is_seen(store: PostgresJobStore) -> None:
    store.update("m1", {"state": "enqueued", "actor_name": "a"}, 60_000)
    store.update("m1", {"cancel_requested": True}, 60_000)
    assert store.begin("m1", {"state": "running", "attempts": 1}, 60_000) is True
    assert store.get("m1") == {"state": "running", "actor_name": "a", "attempts": 1, "cancel_requested": True}
    assert store.cancel_requested(["m1", "m2"]) == {"m1"}
    assert store.begin("m2", {"state": "running"}, 60_000) is False
    assert store.get("unknown") is None


def test_worker_heartbeats_expire(store: PostgresJobStore) -> None:
    store.beat("w1", {"pid": 1}, 60_000)
    store.beat("w2", {"pid": 2}, 1)
    assert [info["pid"] for info in store.workers()] in ([1], [1, 2])  # w2 expires within a millisecond
    store.retire("w1")
    assert all(info["pid"] != 1 for info in store.workers())


def test_workers_are_read_through_the_primary_key_and_only_workers(store: PostgresJobStore) -> None:
    """Listing workers must not read every job's row: the dashboard asks every few seconds."""
    import psycopg

    for n in range(3):
        store.update(f"worker-like-{n}", {"state": "enqueued"}, 60_000)  # job keys "job:worker-like-…"
    store.beat("w1", {"pid": 1}, 60_000)
    assert [info["pid"] for info in store.workers()] == [1]
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # as the planner would choose on a large table
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {store._workers}"))
    assert "Index Cond: ((key >= " in plan, plan  # a range of the key, not a walk over an index


def test_minute_counts_add_up(store: PostgresJobStore) -> None:
    counts = minute_counts_for(store)
    assert counts is not None
    counts.add({100: (3, 1), 101: (1, 0)})
    counts.add({100: (2, 0)})
    assert counts.read(99, 101) == {100: (5, 1), 101: (1, 0)}
    assert counts.read(102, 200) == {}
