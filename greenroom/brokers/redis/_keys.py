"""The Redis broker's key names, as typed structures (the layout is in the package docstring).

A :class:`KeySpace` belongs to one broker in one process: the ack sets, the fetch record and the
queue registry carry the broker's id, which a forked child replaces with its own.
"""

from __future__ import annotations

from typing import NamedTuple

from ...common import q_name

__all__ = ["KeySpace", "QueueKeys"]

#: Queues whose keys a key space remembers; beyond that they are built on every call, should an
#: application make queue names up on the fly.
_CACHED_QUEUES = 1024


class QueueKeys(NamedTuple):
    """The keys of one queue, in the order the settle script takes them as KEYS."""

    #: LIST of message ids, FIFO.
    messages: str
    #: HASH id → payload, kept until the message is acked or dead-lettered.
    payloads: str
    #: SET of the ids this broker fetched from the queue and has not settled.
    acks: str
    #: LIST holding at most one wake-up token for idle consumers.
    wake: str
    #: ZSET of dead-lettered ids → when (ms); shared by a queue and its delay queue.
    dead: str
    #: HASH id → payload of the dead letters.
    dead_payloads: str
    #: HASH id → why it was dead-lettered.
    dead_reasons: str
    #: LIST: token and ids of this broker's last fetch, to repeat it if its reply was lost.
    fetch_record: str

    def for_enqueue(self) -> tuple[str, str, str]:
        """The KEYS of enqueue.lua."""
        return (self.messages, self.payloads, self.wake)


class KeySpace:
    """Every key name one broker uses in one process.

    Parameters:
      prefix: ``""``, or ``"<namespace>:"``.
      broker_id: Names this broker in heartbeats, ack sets and fetch records.
    """

    def __init__(self, prefix: str, broker_id: str) -> None:
        self.prefix = prefix
        self.broker_id = broker_id
        #: ZSET worker id → last heartbeat (ms), shared by every broker of the namespace.
        self.heartbeats = f"{prefix}__heartbeats__"
        #: SET of the queues where this broker may hold ack sets.
        self.registry = f"{prefix}__queues__.{broker_id}"
        #: LIST whose token makes this broker's idle waiter block anew.
        self.idle_interrupt = f"{prefix}__idle__.{broker_id}"
        #: HASH unique key → its holder, ``[queue, redis id, message id]`` in JSON (unique jobs).
        self.unique = f"{prefix}__unique__"
        self._queues: dict[str, QueueKeys] = {}

    def queue(self, queue_name: str) -> QueueKeys:
        """The keys of ``queue_name`` (a canonical or a delay queue)."""
        keys = self._queues.get(queue_name)
        if keys is None:
            keys = self._build(queue_name)
            if len(self._queues) < _CACHED_QUEUES:
                self._queues[queue_name] = keys
        return keys

    def for_fetch(self, queue_name: str) -> tuple[str, ...]:
        """The KEYS of fetch.lua for ``queue_name``."""
        keys = self.queue(queue_name)
        head = (keys.messages, keys.payloads, keys.acks, keys.wake)
        dead = (keys.dead, keys.dead_payloads, keys.dead_reasons, keys.fetch_record)
        return (*head, self.heartbeats, self.registry, *dead)

    def _build(self, queue_name: str) -> QueueKeys:
        prefix = self.prefix
        dead = f"{prefix}{q_name(queue_name)}.XQ"
        mine = f"{self.broker_id}.{queue_name}"
        return QueueKeys(
            messages=prefix + queue_name,
            payloads=f"{prefix}{queue_name}.msgs",
            acks=f"{prefix}__acks__.{mine}",
            wake=f"{prefix}__notify__.{queue_name}",
            dead=dead,
            dead_payloads=f"{dead}.msgs",
            dead_reasons=f"{dead}.reasons",
            fetch_record=f"{prefix}__fetch__.{mine}",
        )
