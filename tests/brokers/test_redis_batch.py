"""Batch enqueues on Redis go in a few pipelined round trips (checked on a private server's stats)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from greenroom import actor, group
from greenroom.brokers.redis import ENQUEUE_CHUNK, RedisBroker
from tests.brokers.test_redis import RedisServer
from tests.conftest import service_unavailable


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own: its command statistics count only this test's calls."""
    server = RedisServer(tmp_path, "--appendonly", "no")
    try:
        server.start()
    except (FileNotFoundError, TimeoutError) as exc:
        service_unavailable("redis-server", exc)
    yield server
    server.kill()


def script_calls(client: redis.Redis) -> int:
    """How many EVALSHA calls the server ran since its statistics were reset."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def queued_args(client: redis.Redis, queue_name: str) -> list[int]:
    """The first argument of every message waiting in ``queue_name``, in queue order."""
    ids = client.lrange(queue_name, 0, -1)
    payloads = client.hmget(f"{queue_name}.msgs", ids) if ids else []
    return [json.loads(payload)["args"][0] for payload in payloads]


def test_enqueue_many_and_group_run_send_a_chunk_per_round_trip(server: RedisServer) -> None:
    broker = RedisBroker(url=f"redis://127.0.0.1:{server.port}/0")
    client = redis.Redis(port=server.port)

    @actor(broker=broker, queue_name="first")
    def first(n: int) -> None:
        pass

    @actor(broker=broker, queue_name="second")
    def second(n: int) -> None:
        pass

    try:
        first.send(-1)  # loads the enqueue script, so that no call below is a NOSCRIPT retry
        broker.flush("first")
        client.config_resetstat()

        sent = broker.enqueue_many(first.message(n) for n in range(4 * ENQUEUE_CHUNK))
        assert [message.args[0] for message in sent] == list(range(4 * ENQUEUE_CHUNK))
        assert script_calls(client) == 4
        assert queued_args(client, "first") == list(range(4 * ENQUEUE_CHUNK))

        broker.flush("first")
        client.config_resetstat()
        members = [first.message(n) for n in range(2 * ENQUEUE_CHUNK)]
        members += [second.message(n) for n in range(ENQUEUE_CHUNK)]
        group(members, broker=broker).run()
        assert script_calls(client) == 3  # two chunks for the first queue, one for the second
        assert queued_args(client, "first") == list(range(2 * ENQUEUE_CHUNK))
        assert queued_args(client, "second") == list(range(ENQUEUE_CHUNK))
    finally:
        client.close()
        broker.close()
