from __future__ import annotations

import logging

import pytest

import greenroom
from greenroom import QueueJoinTimeout, QueueNotFound, Worker
from greenroom.brokers.stub import StubBroker
from greenroom.testing import wait_for


def test_poison_payload_is_dead_lettered_with_its_reason(
    stub_broker: StubBroker, stub_worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []

    @greenroom.actor
    def record(n: int) -> None:
        seen.append(n)

    with caplog.at_level(logging.ERROR):
        record.send(1)
        stub_broker.put_raw("default", b'{"queue_name":"default","options":null}')
        record.send(2)
        wait_for(lambda: sorted(seen) == [1, 2] and len(stub_broker.dead_letters) == 1)
    reason = stub_broker.dead_letters[0].options["dead_letter_reason"]
    assert "missing message fields" in reason or "unknown" in reason
    assert any("invalid payload" in record.getMessage() for record in caplog.records)


def test_join_raises_the_dead_lettered_exception(stub_broker: StubBroker, stub_worker: Worker) -> None:
    @greenroom.actor(max_retries=0)
    def fail() -> None:
        raise ZeroDivisionError("boom")

    fail.send()
    with pytest.raises(ZeroDivisionError, match="boom"):
        stub_broker.join("default")
    stub_broker.join("default", fail_fast=False)


def test_join_timeout_and_unknown_queue(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def idle() -> None:
        pass

    idle.send()
    with pytest.raises(QueueJoinTimeout):
        stub_broker.join("default", timeout=50)
    with pytest.raises(QueueNotFound):
        stub_broker.join("nope")
    with pytest.raises(QueueNotFound):
        stub_broker.consume("nope")


def test_flush_all_keeps_dead_letter_list_identity(stub_broker: StubBroker, stub_worker: Worker) -> None:
    @greenroom.actor(max_retries=0)
    def fail() -> None:
        raise ValueError()

    fail.send()
    wait_for(lambda: len(stub_broker.dead_letters) == 1)
    by_queue = stub_broker.dead_letters_by_queue["default"]
    stub_broker.flush_all()
    assert stub_broker.dead_letters == []
    assert stub_broker.dead_letters_by_queue["default"] is by_queue
