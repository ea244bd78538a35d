"""RedisBroker behaviour beyond the contract: foreign producers, crash recovery, poison, outages, Dramatiq interop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from greenroom import Message, Worker, actor, group
from greenroom.brokers.redis import ENQUEUE_CHUNK, RedisBroker
from greenroom.errors import ConnectionClosed
from greenroom.testing import wait_for
from tests.brokers._redis_server import RedisServer, free_port
from tests.conftest import in_forked_child, service_unavailable

REDIS_URL = "redis://127.0.0.1:6379/0"
TIMEOUT_S = 60.0


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def delete_matching(client: redis.Redis, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        service_unavailable("Redis", exc)
    yield client
    client.close()


@pytest.fixture
def namespace(client: redis.Redis) -> Iterator[str]:
    namespace = unique("gr-test")
    yield namespace
    delete_matching(client, f"{namespace}:*")


@pytest.fixture
def brokers() -> Iterator[list[RedisBroker]]:
    made: list[RedisBroker] = []
    yield made
    for broker in made:
        broker.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop(timeout=10000)


def start_worker(workers: list[Worker], broker: RedisBroker, **kwargs: Any) -> Worker:
    kwargs.setdefault("worker_timeout", 100)
    kwargs.setdefault("worker_threads", 4)
    worker = Worker(broker, **kwargs)
    worker.start()
    workers.append(worker)
    return worker


def test_constructor_opens_no_connection_and_producers_give_up_with_connection_closed() -> None:
    port = free_port()
    broker = RedisBroker(url=f"redis://127.0.0.1:{port}/3", middleware=[], retry_timeout=300)

    @actor(broker=broker)
    def noop() -> None:
        pass

    started = time.monotonic()
    with pytest.raises(ConnectionClosed):
        noop.send()
    assert 0.25 <= time.monotonic() - started < 10
    broker.close()


def test_raw_hset_rpush_with_the_default_namespace(
    client: redis.Redis, brokers: list[RedisBroker], workers: Any
) -> None:
    """The seed recipe, verbatim: HSET <q>.msgs <id> <payload>, RPUSH <q> <id>, options {}."""
    queue = unique("seed")
    broker = RedisBroker(url=REDIS_URL)  # namespace "" → bare keys
    brokers.append(broker)
    seen: list[Any] = []

    @actor(broker=broker, queue_name=queue)
    def add(x: int, y: int) -> None:
        seen.append(x + y)

    try:
        message_id = str(uuid.uuid4())
        payload = json.dumps(
            {
                "queue_name": queue,
                "actor_name": "add",
                "args": [1, 2],
                "kwargs": {},
                "options": {},
                "message_id": message_id,
                "message_timestamp": int(time.time() * 1000),
            }
        )
        client.execute_command("HSET", f"{queue}.msgs", message_id, payload)
        client.execute_command("RPUSH", queue, message_id)
        start_worker(workers, broker)
        wait_for(lambda: seen == [3], TIMEOUT_S)
        wait_for(lambda: client.hlen(f"{queue}.msgs") == 0, TIMEOUT_S)
    finally:
        for worker in workers:
            worker.stop(timeout=10000)
        workers.clear()
        delete_matching(client, f"*{queue}*")


def test_poison_entry_among_100_good_ones(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker], workers: Any
) -> None:
    broker = RedisBroker(url=REDIS_URL, namespace=namespace)
    brokers.append(broker)
    seen: Counter[int] = Counter()

    @actor(broker=broker)
    def record(n: int) -> None:
        seen[n] += 1

    broker.enqueue_many(record.message(n) for n in range(50))
    client.execute_command("HSET", f"{namespace}:default.msgs", "poison-1", b'{"queue_name": "default", "args":')
    client.execute_command("RPUSH", f"{namespace}:default", "poison-1")
    for n in range(50, 100):
        record.send(n)
    start_worker(workers, broker, queue_prefetch=40)
    wait_for(lambda: len(seen) == 100 and broker.dead_letter_count("default") == 1, TIMEOUT_S)
    reason = client.hget(f"{namespace}:default.XQ.reasons", "poison-1")
    assert reason is not None
    assert b"not a valid message" in reason
    assert client.hget(f"{namespace}:default.XQ.msgs", "poison-1") == b'{"queue_name": "default", "args":'
    broker.join("default", timeout=int(TIMEOUT_S * 1000))
    assert set(seen.values()) == {1}

    # An id pushed without a payload is dead-lettered too, with its reason.
    client.execute_command("RPUSH", f"{namespace}:default", "ghost-1")
    record.send(100)
    wait_for(lambda: 100 in seen and broker.dead_letter_count("default") == 2, TIMEOUT_S)
    reason = client.hget(f"{namespace}:default.XQ.reasons", "ghost-1")
    assert reason is not None
    assert b"missing" in reason


def test_dead_letters_of_an_unknown_actor_and_of_a_failure_keep_their_reason(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker], workers: Any
) -> None:
    broker = RedisBroker(url=REDIS_URL, namespace=namespace)
    brokers.append(broker)

    @actor(broker=broker, max_retries=0)
    def fail() -> None:
        raise ValueError("the disk is full")

    failed = fail.send()
    unknown = broker.enqueue(Message("default", "no_such_actor", (), {}, {}))
    start_worker(workers, broker)
    wait_for(lambda: broker.dead_letter_count("default") == 2, TIMEOUT_S)
    reasons = client.hgetall(f"{namespace}:default.XQ.reasons")
    by_id = {
        json.loads(client.hget(f"{namespace}:default.XQ.msgs", rid) or b"{}")["message_id"]: r
        for rid, r in reasons.items()
    }
    assert b"the disk is full" in by_id[failed.message_id]
    assert b"no_such_actor" in by_id[unknown.message_id]


def test_a_child_forked_after_consuming_is_a_worker_of_its_own(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker]
) -> None:
    """A fork inherits the broker object: the child must get its own identity and heartbeat, else
    the parent's beats would cover the child's messages and the child's would never be recovered."""
    broker = RedisBroker(url=REDIS_URL, namespace=namespace, heartbeat_timeout=2000)
    brokers.append(broker)
    heartbeats = f"{namespace}:__heartbeats__"
    consumer = broker.consume("parent", timeout=100)  # starts the parent's heartbeat thread
    wait_for(lambda: client.zscore(heartbeats, broker.broker_id) is not None, TIMEOUT_S)

    def child() -> str:
        broker.consume("child", timeout=100)
        own_client = redis.Redis.from_url(REDIS_URL)
        wait_for(lambda: own_client.zscore(heartbeats, broker.broker_id) is not None, TIMEOUT_S)
        return broker.broker_id

    try:
        child_id = in_forked_child(child)
    finally:
        consumer.close()
    assert child_id not in ("", broker.broker_id)
    assert client.zscore(heartbeats, child_id) is not None


