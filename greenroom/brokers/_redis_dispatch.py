"""Dramatiq's ``RedisBroker.do_<command>`` callables and ``consumer_class``, on greenroom's scripts (SPEC §5.1).

Dramatiq code (and its tests) reach into the broker with ``broker.do_qsize(queue)``, ``broker.do_ack(queue,
id)`` and the like; these give the same calls the same meaning on greenroom's key layout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from ..broker import Consumer
from ..message import generate_unique_id
from ._redis_consumer import _RedisConsumer
from ._redis_port import RedisBrokerPort, fetch_keys

__all__ = ["DramatiqCommands"]


def _enqueue(broker: RedisBrokerPort, queue_name: str, redis_id: str, payload: bytes | str) -> int:
    """Store a payload under ``redis_id`` and push it (once: a second call with the same id does nothing)."""
    keys = broker._queue_keys(queue_name)
    return int(broker._run_script("enqueue", (keys[0], keys[1], keys[3]), (redis_id, payload)))


def _fetch(broker: RedisBrokerPort, queue_name: str, count: int) -> list[bytes]:
    """Move up to ``count`` ids into this broker's ack set and return their payloads. As in Dramatiq,
    they count as held by this broker while it beats; settle them with the commands below."""
    args = (count, broker.broker_id, queue_name, generate_unique_id())
    reply = broker._run_script("fetch", fetch_keys(broker, queue_name), args)
    return [payload for payload in reply[1::2] if payload is not None]


def _settle(op: str) -> Callable[..., None]:
    def settle(broker: RedisBrokerPort, queue_name: str, *redis_ids: str) -> None:
        if redis_ids:
            broker._settle(queue_name, [(op, redis_id.encode(), "") for redis_id in redis_ids])

    return settle


def _purge(broker: RedisBrokerPort, queue_name: str) -> None:
    """Drop the queue's messages and dead letters (not those of its delay queue)."""
    broker._execute("DEL", *broker._queue_keys(queue_name))


def _qsize(broker: RedisBrokerPort, queue_name: str) -> int:
    return broker.qsize(queue_name)


_COMMANDS: dict[str, Callable[..., Any]] = {
    "enqueue": _enqueue,
    "fetch": _fetch,
    "ack": _settle("a"),
    "nack": _settle("n"),
    "requeue": _settle("r"),
    "purge": _purge,
    "qsize": _qsize,
}


class DramatiqCommands:
    """``do_enqueue, do_fetch, do_ack, do_nack, do_requeue, do_purge, do_qsize``, each ``(queue_name, *args)``."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        command = _COMMANDS.get(name[3:]) if name.startswith("do_") else None
        if command is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return functools.partial(command, cast("RedisBrokerPort", self))

    @property
    def consumer_class(self) -> type[Consumer]:
        """The consumer class; ``consumer_class(broker, queue_name, prefetch, timeout)`` is ``broker.consume``."""
        return _RedisConsumer
