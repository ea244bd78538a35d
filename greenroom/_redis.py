"""Shared pieces of the Redis results and rate-limiter backends (redis-py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from .errors import ConnectionClosed

__all__ = ["make_client", "translate_redis_errors"]


def make_client(client: redis.Redis | None, url: str | None, redis_params: dict[str, Any]) -> redis.Redis:
    """The given client, or one built from ``url`` (if any) and ``redis_params``."""
    if client is not None:
        return client
    return redis.Redis.from_url(url, **redis_params) if url else redis.Redis(**redis_params)


@contextmanager
def translate_redis_errors() -> Iterator[None]:
    """Turn redis-py errors into :class:`ConnectionClosed`."""
    try:
        yield
    except redis.RedisError as exc:
        raise ConnectionClosed(f"Redis operation failed: {exc}") from exc