WORKER_SCRIPT = textwrap.dedent(
    """
    import sys, threading, time
    from greenroom import Worker, actor
    from greenroom.brokers.redis import RedisBroker

    url, namespace, queue = sys.argv[1:4]
    broker = RedisBroker(url=url, namespace=namespace, heartbeat_timeout=2000)
    broker.emit_after("process_boot")

    @actor(broker=broker, queue_name=queue)
    def job(n):
        threading.Event().wait()  # hold every message until SIGKILL

    worker = Worker(broker, worker_threads=1, queue_prefetch=20, worker_timeout=100)
    worker.start()
    print(broker.broker_id, flush=True)
    time.sleep(3600)
    """
)


def test_sigkilled_worker_messages_are_recovered_within_the_bound(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker], workers: Any, tmp_path: Path
) -> None:
    heartbeat_timeout_ms = 2000
    queue = unique("crash")
    script = tmp_path / "worker.py"
    script.write_text(WORKER_SCRIPT)
    producer = RedisBroker(url=REDIS_URL, namespace=namespace)
    brokers.append(producer)
    seen: Counter[int] = Counter()

    @actor(broker=producer, queue_name=queue)
    def job(n: int) -> None:
        seen[n] += 1

    for n in range(20):
        job.send(n)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(script), REDIS_URL, namespace, queue], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        worker_id = proc.stdout.readline().strip()
        acks = f"{namespace}:__acks__.{worker_id}.{queue}"
        wait_for(lambda: client.scard(acks) == 20, TIMEOUT_S)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = time.monotonic()

        consumer = RedisBroker(url=REDIS_URL, namespace=namespace, heartbeat_timeout=heartbeat_timeout_ms)
        brokers.append(consumer)
        consumer.declare_actor(job)
        start_worker(workers, consumer)
        wait_for(lambda: len(seen) == 20, heartbeat_timeout_ms / 1000 + 5)
        elapsed_s = time.monotonic() - killed_at
        print(f"20 messages of the killed worker processed {elapsed_s:.2f} s after SIGKILL")
        assert sorted(seen) == list(range(20))
        assert client.exists(acks) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_redis_restart_mid_run_of_2000_messages(
    private_redis: RedisServer, brokers: list[RedisBroker], workers: Any
) -> None:
    total = 2000
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    broker = RedisBroker(url=url, retry_timeout=30000)
    brokers.append(broker)
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    @actor(broker=broker, max_retries=0)
    def record(n: int) -> None:
        with lock:
            seen[n] += 1

    worker = Worker(broker, worker_timeout=100, worker_threads=4)
    worker.restart_delay_ms = 300
    worker.start()
    workers.append(worker)
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for n in range(total):
                record.send(n)
        except BaseException as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: len(seen) >= total // 4, TIMEOUT_S)
        private_redis.kill()
        processed_at_kill = len(seen)
        private_redis.start()
    finally:
        producer.join(TIMEOUT_S)
    assert not errors
    wait_for(lambda: len(seen) == total, TIMEOUT_S * 2)
    broker.join("default", timeout=int(TIMEOUT_S * 1000))
    duplicates = sum(count - 1 for count in seen.values())
    print(
        f"Redis restarted after {processed_at_kill} of {total} messages were processed; "
        f"all {total} processed, {duplicates} duplicate deliveries"
    )
    assert processed_at_kill < total
    assert sorted(seen) == list(range(total))


