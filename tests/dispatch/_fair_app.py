"""The application of the fair-dispatch tests (not a test module): long tasks that wait for a release file.

``GR_FAIR_BROKER`` picks the broker (``sqlite``, ``redis`` or ``rabbitmq``); each task notes when
it started in ``GR_TEST_RESULTS`` and then waits (at most a minute) until ``GR_FAIR_RELEASE`` exists.
"""

from __future__ import annotations

import os
import pathlib
import time

import greenroom
from greenroom.broker import Broker


def build() -> Broker:
    kind = os.environ["GR_FAIR_BROKER"]
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(os.environ["GR_TEST_DB"])
    if kind == "redis":
        from greenroom.brokers.redis import RedisBroker

        return RedisBroker(url="redis://127.0.0.1:6379/0", namespace=os.environ["GR_FAIR_NS"])
    if kind == "postgres":
        from greenroom.brokers.postgres import PostgresBroker

        return PostgresBroker(url=os.environ["GR_FAIR_PG"], schema=os.environ["GR_FAIR_SCHEMA"])
    from greenroom.brokers.rabbitmq import RabbitmqBroker

    return RabbitmqBroker(url=os.environ["GR_FAIR_AMQP"])


broker = build()
greenroom.set_broker(broker)
ledger = pathlib.Path(os.environ["GR_TEST_RESULTS"])
release = pathlib.Path(os.environ["GR_FAIR_RELEASE"])


@greenroom.actor(queue_name=os.environ["GR_FAIR_QUEUE"], max_retries=0)
def long_task(n: int) -> None:
    with ledger.open("a") as file:
        file.write(f"start {n} {time.time():.3f} {os.getpid()}\n")
    deadline = time.monotonic() + 60
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    with ledger.open("a") as file:
        file.write(f"end {n}\n")
