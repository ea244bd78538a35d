"""A broker on Redis, wire-compatible with Dramatiq's Redis broker.

Keys (``p``: ``""``, or ``"<namespace>:"``; ``q``: a queue such as ``default`` or ``default.DQ``; ``cq``: canonical)::

    p<q>                      LIST  message ids, FIFO (RPUSH to enqueue, LPOP to fetch)
    p<q>.msgs                 HASH  id → payload, kept until the message is acked or dead-lettered
    p__acks__.<wid>.<q>       SET   ids worker ``wid`` fetched from ``q`` and has not settled
    p__heartbeats__           ZSET  worker id → last heartbeat (ms)
    p<cq>.XQ                  ZSET  dead-lettered ids → when (ms)
    p<cq>.XQ.msgs             HASH  id → payload of dead letters
    p<cq>.XQ.reasons          HASH  id → why it was dead-lettered: exception repr, or what is wrong (greenroom only)
    p__queues__.<wid>         SET   queues where ``wid`` may hold ack sets (greenroom only)
    p__notify__.<q>           LIST  at most one wake-up token for idle consumers (greenroom only)
    p__fetch__.<wid>.<q>      LIST  token and ids of the last fetch, to repeat it if its reply is lost
    p__idle__.<wid>           LIST  a token that makes the idle waiter of ``wid`` block anew (greenroom only)

Any producer may enqueue with ``HSET p<q>.msgs <id> <payload>`` then ``RPUSH p<q> <id>``; ``options``
may be ``{}`` (without ``redis_message_id`` the id is the one pushed). ``namespace="dramatiq"`` shares
queues with Dramatiq both ways.

**Crash recovery bound.** A heartbeat thread in every consuming process beats every
``min(heartbeat_timeout / 4, 1 s)`` and, in the same atomic script, returns the unsettled messages of
workers whose last beat is older than ``heartbeat_timeout`` to the head of their queues: a killed,
frozen or cut-off worker's messages are back within ``heartbeat_timeout + 1 s`` while another worker
lives, +1 s after a Redis outage (the first beat after a gap near ``heartbeat_timeout`` recovers nothing:
live workers beat again first); a worker starting later recovers them on its second beat. Server clock.

**Poison payloads** (invalid, or an id without payload) go to ``<cq>.XQ`` with the reason in ``<cq>.XQ.reasons``.
**Connection loss.** Producers and acks retry with backoff for ``retry_timeout`` ms (5 s by default),
then raise ``ConnectionClosed``; consumers fail fast and the worker reconnects them; fetched messages
not handed back are returned by the heartbeat thread once Redis is back. A reply later than
``socket_timeout`` (5 s by default) counts as a lost connection. Requires Redis ≥ 6.2.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import NoScriptError

from .._redis import DEFAULT_SOCKET_TIMEOUT_S, KEEPALIVE, ReplyWait, translate_broker_errors
from ..broker import Broker, Consumer
from ..common import current_millis, dq_name, q_name
from ..errors import BrokerConnectionError, BrokerError, ConnectionClosed, QueueJoinTimeout
from ..logging import get_logger
from ..message import Message, sequential_id
from ..middleware.middleware import Middleware
from ..threading import interrupts_deferred
from ._redis_consumer import Command, _RedisConsumer, max_fetch
from ._redis_dispatch import DramatiqCommands
from ._redis_idle import IdleWaiter

__all__ = ["RedisBroker", "ReplyWait"]

if TYPE_CHECKING:
    #: Most ids one fetch script call moves (public since the first release). Computed when it is
    #: looked up, from ``greenroom_lua_max_stack``: importing this module reads no environment.
    MAX_FETCH: int
else:

    def __getattr__(name: str) -> Any:
        """``MAX_FETCH``, computed on access (see :func:`._redis_consumer.max_fetch`)."""
        if name == "MAX_FETCH":
            return max_fetch()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Most messages one enqueue script call carries in a batch.
ENQUEUE_CHUNK = 500

_Op = tuple[str, bytes, str]  # (op, redis id, reason): see settle.lua


class RedisBroker(DramatiqCommands, Broker):
    """A broker that keeps messages in Redis.

    Parameters:
      url: A ``redis://`` or ``rediss://`` URL (password and db may be in it).
      middleware: As for :class:`~greenroom.Broker`.
      namespace: Key prefix; ``""`` (default) uses bare queue names, ``"ns"`` uses ``ns:<key>``.
      maintenance_chance: Accepted for Dramatiq compatibility and ignored: recovery is scheduled.
      heartbeat_timeout: Milliseconds without a heartbeat after which a worker counts as dead.
      dead_message_ttl: Milliseconds dead letters are kept.
      client: A ready ``redis.Redis``; its connection pool's settings are used.
      retry_timeout: Milliseconds producers and acks keep retrying while Redis is unreachable.
      **redis_params: Passed to ``redis.ConnectionPool`` when neither ``client`` is given.
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        middleware: list[Middleware] | None = None,
        namespace: str = "",
        maintenance_chance: int = 1000,
        heartbeat_timeout: int = 60000,
        dead_message_ttl: int = 604800000,
        client: redis.Redis | None = None,
        retry_timeout: int = 5000,
        **redis_params: Any,
    ) -> None:
        super().__init__(middleware=middleware)
        if client is None:
            # A Redis that stops answering (frozen, paused) must not hang producers, acks or consumers.
            params = {"socket_timeout": DEFAULT_SOCKET_TIMEOUT_S, **redis_params}
            if not (url or "").startswith("unix:") and "unix_socket_path" not in params:  # TCP options
                params.setdefault("socket_keepalive", True)
                params.setdefault("socket_keepalive_options", KEEPALIVE)
            pool = redis.ConnectionPool.from_url(url, **params) if url else redis.ConnectionPool(**params)
            client = redis.Redis(connection_pool=pool)
        self.client = client
        self.namespace = namespace
        self.maintenance_chance = maintenance_chance
        self.heartbeat_timeout = heartbeat_timeout
        self.dead_message_ttl = dead_message_ttl
        self.retry_timeout_s = retry_timeout / 1000
        #: How ``enqueue`` waits for Redis' reply (see :class:`ReplyWait`; ``ReplyWait(0)`` never polls).
        self.reply_wait = ReplyWait()
        self.queues: set[str] = set()
        self._prefix = f"{namespace}:" if namespace else ""
        self._heartbeats_key = self._prefix + "__heartbeats__"
        self.heartbeat_interval_s = interval = max(0.05, min(heartbeat_timeout / 4000, 1.0))
        self._steady_gap_s = max(heartbeat_timeout / 1000 - interval, 2 * interval)  # see beat()
        self._scripts: dict[str, tuple[str, bytes]] = {}
        self._start_process_state()
        restart = weakref.WeakMethod(self._start_process_state)

        def restart_in_child() -> None:
            """Give a forked child its own process state, unless this broker is gone by then."""
            method = restart()
            if method is not None:
                method()

        os.register_at_fork(after_in_child=restart_in_child)

    def _start_process_state(self) -> None:
        """What belongs to one process, set anew in a forked child: it must not share its parent's
        sockets (cf. redis-py's _checkpid), identity, ack sets, heartbeat thread or locks."""
        self.broker_id = str(uuid.uuid4())  # who holds what, in heartbeats and ack sets
        self._registry_key = f"{self._prefix}__queues__.{self.broker_id}"
        self._keys: dict[str, tuple[str, ...]] = {}  # queue name → _queue_keys (they hold broker_id)
        self._local = threading.local()  # a connection per thread, outside the pool: no checkouts
        #: The connection settles go through, and the lock that makes it one caller at a time.
        self._settle_conn: Any = None
        self._settle_lock = threading.Lock()
        self._threads_conns: weakref.WeakKeyDictionary[Any, threading.Thread] = weakref.WeakKeyDictionary()
        #: Guards queues, the consumed-queue counts and the heartbeat thread (any thread).
        self._lock = threading.Lock()
        self._consumed: Counter[str] = Counter()
        self._fetch_tokens: dict[str, str] = {}  # queue → token of a fetch that got no reply
        #: queue → lock: the fetch record is per broker and queue, so its consumers fetch in turn.
        self._fetch_locks: dict[str, threading.Lock] = {}
        #: (queue, id) of fetched messages to hand back when Redis can be reached; appended from
        #: any thread, including finalizers, hence a lock-free deque. Drained by the heartbeat thread.
        self._orphans: deque[tuple[str, bytes]] = deque()
        #: The heartbeat thread runs while this broker has consumers or messages to hand back.
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_wake = threading.Event()
        self._closing = False
        self._last_beat_s = float("-inf")  # monotonic time of the last beat that went through
        #: Blocks on the wake-up lists of every idle consumer at once (its thread starts with the first).
        self._idle_waiter = IdleWaiter(
            round_trip=self._round_trip,
            script_sha=lambda name: self._script(name)[0],
            new_connection=self._new_connection,
            interrupt_key=f"{self._prefix}__idle__.{self.broker_id}",
            logger=self.logger,
        )

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._new_connection()
            with self._lock:
                self._threads_conns[conn] = threading.current_thread()
        return conn

    def _new_connection(self) -> Any:
        pool = self.client.connection_pool
        return pool.connection_class(**{**pool.connection_kwargs, "decode_responses": False})

    def _round_trip(
        self,
        commands: list[Command],
        *,
        retry: bool = True,
        script: str = "",
        sent: bool = False,
        using: Any = None,
        poll: bool = False,
    ) -> Any:
        """Write commands at once (unless ``sent``) with redis-py's packer, read a reply each. Retries
        connection errors for ``retry_timeout`` (a resend after a lost reply loses nothing; at worst a
        message runs twice); loads ``script`` on NOSCRIPT and resends, on the connection ``using`` or
        else this thread's. A producer's round trip (``poll=True``) waits with :attr:`reply_wait`.
        Inside an actor, an interrupt waits until the replies are read."""
        deadline_s = time.monotonic() + self.retry_timeout_s
        attempt = 0
        while True:
            conn = using or self._connection()
            try:
                with interrupts_deferred(), translate_broker_errors():
                    try:
                        if not sent:
                            conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                        if poll:
                            self.reply_wait(conn)
                        return [conn.read_response() for _ in commands]
                    except BaseException:
                        conn.disconnect()  # replies may be left unread: the connection is out of step
                        raise
            except NoScriptError:
                if not script or attempt > 3:
                    raise
                self._round_trip([("SCRIPT", "LOAD", self._script(script)[1])], retry=retry)
            except ConnectionClosed:
                if not retry or time.monotonic() >= deadline_s:
                    raise
                time.sleep(min(0.05 * 2**attempt, 1.0, max(0.0, deadline_s - time.monotonic())))
            attempt += 1
            sent = False

    def _execute(self, *args: Any, retry: bool = True) -> Any:
        return self._round_trip([args], retry=retry)[0]

    def _script(self, name: str) -> tuple[str, bytes]:
        script = self._scripts.get(name)
        if script is None:
            resource = importlib.resources.files(__package__).joinpath(f"_redis_scripts/{name}.lua")
            source = resource.read_bytes()
            script = self._scripts[name] = (hashlib.sha1(source).hexdigest(), source)
        return script

    def _run_script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *, retry: bool = True, conn: Any = None
    ) -> Any:
        """EVALSHA a packaged script (loaded on NOSCRIPT)."""
        command = ("EVALSHA", self._script(name)[0], len(keys), *keys, *args)
        return self._round_trip([command], retry=retry, script=name, using=conn)[0]

    def _queue_keys(self, queue_name: str) -> tuple[str, ...]:
        """(list, payloads, own ack set, wake-up, dead letters, dead payloads, dead reasons, own fetch record)."""
        if (keys := self._keys.get(queue_name)) is None:
            p = self._prefix
            xq = f"{self._prefix}{q_name(queue_name)}.XQ"
            me = f"{self.broker_id}.{queue_name}"
            acks = f"{p}__acks__.{me}"
            wake = f"{p}__notify__.{queue_name}"
            fetched = f"{p}__fetch__.{me}"
            keys = (p + queue_name, f"{p}{queue_name}.msgs", acks, wake, xq, xq + ".msgs", xq + ".reasons", fetched)
            if len(self._keys) < 1024:  # bounded, should queue names be made up on the fly
                self._keys[queue_name] = keys
        return keys

    def _prepare(self, message: Message[Any], delay: int | None) -> tuple[Message[Any], str]:
        redis_id = sequential_id()  # unique like a uuid4 string, at a fifth of the cost
        queue_name = message.queue_name
        options = {**message.options, "redis_message_id": redis_id}
        if delay is not None:
            queue_name = dq_name(queue_name)
            options["eta"] = current_millis() + delay
        m = message  # built directly: Message.copy (dataclasses.replace) costs more than the rest of _prepare
        message = Message(queue_name, m.actor_name, m.args, m.kwargs, options, m.message_id, m.message_timestamp)
        self.emit_before("enqueue", message, delay)
        return message, redis_id

    def enqueue(self, message: Message[Any], *, delay: int | None = None) -> Message[Any]:
        """Send a message (to ``<queue>.DQ`` with an ``eta`` when delayed); returns the copy sent. Raises
        ``ConnectionClosed`` when Redis stayed unreachable for ``retry_timeout`` ms."""
        message, redis_id = self._prepare(message, delay)
        sha = self._script("enqueue")[0]
        keys = self._queue_keys(message.queue_name)
        command = ("EVALSHA", sha, 3, keys[0], keys[1], keys[3], redis_id, message.encode())
        self._round_trip([command], script="enqueue", poll=True)
        self.emit_after("enqueue", message, delay)
        return message

    def enqueue_many(self, messages: Iterable[Message[Any]], *, delay: int | None = None) -> list[Message[Any]]:
        """Send many messages in one round trip (the batch API); returns the copies sent, in order.

        Hooks run for every message; each queue's messages are stored atomically in pipelined chunks of
        :data:`ENQUEUE_CHUNK`. E.g. ``broker.enqueue_many(actor.message(n) for n in range(10000))``.
        If building a message raises, the chunks already written stay stored. Raises ``ConnectionClosed``
        as :meth:`enqueue` does."""
        sha = self._script("enqueue")[0]
        conn = self._connection()
        sent: list[Message[Any]] = []
        buffers: dict[str, list[Any]] = {}
        commands: list[Command] = []
        streaming = True

        def send(queue_name: str, args: list[Any]) -> None:
            # Each chunk is written as soon as it is full, so Redis stores it while Python encodes the next.
            nonlocal streaming
            keys = self._queue_keys(queue_name)
            commands.append(("EVALSHA", sha, 3, keys[0], keys[1], keys[3], *args))
            if streaming:
                try:
                    conn.send_packed_command(conn.pack_command(*commands[-1]), check_health=False)
                except (redis.RedisError, OSError):
                    conn.disconnect()
                    streaming = False  # _round_trip sends everything again

        try:
            for message in messages:
                message, redis_id = self._prepare(message, delay)
                sent.append(message)
                buffer = buffers.setdefault(message.queue_name, [])
                buffer += (redis_id, message.encode())
                if len(buffer) >= 2 * ENQUEUE_CHUNK:
                    send(message.queue_name, buffer)
                    buffers[message.queue_name] = []
            for queue_name, buffer in buffers.items():
                if buffer:
                    send(queue_name, buffer)
        finally:
            # Even when building a message failed, read what was written, to keep the connection in step.
            if commands:
                self._round_trip(commands, script="enqueue", sent=streaming)
        for message in sent:
            self.emit_after("enqueue", message, delay)
        return sent

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer of ``queue_name`` holding at most ``prefetch`` unsettled messages."""
        return _RedisConsumer(self, queue_name, prefetch, timeout)

    def _consumer_opened(self, queue_name: str) -> None:
        with self._lock:
            self._consumed[queue_name] += 1
            if self._heartbeat_thread is None:  # an exiting thread clears it under the lock
                self._heartbeat_thread = threading.Thread(
                    target=self._heartbeat_loop, name="RedisHeartbeat", daemon=True
                )
                self._heartbeat_thread.start()

    def _consumer_closed(self, queue_name: str) -> None:
        with self._lock:
            self._consumed[queue_name] -= 1
            if self._consumed[queue_name] <= 0:
                del self._consumed[queue_name]
        self._heartbeat_wake.set()

    def flush(self, queue_name: str) -> None:
        """Drop the messages of a queue and its delay queue, and their dead letters."""
        self._execute("DEL", *self._queue_keys(queue_name), *self._queue_keys(dq_name(queue_name)))

    def flush_all(self) -> None:
        """Drop the messages of every declared queue."""
        for queue_name in self.get_declared_queues():
            self.flush(queue_name)

    def qsize(self, queue_name: str) -> int:
        """Messages of a queue and its delay queue not yet acknowledged (queued or in flight anywhere)."""
        return sum(int(self._execute("HLEN", self._queue_keys(q)[1])) for q in (queue_name, dq_name(queue_name)))

    def dead_letter_count(self, queue_name: str) -> int:
        """How many dead letters a queue has."""
        return int(self._execute("ZCARD", self._queue_keys(queue_name)[4]))

    def join(self, queue_name: str, *, interval: int = 100, timeout: int | None = None) -> None:
        """Wait until a queue and its delay queue have no message left (a test helper); ``QueueJoinTimeout`` after
        ``timeout`` ms."""
        deadline_s = None if timeout is None else time.monotonic() + timeout / 1000
        while self.qsize(queue_name):
            if deadline_s is not None and time.monotonic() >= deadline_s:
                raise QueueJoinTimeout(queue_name)
            time.sleep(interval / 1000)

    def close(self) -> None:
        """Stop the heartbeat thread and the idle waiter; close the settles' connection, this thread's and those of
        ended threads."""
        self._idle_waiter.stop()
        with self._lock:
            self._closing = True
            thread = self._heartbeat_thread
        self._heartbeat_wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        with self._lock:
            self._closing = False
            idle = [c for c, t in self._threads_conns.items() if t is threading.current_thread() or not t.is_alive()]
        for conn in idle:
            conn.disconnect()
        with self._settle_lock:
            conn, self._settle_conn = self._settle_conn, None
        if conn is not None:
            conn.disconnect()

    def _heartbeat_loop(self) -> None:
        logger = get_logger(__name__, "RedisHeartbeat")
        while True:
            with self._lock:
                if self._closing or not (self._consumed or self._orphans):
                    self._heartbeat_thread = None
                    break
            try:
                self.beat()
            except BrokerConnectionError as exc:
                logger.warning("Heartbeat failed (%s); retrying.", exc)
            except Exception:  # the heartbeat thread must outlive any single failure
                logger.exception("Unexpected error in the heartbeat thread.")
            self._heartbeat_wake.wait(self.heartbeat_interval_s)
            self._heartbeat_wake.clear()
        try:
            self.beat(retire=True)
        except Exception:  # the thread's top level; Redis may well be away: its heartbeat just expires
            logger.debug("Could not retire worker %s.", self.broker_id, exc_info=True)

    def beat(self, *, retire: bool = False) -> int:
        """Heartbeat, recover dead workers' messages, purge old dead letters; returns how many recovered.

        Run by the heartbeat thread every :attr:`heartbeat_interval_s` s, with ``retire`` when it stops."""
        self._hand_back_orphans()
        with self._lock:
            consumed = sorted(self._consumed)
        args = (self._prefix, self.broker_id, self.heartbeat_timeout, self.dead_message_ttl)
        keys = (self._heartbeats_key, self._registry_key)
        steady = time.monotonic() - self._last_beat_s < self._steady_gap_s  # else an outage: see heartbeat.lua
        mode = 1 if retire else 2 if steady else 0
        recovered = int(self._run_script("heartbeat", keys, (*args, mode, *consumed), retry=False))
        self._last_beat_s = time.monotonic()
        if recovered and not retire:
            self.logger.warning("Returned %d messages of dead workers to their queues.", recovered)
        return recovered

    def _hand_back_orphans(self) -> None:
        by_queue: dict[str, list[bytes]] = {}
        while self._orphans:
            queue_name, redis_id = self._orphans.popleft()
            by_queue.setdefault(queue_name, []).append(redis_id)
        for queue_name, ids in by_queue.items():
            try:
                self._settle(queue_name, [("r", redis_id, "") for redis_id in ids], retry=False)
            except BrokerError:  # kept for the next beat (which fails too while Redis is away)
                self._orphans.extend((queue_name, redis_id) for redis_id in ids)

    def _settle(self, queue_name: str, ops: Sequence[_Op], *, retry: bool = True) -> None:
        args = [part for op in ops for part in op]
        # Every worker thread settles: one shared connection rather than one each (memory on both ends).
        with self._settle_lock:
            if self._settle_conn is None:
                self._settle_conn = self._new_connection()
            self._run_script("settle", self._queue_keys(queue_name), args, retry=retry, conn=self._settle_conn)