def script_calls(client: redis.Redis) -> int:
    """How many EVALSHA calls the server ran since its statistics were reset."""
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0))


def queued_args(client: redis.Redis, queue_name: str) -> list[int]:
    """The first argument of every message waiting in ``queue_name``, in queue order."""
    ids = client.lrange(queue_name, 0, -1)
    payloads = client.hmget(f"{queue_name}.msgs", ids) if ids else []
    return [json.loads(payload)["args"][0] for payload in payloads]


def test_enqueue_many_and_group_run_send_a_chunk_per_round_trip(private_redis: RedisServer) -> None:
    """Counted on a private server, whose command statistics hold only this test's calls."""
    broker = RedisBroker(url=f"redis://127.0.0.1:{private_redis.port}/0")
    client = redis.Redis(port=private_redis.port)

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


@pytest.fixture
def dramatiq_queue(client: redis.Redis) -> Iterator[str]:
    queue = unique("interop")
    yield queue
    delete_matching(client, f"dramatiq:*{queue}*")


def test_interop_with_dramatiq_both_ways(
    client: redis.Redis, dramatiq_queue: str, brokers: list[RedisBroker], workers: Any
) -> None:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker as DramatiqRedisBroker

    to_greenroom, to_dramatiq = f"{dramatiq_queue}_g", f"{dramatiq_queue}_d"
    theirs = DramatiqRedisBroker(url=REDIS_URL, namespace="dramatiq", middleware=[])
    ours = RedisBroker(url=REDIS_URL, namespace="dramatiq")
    brokers.append(ours)
    seen_by_greenroom: list[int] = []
    seen_by_dramatiq: list[int] = []

    @actor(broker=ours, queue_name=to_greenroom, actor_name="interop_g")
    def in_greenroom(n: int) -> None:
        seen_by_greenroom.append(n)

    @actor(broker=ours, queue_name=to_dramatiq, actor_name="interop_d")
    def greenroom_side_of_d(n: int) -> None:
        raise AssertionError("consumed by Dramatiq only")

    def dramatiq_side_of_g(n: int) -> None:
        raise AssertionError("consumed by greenroom only")

    def in_dramatiq(n: int) -> None:
        seen_by_dramatiq.append(n)

    sender = dramatiq.actor(dramatiq_side_of_g, broker=theirs, actor_name="interop_g", queue_name=to_greenroom)
    dramatiq.actor(in_dramatiq, broker=theirs, actor_name="interop_d", queue_name=to_dramatiq)

    dramatiq_worker = dramatiq.Worker(theirs, queues={to_dramatiq}, worker_timeout=100, worker_threads=2)
    dramatiq_worker.start()
    try:
        start_worker(workers, ours, queues={to_greenroom})
        for n in range(10):
            sender.send(n)
        sender.send_with_options(args=(10,), delay=200)
        for n in range(10):
            greenroom_side_of_d.send(n)
        greenroom_side_of_d.send_with_options(args=(10,), delay=200)
        wait_for(lambda: sorted(seen_by_greenroom) == list(range(11)), TIMEOUT_S)
        wait_for(lambda: sorted(seen_by_dramatiq) == list(range(11)), TIMEOUT_S)
        wait_for(lambda: client.hlen(f"dramatiq:{to_dramatiq}.msgs") == 0, TIMEOUT_S)
        wait_for(lambda: client.hlen(f"dramatiq:{to_greenroom}.msgs") == 0, TIMEOUT_S)
    finally:
        dramatiq_worker.stop()
        for worker in workers:
            worker.stop(timeout=10000)
        workers.clear()
        client.zrem("dramatiq:__heartbeats__", theirs.broker_id, ours.broker_id)
        theirs.close()
        theirs.client.connection_pool.disconnect()  # Dramatiq's close leaves the pool it made open


