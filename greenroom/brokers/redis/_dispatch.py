"""Dramatiq's ``RedisBroker.do_<command>`` callables and ``consumer_class``, on greenroom's scripts (SPEC §5.1).

Dramatiq code (and its tests) reach into the broker with ``broker.do_qsize(queue)``, ``broker.do_ack(queue,
id)`` and the like; these give the same calls the same meaning on greenroom's key layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Protocol

from ...broker import Consumer
from ...common import dq_name
from ...message import generate_unique_id
from ._storage import RedisStorage

__all__ = ["DramatiqCommands"]


def _enqueue(storage: RedisStorage, queue_name: str, redis_id: str, payload: bytes | str) -> int:
    """Store a payload under ``redis_id`` and push it (once: a second call with the same id does nothing)."""
    return int(storage.round_trip([storage.enqueue_command(queue_name, redis_id, payload)], script="enqueue")[0])


def _fetch(storage: RedisStorage, queue_name: str, count: int) -> list[bytes]:
    """Move up to ``count`` ids into this broker's ack set and return their payloads. As in Dramatiq,
    they count as held by this broker while it beats; settle them with the commands below."""
    args = (count, storage.broker_id, queue_name, generate_unique_id())
    reply = storage.run_script("fetch", storage.keys.for_fetch(queue_name), args)
    return [payload for payload in reply[1::2] if payload is not None]


def _settle(op: str) -> Callable[..., None]:
    def settle(storage: RedisStorage, queue_name: str, *redis_ids: str) -> None:
        if redis_ids:
            storage.settle(queue_name, [(op, redis_id.encode(), "") for redis_id in redis_ids])

    return settle


def _purge(storage: RedisStorage, queue_name: str) -> None:
    """Drop the queue's messages and dead letters (not those of its delay queue)."""
    storage.execute("DEL", *storage.keys.queue(queue_name))


def _qsize(storage: RedisStorage, queue_name: str) -> int:
    """Messages of a queue and its delay queue not yet acknowledged (queued or in flight anywhere)."""
    names = (queue_name, dq_name(queue_name))
    replies = storage.round_trip([("HLEN", storage.keys.queue(name).payloads) for name in names])
    return sum(int(reply) for reply in replies)


_COMMANDS: dict[str, Callable[..., Any]] = {
    "enqueue": _enqueue,
    "fetch": _fetch,
    "ack": _settle("a"),
    "nack": _settle("n"),
    "requeue": _settle("r"),
    "purge": _purge,
    "qsize": _qsize,
}


class _Consuming(Protocol):
    def consume(self, queue_name: str, prefetch: int = ..., timeout: int = ...) -> Consumer: ...


def _consumer(broker: _Consuming, queue_name: str, prefetch: int, timeout: int) -> Consumer:
    """``consumer_class(broker, queue_name, prefetch, timeout)``: the same as ``broker.consume``."""
    return broker.consume(queue_name, prefetch, timeout)


class DramatiqCommands:
    """``do_enqueue, do_fetch, do_ack, do_nack, do_requeue, do_purge, do_qsize``, each ``(queue_name, *args)``."""

    def _storage(self) -> RedisStorage:
        """The storage layer of this process (the broker provides it)."""
        raise NotImplementedError

    def __getattr__(self, name: str) -> Callable[..., Any]:
        command = _COMMANDS.get(name[3:]) if name.startswith("do_") else None
        if command is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return functools.partial(command, self._storage())

    @property
    def consumer_class(self) -> Callable[[Any, str, int, int], Consumer]:
        """Builds a consumer: ``consumer_class(broker, queue_name, prefetch, timeout)`` is ``broker.consume``."""
        return _consumer
