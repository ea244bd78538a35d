"""The worker primitives behind recycling and hard stops, in one process on the stub broker.

``Worker(max_tasks=N)`` starts exactly N messages and hands the rest back when stopped;
``Worker.take_over`` settles the message of an actor stuck where its time limit's interrupt cannot
land, once, and the stuck thread settles nothing when its actor returns at last.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import Counter
from typing import Any

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.cli._warden import MEMORY_INTERVAL_S, Warden
from greenroom.middleware import Middleware, Shutdown, TimeLimit, TimeLimitExceeded
from greenroom.testing import wait_for


class Settlements(Middleware):
    """Counts, per message id, the runs that ended and the acks and nacks (not those of delay queues)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[tuple[str, str]] = Counter()

    def _count(self, what: str, message: Any) -> None:
        if message.queue_name.endswith(".DQ"):
            return  # a retry's wait in the delay queue
        with self.lock:
            self.counts[(what, message.message_id)] += 1

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        self._count("ended", message)

    def after_ack(self, broker: Any, message: Any) -> None:
        self._count("ack", message)

    def after_nack(self, broker: Any, message: Any) -> None:
        self._count("nack", message)


def test_a_worker_starts_exactly_max_tasks_messages_and_hands_the_rest_back(stub_broker: StubBroker) -> None:
    ran: list[int] = []
    lock = threading.Lock()

    @greenroom.actor(queue_name="budget")
    def note(n: int) -> None:
        with lock:
            ran.append(n)

    for n in range(12):
        note.send(n)
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=4, max_tasks=5)
    worker.start()
    try:
        assert worker.budget.spent.wait(10)
        wait_for(lambda: len(ran) == 5 and worker.capacity.busy == 0, timeout_s=10)
    finally:
        worker.stop(timeout=10_000)
    assert len(ran) == 5
    assert worker.budget.reason == "it started 5 messages"

    # What it had not started went back to the queue: a second worker runs each of them once.
    second = Worker(stub_broker, worker_timeout=100, worker_threads=4)
    second.start()
    try:
        stub_broker.join("budget", timeout=10_000)
        second.join(10)
    finally:
        second.stop(timeout=10_000)
    assert sorted(ran) == list(range(12))


def test_a_stuck_message_is_taken_over_once_and_its_thread_settles_nothing(stub_broker: StubBroker) -> None:
    settlements = Settlements()
    stub_broker.add_middleware(settlements)
    time_limit = next(m for m in stub_broker.middleware if isinstance(m, TimeLimit))
    never_readable, writer = socket.socketpair()
    attempts: list[str] = []

    @greenroom.actor(queue_name="stuck", time_limit=200, min_backoff=20, max_backoff=40)
    def stuck() -> None:
        attempts.append("run")
        if len(attempts) == 1:
            # In C, where the interrupt cannot land; it returns when the test writes to the pair.
            select.select([never_readable], [], [], 20)

    worker = Worker(stub_broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        message = stuck.send()
        wait_for(lambda: time_limit.overdue(float("inf"), 0.0), timeout_s=10)
        [(thread_id, message_id)] = time_limit.overdue(float("inf"), 0.0)
        assert message_id == message.message_id
        assert worker.running_messages() == [(thread_id, message_id)]

        assert worker.take_over(thread_id, message_id, TimeLimitExceeded("stuck"))
        assert not worker.take_over(thread_id, message_id, TimeLimitExceeded("stuck"))  # once only
        assert worker.running_messages() == []
        assert time_limit.overdue(float("inf"), 0.0) == []  # the time limit forgot the stuck run

        # The retry runs on the other thread and succeeds.
        wait_for(lambda: settlements.counts[("ack", message_id)] == 2, timeout_s=10)
        assert attempts == ["run", "run"]

        # The stuck actor returns at last: its thread leaves without settling anything again.
        [abandoned] = [w for w in worker.workers if w.ident == thread_id]
        writer.send(b"x")
        abandoned.join(10)
        assert not abandoned.is_alive()
    finally:
        worker.stop(timeout=10_000)
        never_readable.close()
        writer.close()
    assert settlements.counts[("ended", message_id)] == 2
    assert settlements.counts[("ack", message_id)] == 2
    assert settlements.counts[("nack", message_id)] == 0
    assert attempts == ["run", "run"]
    assert stub_broker.dead_letters == []


def test_stop_does_not_wait_for_a_thread_whose_message_was_taken_over(stub_broker: StubBroker) -> None:
    never_readable, writer = socket.socketpair()
    started = threading.Event()

    @greenroom.actor(queue_name="stop", max_retries=0)
    def hang() -> None:
        started.set()
        select.select([never_readable], [], [], 20)

    worker = Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        message = hang.send()
        assert started.wait(10)
        wait_for(lambda: worker.running_messages() != [], timeout_s=10)
        [(thread_id, _)] = worker.running_messages()
        assert worker.take_over(thread_id, message.message_id, TimeLimitExceeded("stuck"))
        stopping = threading.Thread(target=worker.stop, kwargs={"timeout": 20_000})
        stopping.start()
        stopping.join(5)
        assert not stopping.is_alive(), "stop waited for the abandoned thread"
        assert len(stub_broker.dead_letters) == 1  # max_retries=0: the failure is dead-lettered
    finally:
        writer.send(b"x")
        never_readable.close()
        writer.close()


def test_the_warden_retires_on_memory_only_after_a_message_ran(stub_broker: StubBroker) -> None:
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=1)
    warden = Warden(worker, None, max_memory_mb=1, grace_ms=0, logger=logging.getLogger("test"))
    warden.run_once(time.monotonic())
    assert not worker.budget.spent.is_set()  # every process is above 1 MB, but it ran nothing yet
    assert worker.budget.take()
    warden.run_once(time.monotonic() + MEMORY_INTERVAL_S)
    assert worker.budget.spent.is_set()
    assert "resident memory" in str(worker.budget.reason)


def test_the_warden_escalates_at_the_shutdown_timeout(stub_broker: StubBroker) -> None:
    never_readable, writer = socket.socketpair()
    started = threading.Event()

    @greenroom.actor(queue_name="escalate", max_retries=0)
    def hang() -> None:
        started.set()
        select.select([never_readable], [], [], 20)

    worker = Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    warden = Warden(worker, None, max_memory_mb=None, grace_ms=500, logger=logging.getLogger("test"))
    try:
        hang.send()
        assert started.wait(10)
        wait_for(lambda: worker.running_messages() != [], timeout_s=10)
        warden.shutting_down(0)
        now_s = time.monotonic()
        warden.run_once(now_s)  # interrupted (it cannot land), not taken over yet
        assert worker.running_messages() != []
        warden.run_once(now_s + 0.4)
        assert worker.running_messages() != []
        warden.run_once(now_s + 0.5)  # the grace has passed
        assert worker.running_messages() == []
        [dead] = stub_broker.dead_letters
        assert isinstance(dead._exception, Shutdown)
    finally:
        worker.stop(timeout=10_000)
        writer.send(b"x")
        never_readable.close()
        writer.close()
