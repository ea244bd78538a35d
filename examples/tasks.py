"""The example application of the quick start: a few actors on the default (SQLite) broker.

A worker runs them with ``greenroom tasks``; ``quickstart.py`` enqueues work and runs that worker.
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from typing import Any

import greenroom
from greenroom.middleware import Middleware

#: Some thumbnails fail on their first attempt (a flaky network, say) and succeed when retried.
FLAKY_EVERY = 10
#: A few inputs are broken for good: they use up their retries and end in the dead letters.
BROKEN_EVERY = 45


class Tally(Middleware):
    """Append one line per outcome to a file, so the quick start can show progress across processes."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write(self, word: str) -> None:
        # One small O_APPEND write per line: lines from several processes never interleave.
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, word.encode() + b"\n")
        finally:
            os.close(fd)

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is None:
            self._write("processed")

    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        if "retries" in message.options and message.queue_name.endswith(".DQ"):
            self._write("retried")

    def after_nack(self, broker: Any, message: Any) -> None:
        self._write("dead")


if os.environ.get("QUICKSTART_TALLY"):
    greenroom.get_broker().add_middleware(Tally(os.environ["QUICKSTART_TALLY"]))


@greenroom.actor(max_retries=2, min_backoff=200, max_backoff=1000)
def make_thumbnail(image_id: int, attempt_marker: str) -> None:
    """Pretend to resize an image; fail when the example says so."""
    time.sleep(random.uniform(0.005, 0.03))
    if image_id % BROKEN_EVERY == 7:
        raise ValueError(f"image {image_id} is corrupt")
    marker = os.path.join(attempt_marker, f"{image_id}.tried")
    if image_id % FLAKY_EVERY == 0 and not os.path.exists(marker):
        open(marker, "w").close()
        raise ConnectionError(f"storage timed out for image {image_id}")
    digest = hashlib.sha1(str(image_id).encode()).hexdigest()[:8]
    make_thumbnail.logger.debug("thumbnail %s stored", digest)


@greenroom.actor(queue_name="reports")
def send_report(name: str) -> None:
    """A delayed job: runs once its delay has passed."""
    time.sleep(0.01)
