"""The Redis broker's heartbeat: proves this process alive and recovers the messages of dead ones.

One thread per broker and process beats while the broker has consumers or messages to hand back.
Each beat, in one atomic script (heartbeat.lua), records this broker's beat, returns the unsettled
messages of brokers whose last beat is older than the heartbeat timeout to the head of their
queues, and purges old dead letters.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

from ..._background import join_unless_current
from ...errors import BrokerConnectionError
from ...logging import get_logger
from ._storage import RedisStorage

__all__ = ["Heartbeat", "heartbeat_interval_s"]


def heartbeat_interval_s(heartbeat_timeout_ms: int) -> float:
    """Seconds between beats: a quarter of the timeout, between 50 ms and 1 s."""
    return max(0.05, min(heartbeat_timeout_ms / 4000, 1.0))


class Heartbeat:
    """The heartbeat of one broker in one process.

    Parameters:
      storage: The process's storage layer.
      timeout_ms: Milliseconds without a beat after which a broker counts as dead.
      dead_message_ttl_ms: Milliseconds dead letters are kept.
    """

    def __init__(self, storage: RedisStorage, timeout_ms: int, dead_message_ttl_ms: int) -> None:
        self.storage = storage
        self.timeout_ms = timeout_ms
        self.dead_message_ttl_ms = dead_message_ttl_ms
        self.interval_s = heartbeat_interval_s(timeout_ms)
        #: A gap between beats longer than this means Redis (or this process) was away: see heartbeat.lua.
        self._steady_gap_s = max(timeout_ms / 1000 - self.interval_s, 2 * self.interval_s)
        self._logger = get_logger(__name__, "RedisHeartbeat")
        #: Guards the consumed-queue counts and the thread (any thread).
        self._lock = threading.Lock()
        self.consumed: Counter[str] = Counter()
        self.thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._closing = False
        self._last_beat_s = float("-inf")  # monotonic time of the last beat that went through

    def consumer_opened(self, queue_name: str) -> None:
        """Count a consumer of ``queue_name``: beats now cover the queue. Starts the thread if needed."""
        with self._lock:
            self.consumed[queue_name] += 1
            if self.thread is None:  # an exiting thread clears it under the lock
                self.thread = threading.Thread(target=self._run, name="RedisHeartbeat", daemon=True)
                self.thread.start()

    def consumer_closed(self, queue_name: str) -> None:
        """Stop counting a consumer of ``queue_name``; the thread ends once nothing is left to do."""
        with self._lock:
            self.consumed[queue_name] -= 1
            if self.consumed[queue_name] <= 0:
                del self.consumed[queue_name]
        self._wake.set()

    def wake(self) -> None:
        """Beat now rather than at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread (after its retiring beat) and wait for it, unless called from it."""
        with self._lock:
            self._closing = True
            thread = self.thread
        self._wake.set()
        join_unless_current(thread, 10)
        with self._lock:
            self._closing = False

    def beat(self, *, retire: bool = False) -> int:
        """Beat, recover dead brokers' messages, purge old dead letters; returns how many were recovered.

        With ``retire``, this broker's beat and registry are removed instead (the thread's last beat).
        """
        storage = self.storage
        storage.hand_back_orphans()
        with self._lock:
            consumed = sorted(self.consumed)
        keys = storage.keys
        args = (keys.prefix, storage.broker_id, self.timeout_ms, self.dead_message_ttl_ms)
        steady = time.monotonic() - self._last_beat_s < self._steady_gap_s
        mode = 1 if retire else 2 if steady else 0
        script_keys = (keys.heartbeats, keys.registry)
        recovered = int(storage.run_script("heartbeat", script_keys, (*args, mode, *consumed), retry=False))
        self._last_beat_s = time.monotonic()
        if recovered and not retire:
            self._logger.warning("Returned %d messages of dead workers to their queues.", recovered)
        return recovered

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closing or not (self.consumed or self.storage.orphans):
                    self.thread = None
                    break
            try:
                self.beat()
            except BrokerConnectionError as exc:
                self._logger.warning("Heartbeat failed (%s); retrying.", exc)
            except Exception:  # the heartbeat thread must outlive any single failure
                self._logger.exception("Unexpected error in the heartbeat thread.")
            self._wake.wait(self.interval_s)
            self._wake.clear()
        try:
            self.beat(retire=True)
        except Exception:  # the thread's top level; Redis may well be away: its beat just expires
            self._logger.debug("Could not retire worker %s.", self.storage.broker_id, exc_info=True)
