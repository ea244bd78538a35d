from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.stub import StubBroker

#: In CI a missing service fails the run; locally it skips the tests that need it.
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def service_unavailable(name: str, error: BaseException) -> None:
    """Fail in CI, skip elsewhere, when a service the test needs is not running."""
    if CI:
        pytest.fail(f"{name} is required in CI but unreachable: {error}")
    pytest.skip(f"{name} is not reachable: {error}")


@pytest.fixture
def stub_broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    greenroom.set_broker(broker)
    yield broker
    broker.flush_all()
    broker.close()


@pytest.fixture
def stub_worker(stub_broker: StubBroker) -> Iterator[Worker]:
    worker = Worker(stub_broker, worker_timeout=100, worker_threads=4)
    worker.start()
    yield worker
    worker.stop(timeout=10000)


#: tests/typing is checked by mypy, not run.
collect_ignore_glob = ["typing/*"]


def redis_client_for(namespace: str) -> tuple[Any, Callable[[], None]]:
    """A client of the shared Redis and a cleanup that deletes ``<namespace>:*`` (skips or fails when down)."""
    import redis

    client = redis.Redis()
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", exc)

    def cleanup() -> None:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        client.close()

    return client, cleanup


def check_memcached(pool: Any) -> None:
    """Skip (or fail in CI) when the memcached behind ``pool`` does not answer."""
    import pylibmc

    try:
        with pool.reserve(block=True) as client:
            client.get("greenroom-ping")
    except pylibmc.Error as exc:
        service_unavailable("memcached", exc)


def in_forked_child(make: Callable[[], str]) -> str:
    """What ``make()`` returns when called in a forked child of this process."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write_end, make().encode())
        finally:
            os._exit(0)  # never back into pytest, even when make() raises (the parent then reads "")
    os.close(write_end)
    try:
        return os.read(read_end, 1000).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)


@pytest.fixture
def redis_namespace() -> Iterator[str]:
    """A fresh key namespace on the shared Redis; its keys (and only those) are deleted afterwards."""
    namespace = f"gr-test-{uuid.uuid4().hex[:12]}"
    _, cleanup = redis_client_for(namespace)
    yield namespace
    cleanup()


@pytest.fixture(scope="session")
def rabbitmq_vhost() -> Iterator[str]:
    """The URL of a RabbitMQ virtual host of this test process's own, deleted after the session.

    Every test that talks to RabbitMQ uses it (see ``tests/_rabbitmq_vhost.py``), so that queues
    other software keeps in the server's ``/`` cannot clash with the tests' queues.
    """
    from tests import _rabbitmq_vhost

    try:
        _rabbitmq_vhost.create_vhost()
    except _rabbitmq_vhost.VhostAdminError as exc:
        service_unavailable("RabbitMQ (administered with rabbitmqctl)", exc)
    yield _rabbitmq_vhost.URL
    _rabbitmq_vhost.delete_vhost()
