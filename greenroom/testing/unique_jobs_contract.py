"""Unique jobs (the ``unique_key`` option), as every broker that keeps them must: a reusable pytest suite.

Mix :class:`UniqueJobsContract` into a :class:`~greenroom.testing.broker_contract.BrokerContract`
subclass (it uses that class's ``broker`` and ``worker_factory`` fixtures) for a broker that keeps
unique jobs, as the Postgres, SQLite and Redis brokers do (see ``greenroom/brokers/_unique.py``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..actor import actor
from ..broker import Broker
from .waiting import wait_for

__all__ = ["UniqueJobsContract"]

#: Generous bound for each wait: the suite runs against real servers on a small machine.
TIMEOUT_S = 30.0


class UniqueJobsContract:
    """Conformance tests for unique jobs."""

    def test_a_second_send_returns_the_queued_message(self, broker: Broker, worker_factory: Any) -> None:
        seen: list[int] = []

        @actor(broker=broker)
        def job(n: int) -> None:
            seen.append(n)

        first = job.send_with_options(args=(1,), unique_key="report")
        second = job.send_with_options(args=(2,), unique_key="report")
        other = job.send_with_options(args=(3,), unique_key="another")
        assert second.message_id == first.message_id
        assert second.args == (1,)  # the message already there, not the one refused
        assert other.message_id != first.message_id
        worker_factory()
        wait_for(lambda: sorted(seen) == [1, 3], TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        # Finished: the key is free again.
        again = job.send_with_options(args=(4,), unique_key="report")
        assert again.message_id != first.message_id
        wait_for(lambda: sorted(seen) == [1, 3, 4], TIMEOUT_S)

    def test_an_actor_computes_the_key_from_the_arguments(self, broker: Broker) -> None:
        @actor(broker=broker, unique_key=lambda user_id: f"sync-{user_id}")
        def sync(user_id: int) -> None:
            pass

        first = sync.send(1)
        assert sync.send(1).message_id == first.message_id
        assert sync.send(2).message_id != first.message_id
        # A message's own option wins over its actor's; None means no key.
        assert sync.send_with_options(args=(1,), unique_key=None).message_id != first.message_id

    def test_a_delayed_message_holds_its_key_until_it_ran(self, broker: Broker, worker_factory: Any) -> None:
        seen: list[int] = []

        @actor(broker=broker)
        def job(n: int) -> None:
            seen.append(n)

        delayed = job.send_with_options(args=(1,), delay=300, unique_key="later")
        assert job.send_with_options(args=(2,), unique_key="later").message_id == delayed.message_id
        worker_factory()
        # Moved from the delay queue to its queue, it carries its key along and runs once.
        wait_for(lambda: seen == [1], TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        assert job.send_with_options(args=(3,), unique_key="later").message_id != delayed.message_id
        wait_for(lambda: seen == [1, 3], TIMEOUT_S)

    def test_until_finished_the_key_is_held_while_the_message_runs(self, broker: Broker, worker_factory: Any) -> None:
        started: list[str] = []
        release = threading.Event()

        @actor(broker=broker)
        def job(name: str) -> None:
            started.append(name)
            release.wait(TIMEOUT_S)

        kept = job.send_with_options(args=("kept",), unique_key="kept", unique_until="finished")
        let_go = job.send_with_options(args=("let-go",), unique_key="let-go")
        worker_factory(worker_threads=4)
        wait_for(lambda: sorted(started) == ["kept", "let-go"], TIMEOUT_S)
        try:
            assert job.send_with_options(args=("x",), unique_key="kept", unique_until="finished") == kept
            # The default lets the key go once a worker took the message.
            assert job.send_with_options(args=("y",), unique_key="let-go").message_id != let_go.message_id
        finally:
            release.set()
        wait_for(lambda: len(started) == 3, TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        renewed = job.send_with_options(args=("z",), unique_key="kept", unique_until="finished")
        assert renewed.message_id != kept.message_id
        wait_for(lambda: len(started) == 4, TIMEOUT_S)

    def test_a_retry_keeps_its_key_and_is_never_dropped(self, broker: Broker, worker_factory: Any) -> None:
        attempts: list[float] = []

        @actor(broker=broker, max_retries=1, min_backoff=200, max_backoff=300, unique_key="flaky")
        def flaky() -> None:
            attempts.append(time.monotonic())
            if len(attempts) == 1:
                raise RuntimeError("first attempt fails")

        first = flaky.send()
        worker_factory()
        wait_for(lambda: len(attempts) == 1, TIMEOUT_S)
        # While its retry waits on the delay queue, the key is the retry's.
        duplicate = flaky.send()
        wait_for(lambda: len(attempts) >= 2, TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        # The duplicate was either the retry itself (refused) or accepted when the key was free: at
        # most one extra run, and the retry always ran.
        assert len(attempts) == (2 if duplicate.message_id == first.message_id else 3)
