"""The SQLite broker's consumer, the proxies of the rows it leased, and the thread renewing their leases."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Any

from ..broker import Consumer, MessageProxy, decode_message
from ..common import current_millis, dead_letter_reason
from ..errors import DecodeError
from ..message import Message
from ._sqlite_port import SQLiteBrokerPort

__all__: list[str] = []

#: Even without a nudge, an idle consumer looks at its queue this often (s). Nothing should need it:
#: it knows when its next delayed row is due, and the broker's ChangeWatcher nudges it for new rows,
#: rows handed back and lapsed leases. It bounds the harm of a wall clock set back, say.
_RECHECK_S = 10.0
#: How often the lease keeper purges expired dead letters (ms).
_PURGE_INTERVAL_MS = 60_000
#: Rows leased per transaction at most, so that no write transaction holds the lock for long.
_MAX_LEASE_BATCH = 500

# Nack and requeue act only on rows the caller still holds: a lease that lapsed (a frozen process)
# may have passed to another consumer, which is running the message. An ack deletes regardless.
_UNLEASE = "UPDATE greenroom_messages SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ? AND id IN ({})"
_RENEW = "UPDATE greenroom_messages SET lease_until_ms = ? WHERE lease_owner IN ({})"


class _SQLiteMessageProxy(MessageProxy):
    """A consumed message and the row it was leased from."""

    def __init__(self, message: Message[Any], row_id: int, consumer: _SQLiteConsumer) -> None:
        super().__init__(message)
        self._row_id = row_id
        #: The consumer that leased the row: it is the one to tell when the row is released,
        #: whichever consumer the worker acks through.
        self._consumer = consumer
        self._released = False


class _SQLiteConsumer(Consumer):
    """Leases the rows of one queue, at most ``prefetch`` at a time."""

    def __init__(self, broker: SQLiteBrokerPort, queue_name: str, prefetch: int, timeout_ms: int) -> None:
        self.broker = broker
        self.queue_name = queue_name
        self.prefetch = max(1, prefetch)
        self.timeout_s = timeout_ms / 1000
        #: Names this consumer's leases in the database; host and pid tell an operator who holds a row.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        #: Leased messages not handed out yet; only the consumer thread touches it.
        self._buffer: deque[_SQLiteMessageProxy] = deque()
        #: Rows leased and not yet acked, nacked or requeued (buffered ones included). The
        #: consumer thread adds, worker threads release: guarded by _lock.
        self._lock = threading.Lock()
        self._held = 0
        self._closed = False
        #: Set when a row is released and when the broker's ChangeWatcher nudges this consumer;
        #: which of the two happened is told by _slot_freed and _nudged (under _lock).
        self._wake = threading.Event()
        self._slot_freed = False
        self._nudged = False
        #: The watcher's generation when this consumer last looked at its queue.
        self._seen_generation = -1
        self._next_check_s = 0.0

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
            free = self.prefetch - self._held
            if free > 0 and self._should_fetch(now_s) and self._fetch(free):
                continue
            if now_s >= deadline_s:
                return None
            self._wait(free, deadline_s)

    def _should_fetch(self, now_s: float) -> bool:
        """Whether to look at the queue: a row was released, it may have new work, or it is time."""
        self._wake.clear()
        with self._lock:
            poked = self._slot_freed or self._nudged
            self._slot_freed = self._nudged = False
        if not poked and now_s < self._next_check_s:
            return False
        # Read before looking: a commit the watcher notices from now on may concern what the look missed.
        self._seen_generation = self.broker._change_watcher().generation
        return True

    def _wait(self, free: int, deadline_s: float) -> None:
        """Sleep until a row is released, a nudge, the queue is due a look, or the deadline."""
        now_s = time.monotonic()
        wake_at_s = deadline_s
        if free > 0:
            wake_at_s = min(wake_at_s, self._next_check_s)
            # Again at every wait: cheap, and it starts the watcher's thread again should it have stopped.
            self.broker._change_watcher().subscribe(self, self._seen_generation)
        self._wake.wait(max(0.0, wake_at_s - now_s))

    def nudge(self) -> None:
        """There may be new work (the broker's ChangeWatcher calls this from its thread)."""
        with self._lock:
            self._nudged = True
        self._wake.set()

    def _fetch(self, free: int) -> bool:
        """Lease up to ``free`` due rows; False when none is due (and when to look again is set)."""
        now_ms = current_millis()
        due_ms = self.broker._peek(self.queue_name, now_ms)  # a read: no write lock when there is nothing to do
        if due_ms is None or due_ms > now_ms:
            wait_s = _RECHECK_S if due_ms is None else min(_RECHECK_S, (due_ms - now_ms) / 1000)
            self._next_check_s = time.monotonic() + wait_s
            return False
        rows = self.broker._lease(self.queue_name, self.owner, min(free, _MAX_LEASE_BATCH))
        with self._lock:
            self._held += len(rows)
        self._next_check_s = 0.0  # more may be due: peek again on the next call
        for index, (row_id, _, payload) in enumerate(rows):
            try:
                self._admit(row_id, payload)
            except BaseException:
                self._give_back([row[0] for row in rows[index:]])
                raise
        return bool(rows)

    def _give_back(self, row_ids: list[int]) -> None:
        """Release rows leased but not admitted (an error in the middle of a batch)."""
        with self._lock:
            self._held -= len(row_ids)
        try:
            self.broker._in_chunks(_UNLEASE, row_ids, self.owner)
        except Exception:  # noqa: BLE001 - they are no longer renewed: their leases lapse instead
            self.broker.logger.warning("Could not release %d leased rows; their leases will lapse.", len(row_ids))

    def _admit(self, row_id: int, payload: bytes | None) -> None:
        try:
            message = decode_message(payload or b"", max_bytes=self.broker.settings.max_payload_bytes)
            if message.queue_name != self.queue_name:
                reason = f"message names queue {message.queue_name!r} but was on {self.queue_name!r}"
                raise DecodeError(reason, payload, None)
        except DecodeError as exc:
            self.broker.logger.error("Dead-lettering row %d of queue %r: %s", row_id, self.queue_name, exc)
            self.broker._bury(row_id, self.owner, self.queue_name, None, str(exc))
            with self._lock:
                self._held -= 1
            return
        self._buffer.append(_SQLiteMessageProxy(message, row_id, self))

    def _release(self, proxy: _SQLiteMessageProxy) -> None:
        with self._lock:
            if proxy._released:
                return
            proxy._released = True
            self._held -= 1
            self._slot_freed = True
            forget = self._closed and self._held == 0
        self._wake.set()
        if forget:
            self.broker._forget(self)

    @staticmethod
    def _proxy(message: MessageProxy) -> _SQLiteMessageProxy:
        if not isinstance(message, _SQLiteMessageProxy):
            raise TypeError(f"{message!r} was not consumed from an SQLite broker")
        return message

    def ack(self, message: MessageProxy) -> None:
        proxy = self._proxy(message)
        self.broker._delete(proxy._row_id)
        proxy._consumer._release(proxy)

    def nack(self, message: MessageProxy) -> None:
        proxy = self._proxy(message)
        reason = dead_letter_reason(proxy._exception) if proxy._exception is not None else "the message failed"
        self.broker._bury(proxy._row_id, proxy._consumer.owner, proxy.queue_name, proxy.message_id, reason)
        proxy._consumer._release(proxy)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        proxies = [self._proxy(message) for message in messages]
        try:
            for owner in {proxy._consumer.owner for proxy in proxies}:
                rows = [proxy._row_id for proxy in proxies if proxy._consumer.owner == owner]
                self.broker._in_chunks(_UNLEASE, rows, owner)
        finally:
            # Released even when the database refused: no longer renewed, their leases lapse
            # and the rows come back (renewing them forever would strand them).
            for proxy in proxies:
                proxy._consumer._release(proxy)

    def close(self) -> None:
        self.broker._change_watcher().unsubscribe(self)
        buffered = list(self._buffer)
        self._buffer.clear()
        try:
            if buffered:
                self.requeue(buffered)
        except Exception:  # noqa: BLE001 - not renewed any more, so their leases lapse and they come back
            self.broker.logger.warning("Could not hand back %d messages; their leases will lapse.", len(buffered))
            with self._lock:
                self._held -= len(buffered)
        with self._lock:
            self._closed = True
            forget = self._held == 0
        # Rows still held are being processed: their leases are renewed until they are acked.
        if forget:
            self.broker._forget(self)

    def __repr__(self) -> str:
        return f"<_SQLiteConsumer {self.queue_name!r} owner={self.owner!r} held={self._held}>"


class _LeaseKeeper:
    """Renews the leases of the rows this process holds, and purges expired dead letters.

    One per broker and process, its thread started by the first consumer and stopped by
    :meth:`SQLiteBroker.close` (the next consumer starts it again).
    """

    def __init__(self, broker: SQLiteBrokerPort) -> None:
        self.broker = broker
        #: Consumers whose rows to renew: added by consumer threads, removed by whichever thread
        #: releases the last row of a closed consumer. Guarded by _lock, as is _thread.
        self._consumers: set[_SQLiteConsumer] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop_event = threading.Event()
        self._last_purge_ms = 0

    def add(self, consumer: _SQLiteConsumer) -> None:
        with self._lock:
            self._consumers.add(consumer)
            if self._thread is None or not self._thread.is_alive():
                self._stop_event = threading.Event()
                self._thread = threading.Thread(
                    target=self._run, args=(self._stop_event,), name="greenroom-sqlite-leases", daemon=True
                )
                self._thread.start()

    def discard(self, consumer: _SQLiteConsumer) -> None:
        with self._lock:
            self._consumers.discard(consumer)

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop_event.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.broker.settings.lock_retry_ms / 1000 + 5)

    def _run(self, stop_event: threading.Event) -> None:
        interval_s = self.broker.settings.renew_interval_ms / 1000
        while not stop_event.wait(interval_s):
            try:
                self.run_once()
            except Exception:  # thread top level: log, and keep renewing at the next interval
                self.broker.logger.exception("Could not renew leases; retrying in %.1f s.", interval_s)

    def run_once(self, now_ms: int | None = None) -> None:
        """Renew the leases of every row held in this process, and purge dead letters when due."""
        now_ms = current_millis() if now_ms is None else now_ms
        settings = self.broker.settings
        with self._lock:
            owners = [consumer.owner for consumer in self._consumers if consumer.held > 0]
        if owners:
            self.broker._in_chunks(_RENEW, owners, now_ms + settings.lease_ms)
        if now_ms - self._last_purge_ms >= min(_PURGE_INTERVAL_MS, settings.dead_message_ttl):
            self.broker._purge_dead_letters(now_ms - settings.dead_message_ttl)
            self._last_purge_ms = now_ms
