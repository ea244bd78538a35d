"""Shared pieces of the memcached results and rate-limiter backends (pylibmc)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pylibmc

from .errors import ConnectionClosed

__all__ = ["make_pool", "ttl_seconds", "translate_memcached_errors"]

#: Memcached reads an expiry above 30 days as an absolute Unix time rather than a duration.
_MAX_RELATIVE_TTL_S = 30 * 24 * 3600


def ttl_seconds(ttl_ms: int) -> int:
    """A TTL in ms as memcached's expiry: whole seconds, rounded *up*.

    Rounding down (as Dramatiq does) turns a sub-second TTL into 0, which memcached reads as
    "never expires"; long TTLs are sent as absolute times, as memcached requires.
    """
    seconds = max(1, -(-int(ttl_ms) // 1000))
    if seconds > _MAX_RELATIVE_TTL_S:
        return int(time.time()) + seconds
    return seconds


def make_pool(pool: Any, pool_size: int, client_params: dict[str, Any]) -> Any:
    """A ``pylibmc.ClientPool`` (the given one, or one built from ``client_params``) with CAS on.

    Backends reserve clients with ``block=True``: more threads than ``pool_size`` wait for a free
    client rather than fail.
    """
    if pool is not None:
        with pool.reserve() as client:
            if not client.behaviors.get("cas"):
                raise ValueError("the memcached pool's clients need compare-and-swap: behaviors={'cas': True}")
        return pool
    params = dict(client_params)
    params.setdefault("servers", ["127.0.0.1:11211"])
    params.setdefault("binary", True)
    behaviors = dict(params.pop("behaviors", None) or {})
    # Compare-and-swap is what makes the read-modify-write operations atomic.
    behaviors["cas"] = True
    client = pylibmc.Client(behaviors=behaviors, **params)
    return pylibmc.ClientPool(client, pool_size)


@contextmanager
def translate_memcached_errors() -> Iterator[None]:
    """Turn pylibmc errors into :class:`ConnectionClosed`."""
    try:
        yield
    except pylibmc.Error as exc:
        raise ConnectionClosed(f"memcached operation failed: {exc}") from exc
