"""How the Redis broker waits for replies: producers poll first (greenroom._redis.ReplyWait); every wait is bounded."""

from __future__ import annotations

import signal
import socket
import sys
import threading
import time
import types
import uuid
from collections.abc import Iterator

import pytest
import redis

import greenroom._redis
from greenroom import Worker, actor
from greenroom._redis import ReplyWait
from greenroom.brokers.redis import RedisBroker
from greenroom.errors import ConnectionClosed
from greenroom.testing import wait_for
from tests.brokers._redis_server import RedisServer
from tests.brokers.test_redis import REDIS_URL, delete_matching
from tests.conftest import service_unavailable


class Socketless:
    """A connection whose reply comes after ``ready_after`` polls (never, if None); counts the polls."""

    def __init__(self, ready_after: int | None = None) -> None:
        self.ready_after, self.polls = ready_after, 0

    def can_read(self, timeout: float = 0) -> bool:
        assert timeout == 0, "the wait must never block in can_read"
        self.polls += 1
        return self.ready_after is not None and self.polls > self.ready_after


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process counts as single-threaded (earlier tests may leave idle threads behind)."""
    monkeypatch.setattr(greenroom._redis.threading, "active_count", lambda: 1)


@pytest.mark.usefixtures("alone")
def test_late_replies_stop_the_polling_for_a_while_then_it_is_tried_again() -> None:
    wait, conn = ReplyWait(budget_us=200), Socketless()
    started = time.perf_counter()
    for _ in range(ReplyWait.MISSES):
        before = conn.polls
        wait(conn)
        assert conn.polls > before  # polled until the budget was spent
    assert time.perf_counter() - started >= ReplyWait.MISSES * 200e-6
    polls = conn.polls
    for _ in range(ReplyWait.REST):
        wait(conn)
    assert conn.polls == polls  # resting: the reads block at once
    wait(conn)
    assert conn.polls > polls  # and then polling is tried again


@pytest.mark.usefixtures("alone")
def test_a_reply_in_time_forgives_the_late_ones() -> None:
    wait, late = ReplyWait(budget_us=100), Socketless()
    for _ in range(ReplyWait.MISSES - 1):
        wait(late)
    wait(Socketless(ready_after=3))
    for _ in range(ReplyWait.MISSES - 1):
        wait(late)
    polls = late.polls
    wait(late)
    assert late.polls > polls  # still polling: the misses did not come in a row


def test_no_polling_while_other_threads_run() -> None:
    conn, done = Socketless(), threading.Event()
    other = threading.Thread(target=done.wait, args=(10,))
    other.start()
    try:
        ReplyWait()(conn)
    finally:
        done.set()
        other.join()
    assert conn.polls == 0


@pytest.mark.usefixtures("alone")
def test_no_polling_with_a_zero_budget_or_under_gevent(monkeypatch: pytest.MonkeyPatch) -> None:
    conn = Socketless()
    ReplyWait(budget_us=0)(conn)
    assert conn.polls == 0
    ReplyWait()(conn)
    polls = conn.polls
    assert polls > 0  # the control: the same wait with the default budget polls
    patched = types.SimpleNamespace(saved={"socket": object()})  # what gevent.monkey.patch_all leaves
    monkeypatch.setitem(sys.modules, "gevent.monkey", patched)
    ReplyWait()(conn)
    assert conn.polls == polls


@pytest.fixture
def broker() -> Iterator[RedisBroker]:
    probe = redis.Redis.from_url(REDIS_URL)
    try:
        probe.ping()
    except redis.ConnectionError as exc:
        service_unavailable("Redis", exc)
    namespace = f"gr-wait-{uuid.uuid4().hex[:12]}"
    broker = RedisBroker(url=REDIS_URL, namespace=namespace, middleware=[])
    yield broker
    broker.close()
    delete_matching(probe, f"{namespace}:*")
    probe.close()


@pytest.mark.usefixtures("alone")
def test_a_reply_later_than_the_budget_is_still_read(broker: RedisBroker) -> None:
    key = f"{broker.namespace}:empty"
    started = time.monotonic()
    assert broker._storage().round_trip([("BLPOP", key, 0.3)], poll=broker.reply_wait) == [None]
    assert time.monotonic() - started >= 0.25
    assert broker.reply_wait._misses == 1


@pytest.mark.usefixtures("alone")
def test_a_producer_connection_cut_before_its_reply_is_sent_again(broker: RedisBroker) -> None:
    @actor(broker=broker)
    def noop() -> None:
        pass

    noop.send()
    killer = redis.Redis.from_url(REDIS_URL)
    try:
        killer.client_kill_filter(_id=broker._storage().execute("CLIENT", "ID"))
        noop.send()  # the poll meets a closed socket: the send is retried on a new connection
    finally:
        killer.close()
    assert broker.client.llen(f"{broker.namespace}:default") == 2


def test_a_silent_server_makes_send_raise_connection_closed_in_bounded_time() -> None:
    """A port that accepts connections and never answers (the kernel accepts them for the backlog).
    Without a socket timeout, redis-py would wait for the handshake's reply forever."""
    assert RedisBroker().client.connection_pool.connection_kwargs["socket_timeout"] == 5.0  # the default bound
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        broker = RedisBroker(url=f"redis://127.0.0.1:{port}", socket_timeout=0.3, retry_timeout=500, middleware=[])

        @actor(broker=broker)
        def noop() -> None:
            pass

        started = time.monotonic()
        with pytest.raises(ConnectionClosed, match="Timeout"):
            noop.send()
        assert time.monotonic() - started < 5  # retry_timeout, plus at most one 0.3 s wait per attempt
        broker.close()


def test_a_frozen_redis_bounds_send_and_worker_stop_and_is_ridden_out_once_thawed(private_redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}"
    broker = RedisBroker(url=url, retry_timeout=1000, middleware=[])  # the default socket_timeout: 5 s
    done: list[int] = []

    @actor(broker=broker)
    def record(n: int) -> None:
        done.append(n)

    record.send(1)
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    wait_for(lambda: done == [1], 30)
    assert private_redis.proc is not None
    private_redis.proc.send_signal(signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            record.send(2)
        assert time.monotonic() - started < 15  # one 5 s wait for the reply, then retry_timeout is spent
        started = time.monotonic()
        worker.stop(timeout=2000)
        assert time.monotonic() - started < 30
    finally:
        private_redis.proc.send_signal(signal.SIGCONT)
    record.send(3)  # thawed: the same broker sends again
    worker = Worker(broker, worker_threads=2, worker_timeout=100)
    worker.start()
    try:
        wait_for(lambda: 3 in done, 30)
    finally:
        worker.stop(timeout=10000)
        broker.close()
