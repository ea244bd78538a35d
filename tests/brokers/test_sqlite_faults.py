"""SQLiteBroker under interrupts, forks and failed writes: the database is never left locked, nothing is stranded."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings
from greenroom.errors import ConnectionClosed
from greenroom.message import Message
from greenroom.middleware import Shutdown, TimeLimitExceeded, default_middleware
from greenroom.testing import wait_for

#: Generous: these tests share two cores with the rest of the suite.
TIMEOUT_S = 60.0
#: A bound on how long a forked child may take to enqueue: a stuck child waits about a minute.
CHILD_ENQUEUE_S = 1.0


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[SQLiteBroker]:
    broker = SQLiteBroker(
        tmp_path / "faults.db",
        middleware=[middleware() for middleware in default_middleware],
        settings=SQLiteSettings(lock_retry_ms=5000),
    )
    broker.emit_after("process_boot")
    greenroom.set_broker(broker)
    yield broker
    broker.close()


def another_process_writes_at_once(path: Path) -> None:
    """A separate process takes the write lock within half a second (an open transaction would block it)."""
    code = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], timeout=0.5, isolation_level=None)\n"
        "conn.execute('BEGIN IMMEDIATE')\n"
        "conn.execute('COMMIT')\n"
    )
    completed = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=30, check=False)
    assert completed.returncode == 0, completed.stderr.decode()


def message(queue_name: str, n: int) -> Message[Any]:
    return Message(queue_name=queue_name, actor_name="noop", args=(n,), kwargs={}, options={})


# -- interrupts inside actors that write -------------------------------------------------------


def test_time_limited_actors_that_keep_sending_leave_the_database_writable(broker: SQLiteBroker) -> None:
    interrupted: list[int] = []

    @greenroom.actor(broker=broker, queue_name="follow")
    def follow(n: int) -> None:
        pass

    @greenroom.actor(broker=broker, time_limit=150, max_retries=0)
    def chatty(n: int) -> None:
        try:
            while True:
                follow.send(n)
        except TimeLimitExceeded:
            interrupted.append(n)
            raise

    worker = Worker(broker, worker_threads=4, worker_timeout=100, queues={"default"})
    worker.start()
    try:
        for n in range(12):
            chatty.send(n)
        wait_for(lambda: broker.get_queue_counts("default").dead == 12, timeout_s=TIMEOUT_S)
    finally:
        worker.stop(timeout=10_000)
    assert sorted(interrupted) == list(range(12))
    another_process_writes_at_once(Path(broker.path))
    broker.enqueue(message("follow", -1))  # and this process too


def test_notify_shutdown_actors_that_keep_sending_leave_the_database_writable(broker: SQLiteBroker) -> None:
    started: list[int] = []
    notified: list[int] = []

    @greenroom.actor(broker=broker, queue_name="follow")
    def follow(n: int) -> None:
        pass

    @greenroom.actor(broker=broker, notify_shutdown=True, max_retries=0)
    def chatty(n: int) -> None:
        started.append(n)
        try:
            while True:
                follow.send(n)
        except Shutdown:
            notified.append(n)

    worker = Worker(broker, worker_threads=4, worker_timeout=100, queues={"default"})
    worker.start()
    try:
        for n in range(4):
            chatty.send(n)
        wait_for(lambda: len(started) == 4, timeout_s=TIMEOUT_S)
    finally:
        worker.stop(timeout=20_000)  # what a graceful TERM does in each worker process
    assert sorted(notified) == list(range(4))
    another_process_writes_at_once(Path(broker.path))
    broker.enqueue(message("follow", -1))


# -- fork() while other threads write ------------------------------------------------------------


def _enqueue_in_child(broker: SQLiteBroker, fresh: bool, n: int) -> int:
    """In a forked child: enqueue one message; the exit status tells how it went (0: in time)."""
    try:
        target = (
            SQLiteBroker(broker.path, middleware=[], settings=SQLiteSettings(lock_retry_ms=3000)) if fresh else broker
        )
        target.declare_queue("children")
        start_s = time.monotonic()
        target.enqueue(message("children", n))
        return 0 if time.monotonic() - start_s < CHILD_ENQUEUE_S else 3
    except BaseException:
        return 4


def test_a_child_forked_while_threads_write_can_enqueue(broker: SQLiteBroker) -> None:
    broker.declare_queue("busy")
    stop = threading.Event()

    def write_forever() -> None:
        n = 0
        while not stop.is_set():
            broker.enqueue(message("busy", n))
            n += 1
            # A breath between writes: the database is still inside a write most of the time, but a
            # child's first write is not starved by SQLite's busy handler (which is not fair).
            time.sleep(0.001)

    writers = [threading.Thread(target=write_forever) for _ in range(3)]
    for writer in writers:
        writer.start()
    statuses: list[int] = []
    try:
        wait_for(lambda: broker.get_queue_counts("busy").ready > 50, timeout_s=TIMEOUT_S)
        for n in range(20):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child
                os._exit(_enqueue_in_child(broker, fresh=n % 2 == 0, n=n))
            statuses.append(_reap(pid, timeout_s=TIMEOUT_S))
    finally:
        stop.set()
        for writer in writers:
            writer.join(TIMEOUT_S)
    assert statuses == [0] * 20
    assert broker.get_queue_counts("children").ready == 20


def _reap(pid: int, timeout_s: float) -> int:
    """The exit status of child ``pid``; killed (and reported as -9) when it outlives ``timeout_s``."""
    deadline_s = time.monotonic() + timeout_s
    while time.monotonic() < deadline_s:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    return -9


#: The broker the pool's children inherit (set by the test before the pool forks).
_pool_broker: SQLiteBroker | None = None


def _send_follow_up(n: int) -> int:
    assert _pool_broker is not None
    _pool_broker.enqueue(message("pooled", n))
    return n


def test_an_actor_forking_a_pool_in_a_busy_worker_loses_no_follow_up(broker: SQLiteBroker) -> None:
    global _pool_broker
    _pool_broker = broker
    broker.declare_queue("pooled")
    sent: list[list[int]] = []

    @greenroom.actor(broker=broker, queue_name="busy")
    def busy(n: int) -> None:
        pass

    @greenroom.actor(broker=broker, queue_name="fan")
    def fan_out() -> None:
        # Children are forked (and re-forked every two tasks) while other threads lease and ack.
        with multiprocessing.get_context("fork").Pool(4, maxtasksperchild=2) as pool:
            sent.append(pool.map_async(_send_follow_up, range(24), chunksize=1).get(timeout=TIMEOUT_S))

    worker = Worker(broker, worker_threads=4, worker_timeout=100, queues={"busy", "fan"})
    worker.start()
    try:
        broker.enqueue_many(busy.message(n) for n in range(400))
        wait_for(lambda: broker.get_queue_counts("busy").in_progress > 0, timeout_s=TIMEOUT_S)
        fan_out.send()
        wait_for(lambda: sent, timeout_s=TIMEOUT_S)
    finally:
        worker.stop(timeout=10_000)
        _pool_broker = None
    assert sent == [list(range(24))]
    assert broker.get_queue_counts("pooled").ready == 24


# -- a delayed message whose move to its queue fails ---------------------------------------------


def test_a_delayed_message_whose_move_fails_runs_once_the_broker_is_back(broker: SQLiteBroker) -> None:
    ran: list[int] = []

    @greenroom.actor(broker=broker)
    def later(n: int) -> None:
        ran.append(n)

    real_enqueue = broker.enqueue
    failures: list[str] = []

    def enqueue_failing_once(msg: Message[Any], *, delay: int | None = None) -> Message[Any]:
        if delay is None and "eta" not in msg.options and not failures and msg.queue_name == "default":
            failures.append(msg.message_id)
            raise ConnectionClosed("injected: the database went away for a moment")
        return real_enqueue(msg, delay=delay)

    later.send_with_options(args=(1,), delay=50)
    broker.enqueue = enqueue_failing_once  # type: ignore[method-assign]
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.restart_delay_ms = 100  # before start: the consumer threads take it from the worker
    worker.start()
    try:
        wait_for(lambda: ran == [1], timeout_s=TIMEOUT_S)
        assert failures, "the fault was not injected"
        wait_for(lambda: broker.get_queue_counts("default").in_progress == 0, timeout_s=TIMEOUT_S)
    finally:
        worker.stop(timeout=10_000)
    counts = broker.get_queue_counts("default")
    assert (counts.ready, counts.delayed, counts.in_progress, counts.dead) == (0, 0, 0, 0)


def test_a_requeue_the_database_refuses_stops_renewing_the_leases(tmp_path: Path) -> None:
    broker = SQLiteBroker(
        tmp_path / "refuse.db", middleware=[], settings=SQLiteSettings(busy_timeout_ms=50, lock_retry_ms=200)
    )
    broker.declare_queue("q")
    broker.enqueue(message("q", 1))
    consumer = broker.consume("q", prefetch=1, timeout=1000)
    proxy = next(consumer)
    assert proxy is not None
    blocker = sqlite3.connect(broker.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process's writer holding the lock
    try:
        with pytest.raises(ConnectionClosed):
            consumer.requeue([proxy])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert consumer.held == 0  # no longer renewed: its lease lapses and the row comes back
    consumer.close()
    broker.close()
