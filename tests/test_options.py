"""One rule for every option: the message's, else the actor's, else the default; presence decides."""

from __future__ import annotations

import time

import pytest

import greenroom
from greenroom import Worker
from greenroom._options import resolve_option
from greenroom.brokers.stub import StubBroker
from greenroom.testing import wait_for


@pytest.mark.parametrize(
    ("message_options", "actor_options", "expected"),
    [
        ({}, {}, "default"),
        ({}, {"x": "actor"}, "actor"),
        ({"x": "message"}, {"x": "actor"}, "message"),
        ({"x": 0}, {"x": 5}, 0),
        ({"x": False}, {"x": True}, False),
        ({"x": None}, {"x": 5}, None),
        ({}, {"x": None}, None),
    ],
)
def test_presence_decides_not_truthiness(
    message_options: dict[str, object], actor_options: dict[str, object], expected: object
) -> None:
    assert resolve_option("x", message_options, actor_options, "default") == expected


def test_a_message_option_of_zero_overrides_the_actor(stub_broker: StubBroker, stub_worker: Worker) -> None:
    attempts: list[int] = []

    @greenroom.actor(max_retries=3, min_backoff=1, max_backoff=1)
    def flaky() -> None:
        attempts.append(1)
        raise ValueError("always")

    flaky.send_with_options(max_retries=0)
    wait_for(lambda: len(stub_broker.dead_letters) == 1, timeout_s=10)
    stub_worker.join(timeout_s=10)
    assert attempts == [1]


def test_an_explicit_none_time_limit_means_no_limit(stub_broker: StubBroker, stub_worker: Worker) -> None:
    done: list[str] = []

    @greenroom.actor(time_limit=50, max_retries=0)
    def slow() -> None:
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # pure Python: an interrupt would land at once
            pass
        done.append("finished")

    slow.send_with_options(time_limit=None)
    wait_for(lambda: done == ["finished"], timeout_s=10)
    assert stub_broker.dead_letters == []
