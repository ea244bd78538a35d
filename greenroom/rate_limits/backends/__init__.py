"""Rate-limiter backends. ``StubBackend`` and ``SQLiteBackend`` need nothing extra; ``RedisBackend``,
``MemcachedBackend`` and ``PostgresBackend`` need the ``redis``, ``memcached`` and ``postgres``
extras and are imported on first access.
"""

from __future__ import annotations

from typing import Any

from ..._lazy import BACKENDS_WITH_EXTRAS, import_optional
from .sqlite import SQLiteBackend
from .stub import StubBackend

__all__ = ["MemcachedBackend", "PostgresBackend", "RedisBackend", "SQLiteBackend", "StubBackend"]


def __getattr__(name: str) -> Any:
    return import_optional(__name__, name, BACKENDS_WITH_EXTRAS)
