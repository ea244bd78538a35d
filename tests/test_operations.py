"""The shared policy of the operations API (greenroom._operations), and what a broker without it does."""

from __future__ import annotations

import datetime
import json

import pika
import pytest

from greenroom._operations import (
    DeadLetter,
    QueueCounts,
    check_age,
    check_limit,
    message_id_of,
    read_payload,
    requeue_payload,
    wanted_ids,
)
from greenroom.broker import Broker, Consumer
from greenroom.brokers.rabbitmq._dead_letters import DEAD_AT_HEADER, REASON_HEADER, read_letter
from greenroom.message import Message


class _BareBroker(Broker):
    """A broker written without the operations API, as third-party brokers are."""

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 30000) -> Consumer:
        raise NotImplementedError

    def flush(self, queue_name: str) -> None:
        pass

    def flush_all(self) -> None:
        pass


def test_a_broker_without_the_operations_says_it_does_not_support_them() -> None:
    broker = _BareBroker(middleware=[])
    for call, name in [
        (lambda: broker.get_queue_counts("default"), "get_queue_counts"),
        (lambda: broker.get_dead_letters("default"), "get_dead_letters"),
        (lambda: broker.requeue_dead_letters("default"), "requeue_dead_letters"),
        (lambda: broker.purge_dead_letters("default"), "purge_dead_letters"),
    ]:
        with pytest.raises(NotImplementedError, match=f"_BareBroker does not support {name}"):
            call()


def _payload(queue_name: str = "default", **options: object) -> bytes:
    return Message(queue_name, "work", (1,), {"k": 2}, dict(options), "id-1", 1234).encode()


def test_requeue_payload_resets_the_retries_and_keeps_the_rest() -> None:
    dead = _payload(retries=3, traceback="Traceback ...", requeue_timestamp=99, max_retries=5, custom="kept")
    fresh = Message.decode(requeue_payload(dead, "default"))
    assert fresh.options == {"max_retries": 5, "custom": "kept"}
    assert (fresh.queue_name, fresh.actor_name, fresh.args, fresh.kwargs) == ("default", "work", (1,), {"k": 2})
    assert (fresh.message_id, fresh.message_timestamp) == ("id-1", 1234)


def test_requeue_payload_moves_a_message_from_the_delay_queue_to_its_queue() -> None:
    fresh = Message.decode(requeue_payload(_payload("default.DQ", eta=5, retries=1), "default"))
    assert (fresh.queue_name, fresh.options) == ("default", {})


def test_requeue_payload_keeps_what_it_cannot_rewrite() -> None:
    assert requeue_payload(b"\xff not json", "default") == b"\xff not json"
    elsewhere = _payload("elsewhere", retries=1)
    assert requeue_payload(elsewhere, "default") == elsewhere  # dead-lettered again, as before


def test_message_ids_only_when_the_payload_carries_one() -> None:
    assert message_id_of(_payload()) == "id-1"
    assert message_id_of(b"{not json") is None
    without_id = json.dumps({"queue_name": "q", "actor_name": "a", "args": [], "kwargs": {}, "options": {}}).encode()
    assert read_payload(without_id) is not None
    assert message_id_of(without_id) is None  # decoding makes one up, which would change every time


def test_dead_letter_names_its_actor_when_it_can() -> None:
    good = DeadLetter(1, "default", "id-1", _payload(), "ValueError()", 5)
    assert good.actor_name == "work"
    assert DeadLetter(2, "default", None, b"junk", "bad", 5).actor_name is None
    assert QueueCounts(1, 2, None, 3).in_progress is None


def test_argument_checks() -> None:
    assert check_limit(0) == 0
    assert check_age(None) == 0
    assert check_age(10) == 10
    assert wanted_ids(None) is None
    assert wanted_ids(["a", "b", "a"]) == frozenset({"a", "b"})
    with pytest.raises(ValueError, match="limit"):
        check_limit(-1)
    with pytest.raises(ValueError, match="older_than_ms"):
        check_age(-5)
    with pytest.raises(TypeError, match="one string"):
        wanted_ids("id-1")


def test_rabbitmq_dead_letters_read_greenroom_headers_then_x_death() -> None:
    own = pika.BasicProperties(headers={REASON_HEADER: "ValueError('boom')", DEAD_AT_HEADER: 1_700_000_000_123})
    letter = read_letter(0, "default", own, _payload())
    assert (letter.reason, letter.dead_at_ms, letter.message_id) == ("ValueError('boom')", 1_700_000_000_123, "id-1")

    when = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    death = {"reason": "rejected", "queue": "default", "time": when, "count": 1}
    routed = read_letter(3, "default", pika.BasicProperties(headers={"x-death": [death]}), b"junk")
    assert routed.id == 3
    assert routed.reason.startswith("rejected on 'default'")
    assert routed.dead_at_ms == int(when.timestamp()) * 1000
    assert routed.message_id is None

    bare = read_letter(0, "default", pika.BasicProperties(), b"junk")
    assert (bare.reason, bare.dead_at_ms) == ("", 0)
