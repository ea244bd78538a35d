"""The Redis broker's storage layer: connections, round trips, scripts and key names of one process.

:class:`RedisStorage` is everything the broker, its consumers and Dramatiq's ``do_*`` commands say
to Redis, through public methods. One is built per broker and process (a forked child builds its
own on first use): it must not share its parent's sockets (cf. redis-py's ``_checkpid``), identity,
ack sets, locks or threads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.exceptions import NoScriptError

from ..._redis import ReplyWait, translate_broker_errors
from ...common import Deadline, process_tag
from ...errors import BrokerError, ConnectionClosed
from ...message import generate_unique_id
from ...threading import interrupts_deferred
from .._unique import UniqueKey
from ._idle import IdleWaiter
from ._keys import KeySpace
from ._lua import LuaScripts

__all__ = ["Command", "RedisStorage", "SettleOp"]

Command = tuple[Any, ...]  # one Redis command: its name and arguments
SettleOp = tuple[str, bytes, str]  # (op, redis id, reason): see settle.lua

#: Most NOSCRIPT replies in a row one round trip answers by loading the script again.
_SCRIPT_LOADS = 3


class RedisStorage:
    """One broker's Redis in one process.

    Parameters:
      client: The broker's ``redis.Redis``; its connection pool's settings make the connections.
      prefix: ``""``, or ``"<namespace>:"``.
      retry_timeout_s: Seconds producers and acks keep retrying while Redis is unreachable.
      scripts: The packaged Lua scripts.
      logger: Where the idle waiter reports.
    """

    def __init__(
        self, client: redis.Redis, prefix: str, retry_timeout_s: float, scripts: LuaScripts, logger: logging.Logger
    ) -> None:
        self.client = client
        self.retry_timeout_s = retry_timeout_s
        self.scripts = scripts
        #: Who holds what, in heartbeats and ack sets.
        self.broker_id = f"{process_tag()}:{uuid.uuid4().hex}"
        self.keys = KeySpace(prefix, self.broker_id)
        self._local = threading.local()  # a connection per thread, outside the pool: no checkouts
        self._threads_conns: weakref.WeakKeyDictionary[Any, threading.Thread] = weakref.WeakKeyDictionary()
        self._conns_lock = threading.Lock()
        #: The connection settles go through, and the lock that makes it one caller at a time.
        self._settle_conn: Any = None
        self._settle_lock = threading.Lock()
        #: queue → token of a fetch that got no reply, and the lock that makes the queue's
        #: consumers fetch in turn (the fetch record is per broker and queue).
        self._fetch_tokens: dict[str, str] = {}
        self._fetch_locks: dict[str, threading.Lock] = {}
        #: (queue, id) of fetched messages to hand back when Redis can be reached; appended from
        #: any thread, including finalizers, hence a lock-free deque. Drained by the heartbeat.
        self.orphans: deque[tuple[str, bytes]] = deque()
        #: Blocks on the wake-up lists of every idle consumer at once (its thread starts with the first).
        self.idle_waiter = IdleWaiter(
            round_trip=self.round_trip,
            script_sha=scripts.sha,
            new_connection=self.new_connection,
            interrupt_key=self.keys.idle_interrupt,
            logger=logger,
        )

    # -- connections ----------------------------------------------------------------------------

    def connection(self) -> Any:
        """The calling thread's connection, opened on first use."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.new_connection()
            with self._conns_lock:
                self._threads_conns[conn] = threading.current_thread()
        return conn

    def new_connection(self) -> Any:
        """A connection of its own, with the client's settings, returning bytes."""
        pool = self.client.connection_pool
        return pool.connection_class(**{**pool.connection_kwargs, "decode_responses": False})

    def close(self) -> None:
        """Stop the idle waiter; close the settles' connection, this thread's and those of ended threads."""
        self.idle_waiter.stop()
        with self._conns_lock:
            current = threading.current_thread()
            idle = [c for c, t in self._threads_conns.items() if t is current or not t.is_alive()]
        for conn in idle:
            conn.disconnect()
        with self._settle_lock:
            conn, self._settle_conn = self._settle_conn, None
        if conn is not None:
            conn.disconnect()

    # -- round trips ------------------------------------------------------------------------------

    def round_trip(
        self,
        commands: list[Command],
        *,
        retry: bool = True,
        script: str = "",
        sent: bool = False,
        using: Any = None,
        poll: ReplyWait | None = None,
    ) -> Any:
        """Send commands at once and read a reply to each.

        Parameters:
          commands: Packed together with redis-py's packer and written in one go.
          retry: Retry connection errors for ``retry_timeout_s`` (resending after a lost reply
            loses nothing; at worst a message runs twice).
          script: The script the commands run: loaded on ``NOSCRIPT``, then the commands are resent.
          sent: The commands were already written on ``using``; only read the replies.
          using: The connection to use; the calling thread's when omitted.
          poll: How a producer waits for its reply (see :class:`~greenroom._redis.ReplyWait`).

        Inside an actor, an interrupt waits until the replies are read.
        """
        deadline = Deadline.after_s(self.retry_timeout_s)
        attempt = 0
        while True:
            conn = using or self.connection()
            try:
                return self._send_and_read(conn, commands, sent, poll)
            except NoScriptError:
                if not script or attempt > _SCRIPT_LOADS:
                    raise
                self.round_trip([("SCRIPT", "LOAD", self.scripts.source(script))], retry=retry)
            except ConnectionClosed:
                if not retry or deadline.expired():
                    raise
                time.sleep(deadline.left_s(min(0.05 * 2**attempt, 1.0)))
            attempt += 1
            sent = False

    @staticmethod
    def _send_and_read(conn: Any, commands: list[Command], sent: bool, poll: ReplyWait | None) -> list[Any]:
        with interrupts_deferred(), translate_broker_errors():
            try:
                if not sent:
                    conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                if poll is not None:
                    poll(conn)
                return [conn.read_response() for _ in commands]
            except BaseException:
                conn.disconnect()  # replies may be left unread: the connection is out of step
                raise

    def execute(self, *args: Any, retry: bool = True) -> Any:
        """Run one command on the calling thread's connection; its reply."""
        return self.round_trip([args], retry=retry)[0]

    def run_script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *, retry: bool = True, conn: Any = None
    ) -> Any:
        """``EVALSHA`` a packaged script (loaded on ``NOSCRIPT``); its reply."""
        command = ("EVALSHA", self.scripts.sha(name), len(keys), *keys, *args)
        return self.round_trip([command], retry=retry, script=name, using=conn)[0]

    def enqueue_command(self, queue_name: str, *ids_and_payloads: Any) -> Command:
        """The enqueue.lua call that stores and pushes ``(redis id, payload)`` pairs on a queue."""
        keys = self.keys.queue(queue_name).for_enqueue()
        return ("EVALSHA", self.scripts.sha("enqueue"), len(keys), *keys, *ids_and_payloads)

    def enqueue_unique(
        self, queue_name: str, redis_id: str, payload: bytes, message_id: str, unique: UniqueKey, successor: bool
    ) -> bytes | None:
        """Store and push a message unless another one holds its unique key; ``None``, or the holder's payload.

        A ``successor`` (a message consumed before: a retry, a delayed message moved to its queue)
        is always stored, without the key if another message holds it (see enqueue_unique.lua).
        """
        keys = (*self.keys.queue(queue_name).for_enqueue(), self.keys.unique)
        args = (redis_id, payload, unique.key, message_id, self.keys.prefix, queue_name, "1" if successor else "0")
        holder = self.run_script("enqueue_unique", keys, args)
        return None if holder is None else bytes(holder)

    def release_unique_keys(self, held: Sequence[tuple[str, bytes]]) -> None:
        """Let ``(unique key, redis id)`` keys go, each only if that message still holds it."""
        self.run_script("unique_release", (self.keys.unique,), [part for pair in held for part in pair])

    # -- fetching and settling ----------------------------------------------------------------------

    def fetch(self, queue_name: str, count: int, wait_s: float = 0.0) -> list[Any]:
        """Move up to ``count`` ids of a queue to this broker's ack set; ``[id, payload, ...]``.

        With ``wait_s``, the fetch first blocks that long on the queue's wake-up list, in the same
        round trip (Redis runs the fetch as soon as ``BLPOP`` returns). A fetch whose reply was
        lost is repeated, with its token, by the next fetch (see fetch.lua). Connection errors
        are raised at once: consumers fail fast and the worker reconnects them.
        """
        with self._fetch_locks.get(queue_name) or self._fetch_lock(queue_name):
            token = self._fetch_tokens.setdefault(queue_name, generate_unique_id())
            keys = self.keys.for_fetch(queue_name)
            args = (count, self.broker_id, queue_name, token)
            commands: list[Command] = [("EVALSHA", self.scripts.sha("fetch"), len(keys), *keys, *args)]
            if wait_s:
                commands.insert(0, ("BLPOP", self.keys.queue(queue_name).wake, f"{wait_s:.3f}"))
            reply: list[Any] = self.round_trip(commands, retry=False, script="fetch")[-1]
            self._fetch_tokens.pop(queue_name, None)
        return reply

    def _fetch_lock(self, queue_name: str) -> threading.Lock:
        """The lock the consumers of ``queue_name`` in this process fetch under, made on first use."""
        with self._conns_lock:
            return self._fetch_locks.setdefault(queue_name, threading.Lock())

    def settle(self, queue_name: str, ops: Sequence[SettleOp], *, retry: bool = True) -> None:
        """Ack (``a``), dead-letter (``n``, with a reason) or hand back (``r``) fetched messages."""
        args = [part for op in ops for part in op]
        # Every worker thread settles: one shared connection rather than one each (memory on both ends).
        with self._settle_lock:
            if self._settle_conn is None:
                self._settle_conn = self.new_connection()
            self.run_script("settle", self.keys.queue(queue_name), args, retry=retry, conn=self._settle_conn)

    def mark_dead(self, process: str) -> int:
        """Make every broker id of ``process`` (``host:pid``) look dead to the next heartbeat of any
        live worker, which then returns its unsettled messages; how many ids were marked."""
        prefix = f"{process}:".encode()
        ids = [wid for wid in self.execute("ZRANGE", self.keys.heartbeats, 0, -1) if wid.startswith(prefix)]
        if ids:
            self.execute("ZADD", self.keys.heartbeats, "XX", *[part for wid in ids for part in (0, wid)])
        return len(ids)

    def hand_back_later(self, queue_name: str, redis_ids: Iterable[bytes]) -> None:
        """Remember fetched messages to hand back once Redis can be reached (by the heartbeat)."""
        self.orphans.extend((queue_name, redis_id) for redis_id in redis_ids)

    def hand_back_orphans(self) -> None:
        """Hand back the messages remembered by :meth:`hand_back_later`; those that fail stay remembered."""
        by_queue: dict[str, list[bytes]] = {}
        while self.orphans:
            queue_name, redis_id = self.orphans.popleft()
            by_queue.setdefault(queue_name, []).append(redis_id)
        for queue_name, ids in by_queue.items():
            try:
                self.settle(queue_name, [("r", redis_id, "") for redis_id in ids], retry=False)
            except BrokerError:  # kept for the next beat (which fails too while Redis is away)
                self.hand_back_later(queue_name, ids)
