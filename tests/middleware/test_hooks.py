from __future__ import annotations

import logging
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.middleware import (
    AgeLimit,
    Callbacks,
    CurrentMessage,
    Middleware,
    MiddlewareError,
    Pipelines,
    Retries,
    ShutdownNotifications,
    SkipMessage,
    TimeLimit,
)
from greenroom.middleware.middleware import HOOKS
from greenroom.testing import wait_for


class Recorder(Middleware):
    def __init__(self) -> None:
        self.events: list[str] = []

    def _record(name: str) -> Any:  # type: ignore[misc]
        def hook(self: Recorder, broker: Any, *args: Any, **kwargs: Any) -> None:
            self.events.append(name)

        return hook

    for _name in sorted(HOOKS):
        locals()[_name] = _record(_name)
    del _name


def test_hooks_of_one_message_fire_in_documented_order(stub_broker: StubBroker) -> None:
    recorder = Recorder()
    stub_broker.add_middleware(recorder)

    @greenroom.actor
    def task() -> None:
        pass

    assert recorder.events == [
        "before_declare_actor",
        "before_declare_queue",
        "after_declare_queue",
        "after_declare_delay_queue",
        "after_declare_actor",
    ]
    recorder.events.clear()
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        task.send()
        stub_broker.join("default")
        worker.join()
        wait_for(lambda: "after_ack" in recorder.events)
    finally:
        worker.stop()
    message_events = [
        e for e in recorder.events if e.endswith(("enqueue", "process_message", "ack", "nack", "skip_message"))
    ]
    assert message_events == [
        "before_enqueue",
        "after_enqueue",
        "before_process_message",
        "after_process_message",
        "before_ack",
        "after_ack",
    ]
    assert recorder.events.index("before_worker_boot") < recorder.events.index("after_worker_boot")
    assert recorder.events[-1] == "after_worker_shutdown"
    assert "before_worker_shutdown" in recorder.events


def test_after_hooks_run_in_reverse_order(stub_broker: StubBroker) -> None:
    order: list[str] = []

    class Named(Middleware):
        def __init__(self, name: str) -> None:
            self.name = name

        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            order.append("before " + self.name)

        def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            order.append("after " + self.name)

    stub_broker.add_middleware(Named("a"))
    stub_broker.add_middleware(Named("b"))

    @greenroom.actor
    def task() -> None:
        pass

    task.send()
    assert order == ["before a", "before b", "after b", "after a"]


def test_middleware_error_propagates_from_before_hooks(stub_broker: StubBroker) -> None:
    class Refuse(Middleware):
        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            raise MiddlewareError("no")

    stub_broker.add_middleware(Refuse())

    @greenroom.actor
    def task() -> None:
        pass

    with pytest.raises(MiddlewareError):
        task.send()
    assert stub_broker.queues["default"].qsize() == 0


def test_other_exceptions_in_hooks_are_logged_and_swallowed(
    stub_broker: StubBroker, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Middleware):
        def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            raise RuntimeError("before broke")

        def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
            raise RuntimeError("after broke")

    stub_broker.add_middleware(Broken())

    @greenroom.actor
    def task() -> None:
        pass

    with caplog.at_level(logging.CRITICAL):
        task.send()
    assert stub_broker.queues["default"].qsize() == 1
    assert len([r for r in caplog.records if r.levelno == logging.CRITICAL]) == 2


def test_add_middleware_replays_declarations_and_positions(stub_broker: StubBroker) -> None:
    @greenroom.actor(queue_name="replayed")
    def task() -> None:
        pass

    recorder = Recorder()
    stub_broker.add_middleware(recorder, before=Retries)
    assert "after_declare_actor" in recorder.events
    assert "after_declare_queue" in recorder.events
    assert "after_declare_delay_queue" in recorder.events
    index = stub_broker.middleware.index(recorder)
    assert isinstance(stub_broker.middleware[index + 1], Retries)
    with pytest.raises(ValueError, match="not installed"):
        stub_broker.add_middleware(Recorder(), after=CurrentMessage)
    with pytest.raises(AssertionError):
        stub_broker.add_middleware(Recorder(), before=Retries, after=Retries)


BUILT_IN = [AgeLimit, TimeLimit, ShutdownNotifications, Callbacks, Pipelines, Retries, CurrentMessage]


@pytest.mark.parametrize("middleware_class", BUILT_IN)
def test_every_hook_works_before_any_boot_hook(middleware_class: type[Middleware]) -> None:
    """State is built in __init__: hooks called before after_process_boot must not fail (#253)."""
    middleware = middleware_class()
    broker = StubBroker(middleware=[])

    @greenroom.actor(broker=broker)
    def task() -> None:
        pass

    message = greenroom.MessageProxy(task.message())
    for name in middleware.hooks():
        hook = getattr(middleware, name)
        if name.endswith("_boot") or name.endswith("_shutdown"):
            hook(broker, object()) if name != "after_process_boot" else hook(broker)
        elif name.endswith(("enqueue",)):
            hook(broker, task.message(), None)
        elif name.endswith(("declare_actor",)):
            hook(broker, task)
        elif name.endswith(("declare_queue", "declare_delay_queue")):
            hook(broker, "default")
        elif name == "before_process_message":
            try:
                hook(broker, message)
            except SkipMessage:
                pass
        else:
            hook(broker, message)
