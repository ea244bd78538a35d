from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from greenroom.results import ResultBackend
from greenroom.results.backends import SQLiteBackend, StubBackend
from tests._postgres import postgres_backend
from tests.conftest import check_memcached, redis_client_for

BACKENDS = ["stub", "redis", "memcached", "sqlite", "postgres"]


def make_result_backend(name: str, tmp_path: Path) -> tuple[ResultBackend, Callable[[], None]]:
    """A results backend and a cleanup function; skips (or fails in CI) when its service is down."""
    if name == "stub":
        return StubBackend(), lambda: None
    if name == "sqlite":
        sqlite_backend = SQLiteBackend(path=tmp_path / "results.db")
        return sqlite_backend, sqlite_backend.close
    if name == "redis":
        from greenroom.results.backends import RedisBackend

        namespace = f"greenroom-test-results-{uuid.uuid4().hex}"
        client, cleanup = redis_client_for(namespace)
        return RedisBackend(namespace=namespace, use_namespace_prefix_keys=True, client=client), cleanup
    if name == "postgres":
        return postgres_backend("results")
    if name == "memcached":
        from greenroom.results.backends import MemcachedBackend

        memcached_backend = MemcachedBackend(servers=["127.0.0.1:11211"])
        check_memcached(memcached_backend.pool)
        # Keys are MD5 digests of unique message ids: nothing to delete, they expire.
        return memcached_backend, lambda: None
    raise AssertionError(name)


@pytest.fixture(params=BACKENDS)
def result_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ResultBackend]:
    backend, cleanup = make_result_backend(request.param, tmp_path)
    yield backend
    cleanup()
