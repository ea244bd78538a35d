"""The application the browser tests run in a ``greenroom`` process tree and send to (not a test module).

``build(environ)`` makes the broker ``GR_DASH_BROKER`` names (``sqlite``, the default: the file
``GR_TEST_DB``; ``redis``: ``GR_DASH_REDIS_URL`` under the namespace ``GR_DASH_NS``) with job
tracking, and declares the actors on the queue ``GR_DASH_QUEUE`` (and one actor on
``GR_DASH_QUEUE``_parked, which the tree does not consume). ``flaky`` fails while the file
``GR_DASH_SWITCH`` exists; ``hold`` runs until the file ``GR_DASH_RELEASE`` exists. With
``GR_DASH_SCHEDULE`` set, ``parked`` has a schedule.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import greenroom
from greenroom.broker import Broker
from greenroom.jobs import JobTracking

#: How long ``hold`` waits for its release at most, in seconds: a test that forgets it still ends.
HOLD_LIMIT_S = 60.0


def _broker(environ: Mapping[str, str]) -> Broker:
    kind = environ.get("GR_DASH_BROKER", "sqlite")
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(environ["GR_TEST_DB"])
    if kind == "redis":
        from greenroom.brokers.redis import RedisBroker

        # A short retry budget: a dashboard whose Redis is cut shows it in a fraction of a second.
        return RedisBroker(url=environ["GR_DASH_REDIS_URL"], namespace=environ["GR_DASH_NS"], retry_timeout=300)
    raise ValueError(f"no broker of kind {kind!r} in the browser tests' application")


def build(environ: Mapping[str, str]) -> tuple[Broker, dict[str, Any]]:
    """The broker and its actors by name."""
    broker = _broker(environ)
    broker.add_middleware(JobTracking(poll_interval=100, heartbeat_interval=500, progress_interval=100))
    queue_name = environ["GR_DASH_QUEUE"]
    switch = pathlib.Path(environ["GR_DASH_SWITCH"])
    release = pathlib.Path(environ["GR_DASH_RELEASE"])

    @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0)
    def slow(key: str) -> None:
        greenroom.set_progress(0.4, f"working on {key}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # short sleeps: a cancellation lands between them
            time.sleep(0.01)

    @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0)
    def flaky(key: str) -> None:
        if switch.exists():
            raise RuntimeError(f"flaky {key} failed: the switch is on")

    @greenroom.actor(broker=broker, queue_name=queue_name, max_retries=0)
    def hold(key: str) -> None:
        # Another process sets the event: a file is what both can see.
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    @greenroom.actor(broker=broker, queue_name=f"{queue_name}_parked")
    def parked(n: int) -> None:
        pass

    if environ.get("GR_DASH_SCHEDULE"):
        # Never due in a test (a yearly tick, none made up for): the schedules page has a row to read.
        greenroom.schedule(parked, cron="0 0 1 1 *", args=(0,), missed="none")
    return broker, {"slow": slow, "flaky": flaky, "hold": hold, "parked": parked}


if os.environ.get("GR_DASH_QUEUE"):
    broker, actors = build(os.environ)
    greenroom.set_broker(broker)
