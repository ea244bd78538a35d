"""The Postgres broker's consumer (see :mod:`greenroom.brokers._leasing_consumer` for what it shares).

The consumer talks to the database through :class:`PostgresStorage`, is woken by the process's
:class:`Listener` (LISTEN/NOTIFY), and is known to the process's :class:`LeaseKeeper` while it
holds rows.
"""

from __future__ import annotations

import threading
import time
from typing import cast

from ...broker import MessageProxy
from .._leasing_consumer import ConsumerRegistry, LeasedMessage, LeasingConsumer
from ._acks import AckBatcher
from ._listen import Listener
from ._storage import PostgresStorage

__all__ = ["PostgresConsumer"]

#: Rows leased per statement at most.
_MAX_LEASE_BATCH = 500
#: How long a consumer that still holds rows waits for room to lease a batch (see ``_batch_wait_s``).
_BATCH_WAIT_S = 0.002


class PostgresConsumer(LeasingConsumer):
    """Leases the rows of one queue, at most ``prefetch`` at a time.

    It looks at its queue when it has room and was nudged (a notification, a row it held was
    released) or when ``poll_interval_ms`` passed without a nudge; a delay queue's consumer also
    when its next row is due.
    """

    broker_name = "a Postgres broker"

    def __init__(
        self,
        storage: PostgresStorage,
        listener: Listener,
        acks: AckBatcher,
        registry: ConsumerRegistry,
        queue_name: str,
        prefetch: int,
        timeout_ms: int,
    ) -> None:
        super().__init__(storage, registry, queue_name, prefetch, timeout_ms)
        self.storage: PostgresStorage = storage
        self.listener = listener
        self.acks = acks
        #: While it holds rows, the consumer leases again once this many slots are free (or after
        #: _BATCH_WAIT_S): one statement for several rows, rather than one for each row acknowledged.
        self.min_batch = max(1, self.prefetch // 4)
        self.poll_interval_s = storage.settings.poll_interval_ms / 1000
        #: Ids of the rows leased and not yet acked, nacked or handed back (buffered ones included).
        #: The consumer thread adds, worker threads remove, the lease keeper reads: guarded by _lock.
        self._held: set[int] = set()
        #: Ids of rows whose messages were acknowledged and that are not deleted yet: worker threads
        #: add, the consumer thread deletes them with its next statement (see :meth:`ack`). Under _lock.
        self._acked: list[int] = []
        #: Set by a nudge and by a released row (then _poked is set too, under _lock).
        self._wake = threading.Event()
        self._poked = True
        #: Monotonic time at which to look at the queue even without a nudge.
        self._next_look_s = 0.0
        #: Monotonic time since which fewer than min_batch slots are free (None: enough, or none).
        self._small_since_s: float | None = None
        listener.subscribe(self)

    def held_rows(self) -> list[int]:
        """The ids of the rows this consumer holds: prefetched, waiting, running, or acked and not yet deleted."""
        with self._lock:
            return [*self._held, *self._acked]

    def __next__(self) -> MessageProxy | None:
        deadline_s = time.monotonic() + self.timeout_s
        while True:
            if self._buffer:
                return self._buffer.popleft()
            # Cleared before anything is read: a release or a nudge from now on ends the wait below.
            self._wake.clear()
            room = self.prefetch - len(self._held)
            demand = self.demand
            # Within prefetch, only what the worker process can use (fair dispatch).
            free = room if demand is None else min(room, demand.room())
            now_s = time.monotonic()
            batch_wait_s = self._batch_wait_s(free, now_s)
            if batch_wait_s > 0:
                wake_at_s = now_s + batch_wait_s  # the acks made meanwhile go with that batch
            else:
                looking = free > 0 and self._should_look()
                acked = self._take_acked()
                if looking and self._fetch(free, acked):
                    continue
                if acked and not looking:
                    self._delete_acked(acked)
                wake_at_s = self._next_look_s if free > 0 else deadline_s
            now_s = time.monotonic()
            if now_s >= deadline_s:
                return None
            self._wake.wait(max(0.0, min(deadline_s, wake_at_s) - now_s))

    def _batch_wait_s(self, free: int, now_s: float) -> float:
        """How long to let slots free up before leasing (0: lease now).

        While the consumer still holds rows, so that the threads have work, a lease of fewer than
        ``min_batch`` rows waits up to ``_BATCH_WAIT_S`` for more acks: one statement then settles
        and replaces several messages instead of one. Without rows in hand it never waits.
        """
        if free <= 0 or free >= self.min_batch or not self._held:
            self._small_since_s = None
            return 0.0
        if self._small_since_s is None:
            self._small_since_s = now_s
        wait_s = self._small_since_s + _BATCH_WAIT_S - now_s
        if wait_s <= 0:
            self._small_since_s = None
        return wait_s

    def _should_look(self) -> bool:
        """Whether to look at the queue: nudged, or it is time; clears the nudge (before the look)."""
        with self._lock:
            poked, self._poked = self._poked, False
        return poked or time.monotonic() >= self._next_look_s

    def nudge(self) -> None:
        """There may be new work (the listener calls this from its thread)."""
        with self._lock:
            self._poked = True
        self._wake.set()

    def _take_acked(self) -> list[int]:
        with self._lock:
            acked, self._acked = self._acked, []
        return acked

    def _delete_acked(self, acked: list[int]) -> None:
        """Delete the rows of acknowledged messages (no retry: the consumer fails fast, and its close retries)."""
        try:
            self.storage.delete_many(acked, retry=False)
        except BaseException:
            self._keep_acked(acked)
            raise

    def _keep_acked(self, acked: list[int]) -> None:
        """Put back acknowledged rows whose deletion failed, for the next statement (or :meth:`close`)."""
        with self._lock:
            self._acked[:0] = acked

    def _fetch(self, free: int, acked: list[int]) -> bool:
        """Lease up to ``free`` due rows, deleting the ``acked`` ones; False when none is leased."""
        limit = min(free, _MAX_LEASE_BATCH)
        try:
            rows = self.storage.lease(self.queue_name, self.owner, limit, acked)
        except BaseException:
            self._keep_acked(acked)
            raise
        if not rows:
            self._next_look_s = time.monotonic() + self._wait_for_next_s()
            return False
        with self._lock:
            self._held.update(row.id for row in rows)
        if len(rows) < limit and not self.queue_name.endswith(".DQ"):
            # Nothing else was due: new rows will nudge, so asking again at once would find none
            # (and hold the interpreter while a worker thread starts what was just leased).
            self._next_look_s = time.monotonic() + self.poll_interval_s
        else:
            self._next_look_s = 0.0  # more may be due: look again on the next call
        for index, row in enumerate(rows):
            try:
                self._admit(row.id, row.payload)
            except BaseException:
                self._give_back([later.id for later in rows[index:]])
                raise
        return True

    def _wait_for_next_s(self) -> float:
        """How long to wait without a nudge: the fallback poll, or less when a delayed row is due sooner."""
        if not self.queue_name.endswith(".DQ"):
            return self.poll_interval_s
        due_in_ms = self.storage.next_due_in_ms(self.queue_name)
        if due_in_ms is None:
            return self.poll_interval_s
        return max(0.0, min(self.poll_interval_s, due_in_ms / 1000))

    def _unhold(self, row_ids: list[int]) -> None:
        for row_id in row_ids:
            self._forget(row_id)

    def _forget(self, row_id: int) -> bool:
        """A row this consumer leased was settled or handed back; whether it still held it."""
        with self._lock:
            if row_id not in self._held:
                return False
            self._held.discard(row_id)
            self._poked = True
            forget = self._closed and not self._held
        self._wake.set()
        if forget:
            self.registry.discard(self)
        return True

    def release(self, proxy: LeasedMessage) -> None:
        """The row of ``proxy`` was acked, dead-lettered or handed back: a slot is free."""
        self._forget(proxy.row_id)

    def ack_later(self, row_id: int) -> bool:
        """Leave a row to be deleted by this consumer's next statement; False once the consumer is closed."""
        with self._lock:
            if self._closed:
                return False
            self._acked.append(row_id)
            self._held.discard(row_id)
            self._poked = True
        if not self._wake.is_set():
            self._wake.set()
            # Let the consumer thread have the interpreter now: worker threads running short tasks
            # never block (the ack no longer waits for the server), and the woken consumer thread
            # would otherwise wait for the switch interval (5 ms) while its work queue runs dry.
            time.sleep(0)
        return True

    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a processed message: its row is deleted by the next statement of the consumer that leased it.

        That statement leases the next rows as well, at once since this ack woke it: one round trip
        serves the acks of many worker threads, and no worker thread waits for it. Until it is
        deleted the row stays leased and renewed; if the process dies first, the message runs
        again once the lease lapses (at least once, as ever). Once that consumer is closed, the
        row is deleted before ``ack`` returns, in a statement shared with concurrent acks.
        """
        proxy = self._proxy(message)
        leased_by = cast(PostgresConsumer, proxy.leased_by)  # a consumer of this type: _proxy checked
        if not leased_by.ack_later(proxy.row_id):
            self.acks.delete(proxy.row_id)
            leased_by.release(proxy)

    def keep_alive(self, timeout_s: float) -> None:
        """While the worker is paused: delete the rows of messages acknowledged meanwhile, for ``timeout_s``."""
        deadline_s = time.monotonic() + timeout_s
        while True:
            self._wake.clear()  # a nudge also leaves _poked set, for the next __next__
            acked = self._take_acked()
            if acked:
                self._delete_acked(acked)
            left_s = deadline_s - time.monotonic()
            if left_s <= 0:
                return
            self._wake.wait(left_s)

    def close(self) -> None:
        self.listener.unsubscribe(self)
        self._hand_back_buffered()
        with self._lock:
            self._closed = True  # from now on acks delete their rows themselves
            acked, self._acked = self._acked, []
            forget = not self._held
        try:
            if acked:
                self.storage.delete_many(acked)
        except Exception:  # noqa: BLE001 - they are not renewed any more: their messages run again
            self.logger.warning("Could not delete %d acknowledged rows; their messages will run again.", len(acked))
        # Rows still held are being processed: their leases are renewed until they are acked.
        if forget:
            self.registry.discard(self)

    def __repr__(self) -> str:
        return f"<PostgresConsumer {self.queue_name!r} owner={self.owner!r} held={len(self._held)}>"