def test_url_with_password_and_db_and_a_ready_client(tmp_path: Path, brokers: list[RedisBroker], workers: Any) -> None:
    server = RedisServer(tmp_path, "--requirepass", "s3cret")
    try:
        server.start()
    except (FileNotFoundError, TimeoutError) as exc:
        service_unavailable("redis-server", exc)
    try:
        by_url = RedisBroker(url=f"redis://:s3cret@127.0.0.1:{server.port}/2")
        by_client = RedisBroker(client=redis.Redis(port=server.port, password="s3cret", db=2, decode_responses=True))
        by_params = RedisBroker(host="127.0.0.1", port=server.port, password="s3cret", db=2)
        brokers.extend([by_url, by_client, by_params])
        seen: list[str] = []

        @actor(broker=by_client)
        def record(source: str) -> None:
            seen.append(source)

        for broker, source in ((by_url, "url"), (by_client, "client"), (by_params, "params")):
            broker.enqueue(record.message(source))
        # Scripts are loaded again when Redis forgot them (NOSCRIPT), as after a restart.
        admin = redis.Redis(port=server.port, password="s3cret")
        admin.script_flush()
        admin.close()
        by_url.enqueue(record.message("after flush"))
        start_worker(workers, by_client)
        wait_for(lambda: sorted(seen) == ["after flush", "client", "params", "url"], TIMEOUT_S)
        check = redis.Redis(port=server.port, password="s3cret", db=2)
        wait_for(lambda: check.exists("default.msgs") == 0, TIMEOUT_S)
        check.close()
    finally:
        for worker in workers:
            worker.stop(timeout=10000)
        workers.clear()
        server.kill()


def test_old_dead_letters_are_purged_and_clean_shutdown_leaves_no_worker_keys(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker]
) -> None:
    broker = RedisBroker(url=REDIS_URL, namespace=namespace, dead_message_ttl=60000)
    brokers.append(broker)
    broker.declare_queue("default")
    now_ms = int(time.time() * 1000)
    client.zadd(f"{namespace}:default.XQ", {"old": now_ms - 120000, "new": now_ms})
    client.hset(f"{namespace}:default.XQ.msgs", mapping={"old": "x", "new": "y"})
    consumer = broker.consume("default")
    broker.beat()
    assert client.zrange(f"{namespace}:default.XQ", 0, -1) == [b"new"]
    assert client.hkeys(f"{namespace}:default.XQ.msgs") == [b"new"]
    consumer.close()
    broker.close()
    assert client.zscore(f"{namespace}:__heartbeats__", broker.broker_id) is None
    assert client.exists(f"{namespace}:__queues__.{broker.broker_id}") == 0


def test_dramatiqs_do_commands_and_consumer_class(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker]
) -> None:
    """SPEC §5.1: Dramatiq code calls broker.do_<command>(queue_name, *args) and broker.consumer_class(...)."""
    broker = RedisBroker(url=REDIS_URL, namespace=namespace)
    brokers.append(broker)
    payloads = {
        rid: Message("jobs", "work", (n,), {}, {"redis_message_id": rid}).encode() for n, rid in enumerate("abc")
    }
    assert [broker.do_enqueue("jobs", rid, payload) for rid, payload in payloads.items()] == [1, 1, 1]
    assert broker.do_enqueue("jobs", "a", payloads["a"]) == 0  # stored once
    assert broker.do_qsize("jobs") == 3
    assert broker.do_fetch("jobs", 2) == [payloads["a"], payloads["b"]]
    broker.do_ack("jobs", "a")
    broker.do_nack("jobs", "b")
    assert broker.do_qsize("jobs") == 1
    assert broker.dead_letter_count("jobs") == 1
    assert broker.do_fetch("jobs", 5) == [payloads["c"]]
    broker.do_requeue("jobs", "c")
    assert client.lrange(f"{namespace}:jobs", 0, -1) == [b"c"]
    consumer = broker.consumer_class(broker, "jobs", 1, 100)
    try:
        assert next(consumer).message_id == Message.decode(payloads["c"]).message_id
    finally:
        consumer.close()  # hands the unsettled message back
    broker.do_purge("jobs")
    assert broker.do_qsize("jobs") == 0
    assert broker.dead_letter_count("jobs") == 0
    with pytest.raises(AttributeError):
        broker.do_everything("jobs")
    with pytest.raises(AttributeError):
        _ = broker.no_such_attribute


