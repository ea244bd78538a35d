"""Async actors on the AsyncIO middleware's event loop thread."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator

import pytest

import greenroom
from greenroom import Worker
from greenroom.asyncio import EventLoopThread, async_to_sync, get_event_loop_thread
from greenroom.brokers.stub import StubBroker
from greenroom.middleware import CurrentMessage, Shutdown, TimeLimitExceeded
from greenroom.middleware.asyncio import AsyncIO
from greenroom.results import Results
from greenroom.results.backends import StubBackend
from greenroom.testing import wait_for


@pytest.fixture
def broker(stub_broker: StubBroker) -> StubBroker:
    stub_broker.add_middleware(AsyncIO())
    stub_broker.add_middleware(CurrentMessage())
    stub_broker.add_middleware(Results(backend=StubBackend()))
    return stub_broker


@pytest.fixture
def loop_thread() -> Iterator[EventLoopThread]:
    thread = EventLoopThread(logging.getLogger("test"))
    thread.start(timeout=5)
    yield thread
    thread.stop()


async def sleep_until_cancelled(cancelled: threading.Event, seconds: float = 30) -> None:
    """Sleep, and set ``cancelled`` if the sleep is cancelled (the cancellation is re-raised)."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        cancelled.set()
        raise


def start_worker(broker: StubBroker, threads: int = 4) -> Worker:
    worker = Worker(broker, worker_timeout=100, worker_threads=threads)
    worker.start()
    return worker


def test_an_async_actor_returns_its_result(broker: StubBroker) -> None:
    @greenroom.actor(store_results=True)
    async def add(x: int, y: int) -> int:
        await asyncio.sleep(0.01)
        return x + y

    worker = start_worker(broker)
    try:
        assert add.send(1, 2).get_result(block=True, timeout=10000) == 3
    finally:
        worker.stop(timeout=10000)
    assert get_event_loop_thread() is None


def test_async_actors_run_concurrently(broker: StubBroker) -> None:
    sleep_s = 0.1
    count = 200
    lock = threading.Lock()
    running = 0
    most_running = 0
    done: list[int] = []

    @greenroom.actor
    async def nap(i: int) -> None:
        nonlocal running, most_running
        with lock:
            running += 1
            most_running = max(most_running, running)
        await asyncio.sleep(sleep_s)
        with lock:
            running -= 1
            done.append(i)

    worker = start_worker(broker, threads=20)
    try:
        start = time.monotonic()
        for i in range(count):
            nap.send(i)
        broker.join(nap.queue_name, timeout=60000)
        worker.join()
        elapsed_s = time.monotonic() - start
    finally:
        worker.stop(timeout=10000)
    assert sorted(done) == list(range(count))
    # Serially this takes count * sleep_s = 20 s; twenty waiting worker threads overlap the sleeps.
    assert elapsed_s < 0.5 * count * sleep_s
    assert most_running > 1


def test_async_actors_see_the_current_message(broker: StubBroker) -> None:
    @greenroom.actor(store_results=True)
    async def whoami() -> str | None:
        message = CurrentMessage.get_current_message()
        await asyncio.sleep(0)
        return None if message is None else message.message_id

    worker = start_worker(broker)
    try:
        message = whoami.send()
        assert message.get_result(block=True, timeout=10000) == message.message_id
    finally:
        worker.stop(timeout=10000)


def test_a_time_limit_cancels_the_coroutine(broker: StubBroker) -> None:
    cancelled = threading.Event()
    failures: list[BaseException] = []

    @greenroom.actor(time_limit=200, max_retries=0)
    async def slow() -> None:
        await sleep_until_cancelled(cancelled)

    @greenroom.actor
    def record(message: dict[str, object], exception: dict[str, str]) -> None:
        failures.append(Exception(exception["type"]))

    worker = start_worker(broker)
    try:
        slow.send_with_options(on_failure=record)
        assert cancelled.wait(10)
        broker.join(slow.queue_name, timeout=10000, fail_fast=False)
        worker.join()
    finally:
        worker.stop(timeout=10000)
    assert [str(f) for f in failures] == ["TimeLimitExceeded"]
    assert isinstance(broker.dead_letters[0]._exception, TimeLimitExceeded)


def test_a_shutdown_notification_cancels_the_coroutine(broker: StubBroker) -> None:
    started = threading.Event()
    cancelled = threading.Event()

    @greenroom.actor(notify_shutdown=True, max_retries=0)
    async def long_running() -> None:
        started.set()
        await sleep_until_cancelled(cancelled)

    worker = start_worker(broker)
    try:
        long_running.send()
        assert started.wait(10)
    finally:
        worker.stop(timeout=10000)
    assert cancelled.is_set()
    assert isinstance(broker.dead_letters[0]._exception, Shutdown)


def test_calling_an_async_actor_needs_the_event_loop() -> None:
    broker = StubBroker()

    @greenroom.actor(broker=broker)
    async def lonely() -> int:
        return 1

    with pytest.raises(RuntimeError, match="AsyncIO"):
        lonely()


def test_run_coroutine_returns_and_raises(loop_thread: EventLoopThread) -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 5

    async def fail() -> None:
        raise ValueError("inside")

    async def timeout() -> None:
        raise TimeoutError("the coroutine's own timeout")

    assert loop_thread.run_coroutine(value()) == 5
    with pytest.raises(ValueError, match="inside"):
        loop_thread.run_coroutine(fail())
    with pytest.raises(TimeoutError, match="own timeout"):
        loop_thread.run_coroutine(timeout())


def test_async_to_sync_runs_on_the_global_loop(loop_thread: EventLoopThread) -> None:
    from greenroom.asyncio import set_event_loop_thread

    async def where() -> str:
        return threading.current_thread().name

    set_event_loop_thread(loop_thread)
    try:
        assert async_to_sync(where)() == loop_thread.name
    finally:
        set_event_loop_thread(None)


def test_a_stopped_loop_refuses_coroutines(loop_thread: EventLoopThread) -> None:
    async def never() -> None: ...

    loop_thread.stop()
    wait_for(lambda: not loop_thread.is_alive())
    with pytest.raises(RuntimeError, match="not running"):
        loop_thread.run_coroutine(never())


def test_stopping_the_loop_cancels_pending_tasks(loop_thread: EventLoopThread) -> None:
    cancelled = threading.Event()

    asyncio.run_coroutine_threadsafe(sleep_until_cancelled(cancelled, 60), loop_thread.loop)
    wait_for(lambda: len(asyncio.all_tasks(loop_thread.loop)) == 1)
    loop_thread.stop()
    assert cancelled.is_set()


def test_stopping_a_loop_that_never_started_closes_it() -> None:
    thread = EventLoopThread(logging.getLogger("test"))
    thread.stop()
    assert thread.loop.is_closed()


def test_the_asyncio_middleware_shares_one_loop_between_workers(broker: StubBroker) -> None:
    first = start_worker(broker, threads=1)
    loop_thread = get_event_loop_thread()
    second = start_worker(broker, threads=1)
    try:
        assert loop_thread is not None
        assert get_event_loop_thread() is loop_thread
    finally:
        second.stop(timeout=10000)
        assert get_event_loop_thread() is loop_thread
        first.stop(timeout=10000)
    assert get_event_loop_thread() is None
    assert not loop_thread.is_alive()
