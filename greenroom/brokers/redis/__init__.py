"""A broker on Redis, wire-compatible with Dramatiq's Redis broker.

Keys (``p``: ``""``, or ``"<namespace>:"``; ``q``: a queue such as ``default`` or ``default.DQ``; ``cq``: canonical;
built by ``_keys.py``)::

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
    p__unique__               HASH  unique key → its holder: [queue, redis id, message id] in JSON (greenroom only)

Any producer may enqueue with ``HSET p<q>.msgs <id> <payload>`` then ``RPUSH p<q> <id>``; ``options``
may be ``{}`` (without ``redis_message_id`` the id is the one pushed). ``namespace="dramatiq"`` shares
queues with Dramatiq both ways.

**Crash recovery bound.** A heartbeat thread in every consuming process beats every
``min(heartbeat_timeout / 4, 1 s)`` and, in the same atomic script, returns the unsettled messages of
workers whose last beat is older than ``heartbeat_timeout`` to the head of their queues: a killed,
frozen or cut-off worker's messages are back within ``heartbeat_timeout + 1 s`` while another worker
lives, +1 s after a Redis outage (the first beat after a gap near ``heartbeat_timeout`` recovers nothing:
live workers beat again first); a worker starting later recovers them on its second beat. Server clock.

**Poison payloads** (invalid, an id without payload, or a message naming another queue than the one it
was found on) go to ``<cq>.XQ`` with the reason in ``<cq>.XQ.reasons``.
**Connection loss.** Producers and acks retry with backoff for ``retry_timeout`` ms (5 s by default),
then raise ``ConnectionClosed``; consumers fail fast and the worker reconnects them; fetched messages
not handed back are returned by the heartbeat thread once Redis is back. A reply later than
``socket_timeout`` (5 s by default) counts as a lost connection. Requires Redis ≥ 6.2.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from ..._operations import DeadLetter, QueueCounts, check_age, check_limit, wanted_ids
from ..._process_local import ProcessLocal
from ..._redis import DEFAULT_SOCKET_TIMEOUT_S, KEEPALIVE, ReplyWait
from ...broker import Broker, Consumer
from ...common import current_millis, dq_name
from ...message import Message, sequential_id
from ...middleware.middleware import Middleware
from .._unique import UNIQUE_OPTIONS, unique_key_of, with_unique_key
from ._consumer import RedisConsumer, max_fetch
from ._dispatch import DramatiqCommands
from ._heartbeat import Heartbeat, heartbeat_interval_s
from ._lua import LuaScripts
from ._queue_ops import RedisQueueOps
from ._storage import Command, RedisStorage

__all__ = ["RedisBroker", "ReplyWait"]

if TYPE_CHECKING:
    #: Most ids one fetch script call moves (public since the first release). Computed when it is
    #: looked up, from ``greenroom_lua_max_stack``: importing this module reads no environment.
    MAX_FETCH: int
else:

    def __getattr__(name: str) -> Any:
        """``MAX_FETCH``, computed on access (see :func:`._consumer.max_fetch`)."""
        if name == "MAX_FETCH":
            return max_fetch()
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Most messages one enqueue script call carries in a batch.
ENQUEUE_CHUNK = 500


class _ProcessState(NamedTuple):
    """What one process of a broker has of its own: a forked child builds both anew on first use."""

    storage: RedisStorage
    heartbeat: Heartbeat


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
        self.client = client or _client(url, redis_params)
        self.namespace = namespace
        self.maintenance_chance = maintenance_chance
        self.heartbeat_timeout = heartbeat_timeout
        self.dead_message_ttl = dead_message_ttl
        self.retry_timeout_s = retry_timeout / 1000
        self.heartbeat_interval_s = heartbeat_interval_s(heartbeat_timeout)
        #: How ``enqueue`` waits for Redis' reply (see :class:`ReplyWait`; ``ReplyWait(0)`` never polls).
        self.reply_wait = ReplyWait()
        self.queues: set[str] = set()
        self.actor_options |= UNIQUE_OPTIONS
        #: Redis ids given by _address to messages with a unique key that were consumed before (a
        #: retry, a delayed message moved): _publish stores them even when another holds the key.
        self._successors: set[str] = set()
        self._prefix = f"{namespace}:" if namespace else ""
        self._scripts = LuaScripts()
        self._process: ProcessLocal[_ProcessState] = ProcessLocal(self._start_process)

    def _start_process(self) -> _ProcessState:
        storage = RedisStorage(self.client, self._prefix, self.retry_timeout_s, self._scripts, self.logger)
        return _ProcessState(storage, Heartbeat(storage, self.heartbeat_timeout, self.dead_message_ttl))

    def _storage(self) -> RedisStorage:
        return self._process.get().storage

    @property
    def broker_id(self) -> str:
        """Names this broker, in this process, in heartbeats and ack sets (a forked child has its own)."""
        return self._storage().broker_id

    def _address(self, message: Message[Any], delay: int | None) -> Message[Any]:
        """The copy to send: with a new ``redis_message_id`` option, on ``<queue>.DQ`` with an ``eta`` if delayed.

        Redis needs no declared queue: its keys exist once written.
        """
        options = {**message.options, "redis_message_id": sequential_id()}  # a fifth of a uuid4's cost
        queue_name = message.queue_name
        if delay is not None:
            queue_name = dq_name(queue_name)
            options["eta"] = current_millis() + delay
        m = message  # built directly: Message.copy (dataclasses.replace) costs more than the rest
        addressed: Message[Any] = Message(
            queue_name, m.actor_name, m.args, m.kwargs, options, m.message_id, m.message_timestamp
        )
        addressed = with_unique_key(addressed, self.actors)  # two lookups for messages without a unique key
        if "redis_message_id" in message.options and "unique_key" in addressed.options:
            self._successors.add(options["redis_message_id"])
        return addressed

    def _publish(self, message: Message[Any], payload: bytes) -> Message[Any] | None:
        """Store and push the payload in one script call; the message holding its unique key instead, if one
        does. Raises ``ConnectionClosed`` when Redis stayed unreachable for ``retry_timeout`` ms."""
        if "unique_key" in message.options:
            return self._publish_unique(message, payload)
        storage = self._storage()
        command = storage.enqueue_command(message.queue_name, message.options["redis_message_id"], payload)
        storage.round_trip([command], script="enqueue", poll=self.reply_wait)
        return None

    def _publish_unique(self, message: Message[Any], payload: bytes) -> Message[Any] | None:
        redis_id = message.options["redis_message_id"]
        successor = redis_id in self._successors
        self._successors.discard(redis_id)
        unique = unique_key_of(message.options)
        if unique is None:  # an explicit unique_key=None
            command = self._storage().enqueue_command(message.queue_name, redis_id, payload)
            self._storage().round_trip([command], script="enqueue")
            return None
        storage = self._storage()
        holder = storage.enqueue_unique(message.queue_name, redis_id, payload, message.message_id, unique, successor)
        return None if holder is None else Message.decode(holder)

    def enqueue_many(self, messages: Iterable[Message[Any]], *, delay: int | None = None) -> list[Message[Any]]:
        """Send many messages in one round trip (the batch API); returns the copies sent, in order.

        Hooks run for every message; each queue's messages are stored atomically in pipelined chunks of
        :data:`ENQUEUE_CHUNK`. E.g. ``broker.enqueue_many(actor.message(n) for n in range(10000))``.
        If building a message raises, the chunks already written stay stored. A message with a unique key
        is sent on its own, and may come back as the message holding its key. Raises ``ConnectionClosed``
        as :meth:`enqueue` does."""
        storage = self._storage()
        conn = storage.connection()
        sent: list[Message[Any]] = []
        buffers: dict[str, list[Any]] = {}
        commands: list[Command] = []
        unique: list[int] = []  # positions in sent of messages with a unique key
        streaming = True

        def send(queue_name: str, args: list[Any]) -> None:
            # Each chunk is written as soon as it is full, so Redis stores it while Python encodes the next.
            nonlocal streaming
            commands.append(storage.enqueue_command(queue_name, *args))
            if streaming:
                try:
                    conn.send_packed_command(conn.pack_command(*commands[-1]), check_health=False)
                except (redis.RedisError, OSError):
                    conn.disconnect()
                    streaming = False  # round_trip sends everything again

        try:
            for message in messages:
                message = self._address(message, delay)
                self.emit_before("enqueue", message, delay)
                if "unique_key" in message.options:
                    unique.append(len(sent))  # sent on its own once the batch is answered
                    sent.append(message)
                    continue
                sent.append(message)
                buffer = buffers.setdefault(message.queue_name, [])
                buffer += (message.options["redis_message_id"], message.encode())
                if len(buffer) >= 2 * ENQUEUE_CHUNK:
                    send(message.queue_name, buffer)
                    buffers[message.queue_name] = []
            for queue_name, buffer in buffers.items():
                if buffer:
                    send(queue_name, buffer)
        finally:
            # Even when building a message failed, read what was written, to keep the connection in step.
            if commands:
                storage.round_trip(commands, script="enqueue", sent=streaming)
        return self._finish_batch(sent, unique, delay)

    def consume(self, queue_name: str, prefetch: int = 1, timeout: int = 5000) -> Consumer:
        """A consumer of ``queue_name`` holding at most ``prefetch`` unsettled messages."""
        state = self._process.get()
        return RedisConsumer(state.storage, state.heartbeat, queue_name, prefetch, timeout, self.logger)

    def flush(self, queue_name: str) -> None:
        """Drop the messages of a queue and its delay queue, and their dead letters."""
        keys = self._storage().keys
        self._storage().execute("DEL", *keys.queue(queue_name), *keys.queue(dq_name(queue_name)))

    def qsize(self, queue_name: str) -> int:
        """Messages of a queue and its delay queue not yet acknowledged (queued or in flight anywhere)."""
        return int(self.do_qsize(queue_name))

    def dead_letter_count(self, queue_name: str) -> int:
        """How many dead letters a queue has."""
        storage = self._storage()
        return int(storage.execute("ZCARD", storage.keys.queue(queue_name).dead))

    def queue_is_empty(self, queue_name: str) -> bool:
        """Whether no message of the queue or its delay queue is left unacknowledged, anywhere."""
        return self.qsize(queue_name) == 0

    # -- operations (see greenroom._operations.QueueOperations and _queue_ops.py) --------------------
    # A queue is known when declared here or when one of its keys exists; ``QueueNotFound`` otherwise.

    def get_queue_counts(self, queue_name: str) -> QueueCounts:
        """Ready: on the queue; delayed: every delayed message not yet moved to the queue (waiting in
        Redis or held by a worker until its eta); in progress: fetched by a worker and not yet settled."""
        return RedisQueueOps(self._storage(), self.queues).counts(queue_name)

    def get_dead_letters(self, queue_name: str, *, limit: int = 100) -> list[DeadLetter]:
        """The oldest ``limit`` dead letters of a queue (``<queue>.XQ``), with their reasons."""
        return RedisQueueOps(self._storage(), self.queues).dead_letters(queue_name, check_limit(limit))

    def requeue_dead_letters(self, queue_name: str, message_ids: Iterable[str] | None = None) -> int:
        """Put dead letters back on their queue under their Redis id, each in one atomic script step
        with its removal from the dead letters (``None``: all of them); returns how many."""
        return RedisQueueOps(self._storage(), self.queues).requeue(queue_name, wanted_ids(message_ids))

    def purge_dead_letters(self, queue_name: str, *, older_than_ms: int | None = None) -> int:
        """Delete a queue's dead letters (those dead ``older_than_ms`` or more ago by the server's clock)."""
        return RedisQueueOps(self._storage(), self.queues).purge(queue_name, check_age(older_than_ms))

    def join(self, queue_name: str, *, interval: int = 100, timeout: int | None = None) -> None:
        """Wait until a queue and its delay queue have no message left (a test helper), checking every
        ``interval`` ms; ``QueueJoinTimeout`` after ``timeout`` ms."""
        self._join(queue_name, timeout_ms=timeout, interval_s=interval / 1000)

    def close(self) -> None:
        """Stop the heartbeat thread and the idle waiter; close the settles' connection, this thread's and those of
        ended threads."""
        state = self._process.peek()
        if state is not None:
            state.heartbeat.stop()
            state.storage.close()

    def recover_process(self, host: str, pid: int) -> int:
        """Return the unsettled messages of a dead worker process to their queues now, rather than
        after ``heartbeat_timeout``: its heartbeats are marked dead and the next beat of a live
        worker (this one's within a beat interval) recovers them. Returns how many broker ids of
        that process were found."""
        state = self._process.get()
        found = state.storage.mark_dead(f"{host}:{pid}")
        state.heartbeat.wake()
        return found

    def beat(self, *, retire: bool = False) -> int:
        """Heartbeat, recover dead workers' messages, purge old dead letters; returns how many recovered.

        Run by the heartbeat thread every :attr:`heartbeat_interval_s` s, with ``retire`` when it stops."""
        return self._process.get().heartbeat.beat(retire=retire)


def _client(url: str | None, redis_params: dict[str, Any]) -> redis.Redis:
    """A client for ``url`` (or ``redis_params``) that cannot hang on a Redis that stops answering."""
    params = {"socket_timeout": DEFAULT_SOCKET_TIMEOUT_S, **redis_params}
    if not (url or "").startswith("unix:") and "unix_socket_path" not in params:  # TCP options
        params.setdefault("socket_keepalive", True)
        params.setdefault("socket_keepalive_options", KEEPALIVE)
    pool = redis.ConnectionPool.from_url(url, **params) if url else redis.ConnectionPool(**params)
    return redis.Redis(connection_pool=pool)
