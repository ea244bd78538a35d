"""The Results middleware with a real worker, on every results backend."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.middleware import AgeLimit, Middleware, SkipMessage
from greenroom.results import ResultBackend, ResultFailure, ResultMissing, Results, ResultTimeout
from greenroom.results.backends import StubBackend
from greenroom.testing import wait_for
from tests.results.conftest import BACKENDS, make_result_backend


@pytest.fixture
def results_broker(stub_broker: StubBroker, result_backend: ResultBackend) -> StubBroker:
    stub_broker.add_middleware(Results(backend=result_backend))
    return stub_broker


@pytest.fixture
def results_worker(results_broker: StubBroker, stub_worker: Worker) -> Worker:
    return stub_worker


def test_results_middleware_exposes_its_backend(results_broker: StubBroker, result_backend: ResultBackend) -> None:
    assert results_broker.get_results_backend() is result_backend
    assert {"store_results", "result_ttl"} <= results_broker.actor_options


def test_a_broker_without_results_has_no_backend(stub_broker: StubBroker) -> None:
    with pytest.raises(RuntimeError, match="doesn't have a results backend"):
        stub_broker.get_results_backend()


def test_actor_results_are_stored(results_broker: StubBroker, results_worker: Worker) -> None:
    @greenroom.actor(store_results=True)
    def add(x: int, y: int) -> int:
        return x + y

    message = add.send(1, 2)
    assert message.get_result(block=True, timeout=10000) == 3


def test_results_are_not_stored_unless_asked(results_broker: StubBroker, results_worker: Worker) -> None:
    @greenroom.actor
    def quiet() -> int:
        return 1

    plain = quiet.send()
    stored = quiet.send_with_options(store_results=True)
    assert stored.get_result(block=True, timeout=10000) == 1
    results_broker.join(quiet.queue_name)
    results_worker.join()
    with pytest.raises(ResultMissing):
        plain.get_result()


def test_the_message_option_overrides_the_actor_option(results_broker: StubBroker, results_worker: Worker) -> None:
    @greenroom.actor(store_results=True)
    def value() -> str:
        return "v"

    skipped = value.send_with_options(store_results=False)
    kept = value.send()
    assert kept.get_result(block=True, timeout=10000) == "v"
    results_broker.join(value.queue_name)
    results_worker.join()
    with pytest.raises(ResultMissing):
        skipped.get_result()


def test_a_final_failure_is_stored_and_raised(results_broker: StubBroker, results_worker: Worker) -> None:
    attempts: list[int] = []

    @greenroom.actor(store_results=True, max_retries=2, min_backoff=1, max_backoff=20)
    def flaky() -> None:
        attempts.append(1)
        raise ValueError("no luck")

    message = flaky.send()
    with pytest.raises(ResultFailure) as info:
        message.get_result(block=True, timeout=10000)
    assert info.value.orig_exc_type == "ValueError"
    assert "ValueError: no luck" in str(info.value)
    # The failure is stored only once the message is dead-lettered, after every retry.
    assert len(attempts) == 3


def test_a_retried_message_that_succeeds_stores_its_result(results_broker: StubBroker, results_worker: Worker) -> None:
    attempts: list[int] = []

    @greenroom.actor(store_results=True, min_backoff=1, max_backoff=20)
    def second_time_lucky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    assert second_time_lucky.send().get_result(block=True, timeout=10000) == "ok"


def test_an_age_limited_message_stores_a_skip_failure(results_broker: StubBroker, results_worker: Worker) -> None:
    @greenroom.actor(store_results=True, max_age=1000)
    def too_late() -> None:
        raise AssertionError("must not run")

    message = too_late.message().copy(message_timestamp=int(time.time() * 1000) - 60000)
    results_broker.enqueue(message)
    with pytest.raises(ResultFailure, match="SkipMessage: Message age limit exceeded"):
        message.get_result(block=True, timeout=10000)


def test_a_skipped_message_that_did_not_fail_stores_none(result_backend: ResultBackend) -> None:
    class SkipEverything(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise SkipMessage("not today")

    broker = StubBroker()
    broker.add_middleware(Results(backend=result_backend, store_results=True))
    broker.add_middleware(SkipEverything())

    @greenroom.actor(broker=broker)
    def never_runs() -> int:
        raise AssertionError("must not run")

    worker = Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        message = never_runs.send()
        assert message.get_result(backend=result_backend, block=True, timeout=10000) is None
    finally:
        worker.stop(timeout=10000)


def test_results_respect_the_result_ttl(results_broker: StubBroker, results_worker: Worker) -> None:
    # 3 s rather than less: memcached counts expiry in whole seconds, so a 1 s result may be gone
    # before the first read.
    @greenroom.actor(store_results=True, result_ttl=3000)
    def ephemeral() -> int:
        return 7

    message = ephemeral.send()
    assert message.get_result(block=True, timeout=10000) == 7

    def expired() -> bool:
        try:
            message.get_result()
        except ResultMissing:
            return True
        return False

    wait_for(expired, timeout_s=10, interval_s=0.05, message="the result outlived its TTL")


def test_lookup_options_for_unknown_actors_does_not_store() -> None:
    backend = StubBackend()
    broker = StubBroker(middleware=[Results(backend=backend, store_results=True)])
    results = broker.middleware[0]
    assert isinstance(results, Results)
    message: greenroom.Message[None] = greenroom.Message(
        queue_name="default", actor_name="ghost", args=(), kwargs={}, options={}
    )
    assert results._lookup_options(broker, greenroom.MessageProxy(message)) == (False, 0)


def test_results_defaults() -> None:
    results = Results(backend=StubBackend())
    assert results.store_results is False
    assert results.result_ttl == 600000
    assert Results(backend=StubBackend(), result_ttl=0).result_ttl == 600000


def test_get_result_timeout_is_result_timeout_on_every_backend(results_broker: StubBroker) -> None:
    @greenroom.actor(store_results=True)
    def never_processed() -> None: ...

    message = never_processed.send()
    with pytest.raises(ResultTimeout):
        message.get_result(block=True, timeout=200)


def test_age_limit_is_installed_by_default() -> None:
    assert any(isinstance(m, AgeLimit) for m in StubBroker().middleware)


@pytest.mark.parametrize("name", BACKENDS)
def test_backends_can_be_built_for_each_service(name: str, tmp_path: Path) -> None:
    backend, cleanup = make_result_backend(name, tmp_path)
    try:
        assert backend.namespace
    finally:
        cleanup()
