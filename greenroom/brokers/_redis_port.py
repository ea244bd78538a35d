"""The Redis broker as its consumer and Dramatiq's ``do_*`` commands see it.

``redis.py`` imports the consumer and the commands, so they name the broker through
:class:`RedisBrokerPort` rather than importing it back. The port lists the members of
:class:`~greenroom.brokers.redis.RedisBroker` they use, private ones included: a storage layer
below the broker (connections, scripts, key names) would leave only its public methods here.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from ._redis_idle import IdleWaiter

__all__ = ["RedisBrokerPort", "fetch_keys"]


class RedisBrokerPort(Protocol):
    """The members of ``RedisBroker`` that ``_RedisConsumer`` and ``DramatiqCommands`` use."""

    @property
    def broker_id(self) -> str:
        """Who holds what: names this broker in heartbeats and ack sets."""
        ...

    @property
    def logger(self) -> logging.Logger: ...

    @property
    def _heartbeats_key(self) -> str: ...

    @property
    def _registry_key(self) -> str: ...

    @property
    def _lock(self) -> threading.Lock: ...

    @property
    def _fetch_tokens(self) -> dict[str, str]: ...

    @property
    def _fetch_locks(self) -> dict[str, threading.Lock]: ...

    @property
    def _orphans(self) -> deque[tuple[str, bytes]]: ...

    def _round_trip(
        self,
        commands: list[tuple[Any, ...]],
        *,
        retry: bool = ...,
        script: str = ...,
        sent: bool = ...,
        using: Any = ...,
        poll: bool = ...,
    ) -> Any: ...

    def _execute(self, *args: Any, retry: bool = ...) -> Any: ...

    def _script(self, name: str) -> tuple[str, bytes]: ...

    def _run_script(
        self, name: str, keys: Sequence[str], args: Sequence[Any], *, retry: bool = ..., conn: Any = ...
    ) -> Any: ...

    def _queue_keys(self, queue_name: str) -> tuple[str, ...]: ...

    def _settle(self, queue_name: str, ops: Sequence[tuple[str, bytes, str]], *, retry: bool = ...) -> None: ...

    def _consumer_opened(self, queue_name: str) -> None: ...

    def _consumer_closed(self, queue_name: str) -> None: ...

    @property
    def _idle_waiter(self) -> IdleWaiter: ...

    def qsize(self, queue_name: str) -> int: ...


def fetch_keys(broker: RedisBrokerPort, queue_name: str) -> tuple[str, ...]:
    """The KEYS of fetch.lua for ``queue_name`` (consumers and ``do_fetch`` both run it)."""
    keys = broker._queue_keys(queue_name)
    return (*keys[:4], broker._heartbeats_key, broker._registry_key, *keys[4:])
