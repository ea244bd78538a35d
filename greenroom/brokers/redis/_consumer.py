"""The Redis broker's consumer: batched fetches into a local cache, and acks grouped in the background."""

from __future__ import annotations

import functools
import logging
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, cast

from ... import _settings
from ...broker import Consumer, MessageProxy, decode_message
from ...common import Deadline, dead_letter_reason
from ...errors import BrokerError, DecodeError
from ...message import Message
from .._unique import unique_key_of
from ._heartbeat import Heartbeat
from ._idle import IDLE_POLL_S
from ._settler import Settler
from ._storage import RedisStorage, SettleOp

__all__ = ["DEFAULT_MAX_FETCH", "RedisConsumer", "max_fetch"]

#: Most ids one fetch script call moves when ``greenroom_lua_max_stack`` sets no smaller Lua stack.
DEFAULT_MAX_FETCH = 1000
#: The Lua stack limit of a Redis server built with the default settings.
_DEFAULT_LUA_MAX_STACK = 2000
#: Empty fetches in a row after which a consumer leaves the waiting to the broker's IdleWaiter.
#: Until then it blocks on its own wake-up list (up to IDLE_POLL_S a round), as quick as it gets
#: for a queue with steady traffic; the waiter adds a thread hand-off and a round trip.
_OWN_ROUNDS = 10