def test_lua_max_stack_caps_the_fetch_size() -> None:
    code = "from greenroom.brokers.redis import MAX_FETCH; print(MAX_FETCH)"
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "greenroom_lua_max_stack": "40"},
        capture_output=True,
        timeout=60,
    )
    assert run.stdout.strip() == b"20", run.stderr


def a_silent_holder_and_a_judge(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker], heartbeat_timeout: int
) -> RedisBroker:
    """A broker holding message ``held-1`` whose last beat is 10 timeouts old; returns another broker."""
    holder, judge = (RedisBroker(url=REDIS_URL, namespace=namespace, heartbeat_timeout=heartbeat_timeout) for _ in "hj")
    brokers.extend([holder, judge])
    holder.do_enqueue("default", "held-1", Message("default", "work", (), {}, {}).encode())
    assert len(holder.do_fetch("default", 1)) == 1  # held by `holder`, which beats no more
    seconds, micros = client.time()
    silent_since = seconds * 1000 + micros // 1000 - 10 * heartbeat_timeout
    client.zadd(f"{namespace}:__heartbeats__", {holder.broker_id: silent_since})
    return judge


def test_a_beat_after_a_gap_recovers_nothing_and_the_next_one_does(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker]
) -> None:
    """After a Redis outage every worker's last beat is old: the first beat must not judge live ones dead."""
    judge = a_silent_holder_and_a_judge(client, namespace, brokers, 2000)
    judge._process.get().heartbeat._last_beat_s = time.monotonic() - 100  # the judge, too, could not beat for a while
    assert judge.beat() == 0
    assert client.llen(f"{namespace}:default") == 0  # still held
    judge._process.get().heartbeat._last_beat_s = (
        time.monotonic() - 1.2
    )  # a heartbeat thread slowed (GIL, gevent), not an outage
    assert judge.beat() == 1  # and the holder is still silent: it is dead
    assert client.lrange(f"{namespace}:default", 0, -1) == [b"held-1"]


def test_a_requeue_that_fails_releases_the_consumer_and_hands_back_later(private_redis: RedisServer) -> None:
    url = f"redis://127.0.0.1:{private_redis.port}/0"
    broker = RedisBroker(url=url, retry_timeout=300, heartbeat_timeout=2000)
    for n in range(3):
        broker.do_enqueue("default", f"m{n}", Message("default", "work", (n,), {}, {}).encode())
    consumer = broker.consume("default", prefetch=3, timeout=100)
    held = [next(consumer) for _ in range(3)]
    private_redis.kill()
    with pytest.raises(ConnectionClosed):
        consumer.requeue(held)
    consumer.close()
    assert (
        "default" not in broker._process.get().heartbeat.consumed
    )  # no longer a consumer, though its messages wait to go back
    private_redis.start()
    probe = redis.Redis(port=private_redis.port)
    try:
        wait_for(lambda: probe.llen("default") == 3, TIMEOUT_S)  # handed back by the heartbeat thread
        wait_for(lambda: broker._process.get().heartbeat.thread is None, TIMEOUT_S)  # which then stops
    finally:
        probe.close()
        broker.close()


def test_a_tiny_heartbeat_timeout_still_recovers_at_the_beat_cadence(
    client: redis.Redis, namespace: str, brokers: list[RedisBroker]
) -> None:
    judge = a_silent_holder_and_a_judge(client, namespace, brokers, 100)  # beats every 50 ms
    judge._process.get().heartbeat._last_beat_s = (
        time.monotonic() - 0.07
    )  # the previous beat, one interval and a little ago
    assert judge.beat() == 1
