"""Shared pieces of the Redis broker, results and rate-limiter backends (redis-py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from redis.exceptions import NoScriptError, ReadOnlyError

from .errors import BrokerError, ConnectionClosed
from .threading import is_gevent_active

__all__ = [
    "DEFAULT_SOCKET_TIMEOUT_S",
    "KEEPALIVE",
    "ReplyWait",
    "make_client",
    "translate_broker_errors",
    "translate_redis_errors",
]

_TCP_OPTIONS = (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3), ("TCP_USER_TIMEOUT", 10000))
#: The kernel detects dead peers (~10 s, where supported), even when a reply is not awaited.
KEEPALIVE = {getattr(socket, name): value for name, value in _TCP_OPTIONS if hasattr(socket, name)}
#: Seconds a reply may take before the broker's connection counts as lost, unless ``socket_timeout`` is given.
DEFAULT_SOCKET_TIMEOUT_S = 5.0


def make_client(client: redis.Redis | None, url: str | None, redis_params: dict[str, Any]) -> redis.Redis:
    """The given client, or one built from ``url`` (if any) and ``redis_params``."""
    if client is not None:
        return client
    return redis.Redis.from_url(url, **redis_params) if url else redis.Redis(**redis_params)


@contextmanager
def translate_redis_errors(doing: str = "") -> Iterator[None]:
    """Turn redis-py errors into :class:`ConnectionClosed`, saying what was being done if given."""
    try:
        yield
    except redis.RedisError as exc:
        raise ConnectionClosed(f"Redis, {doing}: {exc}" if doing else f"Redis operation failed: {exc}") from exc


@contextmanager
def translate_broker_errors() -> Iterator[None]:
    """Turn redis-py errors into broker errors: connection problems become ``ConnectionClosed``, any
    other error reply ``BrokerError``; ``NoScriptError`` passes for the caller to load the script."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, ReadOnlyError, OSError) as exc:
        # ReadOnlyError: a failover left us talking to a replica; like a dropped link, it passes.
        raise ConnectionClosed(f"Redis: {exc}") from exc
    except NoScriptError:
        raise
    except redis.RedisError as exc:
        raise BrokerError(f"Redis: {exc}") from exc


class ReplyWait:
    """Polls a connection for its reply for up to ``budget_us`` before the (blocking) read.

    Waking a thread that sleeps in ``recv`` can cost more than the round trip itself: on the 2-core VM
    of the benchmarks a loopback round trip takes 50 µs when the client sleeps and 21 µs when it polls.
    When replies keep arriving later than the budget (Redis across a network), polling stops after
    ``MISSES`` late replies in a row and is tried again ``REST`` waits later, so a distant Redis costs a
    few wasted polls per thousand calls. It polls only while the process runs a single thread: the poll
    loop holds the GIL that other threads need (8 producer threads sent 25,000 msg/s without polling and
    18,000–20,000 with it). ``budget_us=0`` turns polling off; so does gevent (a poll loop would hold
    up every other greenlet). The counters are shared without a lock: a lost update only makes polling
    stop or resume a little earlier or later."""

    #: Late replies in a row after which polling stops.
    MISSES = 8
    #: Waits without polling before polling is tried again.
    REST = 1024

    def __init__(self, budget_us: int = 100) -> None:
        self.budget_s = budget_us / 1e6
        self._misses = self._resting = 0

    def __call__(self, conn: Any) -> None:
        """Return once ``conn`` has a reply to read, or the budget is spent (the read then blocks)."""
        if self._resting:
            self._resting -= 1
            return
        if not self.budget_s or threading.active_count() > 1 or is_gevent_active():
            return
        deadline = time.perf_counter() + self.budget_s
        while not conn.can_read(0):
            if time.perf_counter() >= deadline:
                self._misses += 1
                if self._misses >= self.MISSES:
                    self._misses = 0
                    self._resting = self.REST
                return
        self._misses = 0
