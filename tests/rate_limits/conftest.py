from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenroom.rate_limits import RateLimiterBackend
from greenroom.rate_limits.backends import SQLiteBackend, StubBackend
from tests._postgres import postgres_backend
from tests.conftest import check_memcached, redis_client_for

BACKENDS = ["stub", "redis", "memcached", "sqlite", "postgres"]


def make_rate_limiter_backend(name: str, tmp_path: Path) -> tuple[RateLimiterBackend, Callable[[], None]]:
    """A rate-limiter backend and a cleanup function; skips (or fails in CI) when its service is down."""
    if name == "stub":
        return StubBackend(), lambda: None
    if name == "sqlite":
        sqlite_backend = SQLiteBackend(path=tmp_path / "limits.db")
        return sqlite_backend, sqlite_backend.close
    if name == "redis":
        from greenroom.rate_limits.backends import RedisBackend

        namespace = f"greenroom-test-limits-{uuid.uuid4().hex}"
        client, cleanup = redis_client_for(namespace)
        return RedisBackend(client=client, namespace=namespace), cleanup
    if name == "postgres":
        return postgres_backend("rate_limits")
    if name == "memcached":
        from greenroom.rate_limits.backends import MemcachedBackend

        memcached_backend = MemcachedBackend(servers=["127.0.0.1:11211"])
        check_memcached(memcached_backend.pool)
        # Tests use unique keys with short TTLs: nothing to delete.
        return memcached_backend, lambda: None
    raise AssertionError(name)


@pytest.fixture(params=BACKENDS)
def rate_limiter_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RateLimiterBackend]:
    backend, cleanup = make_rate_limiter_backend(request.param, tmp_path)
    yield backend
    cleanup()


@pytest.fixture
def key() -> str:
    """A key no other test uses."""
    return f"greenroom-test-{uuid.uuid4().hex}"
