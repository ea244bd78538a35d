"""Pipelines and groups, with results and group completion callbacks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenroom
from greenroom import Worker, group, pipeline
from greenroom.brokers.stub import StubBroker
from greenroom.middleware.group_callbacks import GroupCallbacks
from greenroom.rate_limits import RateLimiterBackend
from greenroom.results import ResultFailure, ResultMissing, Results, ResultTimeout
from greenroom.results.backends import StubBackend
from tests.rate_limits.conftest import BACKENDS, make_rate_limiter_backend


@pytest.fixture(params=["stub"])
def limiter_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RateLimiterBackend]:
    backend, cleanup = make_rate_limiter_backend(request.param, tmp_path)
    yield backend
    cleanup()


@pytest.fixture
def broker(stub_broker: StubBroker, limiter_backend: RateLimiterBackend) -> StubBroker:
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(GroupCallbacks(limiter_backend))
    return stub_broker


@pytest.fixture
def worker(broker: StubBroker, stub_worker: Worker) -> Worker:
    return stub_worker


@pytest.mark.parametrize("limiter_backend", BACKENDS, indirect=True)
def test_a_group_callback_runs_once_after_every_member(broker: StubBroker, worker: Worker) -> None:
    lock = threading.Lock()
    finished: list[int] = []
    callback_saw: list[int] = []

    @greenroom.actor(store_results=True)
    def member(i: int) -> int:
        with lock:
            finished.append(i)
        return i

    @greenroom.actor
    def on_done(tag: str) -> None:
        with lock:
            callback_saw.append(len(finished))

    jobs = group(member.message(i) for i in range(50))
    jobs.add_completion_callback(on_done.message("all"))
    jobs.run()
    jobs.wait(timeout=30000)
    broker.join(member.queue_name, timeout=30000)
    worker.join()
    assert sorted(finished) == list(range(50))
    assert callback_saw == [50]
    assert jobs.completed
    assert list(jobs.get_results()) == list(range(50))


def test_group_callbacks_follow_pipelines_to_their_last_step(broker: StubBroker, worker: Worker) -> None:
    calls: list[str] = []

    @greenroom.actor
    def step(value: int) -> int:
        return value + 1

    @greenroom.actor
    def on_done() -> None:
        calls.append("done")

    jobs = group([step.message(0) | step.message(), step.message(10) | step.message() | step.message()])  # type: ignore[call-arg]
    jobs.add_completion_callback(on_done.message())
    jobs.run()
    broker.join(step.queue_name, timeout=10000)
    worker.join()
    broker.join(step.queue_name, timeout=10000)
    assert calls == ["done"]


def test_a_failed_member_keeps_the_callback_from_running(broker: StubBroker, worker: Worker) -> None:
    calls: list[str] = []

    @greenroom.actor(max_retries=0)
    def maybe_fail(fail: bool) -> None:
        if fail:
            raise ValueError("member failed")

    @greenroom.actor
    def on_done() -> None:
        calls.append("done")

    jobs = group([maybe_fail.message(False), maybe_fail.message(True)])
    jobs.add_completion_callback(on_done.message())
    jobs.run()
    broker.join(maybe_fail.queue_name, timeout=10000, fail_fast=False)
    worker.join()
    assert calls == []


def test_group_callbacks_need_the_middleware(stub_broker: StubBroker) -> None:
    @greenroom.actor
    def noop() -> None: ...

    jobs = group([noop.message()])
    jobs.add_completion_callback(noop.message())
    with pytest.raises(RuntimeError, match="GroupCallbacks"):
        jobs.run()


def test_groups_of_groups_cannot_have_callbacks(broker: StubBroker) -> None:
    @greenroom.actor
    def noop() -> None: ...

    jobs = group([group([noop.message()])])
    jobs.add_completion_callback(noop.message())
    with pytest.raises(NotImplementedError):
        jobs.run()


def test_a_three_step_pipeline_returns_the_last_value(broker: StubBroker, worker: Worker) -> None:
    @greenroom.actor(store_results=True)
    def add(x: int, y: int = 0) -> int:
        return x + y

    @greenroom.actor(store_results=True)
    def double(x: int) -> int:
        return x * 2

    pipe = add.message(1, 2) | double.message() | add.message(10)  # type: ignore[call-arg]
    assert len(pipe) == 3
    pipe.run()
    assert pipe.get_result(block=True, timeout=10000) == 16
    assert list(pipe.get_results(block=True, timeout=10000)) == [3, 6, 16]
    assert pipe.completed
    assert pipe.completed_count == 3


def test_a_failing_last_step_raises_result_failure(broker: StubBroker, worker: Worker) -> None:
    @greenroom.actor(store_results=True)
    def one() -> int:
        return 1

    @greenroom.actor(store_results=True, max_retries=0)
    def explode(value: int) -> int:
        raise ZeroDivisionError(f"cannot use {value}")

    pipe = pipeline([one.message(), one.message_with_options(pipe_ignore=True), explode.message()])  # type: ignore[call-arg]
    pipe.run()
    with pytest.raises(ResultFailure) as info:
        pipe.get_result(block=True, timeout=10000)
    assert info.value.orig_exc_type == "ZeroDivisionError"
    assert "actor raised ZeroDivisionError: cannot use 1" in str(info.value)


def test_a_failing_middle_step_shows_in_get_results(broker: StubBroker, worker: Worker) -> None:
    @greenroom.actor(store_results=True)
    def start() -> int:
        return 1

    @greenroom.actor(store_results=True, max_retries=0)
    def explode(value: int) -> int:
        raise KeyError("missing")

    @greenroom.actor(store_results=True)
    def never(value: int) -> int:
        raise AssertionError("must not run")

    pipe = start.message() | explode.message() | never.message()  # type: ignore[call-arg]
    pipe.run()
    results = pipe.get_results(block=True, timeout=10000)
    assert next(results) == 1
    with pytest.raises(ResultFailure, match="KeyError"):
        next(results)
    # The chain stopped at the failure: the last step never produces a result.
    with pytest.raises(ResultTimeout):
        pipe.get_result(block=True, timeout=200)
    # As in Dramatiq, counting stops at a failed step by raising its failure.
    with pytest.raises(ResultFailure):
        pipe.completed_count  # noqa: B018


def test_group_results_and_counts(broker: StubBroker) -> None:
    @greenroom.actor(store_results=True)
    def square(x: int) -> int:
        return x * x

    jobs = group([square.message(2), square.message(3), square.message(2) | square.message()])  # type: ignore[call-arg]
    jobs.run()
    assert jobs.completed_count == 0
    with pytest.raises(ResultMissing):
        list(jobs.get_results())
    worker = Worker(broker, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        assert list(jobs.get_results(block=True, timeout=10000)) == [4, 9, 16]
        assert jobs.completed_count == 3
        assert jobs.completed
    finally:
        worker.stop(timeout=10000)


def test_the_barrier_ttl_can_come_from_the_deprecated_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from greenroom.rate_limits.backends import StubBackend as StubRateLimiterBackend

    assert GroupCallbacks(StubRateLimiterBackend()).barrier_ttl == 86400000
    monkeypatch.setenv("greenroom_group_callback_barrier_ttl", "5000")
    with pytest.warns(FutureWarning, match="deprecated"):
        middleware = GroupCallbacks(StubRateLimiterBackend(), barrier_ttl=1000)
    assert middleware.barrier_ttl == 5000
