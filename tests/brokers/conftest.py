"""Fixtures shared by the broker tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.brokers._redis_server import RedisServer
from tests.conftest import service_unavailable


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    try:
        server.start()
    except (FileNotFoundError, TimeoutError) as exc:
        service_unavailable("redis-server", exc)
    yield server
    server.kill()
