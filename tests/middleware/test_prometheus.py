from __future__ import annotations

import threading
from collections import Counter

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker
from greenroom.testing import wait_for

prometheus = pytest.importorskip("greenroom.middleware.prometheus")


def value(middleware: object, name: str, actor: str, queue: str = "default") -> float:
    registry = middleware.registry  # type: ignore[attr-defined]
    sample = registry.get_sample_value(name, {"queue_name": queue, "actor_name": actor})
    return 0.0 if sample is None else float(sample)


def test_counts_are_exact_for_retries_and_rejects(stub_broker: StubBroker, stub_worker: Worker) -> None:
    metrics = prometheus.Prometheus()
    stub_broker.add_middleware(metrics)
    attempts: Counter[int] = Counter()

    @greenroom.actor(max_retries=1, min_backoff=1, max_backoff=5)
    def job(n: int) -> None:
        attempts[n] += 1
        if n < 5 or (n < 15 and attempts[n] == 1):
            raise ValueError("planned failure")

    for n in range(100):
        job.send(n)
    wait_for(lambda: sum(attempts.values()) == 115 and len(stub_broker.dead_letters) == 5, timeout_s=20)
    stub_broker.join("default", fail_fast=False)
    stub_worker.join()

    assert value(metrics, "greenroom_messages_total", "job") == 115
    assert value(metrics, "greenroom_message_errors_total", "job") == 20
    assert value(metrics, "greenroom_message_retries_total", "job") == 15
    assert value(metrics, "greenroom_message_rejects_total", "job") == 5
    assert value(metrics, "greenroom_messages_inprogress", "job") == 0
    assert value(metrics, "greenroom_delayed_messages_inprogress", "job") == 0
    assert value(metrics, "greenroom_message_duration_milliseconds_count", "job") == 115


def test_inprogress_gauge_tracks_running_messages(stub_broker: StubBroker) -> None:
    metrics = prometheus.Prometheus()
    stub_broker.add_middleware(metrics)
    release = threading.Event()

    @greenroom.actor
    def long_task() -> None:
        release.wait(20)

    worker = Worker(stub_broker, worker_timeout=100, worker_threads=8)
    worker.start()
    try:
        for _ in range(8):
            long_task.send()
        wait_for(lambda: value(metrics, "greenroom_messages_inprogress", "long_task") == 8)
        release.set()
        wait_for(lambda: value(metrics, "greenroom_messages_inprogress", "long_task") == 0)
    finally:
        release.set()
        worker.stop()


def test_skip_without_start_does_not_go_negative(stub_broker: StubBroker, stub_worker: Worker) -> None:
    import time

    metrics = prometheus.Prometheus()
    stub_broker.add_middleware(metrics)

    @greenroom.actor(max_age=10)
    def stale() -> None:
        pass

    stub_broker.enqueue(stale.message().copy(message_timestamp=int(time.time() * 1000) - 60000))
    wait_for(lambda: len(stub_broker.dead_letters) == 1)
    assert value(metrics, "greenroom_messages_inprogress", "stale") == 0
    assert value(metrics, "greenroom_message_rejects_total", "stale") == 1


def test_dramatiq_prefix() -> None:
    metrics = prometheus.Prometheus(prefix="dramatiq")
    names = {metric.name for metric in metrics.registry.collect()}
    assert "dramatiq_messages" in names
    assert "dramatiq_message_duration_milliseconds" in names
