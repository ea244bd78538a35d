"""Interrupts land only in the actor's own code: actors ending at the edge of their time limit lose nothing.

Each message's actor ends within ±2 ms of a 100 ms limit, so the watchdog fires just before, just
after or while the actor returns. Whatever the timing, a failure is retried per its policy, a
success sends its pipeline's next step and stores its result, and no thread blocks.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenroom
from greenroom import Worker
from greenroom.broker import Broker
from greenroom.middleware import default_middleware
from greenroom.results import ResultBackend, Results
from greenroom.testing import wait_for
from tests.conftest import redis_client_for

#: Rounds of MESSAGES messages each, per broker.
ROUNDS = 5
MESSAGES = 200
LIMIT_MS = 100
#: Bound of one round; a round takes a few seconds unless something blocks.
ROUND_TIMEOUT_S = 60.0


def _middleware(backend: ResultBackend) -> list[greenroom.Middleware]:
    return [middleware() for middleware in default_middleware] + [Results(backend=backend)]


@pytest.fixture(params=["sqlite", "redis"])
def edge_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    if request.param == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker
        from greenroom.results.backends.sqlite import SQLiteBackend

        path = tmp_path / "edges.db"
        broker: Broker = SQLiteBroker(path, middleware=_middleware(SQLiteBackend(path=path)))
        cleanup = None
    else:
        from greenroom.brokers.redis import RedisBroker
        from greenroom.results.backends.redis import RedisBackend

        namespace = f"greenroom-edges-{uuid.uuid4().hex[:8]}"
        _, cleanup = redis_client_for(namespace)
        broker = RedisBroker(namespace=namespace, middleware=_middleware(RedisBackend(namespace=namespace)))
    broker.emit_after("process_boot")
    greenroom.set_broker(broker)
    try:
        yield broker
    finally:
        broker.close()
        if cleanup is not None:
            cleanup()


def test_actors_ending_at_their_time_limit_lose_nothing(edge_broker: Broker) -> None:
    broker = edge_broker
    lock = threading.Lock()
    attempts: Counter[int] = Counter()
    piped: Counter[int] = Counter()

    @greenroom.actor(
        broker=broker, time_limit=LIMIT_MS, max_retries=1, min_backoff=1, max_backoff=5, store_results=True
    )
    def edge(n: int, fail: bool) -> int:
        with lock:
            attempts[n] += 1
            first = attempts[n] == 1
        if first:  # the first attempt ends at the limit; a retry is quick
            time.sleep(random.uniform(LIMIT_MS - 2, LIMIT_MS + 2) / 1000)
        if fail:
            raise ValueError(f"message {n} fails")
        return n

    @greenroom.actor(broker=broker)
    def sink(value: int) -> None:
        with lock:
            piped[value] += 1

    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    try:
        for round_number in range(ROUNDS):
            base = round_number * MESSAGES
            numbers = range(base, base + MESSAGES)
            succeeding = [n for n in numbers if n % 2 == 0]
            failing = [n for n in numbers if n % 2 == 1]
            firsts = {}
            for n in numbers:
                if n in failing:
                    edge.send(n, True)
                else:
                    first = edge.message(n, False)
                    greenroom.pipeline([first, sink.message()], broker=broker).run()
                    firsts[n] = first

            def settled(succeeding: list[int] = succeeding, failing: list[int] = failing) -> bool:
                with lock:
                    return all(piped[n] for n in succeeding) and all(attempts[n] == 2 for n in failing)

            # Every failure retried once (its retry then fails quickly and is dead-lettered), every
            # success piped on; a lost retry or step leaves this waiting until the bound.
            wait_for(settled, timeout_s=ROUND_TIMEOUT_S)
            backend = broker.get_results_backend()
            for n, message in firsts.items():
                assert backend.get_result(message) == n
            with lock:
                assert all(piped[n] == 1 for n in succeeding), "a pipeline step ran twice"
                assert all(attempts[n] in (1, 2) for n in succeeding)
        broker.join(edge.queue_name, timeout=int(ROUND_TIMEOUT_S * 1000))
        worker.join(timeout_s=ROUND_TIMEOUT_S)
    finally:
        worker.stop(timeout=10000)
    # Every thread can still log (an interrupt inside a handler would have left its lock held).
    done = threading.Event()
    logger_thread = threading.Thread(target=lambda: (greenroom.get_logger(__name__).error("still logging"), done.set()))
    logger_thread.start()
    assert done.wait(5)
