"""Idle workers with many queues: one shared waiter per broker and process, not one poll per consumer.

An idle worker with 120 queues (240 consumers with the delay queues) used about half a core on
SQLite and a quarter of one on Redis, every consumer polling on its own. These tests measure the
CPU time of such a worker in a process of its own, and check that idle consumers still wake up at
once for new work: through the SQLite change watcher, and through the Redis idle waiter's BLPOP
or, for messages no wake-up token announced, its periodic look.
"""

from __future__ import annotations

import json
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

from greenroom import Message, Worker, actor
from greenroom.broker import Broker
from greenroom.brokers.redis import RedisBroker
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings
from greenroom.testing import wait_for
from tests.conftest import in_forked_child

APP = Path(__file__).with_name("_idle_app.py")
ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUES = 120
#: CPU time over wall time an idle worker with QUEUES queues may use: a tenth of one core. Before
#: the shared waiters, SQLite used 0.5-0.6 and Redis 0.24; with them both use about 0.02-0.03.
MAX_IDLE_CPU = 0.10
MEASURE_S = 2.0
#: An idle consumer must see new work well within this (s). The SQLite consumers' own fallback
#: look comes 10 s after their last one, so only the watcher can make it in time.
PROMPTLY_S = 3.0
TIMEOUT_S = 60.0


def idle_cpu(*args: object) -> float:
    """The CPU use (fraction of one core) of ``_idle_app.py`` idling with ``args``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, str(APP), *(str(arg) for arg in args)]
    # run() kills and reaps the process should it outlive the timeout.
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    print(f"idle worker with {QUEUES} queues ({report['consumers']} consumers): {report['cpu']:.1%} of a core")
    return float(report["cpu"])


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    """Workers a test started: stopped afterwards, then their brokers closed."""
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop(timeout=10_000)
    for worker in started:
        worker.broker.close()


def idle_worker(broker: Broker, workers: list[Worker], seen: list[Any]) -> None:
    """Declare QUEUES queues, with an actor recording its argument on each, and start a worker.

    The ``workers`` fixture stops the worker and closes ``broker`` after the test.
    """

    def record(argument: str) -> None:
        seen.append(argument)

    for n in range(QUEUES):
        actor(broker=broker, queue_name=f"idle{n}", actor_name=f"record{n}")(record)
    worker = Worker(broker, worker_threads=2)  # the default worker_timeout, as in production
    worker.start()
    workers.append(worker)


def raw_message(n: int, argument: str) -> Message[Any]:
    return Message(queue_name=f"idle{n}", actor_name=f"record{n}", args=(argument,), kwargs={}, options={})


# -- SQLite --------------------------------------------------------------------------------------


def test_an_idle_sqlite_worker_with_120_queues_uses_a_small_share_of_a_core(tmp_path: Path) -> None:
    assert idle_cpu("sqlite", tmp_path / "idle.db", QUEUES, MEASURE_S) < MAX_IDLE_CPU


def test_idle_sqlite_consumers_wake_when_another_connection_commits(tmp_path: Path, workers: list[Worker]) -> None:
    broker = SQLiteBroker(tmp_path / "idle.db", middleware=[])
    seen: list[Any] = []
    idle_worker(broker, workers, seen)
    watcher = broker._process.get().watcher
    wait_for(lambda: watcher.waiting == 2 * QUEUES, TIMEOUT_S)  # every consumer looked and found nothing
    started_s = time.monotonic()
    with sqlite3.connect(broker.path) as conn:  # a foreign producer: only the commit tells
        conn.execute(
            "INSERT INTO greenroom_messages (queue_name, payload) VALUES (?, ?)",
            ("idle57", raw_message(57, "foreign").encode()),
        )
    conn.close()
    wait_for(lambda: seen == ["foreign"], TIMEOUT_S)
    assert time.monotonic() - started_s < PROMPTLY_S


def test_idle_sqlite_consumers_see_rows_handed_back_and_leases_that_lapse(tmp_path: Path) -> None:
    """No row is inserted in either case: the watcher's sweep must find them."""
    path = tmp_path / "sweep.db"
    holder = SQLiteBroker(path, middleware=[], settings=SQLiteSettings(lease_ms=1000, renew_interval_ms=200))
    idler = SQLiteBroker(path, middleware=[])
    try:
        for broker in (holder, idler):
            broker.declare_queue("idle0")
        for argument in ("handed back", "lapsed"):
            holder.enqueue(raw_message(0, argument))
        held = holder.consume("idle0", prefetch=2, timeout=1000)
        first, second = next(held), next(held)
        assert first is not None
        assert second is not None
        consumer = idler.consume("idle0", timeout=100)
        assert next(consumer) is None
        wait_for(lambda: idler._process.get().watcher.waiting == 1, TIMEOUT_S)

        def next_message() -> Any:
            deadline_s = time.monotonic() + TIMEOUT_S
            while (message := next(consumer)) is None and time.monotonic() < deadline_s:
                pass
            return message

        started_s = time.monotonic()
        held.requeue([first])  # another process hands a row back
        handed_back = next_message()
        assert handed_back.args == ("handed back",)
        assert time.monotonic() - started_s < PROMPTLY_S
        consumer.ack(handed_back)

        started_s = time.monotonic()
        holder.close()  # renews no more, as if killed: the lease runs out, with no commit at all
        lapsed = next_message()
        assert lapsed.args == ("lapsed",)
        assert time.monotonic() - started_s < 1.0 + PROMPTLY_S  # lease_ms, then a sweep
        consumer.ack(lapsed)
        consumer.close()
    finally:
        holder.close()
        idler.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a threaded process warns on 3.12+
