"""Job tracking on the stub broker: callbacks, async actors, progress coalescing, options and bad input."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.errors import Cancelled
from greenroom.jobs import JobStatus, JobStoreNotConfigured, JobTracking, MemoryJobStore, State, store_for
from greenroom.middleware import AsyncIO, TimeLimitExceeded
from greenroom.testing import wait_for

TIMEOUT_S = 10.0


@pytest.fixture
def tracked() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.add_middleware(AsyncIO())
    broker.add_middleware(JobTracking(poll_interval=50, progress_interval=200))
    broker.emit_after("process_boot")
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def start_worker(tracked: StubBroker) -> Iterator[Any]:
    workers: list[Worker] = []

    def start() -> Worker:
        worker = Worker(tracked, worker_timeout=50, worker_threads=2)
        worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        worker.stop(timeout=10000)


def _state(broker: StubBroker, message_id: str) -> str | None:
    status = greenroom.get_status(message_id, broker=broker)
    return None if status is None else status.state


def test_cancelled_before_it_starts_runs_on_failure_and_is_dead(tracked: StubBroker, start_worker: Any) -> None:
    ran: list[str] = []
    failures: list[dict[str, Any]] = []

    @greenroom.actor(broker=tracked)
    def work() -> None:
        ran.append("work")

    @greenroom.actor(broker=tracked)
    def on_failure(message_data: dict[str, Any], error: dict[str, Any]) -> None:
        failures.append(error)

    message = work.send_with_options(on_failure=on_failure)
    assert greenroom.cancel(message.message_id, broker=tracked).requested
    start_worker()
    wait_for(lambda: _state(tracked, message.message_id) == State.CANCELLED and failures, TIMEOUT_S)
    assert ran == []
    assert failures[0]["type"] == "Cancelled"
    [dead] = tracked.dead_letters_by_queue["default"]
    assert repr(dead.exception) == "cancelled"


def test_an_async_actor_is_cancelled_while_it_awaits(tracked: StubBroker, start_worker: Any) -> None:
    started = threading.Event()
    finished: list[bool] = []

    @greenroom.actor(broker=tracked, max_retries=3)
    async def wait_long() -> None:
        started.set()
        greenroom.set_progress(0.25)
        await asyncio.sleep(60)
        finished.append(True)

    start_worker()
    message = wait_long.send()
    assert started.wait(TIMEOUT_S)
    wait_for(lambda: greenroom.get_status(message.message_id, broker=tracked).progress == 0.25, TIMEOUT_S)  # type: ignore[union-attr]
    greenroom.cancel(message.message_id, broker=tracked)
    wait_for(lambda: _state(tracked, message.message_id) == State.CANCELLED, TIMEOUT_S)
    assert finished == []
    status = greenroom.get_status(message.message_id, broker=tracked)
    assert status is not None
    assert status.attempts == 1


def test_progress_reports_are_coalesced_and_the_last_one_is_kept(tracked: StubBroker, start_worker: Any) -> None:
    class CountingStore(MemoryJobStore):
        def __init__(self) -> None:
            super().__init__()
            self.progress_writes = 0

        def update(self, message_id: str, fields: Any, ttl_ms: int) -> None:
            if "progress" in fields:
                self.progress_writes += 1
            super().update(message_id, fields, ttl_ms)

    store = CountingStore()
    broker = StubBroker(middleware=[JobTracking(store=store, progress_interval=200)])
    broker.emit_after("process_boot")

    @greenroom.actor(broker=broker)
    def loop() -> None:
        for n in range(1, 1001):
            greenroom.set_progress(n / 1000, f"{n} done")
            time.sleep(0.0002)

    worker = Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        message = loop.send()
        wait_for(lambda: (greenroom.get_status(message.message_id, broker=broker) or _NONE).finished, TIMEOUT_S)
    finally:
        worker.stop(timeout=10000)
        broker.close()
    status = greenroom.get_status(message.message_id, broker=broker)
    assert status is not None
    assert status.progress == 1.0
    assert status.progress_note == "1000 done"
    assert status.state == State.SUCCEEDED
    assert store.progress_writes < 50  # a thousand reports, coalesced to a few per second


_NONE = JobStatus(message_id="", state=State.ENQUEUED)


@pytest.mark.parametrize(("max_retries", "expected"), [(1, State.RETRYING), (0, State.FAILED)])
def test_a_message_taken_over_from_a_stuck_actor_gets_its_final_status(
    tracked: StubBroker, start_worker: Any, max_retries: int, expected: str
) -> None:
    """A worker process's warden settles a stuck actor's message from its own thread (Worker.take_over)."""
    release = threading.Event()

    @greenroom.actor(broker=tracked, max_retries=max_retries, min_backoff=600_000, max_backoff=600_000)
    def stuck() -> None:
        release.wait(TIMEOUT_S)  # stands for a blocking call that no interrupt reaches

    message = stuck.send()
    worker = start_worker()
    try:
        wait_for(lambda: worker.running_messages(), TIMEOUT_S)
        [(thread_id, message_id)] = worker.running_messages()
        assert message_id == message.message_id
        assert worker.take_over(thread_id, message_id, TimeLimitExceeded("stuck past its limit"))
        status = greenroom.get_status(message.message_id, broker=tracked)
        assert status is not None
        assert (status.state, status.attempts) == (expected, 1)
        assert (status.error_type, status.error_message) == ("TimeLimitExceeded", "stuck past its limit")
        assert (status.finished_at_ms is not None) == (expected == State.FAILED)
    finally:
        release.set()
    # The abandoned thread settles nothing when its actor returns at last: the status stays.
    wait_for(
        lambda: not any(thread.is_alive() and thread.ident == thread_id for thread in threading.enumerate()), TIMEOUT_S
    )
    after = greenroom.get_status(message.message_id, broker=tracked)
    assert after is not None
    assert after.state == expected


class _SlowEndOfFirstAttempt(MemoryJobStore):
    """Holds back the write that ends attempt 1 until attempt 2 has begun (or, with
    ``until_second_ended``, ended): the ack of a failed attempt racing the retry another thread took."""

    def __init__(self, *, until_second_ended: bool = False) -> None:
        super().__init__()
        self.until_second_ended = until_second_ended
        self.released = threading.Event()

    def update(self, message_id: str, fields: Any, ttl_ms: int) -> None:
        if "attempt_0" in fields and fields["attempt_0"]["outcome"] != State.RUNNING:
            self.released.wait(TIMEOUT_S)
        super().update(message_id, fields, ttl_ms)
        if self.until_second_ended and "attempt_1" in fields and fields["attempt_1"]["outcome"] != State.RUNNING:
            self.released.set()

    def begin(self, message_id: str, fields: Any, ttl_ms: int) -> bool:
        cancelled = super().begin(message_id, fields, ttl_ms)
        if fields.get("attempts") == 2 and not self.until_second_ended:
            self.released.set()
        return cancelled


def test_the_end_of_a_failed_attempt_never_overwrites_the_state_of_its_retry() -> None:
    store = _SlowEndOfFirstAttempt()
    broker = StubBroker()
    broker.add_middleware(JobTracking(store=store, poll_interval=50))
    broker.emit_after("process_boot")
    release = threading.Event()
    attempts: list[int] = []

    @greenroom.actor(broker=broker, max_retries=1, min_backoff=1, max_backoff=2)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        release.wait(TIMEOUT_S)

    worker = Worker(broker, worker_timeout=20, worker_threads=2)
    worker.start()
    try:
        message = flaky.send()
        wait_for(lambda: len(attempts) == 2, TIMEOUT_S)
        # Attempt 1's end was written once attempt 2 ran: the state is still attempt 2's.
        wait_for(lambda: (store.get(message.message_id) or {}).get("attempt_0", {}).get("finished_at_ms"), TIMEOUT_S)
        status = greenroom.get_status(message.message_id, broker=broker)
        assert status is not None
        assert (status.state, status.attempts) == (State.RUNNING, 2)
        assert status.error_type == "RuntimeError"  # the last error stays on record
        release.set()
        wait_for(lambda: _state(broker, message.message_id) == State.SUCCEEDED, TIMEOUT_S)
    finally:
        release.set()
        worker.stop(timeout=10000)
        broker.close()


def test_the_end_of_a_failed_attempt_landing_after_its_retry_failed_changes_nothing() -> None:
    store = _SlowEndOfFirstAttempt(until_second_ended=True)
    broker = StubBroker()
    broker.add_middleware(JobTracking(store=store, poll_interval=50))
    broker.emit_after("process_boot")
    attempts: list[int] = []

    @greenroom.actor(broker=broker, max_retries=1, min_backoff=1, max_backoff=2)
    def flaky() -> None:
        attempts.append(1)
        raise (RuntimeError if len(attempts) == 1 else ValueError)(f"attempt {len(attempts)} fails")

    worker = Worker(broker, worker_timeout=20, worker_threads=2)
    worker.start()
    try:
        message = flaky.send()
        wait_for(lambda: (store.get(message.message_id) or {}).get("attempt_0", {}).get("finished_at_ms"), TIMEOUT_S)
    finally:
        worker.stop(timeout=10000)
        broker.close()
    status = greenroom.get_status(message.message_id, broker=broker)
    assert status is not None
    assert (status.state, status.attempts) == (State.FAILED, 2)
    assert (status.error_type, status.error_message) == ("ValueError", "attempt 2 fails")
    assert status.finished_at_ms is not None


def test_track_false_leaves_a_message_untracked(tracked: StubBroker, start_worker: Any) -> None:
    done = threading.Event()

    @greenroom.actor(broker=tracked, track=False)
    def quiet() -> None:
        done.set()

    start_worker()
    message = quiet.send()
    assert done.wait(TIMEOUT_S)
    tracked.join("default", timeout=10000)
    assert greenroom.get_status(message.message_id, broker=tracked) is None
    assert greenroom.cancel(message.message_id, broker=tracked).outcome == "unknown"


def test_bad_input_is_refused_clearly(tracked: StubBroker) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        greenroom.get_status("", broker=tracked)
    with pytest.raises(ValueError, match="non-empty string"):
        greenroom.cancel(42, broker=tracked)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"from 0\.0 to 1\.0"):
        greenroom.set_progress(1.5)
    with pytest.raises(RuntimeError, match="inside an actor"):
        greenroom.set_progress(0.5)
    assert greenroom.get_status(str(uuid.uuid4()), broker=tracked) is None


def test_rabbitmq_without_a_store_says_what_to_configure() -> None:
    from greenroom.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url="amqp://guest:guest@127.0.0.1:5672/", middleware=[])
    with pytest.raises(JobStoreNotConfigured, match="JobTracking\\(store="):
        store_for(broker)


def test_cancelled_is_an_interrupt_that_reads_as_the_reason() -> None:
    error = Cancelled()
    assert isinstance(error, BaseException)
    assert not isinstance(error, Exception)
    assert repr(error) == str(error) == "cancelled"


def test_a_status_from_a_newer_store_keeps_what_it_understands() -> None:
    record = {"state": "running", "attempts": "three", "progress": 0.5, "future_field": 1, "worker": 7}
    status = JobStatus.from_record("m", record)
    assert status.state == "running"
    assert status.progress == 0.5
    assert status.attempts == 0
    assert status.worker is None


def test_status_on_sqlite_needs_no_other_broker_library(tmp_path: Path) -> None:
    """The default broker needs nothing installed: job status on SQLite with redis-py, pika and psycopg missing."""
    code = textwrap.dedent(
        f"""
        import sys
        for name in ("redis", "pika", "psycopg", "psycopg_pool"):
            sys.modules[name] = None  # importing any of them now raises ImportError
        import greenroom
        from greenroom.brokers.sqlite import SQLiteBroker
        from greenroom.jobs import JobTracking

        broker = SQLiteBroker({str(tmp_path / "app.db")!r})
        broker.add_middleware(JobTracking())
        broker.emit_after("process_boot")

        @greenroom.actor(broker=broker)
        def work():
            pass

        worker = greenroom.Worker(broker, worker_timeout=50, worker_threads=1)
        worker.start()
        message = work.send()
        broker.join(work.queue_name, timeout=30_000)
        worker.join()
        worker.stop()
        print(greenroom.get_status(message.message_id, broker=broker).state)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == State.SUCCEEDED
    assert "No module named" not in result.stderr
