"""What the reusable broker suites (:mod:`.broker_contract`, :mod:`.operations_contract`) share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ..broker import Broker
from ..worker import Worker

__all__ = ["ContractBase"]


class ContractBase:
    """The hook a test module fills in for its broker, and the workers a suite's tests start."""

    def put_raw(self, broker: Broker, queue_name: str, payload: bytes) -> None:
        """Put raw bytes on a queue as a foreign producer would."""
        raise NotImplementedError

    @pytest.fixture
    def worker_factory(self, broker: Broker) -> Iterator[Callable[..., Worker]]:
        """Starts workers on ``broker`` (4 threads, a 100 ms timeout unless told) and stops them all afterwards."""
        workers: list[Worker] = []

        def make(**kwargs: Any) -> Worker:
            kwargs.setdefault("worker_timeout", 100)
            kwargs.setdefault("worker_threads", 4)
            worker = Worker(broker, **kwargs)
            worker.start()
            workers.append(worker)
            return worker

        yield make
        for worker in workers:
            worker.stop(timeout=10000)
