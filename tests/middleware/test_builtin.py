from __future__ import annotations

import threading
import time
from typing import Any

import greenroom
from greenroom import Message, Worker
from greenroom.brokers.stub import StubBroker
from greenroom.middleware import CurrentMessage, Shutdown, SkipMessage
from greenroom.testing import wait_for


def test_age_limit_dead_letters_old_messages(stub_broker: StubBroker, stub_worker: Worker) -> None:
    ran: list[int] = []

    @greenroom.actor(max_age=1000)
    def task(n: int) -> None:
        ran.append(n)

    stub_broker.enqueue(task.message(1).copy(message_timestamp=int(time.time() * 1000) - 5000))
    task.send(2)
    wait_for(lambda: ran == [2] and len(stub_broker.dead_letters) == 1)
    assert isinstance(stub_broker.dead_letters[0]._exception, SkipMessage)


def test_callbacks_fire_on_success_and_failure(stub_broker: StubBroker, stub_worker: Worker) -> None:
    seen: list[Any] = []

    @greenroom.actor
    def on_ok(message_data: dict[str, Any], result: Any) -> None:
        seen.append(("ok", result))

    @greenroom.actor
    def on_err(message_data: dict[str, Any], error: dict[str, str]) -> None:
        seen.append(("err", error))

    @greenroom.actor(max_retries=0)
    def compute(fail: bool) -> int:
        if fail:
            raise ValueError("bad")
        return 7

    compute.send_with_options(args=(False,), on_success=on_ok, on_failure=on_err)
    compute.send_with_options(args=(True,), on_success=on_ok, on_failure=on_err)
    wait_for(lambda: len(seen) == 2)
    assert ("ok", 7) in seen
    assert ("err", {"type": "ValueError", "message": "bad"}) in seen


def test_pipeline_passes_results_along(stub_broker: StubBroker, stub_worker: Worker) -> None:
    final: list[int] = []

    @greenroom.actor
    def add(x: int, y: int) -> int:
        return x + y

    @greenroom.actor
    def record(value: int) -> None:
        final.append(value)

    pipe = add.message(1, 2) | add.message(10) | record.message()
    assert len(pipe) == 3
    pipe.run()
    wait_for(lambda: final == [13])


def test_pipe_ignore(stub_broker: StubBroker, stub_worker: Worker) -> None:
    final: list[tuple[Any, ...]] = []

    @greenroom.actor
    def first() -> int:
        return 1

    @greenroom.actor
    def second(*args: Any) -> None:
        final.append(args)

    greenroom.pipeline([first.message(), second.message_with_options(args=("x",), pipe_ignore=True)]).run()
    wait_for(lambda: final == [("x",)])


def test_group_runs_every_member(stub_broker: StubBroker, stub_worker: Worker) -> None:
    seen: list[int] = []

    @greenroom.actor
    def record(n: int) -> None:
        seen.append(n)

    greenroom.group([record.message(n) for n in range(10)]).run()
    wait_for(lambda: sorted(seen) == list(range(10)))


def test_current_message(stub_broker: StubBroker, stub_worker: Worker) -> None:
    stub_broker.add_middleware(CurrentMessage())
    seen: list[str] = []

    @greenroom.actor
    def task() -> None:
        current = CurrentMessage.get_current_message()
        assert current is not None
        seen.append(current.message_id)

    sent = task.send()
    wait_for(lambda: seen == [sent.message_id])
    assert CurrentMessage.get_current_message() is None


def test_shutdown_notification_interrupts_opted_in_actor(stub_broker: StubBroker) -> None:
    outcome: list[str] = []
    started = threading.Event()

    @greenroom.actor(notify_shutdown=True, max_retries=0)
    def long_task() -> None:
        started.set()
        try:
            end = time.monotonic() + 30
            while time.monotonic() < end:
                time.sleep(0.01)
        except Shutdown:
            outcome.append("notified")
            raise

    worker = Worker(stub_broker, worker_timeout=100, worker_threads=1)
    worker.start()
    long_task.send()
    assert started.wait(10)
    worker.stop(timeout=10000)
    assert outcome == ["notified"]


def test_unknown_actor_payload_is_dead_lettered(stub_broker: StubBroker, stub_worker: Worker) -> None:
    @greenroom.actor
    def known() -> None:
        pass

    stub_broker.enqueue(Message(queue_name="default", actor_name="ghost", args=(), kwargs={}, options={}))
    wait_for(lambda: len(stub_broker.dead_letters) == 1)
    assert type(stub_broker.dead_letters[0]._exception).__name__ == "ActorNotFound"


def test_pause_and_resume(stub_broker: StubBroker, stub_worker: Worker) -> None:
    seen: list[int] = []

    @greenroom.actor
    def record(n: int) -> None:
        seen.append(n)

    stub_worker.pause()
    record.send(1)
    assert stub_broker.queues["default"].qsize() == 1
    stub_worker.resume()
    wait_for(lambda: seen == [1])
