"""What job tracking records for the dashboard: argument previews, attempts with tracebacks, per-minute counts."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.errors import ConnectionClosed
from greenroom.jobs import (
    JobStore,
    JobTracking,
    MemoryJobStore,
    SQLiteJobStore,
    State,
    get_details,
    minute_counts_for,
    preview_arguments,
)
from greenroom.jobs._minutes import MINUTE_MS, MemoryMinuteCounts, MinuteCounts, MinuteTally
from greenroom.testing import wait_for
from tests.conftest import redis_client_for

TIMEOUT_S = 20.0


def test_previews_cut_long_strings_long_lists_and_deep_nesting() -> None:
    preview = preview_arguments(
        ("a" * 250, list(range(30)), [[[[["deep"]]]]], 10**30, object()), {"k": {str(n): n for n in range(25)}}
    )
    text, numbers, nested, big, other = preview["args"]
    assert text == "a" * 200 + "… (50 more characters)"
    assert numbers == [*range(20), "… (10 more items)"]
    assert nested == [[["… (list nested too deep to show)"]]]  # the argument list is the first level
    assert big == str(10**30)[:200]
    assert other.startswith("<object object at")
    assert len(preview["kwargs"]["k"]) == 21
    assert preview["kwargs"]["k"]["…"] == "(5 more keys)"


def test_attempts_are_recorded_with_their_outcomes_and_tracebacks() -> None:
    broker = StubBroker()
    broker.add_middleware(JobTracking(poll_interval=50, heartbeat_interval=100))
    broker.emit_after("process_boot")
    calls: list[int] = []

    @greenroom.actor(broker=broker, min_backoff=10, max_backoff=20)
    def twice_then_fine(name: str) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise KeyError(f"attempt {len(calls)}")

    worker = Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        message = twice_then_fine.send("n" * 300)
        wait_for(
            lambda: (
                (status := greenroom.get_status(message.message_id, broker=broker)) is not None
                and status.state == State.SUCCEEDED
            ),
            TIMEOUT_S,
        )
        details = get_details(message.message_id, broker=broker)
        assert details is not None
        assert [(a.number, a.outcome) for a in details.attempts] == [
            (1, State.RETRYING),
            (2, State.RETRYING),
            (3, State.SUCCEEDED),
        ]
        assert details.attempts[0].error_type == "KeyError"
        assert details.attempts[0].traceback is not None
        assert "twice_then_fine" in details.attempts[0].traceback
        assert details.attempts[2].traceback is None
        assert details.last_failure is details.attempts[1]
        assert details.arguments == {"args": ["n" * 200 + "… (100 more characters)"], "kwargs": {}}
        assert all(a.worker and a.started_at_ms and a.finished_at_ms for a in details.attempts)
    finally:
        worker.stop(timeout=10000)
        broker.close()
    assert get_details(str(uuid.uuid4()), broker=broker) is None
    with pytest.raises(ValueError, match="non-empty"):
        get_details(" ", broker=broker)


def test_the_tally_keeps_its_counts_when_the_store_fails() -> None:
    class Down(MinuteCounts):
        def add(self, counts: Any) -> None:
            raise ConnectionClosed("down")

        def read(self, first_minute: int, last_minute: int) -> dict[int, tuple[int, int]]:
            return {}

    now_ms = greenroom.common.current_millis()
    minute = now_ms // MINUTE_MS
    tally = MinuteTally()
    tally.count(failed=False, now_ms=now_ms)
    tally.count(failed=True, now_ms=now_ms)
    with pytest.raises(ConnectionClosed):
        tally.flush(Down())
    tally.count(failed=False, now_ms=now_ms + MINUTE_MS)
    kept = MemoryMinuteCounts()
    tally.flush(kept)
    assert kept.read(0, 10**12) == {minute: (2, 1), minute + 1: (1, 0)}
    tally.flush(kept)  # nothing left: nothing added twice
    assert kept.read(0, 10**12) == {minute: (2, 1), minute + 1: (1, 0)}
    tally.count(failed=True)
    tally.flush(None)  # no place to keep them: forgotten


def _check_counts(counts: MinuteCounts) -> None:
    now_ms = greenroom.common.current_millis()
    minute = now_ms // MINUTE_MS
    counts.add({minute: (3, 1), minute - 2: (1, 1)})
    counts.add({minute: (2, 0)})
    hour = counts.last_hour(now_ms)
    assert len(hour) == 60
    assert hour[-1] == (minute, 5, 1)
    assert hour[-3] == (minute - 2, 1, 1)
    assert sum(processed for _, processed, _ in hour) == 6
    assert counts.read(minute - 200, minute - 100) == {}


def test_per_minute_counts_in_memory_and_in_sqlite(tmp_path: Path) -> None:
    memory = MemoryJobStore()
    assert minute_counts_for(memory) is minute_counts_for(memory)
    counts = minute_counts_for(memory)
    assert isinstance(counts, MemoryMinuteCounts)
    _check_counts(counts)
    store = SQLiteJobStore(tmp_path / "jobs.db")
    sqlite_counts = minute_counts_for(store)
    assert sqlite_counts is not None
    _check_counts(sqlite_counts)
    sqlite_counts.close()
    store.close()


def test_per_minute_counts_on_redis() -> None:
    from greenroom.jobs import RedisJobStore

    namespace = f"gr-minutes-{uuid.uuid4().hex[:10]}"
    client, cleanup = redis_client_for(namespace)
    try:
        store = RedisJobStore(client, namespace)
        counts = minute_counts_for(store)
        assert counts is not None
        _check_counts(counts)
        assert any(key.startswith(f"{namespace}:__job_minute__.".encode()) for key in client.keys(f"{namespace}:*"))
    finally:
        cleanup()


def test_a_store_greenroom_does_not_know_keeps_no_counts() -> None:
    class Elsewhere(MemoryJobStore.__base__):  # type: ignore[misc, name-defined]
        def update(self, message_id: str, fields: Any, ttl_ms: int) -> None: ...

        def get(self, message_id: str) -> None:
            return None

        def cancel_requested(self, message_ids: Any) -> set[str]:
            return set()

        def beat(self, worker_id: str, info: Any, ttl_ms: int) -> None: ...

        def retire(self, worker_id: str) -> None: ...

        def workers(self) -> list[Any]:
            return []

    store: JobStore = Elsewhere()
    assert minute_counts_for(store) is None
