"""The SQLite broker's consumer (see :mod:`greenroom.brokers._leasing_consumer` for what it shares).

The consumer talks to the database through :class:`SQLiteStorage`, is woken by the process's
:class:`ChangeWatcher`, and is known to the process's :class:`LeaseKeeper` while it holds rows.
"""

from __future__ import annotations

import threading
import time

from ...broker import MessageProxy
from ...common import current_millis
from .._leasing_consumer import ConsumerRegistry, LeasedMessage, LeasingConsumer
from ._storage import SQLiteStorage
from ._watch import ChangeWatcher

__all__ = ["SQLiteConsumer"]

#: Even without a nudge, an idle consumer looks at its queue this often (s). Nothing should need it:
#: it knows when its next delayed row is due, and the broker's ChangeWatcher nudges it for new rows,
#: rows handed back and lapsed leases. It bounds the harm of a wall clock set back, say.
_RECHECK_S = 10.0
#: Rows leased per transaction at most, so that no write transaction holds the lock for long.
_MAX_LEASE_BATCH = 500


class SQLiteConsumer(LeasingConsumer):
    """Leases the rows of one queue, at most ``prefetch`` at a time."""

    broker_name = "an SQLite broker"

    def __init__(
        self,
        storage: SQLiteStorage,
        watcher: ChangeWatcher,
        registry: ConsumerRegistry,
        queue_name: str,
        prefetch: int,
        timeout_ms: int,
    ) -> None:
        super().__init__(storage, registry, queue_name, prefetch, timeout_ms)
        self.storage: SQLiteStorage = storage
        self.watcher = watcher
        #: Rows leased and not yet acked, nacked or requeued (buffered ones included). The
        #: consumer thread adds, worker threads release: guarded by _lock.
        self._held = 0
        #: Set when a row is released and when the broker's ChangeWatcher nudges this consumer;
        #: which of the two happened is told by _slot_freed and _nudged (under _lock).
        self._wake = threading.Event()
        self._slot_freed = False
        self._nudged = False
        #: The watcher's generation when this consumer last looked at its queue.
        self._seen_generation = -1
        self._next_check_s = 0.0
        #: Whether the last lease came back full: the next one then needs no peek first.
        self._leased_last_time = False

    @property
    def held(self) -> int:
        """How many rows this consumer holds leased (prefetched, waiting or running)."""
        return self._held

    def __next__(self) -> MessageProxy | None:
        deadline_s = time.monotonic() + self.timeout_s
        while True:
            if self._buffer:
                return self._buffer.popleft()
            now_s = time.monotonic()
            free = self._room()
            if free > 0 and self._should_fetch(now_s) and self._fetch(free):
                continue
            if free <= 0 < self.prefetch - self._held:
                self._next_check_s = 0.0  # held back by the worker's demand: look as soon as it has room
            if now_s >= deadline_s:
                return None
            self._wait(free, deadline_s)

    def _room(self) -> int:
        """How many rows to lease now: within ``prefetch``, and what the worker process can use."""
        free = self.prefetch - self._held
        demand = self.demand
        return free if demand is None else min(free, demand.room())

    def _should_fetch(self, now_s: float) -> bool:
        """Whether to look at the queue: a row was released, it may have new work, or it is time."""
        self._wake.clear()
        with self._lock:
            poked = self._slot_freed or self._nudged
            self._slot_freed = self._nudged = False
        if not poked and now_s < self._next_check_s:
            return False
        # Read before looking: a commit the watcher notices from now on may concern what the look missed.
        self._seen_generation = self.watcher.generation
        return True

    def _wait(self, free: int, deadline_s: float) -> None:
        """Sleep until a row is released, a nudge, the queue is due a look, or the deadline."""
        now_s = time.monotonic()
        wake_at_s = deadline_s
        if free > 0:
            wake_at_s = min(wake_at_s, self._next_check_s)
            # Again at every wait: cheap, and it starts the watcher's thread again should it have stopped.
            self.watcher.subscribe(self, self._seen_generation)
        self._wake.wait(max(0.0, wake_at_s - now_s))

    def nudge(self) -> None:
        """There may be new work (the broker's ChangeWatcher calls this from its thread)."""
        with self._lock:
            self._nudged = True
        self._wake.set()

    def _fetch(self, free: int) -> bool:
        """Lease up to ``free`` due rows; False when none is due (and when to look again is set)."""
        if not self._leased_last_time:
            now_ms = current_millis()
            due_ms = self.storage.peek(self.queue_name, now_ms)  # a read: no write lock when there is nothing to do
            if due_ms is None or due_ms > now_ms:
                wait_s = _RECHECK_S if due_ms is None else min(_RECHECK_S, (due_ms - now_ms) / 1000)
                self._next_check_s = time.monotonic() + wait_s
                return False
        wanted = min(free, _MAX_LEASE_BATCH)
        rows = self.storage.lease(self.queue_name, self.owner, wanted)
        with self._lock:
            self._held += len(rows)
        # While leases come back full, the next one goes without a peek first (a query per lease
        # saved while the queue has work); after one that came back short, a peek (a read, no write
        # lock) says whether and when to look, as on a quiet queue.
        self._leased_last_time = len(rows) == wanted
        self._next_check_s = 0.0
        for index, (row_id, _, payload, _) in enumerate(rows):
            try:
                self._admit(row_id, payload or b"")
            except BaseException:
                self._give_back([row[0] for row in rows[index:]])
                raise
        return bool(rows)

    def _unhold(self, row_ids: list[int]) -> None:
        with self._lock:
            self._held -= len(row_ids)

    def release(self, proxy: LeasedMessage) -> None:
        """A row this consumer leased was acked, dead-lettered or handed back: a slot is free."""
        with self._lock:
            if proxy.released:
                return
            proxy.released = True
            self._held -= 1
            self._slot_freed = True
            forget = self._closed and self._held == 0
        self._wake.set()
        if forget:
            self.registry.discard(self)

    def ack(self, message: MessageProxy) -> None:
        proxy = self._proxy(message)
        self.storage.delete(proxy.row_id)
        proxy.leased_by.release(proxy)

    def close(self) -> None:
        self.watcher.unsubscribe(self)
        self._hand_back_buffered()
        with self._lock:
            self._closed = True
            forget = self._held == 0
        # Rows still held are being processed: their leases are renewed until they are acked.
        if forget:
            self.registry.discard(self)

    def __repr__(self) -> str:
        return f"<SQLiteConsumer {self.queue_name!r} owner={self.owner!r} held={self._held}>"
