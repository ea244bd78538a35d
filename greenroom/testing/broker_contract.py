"""The behaviour every broker must have, as a reusable pytest suite.

Subclass :class:`BrokerContract` in a test module and provide:

* a ``broker`` fixture returning a fresh, empty broker (``process_boot`` already emitted);
* :meth:`BrokerContract.put_raw`, which puts raw bytes on a queue the way a foreign producer would;
* :meth:`BrokerContract.dead_letter_count`, the number of dead letters of a queue.

Every test starts its own :class:`~greenroom.Worker` and stops it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest

from ..actor import Actor, actor
from ..broker import Broker
from ..message import Message
from ._contract_base import ContractBase
from .waiting import wait_for

__all__ = ["BrokerContract"]

#: Generous bound for each wait: the suite runs against real servers on a small machine.
TIMEOUT_S = 30.0


def _recording_actor(broker: Broker) -> tuple[Actor[[int], None], list[int]]:
    """An actor named ``record`` (the name the raw payloads use) and the list it appends its argument to."""
    seen: list[int] = []

    @actor(broker=broker)
    def record(n: int) -> None:
        seen.append(n)

    return record, seen


class BrokerContract(ContractBase):
    """Conformance tests for a broker implementation."""

    def dead_letter_count(self, broker: Broker, queue_name: str) -> int:
        """How many messages of ``queue_name`` are dead-lettered."""
        raise NotImplementedError

    def test_enqueue_and_consume(self, broker: Broker, worker_factory: Any) -> None:
        record, seen = _recording_actor(broker)

        for n in range(50):
            record.send(n)
        worker_factory()
        wait_for(lambda: len(seen) >= 50, TIMEOUT_S)
        assert sorted(seen) == list(range(50))

    def test_send_returns_the_enqueued_message(self, broker: Broker) -> None:
        @actor(broker=broker)
        def noop() -> None:
            pass

        message = noop.send()
        assert isinstance(message, Message)
        assert message.queue_name == "default"
        delayed = noop.send_with_options(delay=10000)
        assert delayed.queue_name == "default.DQ"
        assert delayed.options["eta"] >= message.message_timestamp + 10000

    def test_delayed_messages_wait_for_their_eta(self, broker: Broker, worker_factory: Any) -> None:
        started: dict[str, float] = {}

        @actor(broker=broker)
        def stamp(name: str) -> None:
            started[name] = time.monotonic()

        sent_at = time.monotonic()
        stamp.send_with_options(args=("late",), delay=1500)
        stamp.send("now")
        worker_factory()
        wait_for(lambda: "late" in started, TIMEOUT_S)
        assert started["late"] - sent_at >= 1.45
        assert started["now"] < started["late"]

    def test_acked_messages_are_not_delivered_again(self, broker: Broker, worker_factory: Any) -> None:
        seen: Counter[int] = Counter()

        @actor(broker=broker)
        def record(n: int) -> None:
            seen[n] += 1

        for n in range(20):
            record.send(n)
        worker = worker_factory()
        wait_for(lambda: len(seen) == 20, TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        worker.join()
        worker.stop()
        worker_factory()
        record.send(999)
        wait_for(lambda: 999 in seen, TIMEOUT_S)
        assert set(seen.values()) == {1}

    def test_failed_messages_are_retried_then_dead_lettered(self, broker: Broker, worker_factory: Any) -> None:
        attempts: list[int] = []

        @actor(broker=broker, max_retries=2, min_backoff=10, max_backoff=50)
        def fail() -> None:
            attempts.append(1)
            raise RuntimeError("expected failure")

        fail.send()
        worker_factory()
        wait_for(lambda: self.dead_letter_count(broker, "default") == 1, TIMEOUT_S)
        assert len(attempts) == 3

    def test_a_failure_whose_repr_raises_is_dead_lettered_and_the_queue_moves_on(
        self, broker: Broker, worker_factory: Any
    ) -> None:
        class Unprintable:
            def __repr__(self) -> str:
                raise RuntimeError("repr of a detached row")

        record, seen = _recording_actor(broker)

        @actor(broker=broker, max_retries=0)
        def fail() -> None:
            raise ValueError(Unprintable())

        for _ in range(3):
            fail.send()
        record.send(1)
        worker_factory(queue_prefetch=1)
        wait_for(lambda: seen == [1] and self.dead_letter_count(broker, "default") == 3, TIMEOUT_S)

    def test_unknown_actor_is_dead_lettered(self, broker: Broker, worker_factory: Any) -> None:
        record, seen = _recording_actor(broker)

        record.send(1)
        broker.enqueue(Message(queue_name="default", actor_name="no_such_actor", args=(), kwargs={}, options={}))
        record.send(2)
        worker_factory()
        wait_for(lambda: len(seen) == 2 and self.dead_letter_count(broker, "default") == 1, TIMEOUT_S)

    @pytest.mark.parametrize(
        "payload",
        [
            b"\xff\xfe not utf-8",
            b"{not json",
            b"[1, 2, 3]",
            b'{"queue_name": "default", "actor_name": "record", "args": [], "kwargs": {}, "options": null}',
            b'{"queue_name": "default", "actor_name": "record", "args": {}, "kwargs": {}, "options": {}}',
            b'{"queue_name": "default", "actor_name": "record", "args": [], "kwargs": {}}',
            b'{"queue_name": "default", "actor_name": "record", "args": [], "kwargs": {}, "options": {}, "x": 1}',
            b'{"queue_name": 7, "actor_name": "record", "args": [], "kwargs": {}, "options": {}}',
            b'{"queue_name": "default", "actor_name": "record", "args": [], "kwargs": [], "options": {}}',
            b'{"queue_name": "default", "actor_name": "record", "args": [], "kwargs": {}, "options": {}, '
            b'"message_timestamp": "yesterday"}',
            b"[" * 100000 + b"]" * 100000,
            b'{"queue_name": "default", "actor_name": "record", "args": ["' + b"x" * (9 * 1024 * 1024) + b'"], '
            b'"kwargs": {}, "options": {}}',
        ],
        ids=[
            "not-utf8",
            "bad-json",
            "not-object",
            "options-null",
            "args-object",
            "missing",
            "extra",
            "queue-not-string",
            "kwargs-array",
            "timestamp-not-number",
            "deep",
            "too-large",
        ],
    )
    def test_malformed_payloads_are_dead_lettered(self, broker: Broker, worker_factory: Any, payload: bytes) -> None:
        record, seen = _recording_actor(broker)

        record.send(1)
        self.put_raw(broker, "default", payload)
        record.send(2)
        worker_factory()
        wait_for(lambda: len(seen) == 2 and self.dead_letter_count(broker, "default") == 1, TIMEOUT_S)

    def test_seed_payload_from_another_language(self, broker: Broker, worker_factory: Any) -> None:
        seen: list[Any] = []

        @actor(broker=broker)
        def add(x: int, y: int) -> None:
            seen.append(x + y)

        payload = (
            b'{"message_timestamp": 0, "options": {}, "args": [1, 2], "kwargs": {}, "actor_name": "add", '
            b'"message_id": "9f3b2d4e-3a1c-4e1b-9a55-0c0e5d1f2a3b", "queue_name": "default"}'
        )
        self.put_raw(broker, "default", payload)
        worker_factory()
        wait_for(lambda: seen == [3], TIMEOUT_S)

    def test_stop_hands_prefetched_messages_back(self, broker: Broker, worker_factory: Any) -> None:
        seen: Counter[int] = Counter()
        release = threading.Event()

        @actor(broker=broker)
        def slow(n: int) -> None:
            release.wait(TIMEOUT_S)
            seen[n] += 1

        for n in range(10):
            slow.send(n)
        worker = worker_factory(worker_threads=1, queue_prefetch=10)
        wait_for(lambda: worker.work_queue.qsize() >= 5, TIMEOUT_S)
        stopper = threading.Thread(target=worker.stop, kwargs={"timeout": int(TIMEOUT_S * 1000)})
        stopper.start()
        wait_for(lambda: not worker.workers[0].running, TIMEOUT_S)
        release.set()
        stopper.join(TIMEOUT_S)
        assert not stopper.is_alive()
        assert 1 <= sum(seen.values()) < 10

        worker_factory()
        wait_for(lambda: len(seen) == 10, TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        assert set(seen.values()) == {1}

    def test_stop_hands_delayed_messages_back(self, broker: Broker, worker_factory: Any) -> None:
        seen: Counter[str] = Counter()

        @actor(broker=broker)
        def later(name: str) -> None:
            seen[name] += 1

        later.send_with_options(args=("delayed",), delay=2000)
        worker = worker_factory()
        later.send("now")
        wait_for(lambda: seen["now"] == 1, TIMEOUT_S)
        worker.stop()
        assert seen["delayed"] == 0
        worker_factory()
        wait_for(lambda: seen["delayed"] == 1, TIMEOUT_S)
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        assert seen == {"now": 1, "delayed": 1}

    def test_payload_naming_another_queue_is_dead_lettered_and_the_queue_moves_on(
        self, broker: Broker, worker_factory: Any
    ) -> None:
        """The one bad-payload policy (:func:`greenroom.broker.decode_message`): a message whose
        ``queue_name`` is not the queue it was found on is dead-lettered unrun, like a malformed one."""
        record, seen = _recording_actor(broker)

        for n in range(3):
            record.send(n)
        self.put_raw(
            broker,
            "default",
            b'{"queue_name": "elsewhere", "actor_name": "record", "args": [99], "kwargs": {}, "options": {}}',
        )
        for n in range(3, 6):
            record.send(n)
        worker_factory(worker_threads=1, queue_prefetch=1)
        wait_for(lambda: set(range(6)) <= set(seen) and self.dead_letter_count(broker, "default") == 1, TIMEOUT_S)
        assert 99 not in seen

    def test_non_finite_eta_runs_now(self, broker: Broker, worker_factory: Any) -> None:
        record, seen = _recording_actor(broker)

        self.put_raw(
            broker,
            "default",
            b'{"queue_name": "default", "actor_name": "record", "args": [1], "kwargs": {}, "options": {"eta": NaN}}',
        )
        record.send(2)
        worker_factory()
        wait_for(lambda: sorted(seen) == [1, 2], TIMEOUT_S)

    def test_priorities_order_prefetched_messages(self, broker: Broker, worker_factory: Any) -> None:
        order: list[str] = []
        release = threading.Event()

        @actor(broker=broker, priority=0)
        def blocker() -> None:
            release.wait(TIMEOUT_S)

        @actor(broker=broker, priority=0)
        def urgent() -> None:
            order.append("urgent")

        @actor(broker=broker, priority=100)
        def lazy() -> None:
            order.append("lazy")

        blocker.send()
        worker = worker_factory(worker_threads=1, queue_prefetch=20)
        wait_for(lambda: worker.work_queue.qsize() == 0 and worker.work_queue.unfinished_tasks == 1, TIMEOUT_S)
        for _ in range(5):
            lazy.send()
        for _ in range(5):
            urgent.send()
        wait_for(lambda: worker.work_queue.qsize() == 10, TIMEOUT_S)
        release.set()
        wait_for(lambda: len(order) == 10, TIMEOUT_S)
        assert order == ["urgent"] * 5 + ["lazy"] * 5

    def test_join_waits_for_the_queue(self, broker: Broker, worker_factory: Any) -> None:
        seen: list[int] = []

        @actor(broker=broker)
        def record(n: int) -> None:
            time.sleep(0.01)
            seen.append(n)

        for n in range(20):
            record.send(n)
        worker_factory()
        broker.join("default", timeout=int(TIMEOUT_S * 1000))
        assert len(seen) == 20

    def test_flush_drops_messages(self, broker: Broker, worker_factory: Any) -> None:
        record, seen = _recording_actor(broker)

        for n in range(5):
            record.send(n)
        record.send_with_options(args=(5,), delay=100)
        broker.flush_all()
        record.send(6)
        worker_factory()
        wait_for(lambda: seen == [6], TIMEOUT_S)
