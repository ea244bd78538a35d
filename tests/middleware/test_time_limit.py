from __future__ import annotations

import threading
import time

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.middleware import TimeLimit, TimeLimitExceeded
from greenroom.testing import wait_for
from greenroom.threading import run_interruptible


def test_pure_python_spin_is_interrupted_quickly(stub_broker: StubBroker, stub_worker: Worker) -> None:
    outcome: list[tuple[str, float]] = []

    @greenroom.actor(time_limit=200, max_retries=0)
    def spin() -> None:
        start = time.monotonic()
        try:
            while time.monotonic() - start < 30:
                pass
        except TimeLimitExceeded:
            outcome.append(("interrupted", time.monotonic() - start))
            raise

    spin.send()
    wait_for(lambda: len(stub_broker.dead_letters) == 1, timeout_s=10)
    assert outcome
    assert outcome[0][0] == "interrupted"
    assert 0.19 <= outcome[0][1] < 2.0
    assert isinstance(stub_broker.dead_letters[0]._exception, TimeLimitExceeded)


class Victim:
    """A thread that, once ``go`` is set, runs an actor for message "m1" until interrupted or stopped."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.armed = threading.Event()
        self.stop = threading.Event()
        self.caught: list[str] = []
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert self.thread.ident is not None
        self.ident = self.thread.ident

    def _spin(self) -> None:
        self.armed.set()
        while not self.stop.is_set():
            time.sleep(0.001)

    def _run(self) -> None:
        self.go.wait(5)
        try:
            run_interruptible("m1", self._spin, (), {})
        except TimeLimitExceeded:
            self.caught.append("yes")

    def finish(self) -> None:
        self.thread.join(5)
        self.stop.set()
        self.thread.join(5)


def test_run_once_interrupts_only_expired_threads() -> None:
    middleware = TimeLimit(interval=1000)
    victim = Victim()
    victim.go.set()
    assert victim.armed.wait(5)
    middleware._deadlines[victim.ident] = (100.0, "m1")
    assert middleware.run_once(now_s=99.0) <= 1.0
    assert victim.caught == []
    middleware.run_once(now_s=100.0)
    victim.finish()
    assert victim.caught == ["yes"]
    assert middleware._deadlines == {}


def test_run_once_keeps_a_deadline_until_its_actor_runs() -> None:
    """A deadline that passes while hooks still run before the actor is kept, and fires once it starts."""
    middleware = TimeLimit(interval=1000)
    victim = Victim()
    middleware._deadlines[victim.ident] = (100.0, "m1")
    middleware.run_once(now_s=100.0)  # not armed yet: nothing is raised, the deadline stays
    assert middleware._deadlines == {victim.ident: (100.0, "m1")}
    victim.go.set()
    assert victim.armed.wait(5)
    middleware.run_once(now_s=100.0)
    victim.finish()
    assert victim.caught == ["yes"]
    assert middleware._deadlines == {}


def test_after_process_boot_twice_starts_one_watchdog() -> None:
    middleware = TimeLimit()
    broker = StubBroker(middleware=[middleware])
    before = threading.active_count()
    broker.emit_after("process_boot")
    broker.emit_after("process_boot")
    assert threading.active_count() == before + 1
