"""How many messages a worker process can use right now: the demand its consumers fetch by.

A process that fetched twice as many messages as it has threads kept them waiting in its memory
while another process, with idle threads, had nothing to do. :class:`Capacity` lets consumers take
only what the process will start soon: its idle threads, plus a buffer that hides the fetch round
trip when tasks are short. The buffer is sized from recent task durations: none for tasks that
take long enough that a fetch is cheap beside them, up to the configured bound for tiny tasks.
"""

from __future__ import annotations

import threading
from queue import Queue
from typing import Any

__all__ = ["Capacity"]

#: The buffer covers about this much of the threads' work: the time a fetch takes, with margin.
BUFFER_COVER_S = 0.005
#: Weight of the newest task duration in the moving average.
_SMOOTHING = 0.2


class Capacity:
    """The demand of one worker process: threads, what they run, and what waits for them.

    Parameters:
      threads: The worker threads of the process.
      work_queue: Where consumers put the messages waiting for a thread.
      max_buffer: The most messages kept waiting beyond the threads' (``queue_prefetch`` minus
        the threads, at least 0).
    """

    def __init__(self, threads: int, work_queue: Queue[Any], max_buffer: int) -> None:
        self.threads = threads
        self.max_buffer = max(0, max_buffer)
        self._work_queue = work_queue
        self._lock = threading.Lock()
        #: Messages that worker threads are running.
        self.busy = 0
        #: Moving average of task durations in seconds; None until a task finished.
        self.average_s: float | None = None

    def started(self) -> None:
        """A worker thread took a message."""
        with self._lock:
            self.busy += 1

    def finished(self, duration_s: float) -> None:
        """A worker thread is done with a message that took ``duration_s``."""
        with self._lock:
            self.busy -= 1
            average = self.average_s
            self.average_s = duration_s if average is None else average + _SMOOTHING * (duration_s - average)

    def buffer(self) -> int:
        """Messages to keep waiting beyond the threads: enough to hide a fetch behind short tasks."""
        average = self.average_s
        if average is None:
            return 0  # nothing known yet: long tasks must not be hoarded by the first process to fetch
        return min(self.max_buffer, int(self.threads * BUFFER_COVER_S / max(average, 1e-6)))

    def limit(self) -> int:
        return self.threads + self.buffer()

    def room(self) -> int:
        return max(0, self.limit() - self.busy - self._work_queue.qsize())