def max_fetch() -> int:
    """Most ids one fetch script call moves: keeps Lua's unpack within its stack (half the limit).

    Reads ``greenroom_lua_max_stack`` (through :mod:`greenroom._settings`) when called, that is when
    a consumer is built, never at import.
    """
    return min(DEFAULT_MAX_FETCH, (_settings.lua_max_stack() or _DEFAULT_LUA_MAX_STACK) // 2)


class _RedisMessageProxy(MessageProxy):
    """A proxy that knows its Redis id and hands its message back if it is dropped unsettled."""

    def __init__(self, message: Message[Any], redis_id: bytes, storage: RedisStorage, source: str) -> None:
        super().__init__(message)
        self.redis_id = redis_id
        #: Acked, dead-lettered or handed back: nothing is left to do when the proxy is dropped.
        self.settled = False
        #: The queue the message was fetched from (its ``queue_name`` may name another).
        self.source = source
        self._storage = storage

    def __del__(self) -> None:
        # Dropped unsettled (e.g. delayed messages a reconnecting consumer thread forgets): hand it back.
        if not self.settled:
            self._storage.hand_back_later(self.source, (self.redis_id,))


class RedisConsumer(Consumer):
    """Fetches batches into a local cache; acks of concurrent worker threads share round trips.

    It talks to Redis through the process's :class:`RedisStorage`, and is counted by its
    :class:`Heartbeat` from construction until it is closed and its messages are settled.

    Acks are sent by the consumer's :class:`~._settler.Settler` in the background, grouped while a
    round trip is in flight: ``ack`` returns at once. ``nack`` and ``requeue`` settle before they return."""

    def __init__(
        self,
        storage: RedisStorage,
        heartbeat: Heartbeat,
        queue_name: str,
        prefetch: int,
        timeout_ms: int,
        logger: logging.Logger,
    ) -> None:
        self.storage = storage
        self.heartbeat = heartbeat
        self.logger = logger
        self.queue_name = queue_name
        self.prefetch = prefetch
        self.timeout_s = timeout_ms / 1000
        #: Most ids one fetch moves (read from the environment once, when the consumer is built).
        self._max_fetch = max_fetch()
        keys = storage.keys.queue(queue_name)
        heartbeat.consumer_opened(queue_name)  # heartbeats now cover this queue
        #: Its queue's list and wake-up list, for the broker's IdleWaiter.
        self.queue_key = keys.messages
        self.wake_key = keys.wake
        #: Fetches in a row that came back empty. After _OWN_ROUNDS of them the consumer stops
        #: blocking on its wake-up list itself and leaves that to the broker's IdleWaiter, which
        #: sets _nudged when there may be messages.
        self._empty_rounds = 0
        self._nudged = threading.Event()
        #: Fetched, not yet handed out; only the iterating thread touches it.
        self._cache: deque[tuple[bytes, bytes | None]] = deque()
        #: Ids handed out and not settled. Guarded by _cond (iterating thread and worker threads).
        self._handed: set[bytes] = set()
        self._cond = threading.Condition()
        self._settler = Settler(self._settle, logger, f"RedisSettler({queue_name})")
        #: Whether the iterating thread waits on _cond for a free slot (set and cleared under _cond).
        self._waiting_for_room = False
        self._closed = False
        self._released = False

    def __next__(self) -> MessageProxy | None:
        deadline = Deadline.after_s(self.timeout_s)
        wait_s = 0.0
        while True:
            while self._cache:
                proxy = self._to_proxy(*self._cache.popleft())
                if proxy is not None:
                    return proxy
            with self._cond:
                room = self._room()
                if room <= 0:
                    # Full: wait for an ack to free a slot rather than polling Redis.
                    self._waiting_for_room = True
                    self._cond.wait(deadline.remaining_s())
                    self._waiting_for_room = False
                    if self._room() <= 0:
                        return None
                    continue
            if self._empty_rounds < _OWN_ROUNDS or self._nudged.is_set():
                self._nudged.clear()
                if self._fetch(min(room, self._max_fetch), wait_s):
                    self._empty_rounds = 0
                    wait_s = 0.0
                    continue
                self._empty_rounds += 1
            remaining_s = deadline.left_s(self.timeout_s)
            if remaining_s <= 0.001:
                return None
            if self._empty_rounds < _OWN_ROUNDS:
                # Busy a moment ago: the next fetch first blocks on the wake-up list, in the same
                # round trip (Redis runs the fetch as soon as BLPOP returns), the quickest way back.
                wait_s = max(0.001, min(remaining_s, IDLE_POLL_S))
                continue
            # Idle for a while: the waiter nudges this consumer when a producer pushes a wake-up
            # token, or when its periodic look finds messages. Subscribing again each time is
            # cheap, and restarts the waiter's thread should it have died.
            wait_s = 0.0
            self.storage.idle_waiter.subscribe(self)
            self._nudged.wait(remaining_s)

    def _room(self) -> int:
        """How many messages to fetch now: within ``prefetch``, and what the worker process can use."""
        # A message whose ack was handed to the settler is done with: its slot is free already.
        room = self.prefetch - len(self._handed) + self._settler.backlog()
        demand = self.demand
        return room if demand is None else min(room, demand.room())

    def nudge(self) -> None:
        """Fetch again: the queue may hold messages (the broker's IdleWaiter calls this from its thread)."""
        self._nudged.set()

    def _fetch(self, count: int, wait_s: float) -> int:
        reply = self.storage.fetch(self.queue_name, count, wait_s)
        self._cache.extend(zip(reply[::2], reply[1::2], strict=True))
        return len(reply)

    def _to_proxy(self, redis_id: bytes, payload: bytes | None) -> MessageProxy | None:
        if payload is None:
            self.logger.error("Message %s on %r had no payload; it was dead-lettered.", redis_id, self.queue_name)
            return None
        try:
            message = decode_message(payload, arrived_on=self.queue_name)
        except DecodeError as exc:
            self.logger.error("Dead-lettering invalid payload %s on %r: %s", redis_id, self.queue_name, exc)
            try:
                self.storage.settle(self.queue_name, [("n", redis_id, str(exc))], retry=False)
            except BrokerError:
                self._cache.appendleft((redis_id, payload))  # close() hands it back with the rest
                raise
            return None
        proxy = _RedisMessageProxy(message, redis_id, self.storage, self.queue_name)
        with self._cond:
            self._handed.add(redis_id)
        unique = unique_key_of(message.options)
        if unique is not None and not unique.until_finished and not self.queue_name.endswith(".DQ"):
            self._let_key_go(unique.key, redis_id)  # taken from its queue: a new send is welcome
        return proxy

    def _settle(self, ops: Sequence[SettleOp]) -> None:
        self.storage.settle(self.queue_name, ops)

    def _let_key_go(self, key: str, redis_id: bytes) -> None:
        """Let a unique key go (only messages with one pay for this round trip)."""
        try:
            self.storage.release_unique_keys([(key, redis_id)])
        except BrokerError as exc:  # the key stays held until the message is gone (see enqueue_unique.lua)
            self.logger.warning("Could not let unique key %r go (%s).", key, exc)

    def ack(self, message: MessageProxy) -> None:
        """Acknowledge a message: handed to the consumer's settler, which sends it at once or, while
        a round trip is in flight, in the next one (see :mod:`._settler`)."""
        proxy = cast(_RedisMessageProxy, message)
        self._settler.submit(("a", proxy.redis_id, ""), functools.partial(self._acked, proxy))
        if self._waiting_for_room:  # read unlocked: a wake-up missed here comes when the ack lands
            with self._cond:
                self._cond.notify_all()

    def _acked(self, proxy: _RedisMessageProxy) -> None:
        """The ack of ``proxy`` reached Redis (on the settler thread, or the caller's once closed)."""
        self._settled([proxy])
        self._finished(proxy)

    def _settled(self, proxies: Iterable[_RedisMessageProxy]) -> None:
        """Forget settled messages: they free their prefetch slots (and, once closed, the consumer)."""
        with self._cond:
            for proxy in proxies:
                proxy.settled = True
                self._handed.discard(proxy.redis_id)
            self._cond.notify_all()
            self._release_if_done()

    def _finished(self, proxy: _RedisMessageProxy) -> None:
        """Let go of the unique key a message kept until it finished."""
        unique = unique_key_of(proxy.options)
        if unique is not None and unique.until_finished:
            self._let_key_go(unique.key, proxy.redis_id)

    def nack(self, message: MessageProxy) -> None:
        """Move a message to the dead letters; the ``repr`` of its exception is kept as the reason."""
        proxy = cast(_RedisMessageProxy, message)
        exception = proxy.exception
        reason = "" if exception is None else dead_letter_reason(exception)
        # In the calling thread: dead letters are rare, and a failure reaches the worker's retry loop.
        self.storage.settle(self.queue_name, [("n", proxy.redis_id, reason)])
        self._settled([proxy])
        self._finished(proxy)

    def requeue(self, messages: Iterable[MessageProxy]) -> None:
        """Hand unprocessed messages back to the head of their queue."""
        proxies = [cast(_RedisMessageProxy, m) for m in messages]
        try:
            if proxies:
                self.storage.settle(self.queue_name, [("r", m.redis_id, "") for m in proxies])
        except BrokerError:  # Redis is away: the heartbeat thread hands them back once it is back
            for m in proxies:
                self.storage.hand_back_later(m.source, (m.redis_id,))
            raise
        finally:
            self._settled(proxies)

    def close(self) -> None:
        """Hand back messages fetched but never handed out, then release the consumer."""
        if self._closed:
            return
        self.storage.idle_waiter.unsubscribe(self)
        # The acks handed over so far go out first: the worker stops only after its last ack.
        self._settler.close(self.storage.retry_timeout_s + 1.0)
        self._closed = True
        cached = [redis_id for redis_id, payload in self._cache if payload is not None]
        self._cache.clear()
        try:
            if cached:
                self.storage.settle(self.queue_name, [("r", redis_id, "") for redis_id in cached], retry=False)
        except BrokerError:  # Redis is away: the heartbeat thread hands them back once it is back
            self.storage.hand_back_later(self.queue_name, cached)
        with self._cond:
            self._release_if_done()

    def _release_if_done(self) -> None:
        """Once closed and every handed-out message is settled, stop counting as a consumer (under _cond):
        until then the broker keeps heartbeating, so that messages still running do not look abandoned."""
        if self._closed and not self._handed and not self._released:
            self._released = True
            self.heartbeat.consumer_closed(self.queue_name)
