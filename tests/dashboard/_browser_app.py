"""The application the browser tests run in a ``greenroom`` process tree and send to (not a test module).

``build(environ)`` makes the SQLite broker of ``GR_TEST_DB`` with job tracking and declares the
actors on the queue ``GR_DASH_QUEUE`` (and one actor on ``GR_DASH_QUEUE``_parked, which the tree
does not consume). ``flaky`` fails while the file ``GR_DASH_SWITCH`` exists.
"""

from __future__ import annotations

import os
import pathlib
import time
from collections.abc import Mapping
from typing import Any

import greenroom
from greenroom.brokers.sqlite import SQLiteBroker
from greenroom.jobs import JobTracking


def build(environ: Mapping[str, str]) -> tuple[SQLiteBroker, dict[str, Any]]:
    """The broker and its actors by name."""
    broker = SQLiteBroker(environ["GR_TEST_DB"])
    broker.add_middleware(JobTracking(poll_interval=100, heartbeat_interval=500, progress_interval=100))
    queue_name = environ["GR_DASH_QUEUE"]
    switch = pathlib.Path(environ["GR_DASH_SWITCH"])

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

    @greenroom.actor(broker=broker, queue_name=f"{queue_name}_parked")
    def parked(n: int) -> None:
        pass

    return broker, {"slow": slow, "flaky": flaky, "parked": parked}


if os.environ.get("GR_DASH_QUEUE"):
    broker, actors = build(os.environ)
    greenroom.set_broker(broker)
