"""The application the job-control tests run in a ``greenroom`` process tree and send to (not a test module).

``build(environ)`` makes a broker with :class:`JobTracking` from ``GR_JOBS_BROKER`` (``sqlite``,
``redis`` or ``rabbitmq``, the last with its status in Redis) and declares the actors on it. The
tree imports this module through the ``app.py`` the test writes; the test calls ``build`` itself
for a producer of its own.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import greenroom
from greenroom.broker import Broker
from greenroom.jobs import JobTracking, RedisJobStore

REDIS_URL = "redis://127.0.0.1:6379/0"


def build(environ: Mapping[str, str]) -> tuple[Broker, dict[str, Any]]:
    """A broker of the kind ``environ`` names, with job tracking, and its actors by name."""
    kind = environ["GR_JOBS_BROKER"]
    store = None
    broker: Broker
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker

        broker = SQLiteBroker(environ["GR_TEST_DB"])
    elif kind == "redis":
        from greenroom.brokers.redis import RedisBroker

        broker = RedisBroker(url=REDIS_URL, namespace=environ["GR_JOBS_NS"])
    elif kind == "postgres":
        from greenroom.brokers.postgres import PostgresBroker

        broker = PostgresBroker(url=environ["GR_JOBS_PG"], schema=environ["GR_JOBS_SCHEMA"])
    else:
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=environ["GR_JOBS_AMQP"])
        store = RedisJobStore.from_url(REDIS_URL, namespace=environ["GR_JOBS_NS"])
    broker.add_middleware(JobTracking(store=store, poll_interval=100, heartbeat_interval=500, progress_interval=100))
    ledger = pathlib.Path(environ["GR_TEST_RESULTS"])

    def note(text: str) -> None:
        with ledger.open("a") as file:
            file.write(text + "\n")

    def noted(text: str) -> int:
        return ledger.read_text().splitlines().count(text) if ledger.exists() else 0

    @greenroom.actor(broker=broker, queue_name=environ.get("GR_JOBS_QUEUE", "default"), min_backoff=50, max_backoff=100)
    def flaky(key: str) -> None:
        note(f"flaky {key}")
        if noted(f"flaky {key}") <= 2:
            raise RuntimeError(f"attempt {noted(f'flaky {key}')} of {key} failed")

    @greenroom.actor(broker=broker, queue_name=environ.get("GR_JOBS_QUEUE", "default"), max_retries=0)
    def slow(key: str, seconds: float) -> None:
        note(f"start {key}")
        greenroom.set_progress(0.5, "half way")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)
        note(f"end {key}")

    @greenroom.actor(broker=broker, queue_name=environ.get("GR_JOBS_QUEUE", "default"))
    def step(key: str) -> None:
        note(f"step {key}")

    return broker, {"flaky": flaky, "slow": slow, "step": step}


if os.environ.get("GR_JOBS_BROKER"):
    broker, actors = build(os.environ)
    greenroom.set_broker(broker)
