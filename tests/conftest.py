from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker

#: In CI a missing service fails the run; locally it skips the tests that need it.
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_unavailable(name: str, error: BaseException) -> None:
    """Fail in CI, skip elsewhere, when a service the test needs is not running."""
    if CI:
        pytest.fail(f"{name} is required in CI but unreachable: {error}")
    pytest.skip(f"{name} is not reachable: {error}")


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    greenroom.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[Worker]:
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=4)
    worker.start()
    yield worker
    worker.stop(timeout=10000)


#: tests/typing is checked by mypy, not run.
collect_ignore_glob = ["typing/*"]
