from __future__ import annotations

import json
import pickle
import random
import uuid

import pytest

import greenroom
from greenroom import DecodeError, JSONEncoder, Message, PickleEncoder
from greenroom.brokers.stub import StubBroker
from greenroom.message import generate_unique_id, sequential_id
from tests.conftest import in_forked_child

SEVEN_KEYS = ["queue_name", "actor_name", "args", "kwargs", "options", "message_id", "message_timestamp"]


def test_encoded_message_has_exactly_the_seven_keys(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def add(x: int, y: int) -> int:
        return x + y

    payload = add.message(1, 2).encode()
    data = json.loads(payload)
    assert list(data) == SEVEN_KEYS
    assert data["args"] == [1, 2]
    assert data["kwargs"] == {}
    assert data["options"] == {}
    assert data["queue_name"] == "default"
    assert data["actor_name"] == "add"
    assert isinstance(data["message_timestamp"], int)
    assert b" " not in payload


def test_seed_shaped_payload_decodes_in_any_key_order() -> None:
    payload = (
        b'{"options": {}, "kwargs": {}, "message_timestamp": 0, "args": [1, 2], '
        b'"message_id": "unique-id", "actor_name": "add", "queue_name": "default"}'
    )
    message = Message.decode(payload)
    assert message.args == (1, 2)
    assert message.actor_name == "add"
    assert message.message_id == "unique-id"
    assert message.message_timestamp == 0


def test_missing_id_and_timestamp_are_generated() -> None:
    message = Message.decode(b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{}}')
    assert len(message.message_id) == 36
    assert message.message_timestamp > 0


def test_message_ids_are_version_4_uuids_that_random_seed_cannot_repeat() -> None:
    random.seed(7)
    first = Message("q", "a", (), {}, {}).message_id
    random.seed(7)
    second = Message("q", "a", (), {}, {}).message_id
    assert first != second
    for message_id in (first, second, generate_unique_id()):
        parsed = uuid.UUID(message_id)
        assert (str(parsed), parsed.version, parsed.variant) == (message_id, 4, uuid.RFC_4122)


def test_a_forked_child_makes_ids_of_its_own() -> None:
    """The id source is seeded again after fork: parent and child must not produce the same ids."""
    child_id = in_forked_child(generate_unique_id)
    assert len(child_id) == 36
    assert child_id != generate_unique_id()


def test_sequential_ids_are_unique_per_process_and_after_fork() -> None:
    ids = {sequential_id() for _ in range(1000)}
    child_id = in_forked_child(sequential_id)
    assert len(ids) == 1000
    assert len(child_id) == 36
    assert child_id[:24] not in {known[:24] for known in ids}  # the child drew a prefix of its own


def test_unknown_options_survive_a_round_trip() -> None:
    options = {"custom_thing": {"nested": [1, 2]}, "retries": 3}
    message = Message(queue_name="q", actor_name="a", args=(), kwargs={}, options=options)
    assert Message.decode(message.encode()).options == options


def test_copy_merges_options_and_keeps_identity() -> None:
    message = Message(queue_name="q", actor_name="a", args=(1,), kwargs={}, options={"a": 1})
    copied = message.copy(queue_name="q.DQ", options={"b": 2})
    assert copied.options == {"a": 1, "b": 2}
    assert message.options == {"a": 1}
    assert copied.message_id == message.message_id
    assert copied.message_timestamp == message.message_timestamp
    assert copied.queue_name == "q.DQ"


def test_non_ascii_is_escaped() -> None:
    message = Message(queue_name="q", actor_name="a", args=("héllo",), kwargs={}, options={})
    assert message.encode().isascii()
    assert Message.decode(message.encode()).args == ("héllo",)


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe",
        b"{not json",
        b"[]",
        b"null",
        b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":null}',
        b'{"queue_name":"q","actor_name":"a","args":{},"kwargs":{},"options":{}}',
        b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":[],"options":{}}',
        b'{"queue_name":1,"actor_name":"a","args":[],"kwargs":{},"options":{}}',
        b'{"queue_name":"q","actor_name":null,"args":[],"kwargs":{},"options":{}}',
        b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"message_timestamp":"x"}',
        b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{}}',
        b'{"queue_name":"q","actor_name":"a","args":[],"kwargs":{},"options":{},"extra":1}',
        b"[" * 50000 + b"]" * 50000,
    ],
)
def test_malformed_payloads_raise_decode_error(payload: bytes) -> None:
    with pytest.raises(DecodeError) as info:
        Message.decode(payload)
    assert str(info.value)


def test_oversized_payload_is_refused() -> None:
    from greenroom.broker import decode_message

    big = Message(queue_name="q", actor_name="a", args=("x" * 2000,), kwargs={}, options={}).encode()
    with pytest.raises(DecodeError, match="larger than the limit"):
        decode_message(big, max_bytes=1000)


def test_pickle_encoder_round_trip() -> None:
    previous = greenroom.get_encoder()
    greenroom.set_encoder(PickleEncoder())
    try:
        message = Message(queue_name="q", actor_name="a", args=(b"bytes", {1, 2}), kwargs={}, options={})
        assert pickle.loads(message.encode())["args"] == (b"bytes", {1, 2})
        assert Message.decode(message.encode()).args == (b"bytes", {1, 2})
    finally:
        greenroom.set_encoder(previous)
    assert isinstance(greenroom.get_encoder(), JSONEncoder)


def test_message_str_and_datetime() -> None:
    message = Message(queue_name="q", actor_name="add", args=(1, "a"), kwargs={"k": 2}, options={}, message_timestamp=0)
    assert str(message) == "add(1, 'a', k=2)"
    assert message.message_datetime.year == 1970
    assert message.asdict()["args"] is message.args