def test_a_forked_child_gets_its_own_sqlite_watcher(tmp_path: Path) -> None:
    broker = SQLiteBroker(tmp_path / "fork.db", middleware=[])
    broker.declare_queue("q")
    parent = broker.consume("q", timeout=100)
    assert next(parent) is None  # the parent's watcher thread now runs

    def child() -> str:
        consumer = broker.consume("q", timeout=int(TIMEOUT_S * 1000))

        def produce() -> None:
            time.sleep(0.3)  # the consumer has looked, found nothing and waits by then
            with sqlite3.connect(broker.path) as conn:
                row = ("q", Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}).encode())
                conn.execute("INSERT INTO greenroom_messages (queue_name, payload) VALUES (?, ?)", row)
            conn.close()

        producer = threading.Thread(target=produce)
        started_s = time.monotonic()
        producer.start()
        message = next(consumer)
        producer.join()
        late = time.monotonic() - started_s >= PROMPTLY_S
        return "late" if late or message is None else "woken"

    try:
        assert in_forked_child(child) == "woken"
    finally:
        parent.close()
        broker.close()


# -- Redis ---------------------------------------------------------------------------------------


def test_an_idle_redis_worker_with_120_queues_uses_a_small_share_of_a_core(redis_namespace: str) -> None:
    assert idle_cpu("redis", REDIS_URL, redis_namespace, QUEUES, MEASURE_S) < MAX_IDLE_CPU


def test_idle_redis_consumers_wake_for_tokens_and_for_pushes_without_one(
    redis_namespace: str, workers: list[Worker]
) -> None:
    broker = RedisBroker(url=REDIS_URL, namespace=redis_namespace, middleware=[])
    seen: list[Any] = []
    idle_worker(broker, workers, seen)
    waiter = broker._storage().idle_waiter
    wait_for(lambda: waiter.waiting == 2 * QUEUES, TIMEOUT_S)  # every consumer handed its waiting over

    started_s = time.monotonic()
    broker.enqueue(raw_message(57, "token"))  # a greenroom producer pushes a wake-up token
    wait_for(lambda: seen == ["token"], TIMEOUT_S)
    assert time.monotonic() - started_s < PROMPTLY_S

    wait_for(lambda: waiter.waiting == 2 * QUEUES, TIMEOUT_S)
    started_s = time.monotonic()
    message = raw_message(99, "no token")  # as Dramatiq's producer does: no wake-up token
    broker.client.hset(f"{redis_namespace}:idle99.msgs", message.message_id, message.encode())
    broker.client.rpush(f"{redis_namespace}:idle99", message.message_id)
    wait_for(lambda: seen == ["token", "no token"], TIMEOUT_S)
    assert time.monotonic() - started_s < PROMPTLY_S
