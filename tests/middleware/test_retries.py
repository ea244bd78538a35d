from __future__ import annotations

from typing import Any

import pytest

import greenroom
from greenroom import Message, Retry, Worker
from greenroom.brokers.stub import StubBroker
from greenroom.common import compute_backoff
from greenroom.middleware import Middleware
from greenroom.testing import wait_for


class RecordDelays(Middleware):
    def __init__(self) -> None:
        self.delays: list[int | None] = []

    def before_enqueue(self, broker: Any, message: Message[Any], delay: int | None) -> None:
        if "retries" in message.options and message.queue_name.endswith(".DQ"):
            self.delays.append(delay)


def test_failing_actor_runs_max_retries_plus_one_times_then_is_dead_lettered(
    stub_broker: StubBroker, stub_worker: Worker
) -> None:
    recorder = RecordDelays()
    stub_broker.add_middleware(recorder)
    attempts: list[int] = []

    @greenroom.actor(max_retries=3, min_backoff=10, max_backoff=100)
    def fail() -> None:
        attempts.append(1)
        raise RuntimeError("always")

    fail.send()
    wait_for(lambda: len(stub_broker.dead_letters) == 1, timeout_s=10)
    stub_broker.join("default", fail_fast=False)
    assert len(attempts) == 4
    dead = stub_broker.dead_letters[0]
    assert dead.options["retries"] == 4
    assert "RuntimeError: always" in dead.options["traceback"]
    # §4.2: retry n waits min_backoff·2^n·U[1,2], or max_backoff·U[0.5,1] past the cap.
    assert len(recorder.delays) == 3
    for n, delay in enumerate(recorder.delays):
        assert delay is not None
        base = 10 * 2**n
        assert base <= delay <= 2 * base or 50 <= delay <= 100, (n, delay)
    with pytest.raises(RuntimeError, match="always"):
        stub_broker.join("default")


def test_compute_backoff_follows_the_formula() -> None:
    for attempts in range(10):
        for _ in range(50):
            count, delay = compute_backoff(attempts, factor=100, max_backoff=10_000)
            assert count == attempts + 1
            base = 100 * 2**attempts
            if base * 2 <= 10_000:
                assert base <= delay <= 2 * base
            else:
                assert 5_000 <= delay <= 10_000 or base <= delay <= 10_000
    assert compute_backoff(3, factor=10, jitter=False, max_backoff=1000) == (4, 80)
    assert compute_backoff(30, factor=10, jitter=False, max_backoff=1000) == (31, 1000)


def test_default_retry_delays() -> None:
    from greenroom.middleware import Retries

    retries = Retries()
    assert retries.max_retries == 20
    assert retries.min_backoff == 15000
    assert retries.max_backoff == 7 * 24 * 3600 * 1000


def test_retry_with_delay_overrides_backoff_and_is_not_an_error(stub_broker: StubBroker, stub_worker: Worker) -> None:
    recorder = RecordDelays()
    stub_broker.add_middleware(recorder)
    attempts: list[int] = []

    @greenroom.actor(min_backoff=60000)
    def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise Retry(delay=20)

    flaky.send()
    wait_for(lambda: len(attempts) == 3, timeout_s=10)
    stub_broker.join("default")
    assert recorder.delays == [20, 20]
    assert stub_broker.dead_letters == []


def test_throws_dead_letters_immediately(stub_broker: StubBroker, stub_worker: Worker) -> None:
    attempts: list[int] = []

    @greenroom.actor(throws=(KeyError,))
    def expected() -> None:
        attempts.append(1)
        raise KeyError("x")

    expected.send()
    wait_for(lambda: len(stub_broker.dead_letters) == 1)
    assert attempts == [1]


def test_retry_when_replaces_max_retries(stub_broker: StubBroker, stub_worker: Worker) -> None:
    attempts: list[int] = []

    def should_retry(retries: int, exc: BaseException) -> bool:
        return retries < 1 and isinstance(exc, ValueError)

    @greenroom.actor(retry_when=should_retry, min_backoff=1, max_retries=100)
    def fail() -> None:
        attempts.append(1)
        raise ValueError("x")

    fail.send()
    wait_for(lambda: len(stub_broker.dead_letters) == 1)
    assert len(attempts) == 2


def test_on_retry_exhausted_receives_the_message(stub_broker: StubBroker, stub_worker: Worker) -> None:
    received: list[Any] = []

    @greenroom.actor
    def exhausted(message_data: dict[str, Any], info: dict[str, Any]) -> None:
        received.append((message_data["actor_name"], info))

    @greenroom.actor(max_retries=1, min_backoff=1, on_retry_exhausted="exhausted")
    def fail() -> None:
        raise ValueError("x")

    fail.send()
    wait_for(lambda: len(received) == 1)
    assert received == [("fail", {"retries": 1, "max_retries": 1})]


def test_message_option_overrides_actor_option(stub_broker: StubBroker, stub_worker: Worker) -> None:
    attempts: list[int] = []

    @greenroom.actor(max_retries=5, min_backoff=1)
    def fail() -> None:
        attempts.append(1)
        raise ValueError("x")

    fail.send_with_options(max_retries=0)
    wait_for(lambda: len(stub_broker.dead_letters) == 1)
    assert len(attempts) == 1
