from __future__ import annotations

import datetime

import pytest

import greenroom
from greenroom import GenericActor, Worker
from greenroom.brokers.stub import StubBroker
from greenroom.testing import wait_for


@pytest.mark.parametrize("queue_name", ["", "1abc", "has space", "a/b", "q.DQ", "q.XQ"])
def test_invalid_queue_names_are_rejected(stub_broker: StubBroker, queue_name: str) -> None:
    with pytest.raises(ValueError, match=r"[Qq]ueue name"):
        greenroom.actor(queue_name=queue_name)(lambda: None)


def test_valid_queue_names(stub_broker: StubBroker) -> None:
    for name in ["a", "_a", "a.b-c_d9"]:
        greenroom.actor(queue_name=name, actor_name=f"fn_{name}")(lambda: None)
    assert {"a", "_a", "a.b-c_d9"} <= stub_broker.get_declared_queues()


def test_unknown_actor_option_is_rejected(stub_broker: StubBroker) -> None:
    with pytest.raises(ValueError, match="no_such_option"):
        greenroom.actor(no_such_option=1)(lambda: None)


def test_duplicate_actor_name_is_rejected(stub_broker: StubBroker) -> None:
    greenroom.actor(actor_name="dup")(lambda: None)
    with pytest.raises(ValueError, match="already registered"):
        greenroom.actor(actor_name="dup")(lambda: None)


def test_unserialisable_argument_raises_and_enqueues_nothing(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def takes(value: object) -> None:
        pass

    with pytest.raises(TypeError):
        takes.send(object())
    with pytest.raises(TypeError):
        takes.send(b"bytes")
    assert stub_broker.queues["default"].qsize() == 0


def test_send_with_delay_as_timedelta(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def later() -> None:
        pass

    message = later.send_with_options(delay=datetime.timedelta(seconds=2))
    assert message.queue_name == "default.DQ"
    assert 1900 <= message.options["eta"] - message.message_timestamp <= 2100
    assert later.send_with_options(delay=0).queue_name == "default.DQ"


def test_callbacks_given_as_actors_become_names(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def target() -> None:
        pass

    message = target.message_with_options(on_success=target, on_failure="target")
    assert message.options == {"on_success": "target", "on_failure": "target"}
    with pytest.raises(TypeError):
        target.message_with_options(on_success=42)


def test_actor_is_callable_directly(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def add(x: int, y: int) -> int:
        return x + y

    assert add(1, 2) == 3
    assert str(add) == "Actor(add)"
    assert "actor_name='add'" in repr(add)


def test_decorating_opens_nothing_when_using_the_global_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("greenroom_broker_url", "memory://")
    from greenroom import _globals

    monkeypatch.setattr(_globals, "_broker", None)
    broker = greenroom.get_broker()
    assert isinstance(broker, StubBroker)
    assert greenroom.get_broker() is broker


def test_generic_actor(stub_broker: StubBroker, stub_worker: Worker) -> None:
    results: list[int] = []

    class Base(GenericActor):
        class Meta:
            abstract = True
            queue_name = "generic"

        def perform(self, x: int) -> None:
            results.append(self.scale(x))

        def scale(self, x: int) -> int:
            raise NotImplementedError

    class Double(Base):
        def scale(self, x: int) -> int:
            return x * 2

    assert Double.queue_name == "generic"  # type: ignore[attr-defined]
    assert Double.actor_name == "Double"  # type: ignore[attr-defined]
    Double.send(21)  # type: ignore[attr-defined]
    wait_for(lambda: results == [42])


def test_circular_arguments_raise_type_error_and_enqueue_nothing(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def take(value: object) -> None:
        pass

    circular: list[object] = []
    circular.append(circular)
    with pytest.raises(TypeError, match=r"(?i)circular"):
        take.send(circular)
    with pytest.raises(TypeError):
        take.send_with_options(args=({"self": circular},))
    assert stub_broker.queues[take.queue_name].qsize() == 0
