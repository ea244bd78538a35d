"""RabbitMQ broker behaviour beyond the contract suite: wire format, faults, priorities and Dramatiq interop.

Every test uses queues with unique names and deletes them afterwards, except the two that must use
``default`` (the seed's raw publish, and the poison body landing in ``default.XQ``): those flush it,
and hold a file lock shared with the contract suite (which uses ``default`` too), so that they never
run at the same time under pytest-xdist.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

import greenroom
from greenroom import Actor, ConnectionClosed, Message, QueueJoinTimeout, Worker
from greenroom.brokers._url import broker_from_url
from greenroom.brokers.rabbitmq import RabbitmqBroker
from greenroom.common import current_millis
from greenroom.testing import wait_for
from tests._rabbitmq_vhost import HOST, PORT, URL, amqp_url
from tests.conftest import service_unavailable

#: Every test runs in a virtual host of this test process's own.
pytestmark = pytest.mark.usefixtures("rabbitmq_vhost")
TIMEOUT_S = 60.0
#: How long the pause test pauses: more than three heartbeats of 1 s.
PAUSE_S = 3.5
ROOT = Path(__file__).resolve().parents[2]

#: The arguments SPEC §5.2 (and Dramatiq) declare the queues with.
QUEUE_ARGS = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "{q}.XQ"}
XQ_ARGS = {"x-message-ttl": 604800000}


def raw_channel() -> tuple[Any, Any]:
    """A plain pika connection and channel, as a client with no greenroom code would have."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    return connection, connection.channel()


def raw_publish(queue_name: str, body: bytes, priority: int | None = None) -> None:
    connection, channel = raw_channel()
    try:
        properties = pika.BasicProperties(delivery_mode=2, priority=priority)
        channel.basic_publish(exchange="", routing_key=queue_name, body=body, properties=properties)
    finally:
        connection.close()


def delete_queues(*queue_names: str) -> None:
    connection, channel = raw_channel()
    try:
        for name in queue_names:
            for suffix in ("", ".DQ", ".XQ"):
                channel.queue_delete(name + suffix)
    finally:
        connection.close()


@contextmanager
def default_queue_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Serialise the tests that use RabbitMQ's ``default`` queue across pytest-xdist workers."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # shared by every worker of this run
    with open(root / "rabbitmq-default.lock", "w") as lock_file:

        def acquire() -> bool:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        wait_for(acquire, timeout_s=300, interval_s=0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


@pytest.fixture
def queue_name() -> Iterator[str]:
    """A unique queue name, whose three queues are deleted after the test."""
    name = f"gr_test_{uuid.uuid4().hex[:12]}"
    yield name
    delete_queues(name)


@pytest.fixture
def make_broker() -> Iterator[Callable[..., RabbitmqBroker]]:
    """Build brokers (checking RabbitMQ is reachable) and close them after the test."""
    brokers: list[RabbitmqBroker] = []

    def make(**kwargs: Any) -> RabbitmqBroker:
        kwargs.setdefault("url", URL)
        broker = RabbitmqBroker(**kwargs)
        broker.emit_after("process_boot")
        brokers.append(broker)
        return broker

    try:
        raw_channel()[0].close()
    except pika.exceptions.AMQPError as exc:
        service_unavailable("RabbitMQ", exc)
    yield make
    for broker in brokers:
        broker.close()


@pytest.fixture
def make_worker() -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def make(broker: RabbitmqBroker, **kwargs: Any) -> Worker:
        kwargs.setdefault("worker_timeout", 100)
        kwargs.setdefault("worker_threads", 4)
        worker = Worker(broker, **kwargs)
        worker.restart_delay_ms = 100  # reconnect quickly in fault tests
        worker.start()
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop(timeout=20000)


@pytest.fixture
def default_queue(
    make_broker: Callable[..., RabbitmqBroker], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RabbitmqBroker]:
    """A broker whose ``default`` queues are empty before and after the test, used by this test only."""
    with default_queue_lock(tmp_path_factory):
        broker = make_broker()
        broker.flush("default")
        yield broker
        broker.flush("default")


class TcpProxy:
    """A TCP proxy in front of RabbitMQ that can cut every connection going through it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.drops = 0
        self.closed = False
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # the listener was closed
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.closed:
                    client.close()
                    upstream.close()
                    return
                self.sockets += [client, upstream]
            self._start(self._pump, client, upstream)
            self._start(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        # One side is gone: cut the other side too, as a failing network path would.
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_all(self) -> None:
        with self.lock:
            sockets, self.sockets = self.sockets, []
            self.drops += 1
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close() alone does not
        except OSError:
            pass
        self.listener.close()
        self.drop_all()
        for thread in self.threads:
            thread.join(5)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    proxy = TcpProxy((HOST, PORT))
    try:
        yield proxy
    finally:
        proxy.close()


# -- construction --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def counting_actor(broker: RabbitmqBroker, queue_name: str) -> tuple[Actor[[int], None], Counter[int]]:
    """An actor ``record`` on ``queue_name`` and how many times it ran with each argument."""
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def record(n: int) -> None:
        with lock:
            seen[n] += 1

    return record, seen


def test_constructor_opens_no_connection() -> None:
    broker = RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")

    @greenroom.actor(broker=broker)
    def noop() -> None:
        pass

    assert broker.get_declared_queues() == {"default"}
    assert broker.queues_pending == {"default"}


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_priority": 0}, ValueError),
        ({"max_priority": 256}, ValueError),
        ({"url": URL, "host": "localhost"}, RuntimeError),
        ({"url": URL, "parameters": [{"host": "localhost"}]}, RuntimeError),
        ({"parameters": [{"host": "localhost"}], "port": 5672}, RuntimeError),
    ],
)
def test_invalid_settings_are_rejected(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        RabbitmqBroker(**kwargs)


def long_queue_name(length: int) -> str:
    prefix = f"gr_test_{uuid.uuid4().hex[:12]}_"
    return prefix + "x" * (length - len(prefix))


def server_has_queue(queue_name: str) -> bool:
    connection, channel = raw_channel()
    try:
        channel.queue_declare(queue_name, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
        return False
    finally:
        if connection.is_open:
            connection.close()
    return True


@pytest.mark.parametrize("length", [253, 255, 256])
def test_queue_names_too_long_for_their_delay_and_dead_letter_queues_are_refused(
    make_broker: Callable[..., RabbitmqBroker], length: int
) -> None:
    # AMQP queue names are at most 255 bytes, and "q.DQ"/"q.XQ" are three bytes longer than "q".
    broker = make_broker()
    name = long_queue_name(length)
    with pytest.raises(ValueError, match=r"\.DQ.*255 bytes"):

        @greenroom.actor(broker=broker, queue_name=name)
        def noop() -> None:
            pass

    with pytest.raises(ValueError, match="255 bytes"):
        broker.declare_queue(name, ensure=True)
    with pytest.raises(ValueError, match="255 bytes"):
        broker.enqueue(Message(queue_name=name, actor_name="noop", args=(), kwargs={}, options={}))
    assert name not in broker.get_declared_queues()
    assert name not in broker.queues_pending
    assert "noop" not in broker.actors
    if length <= 255:
        assert not server_has_queue(name)  # nothing was declared on the server


def test_queue_name_of_252_characters_is_the_longest_accepted(
    make_broker: Callable[..., RabbitmqBroker],
) -> None:
    broker = make_broker()
    name = long_queue_name(252)
    try:
        broker.declare_queue(name, ensure=True)
        broker.enqueue(Message(queue_name=name, actor_name="noop", args=(), kwargs={}, options={}), delay=60000)
        assert server_has_queue(name)
        assert server_has_queue(name + ".XQ")
    finally:
        delete_queues(name)


def test_a_unique_key_is_refused_rather_than_ignored(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str
) -> None:
    broker = make_broker()

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def job() -> None:
        pass

    with pytest.raises(ValueError, match="does not keep unique jobs"):
        job.send_with_options(unique_key="report")
    job.send_with_options(unique_key=None)  # "none" stays allowed
    wait_for(lambda: broker.get_queue_counts(queue_name).ready == 1)  # the server's count lags a little


def test_connection_settings_forms() -> None:
    several = RabbitmqBroker(url="amqp://a:b@host1:5673/vh; amqps://c:d@host2/%2F")
    assert [(p.host, p.port, p.virtual_host) for p in several.parameters] == [
        ("host1", 5673, "vh"),
        ("host2", 5671, "/"),
    ]
    assert several.parameters[0].ssl_options is None
    assert several.parameters[1].ssl_options is not None
    listed = RabbitmqBroker(url=["amqp://host1", "amqp://host2"])
    assert [p.host for p in listed.parameters] == ["host1", "host2"]
    dicts = RabbitmqBroker(parameters=[{"host": "h1", "port": 1}, {"host": "h2"}])
    assert [(p.host, p.port) for p in dicts.parameters] == [("h1", 1), ("h2", 5672)]
    keywords = RabbitmqBroker(host="h3", heartbeat=5)
    assert (keywords.parameters[0].host, keywords.parameters[0].heartbeat) == ("h3", 5)
    from_env = broker_from_url("amqps://u:p@h4:5000/%2F")  # greenroom_broker_url; connects lazily
    assert isinstance(from_env, RabbitmqBroker)
    assert (from_env.parameters[0].host, from_env.parameters[0].port) == ("h4", 5000)


def test_url_failover_to_the_next_server(make_broker: Callable[..., RabbitmqBroker], queue_name: str) -> None:
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F"
    broker = make_broker(url=f"{dead};{URL}", confirm_delivery=True)  # confirmed: counted right away
    broker.enqueue(Message(queue_name=queue_name, actor_name="a", args=(), kwargs={}, options={}))
    assert broker.get_queue_message_counts(queue_name) == (1, 0, 0)


def test_enqueue_fails_with_connection_closed_when_unreachable() -> None:
    broker = RabbitmqBroker(url=f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    with pytest.raises(ConnectionClosed):
        broker.enqueue(Message(queue_name="nowhere", actor_name="a", args=(), kwargs={}, options={}))


# -- wire format -----------------------------------------------------------------------------------


def test_queues_and_messages_match_the_wire_format(make_broker: Callable[..., RabbitmqBroker], queue_name: str) -> None:
    broker = make_broker(max_priority=7, confirm_delivery=True)  # confirmed: in the queue on return
    sent = broker.enqueue(Message(queue_name=queue_name, actor_name="add", args=(1, 2), kwargs={}, options={}))
    broker.enqueue(sent, delay=60000)

    connection, channel = raw_channel()
    try:
        # Redeclaring with exactly the documented arguments succeeds; anything else is refused.
        args = {k: v.format(q=queue_name) for k, v in QUEUE_ARGS.items()} | {"x-max-priority": 7}
        channel.queue_declare(queue_name, durable=True, arguments=args)
        channel.queue_declare(queue_name + ".DQ", durable=True, arguments=args)
        channel.queue_declare(queue_name + ".XQ", durable=True, arguments=XQ_ARGS)
        _, properties, body = channel.basic_get(queue_name, auto_ack=True)
        assert properties.delivery_mode == 2
        assert body == json.dumps(sent.asdict(), separators=(",", ":")).encode()
        _, _, delayed_body = channel.basic_get(queue_name + ".DQ", auto_ack=True)
        delayed = json.loads(delayed_body)
        assert delayed["queue_name"] == queue_name + ".DQ"
        assert delayed["message_id"] == sent.message_id
        assert delayed["options"]["eta"] >= sent.message_timestamp + 60000
        with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="PRECONDITION_FAILED"):
            channel.queue_declare(queue_name, durable=True, arguments={**args, "x-max-priority": 8})
    finally:
        connection.close()


def test_raw_publish_of_the_seed_json_runs_the_actor(
    default_queue: RabbitmqBroker, make_worker: Callable[..., Worker]
) -> None:
    seen: list[int] = []

    @greenroom.actor(broker=default_queue)
    def add(x: int, y: int) -> None:
        seen.append(x + y)

    make_worker(default_queue)
    wait_for(lambda: "default" not in default_queue.queues_pending, TIMEOUT_S)  # the worker declared it
    seed = (
        b'{"queue_name": "default", "actor_name": "add", "args": [1, 2], "kwargs": {}, "options": {},'
        b' "message_id": "unique-id", "message_timestamp": 0}'
    )
    raw_publish("default", seed)
    wait_for(lambda: seen == [3], TIMEOUT_S)


def test_poison_body_among_good_ones_goes_to_the_xq(
    default_queue: RabbitmqBroker, make_worker: Callable[..., Worker]
) -> None:
    seen: Counter[int] = Counter()

    @greenroom.actor(broker=default_queue)
    def record(n: int) -> None:
        seen[n] += 1

    for n in range(100):
        if n == 50:
            default_queue.declare_queue("default", ensure=True)
            raw_publish("default", b'{"queue_name": "default", "actor_name": "record", "options": null}')
        record.send(n)
    make_worker(default_queue)
    wait_for(lambda: len(seen) == 100, TIMEOUT_S)
    default_queue.join("default", timeout=int(TIMEOUT_S * 1000))
    assert set(seen.values()) == {1}
    assert default_queue.get_queue_message_counts("default") == (0, 0, 1)


# -- consumer ----------------------------------------------------------------------------------------


def next_message(consumer: Any) -> Any:
    for _ in range(100):
        message = next(consumer)
        if message is not None:
            return message
    raise AssertionError("no message delivered")


def test_requeue_returns_messages_and_stale_tags_are_ignored(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str
) -> None:
    broker = make_broker()
    broker.enqueue(Message(queue_name=queue_name, actor_name="a", args=(1,), kwargs={}, options={}))
    first = broker.consume(queue_name, prefetch=1, timeout=200)
    message = next_message(first)
    assert message.args == (1,)
    assert message.redelivered is False
    first.requeue([message])
    again = next_message(first)
    assert again.message_id == message.message_id
    assert again.redelivered is True

    second = broker.consume(queue_name, prefetch=1, timeout=200)
    second.ack(again)  # delivered by the other consumer: ignored, the channel stays usable
    first.close()  # returns the unacknowledged delivery
    third = next_message(second)
    assert third.message_id == message.message_id
    acker = threading.Thread(target=second.ack, args=(third,))  # acks come from worker threads
    acker.start()
    acker.join(TIMEOUT_S)
    assert next(second) is None
    assert broker._unacked_count(queue_name) == 0
    second.close()
    assert broker.get_queue_message_counts(queue_name) == (0, 0, 0)


def test_batched_acks_settle_exactly_the_acked_deliveries(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str
) -> None:
    # Acks settled together become one multiple=True ack up to the first unsettled tag: the ones
    # left unsettled in between must stay outstanding, and nacks still go to the XQ.
    broker = make_broker()
    for n in range(6):
        broker.enqueue(Message(queue_name=queue_name, actor_name="a", args=(n,), kwargs={}, options={}))
    consumer = broker.consume(queue_name, prefetch=6, timeout=200)
    messages = [next_message(consumer) for _ in range(6)]
    assert [m.args[0] for m in messages] == list(range(6))
    for n in (4, 0, 3, 1):
        consumer.ack(messages[n])  # from the consumer's own thread: queued until its next call
    consumer.nack(messages[5])
    assert next(consumer) is None  # sends them all at once; a bad ack would close the channel
    assert next(consumer) is None
    assert broker._unacked_count(queue_name) == 1
    consumer.close()  # returns message 2
    assert broker.get_queue_message_counts(queue_name) == (1, 0, 1)
    again = broker.consume(queue_name, prefetch=1, timeout=200)
    redelivered = next_message(again)
    assert (redelivered.args, redelivered.redelivered) == ((2,), True)
    again.ack(redelivered)
    assert next(again) is None
    again.close()


def test_join_counts_unacked_messages_and_times_out(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str
) -> None:
    broker = make_broker()
    broker.enqueue(Message(queue_name=queue_name, actor_name="a", args=(), kwargs={}, options={}))
    consumer = broker.consume(queue_name, prefetch=1, timeout=200)
    message = next_message(consumer)
    assert broker.get_queue_message_counts(queue_name) == (0, 0, 0)
    with pytest.raises(QueueJoinTimeout):
        broker.join(queue_name, min_successes=2, idle_time=10, timeout=300)
    consumer.ack(message)
    assert next(consumer) is None  # the consumer's thread sends the ack
    broker.join(queue_name, min_successes=2, idle_time=10, timeout=5000)
    consumer.close()


def test_consumer_raises_connection_closed_when_its_connection_drops(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str, proxy: TcpProxy
) -> None:
    broker = make_broker(url=amqp_url(proxy.port))
    consumer = broker.consume(queue_name, timeout=100)
    assert next(consumer) is None
    proxy.drop_all()

    def drain() -> None:
        for _ in range(50):
            next(consumer)

    with pytest.raises(ConnectionClosed):
        drain()
    consumer.close()


def test_deleted_queue_is_declared_again(
    make_broker: Callable[..., RabbitmqBroker], make_worker: Callable[..., Worker], queue_name: str
) -> None:
    broker = make_broker()
    producer = make_broker(confirm_delivery=True)
    seen: list[int] = []

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def record(n: int) -> None:
        seen.append(n)

    producer.declare_actor(record)
    record.send(1)
    make_worker(broker)
    wait_for(lambda: seen == [1], TIMEOUT_S)
    delete_queues(queue_name)
    # The confirmed publish comes back unroutable, so the producer declares the queue again; the
    # worker's consumer was cancelled by RabbitMQ and reconnects to the new queue.
    producer.enqueue(record.message(2))
    wait_for(lambda: seen == [1, 2], TIMEOUT_S)


# -- faults ---------------------------------------------------------------------------------------------

WORKER_SCRIPT = """
import sys, threading, time
import greenroom
from greenroom.brokers._url import broker_from_url
from greenroom.brokers.rabbitmq import RabbitmqBroker
from greenroom.middleware import Middleware

url, queue_name, log_path = sys.argv[1:4]

def log(line):
    with open(log_path, "a") as f:
        f.write(line + "\\n")

class RecordDelivery(Middleware):
    def before_process_message(self, broker, message):
        log(f"start redelivered={message.redelivered}")

broker = RabbitmqBroker(url=url)
broker.add_middleware(RecordDelivery())
broker.emit_after("process_boot")

@greenroom.actor(broker=broker, queue_name=queue_name)
def slow():
    with open(log_path) as f:
        if f.read().count("start") == 1:
            time.sleep(300)  # the first worker is killed here
    log("done")

worker = greenroom.Worker(broker, worker_threads=1, worker_timeout=100)
worker.start()
threading.Event().wait(120)  # bounded lifetime even if the test forgets this process
worker.stop()
"""


def test_message_of_a_killed_worker_is_redelivered(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str, tmp_path: Path
) -> None:
    script, log_path = tmp_path / "worker.py", tmp_path / "log.txt"
    script.write_text(textwrap.dedent(WORKER_SCRIPT))
    log_path.write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    broker = make_broker()
    broker.enqueue(Message(queue_name=queue_name, actor_name="slow", args=(), kwargs={}, options={}))

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, str(script), URL, queue_name, str(log_path)], env=env)

    processes = [spawn()]
    try:
        wait_for(lambda: "start" in log_path.read_text(), TIMEOUT_S)
        processes[0].send_signal(signal.SIGKILL)
        processes[0].wait(TIMEOUT_S)
        processes.append(spawn())
        wait_for(lambda: "done" in log_path.read_text(), TIMEOUT_S)
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
    assert log_path.read_text().splitlines() == ["start redelivered=False", "start redelivered=True", "done"]


def test_worker_reconnects_when_connections_drop(
    make_broker: Callable[..., RabbitmqBroker],
    make_worker: Callable[..., Worker],
    queue_name: str,
    proxy: TcpProxy,
) -> None:
    total = 2000
    producer = make_broker()
    broker = make_broker(url=amqp_url(proxy.port))
    record, seen = counting_actor(broker, queue_name)
    producer.declare_actor(record)
    for n in range(total):
        producer.enqueue(record.message(n))
    make_worker(broker, worker_threads=8)
    for threshold in (total // 4, total // 2):
        wait_for(lambda threshold=threshold: len(seen) >= threshold, TIMEOUT_S)  # type: ignore[misc]
        proxy.drop_all()
    wait_for(lambda: len(seen) == total, TIMEOUT_S)
    producer.join(queue_name, timeout=int(TIMEOUT_S * 1000))
    duplicates = sum(seen.values()) - total
    print(f"\n{total} messages processed through {proxy.drops} dropped connections, {duplicates} duplicates")
    assert set(seen) == set(range(total))


# -- priorities -------------------------------------------------------------------------------------------


def test_broker_priority_runs_later_higher_priority_messages_first(
    make_broker: Callable[..., RabbitmqBroker], make_worker: Callable[..., Worker], queue_name: str
) -> None:
    broker = make_broker(max_priority=10)
    order: list[str] = []

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def record(label: str) -> None:
        order.append(label)

    for _ in range(5):
        record.send("low")
    for _ in range(5):
        record.send_with_options(args=("high",), broker_priority=9)
    make_worker(broker, worker_threads=1, queue_prefetch=1)
    wait_for(lambda: len(order) == 10, TIMEOUT_S)
    assert order == ["high"] * 5 + ["low"] * 5


def test_broker_priority_from_0_to_255_is_sent(make_broker: Callable[..., RabbitmqBroker], queue_name: str) -> None:
    broker = make_broker(max_priority=10, confirm_delivery=True)  # confirmed: counted right away

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def noop() -> None:
        pass

    noop.send()
    noop.send_with_options(broker_priority=0)
    noop.send_with_options(broker_priority=255, delay=60000)  # RabbitMQ caps it at max_priority
    assert broker.get_queue_message_counts(queue_name) == (2, 1, 0)


@pytest.mark.parametrize("priority", [256, 300, -1, "5", 2.5, True])
def test_invalid_broker_priority_is_refused_at_send(
    make_broker: Callable[..., RabbitmqBroker], queue_name: str, priority: Any
) -> None:
    broker = make_broker(max_priority=10, confirm_delivery=True)  # confirmed: counted right away

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def noop() -> None:
        pass

    with pytest.raises(ValueError, match=r"broker_priority must be an integer from 0 to 255"):
        noop.send_with_options(broker_priority=priority)
    with pytest.raises(ValueError, match=r"broker_priority must be an integer from 0 to 255"):
        noop.send_with_options(broker_priority=priority, delay=60000)
    assert broker.get_queue_message_counts(queue_name) == (0, 0, 0)


def test_foreign_message_with_an_invalid_broker_priority_is_dead_lettered_alone(
    make_broker: Callable[..., RabbitmqBroker],
    make_worker: Callable[..., Worker],
    queue_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A producer that bypasses greenroom's validation: the worker cannot move the message out of the
    # delay queue (RabbitMQ priorities are one byte), and must dead-letter it rather than reconnect
    # and receive it again, forever, ahead of everything behind it.
    broker = make_broker()
    record, seen = counting_actor(broker, queue_name)
    broker.declare_queue(queue_name, ensure=True)
    poison_ids = []
    for target in (queue_name, f"{queue_name}.DQ"):
        options = {"eta": current_millis(), "broker_priority": 300}
        poison = Message(queue_name=target, actor_name="record", args=(-1,), kwargs={}, options=options)
        raw_publish(target, poison.encode())
        poison_ids.append(poison.message_id)
    for n in range(30):
        record.send(n)
    with caplog.at_level(logging.ERROR):
        make_worker(broker)
        wait_for(lambda: len(seen) == 30, TIMEOUT_S)
        wait_for(lambda: broker.get_queue_message_counts(queue_name)[2] == 2, TIMEOUT_S)
        broker.join(queue_name, timeout=int(TIMEOUT_S * 1000))
    assert seen == Counter(range(30))  # each good message ran once, and the poisons never
    connection, channel = raw_channel()
    try:
        dead = [channel.basic_get(f"{queue_name}.XQ", auto_ack=True) for _ in poison_ids]
    finally:
        connection.close()
    assert sorted(json.loads(body)["message_id"] for _, _, body in dead) == sorted(poison_ids)
    # The consumer publishes the dead letter itself, with the reason in a header (and logs it).
    assert all("broker_priority" in properties.headers["greenroom-reason"] for _, properties, _ in dead)
    for message_id in poison_ids:
        assert any(
            message_id in entry.getMessage() and "broker_priority" in entry.getMessage() for entry in caplog.records
        ), message_id


def test_paused_worker_keeps_its_connections_and_runs_prefetched_messages_once(
    make_broker: Callable[..., RabbitmqBroker], make_worker: Callable[..., Worker], queue_name: str
) -> None:
    # With a 1 s heartbeat RabbitMQ closes a connection that stays silent for about 2 s. A paused
    # worker must keep answering, or the messages it prefetched go back to the queue and, as the
    # worker also holds them in memory, run twice after resume().
    broker = make_broker(url=f"{URL}?heartbeat=1")
    seen: Counter[int] = Counter()
    lock = threading.Lock()
    first_started = threading.Event()
    release_first = threading.Event()

    @greenroom.actor(broker=broker, queue_name=queue_name)
    def record(n: int) -> None:
        with lock:
            seen[n] += 1
        if n == 0:
            first_started.set()
            release_first.wait(TIMEOUT_S)

    for n in range(10):
        record.send(n)
    worker = make_worker(broker, worker_threads=1, queue_prefetch=10)
    pausing = threading.Thread(target=worker.pause, daemon=True)
    try:
        # Message 0 runs; the other nine wait in the worker's memory, unacknowledged.
        wait_for(lambda: first_started.is_set() and worker.work_queue.qsize() == 9, TIMEOUT_S)
        pausing.start()
        wait_for(lambda: all(c.paused_event.is_set() for c in list(worker.consumers.values())), TIMEOUT_S)
    finally:
        release_first.set()  # message 0 finishes, and its acknowledgement is sent while the worker is paused
    pausing.join(TIMEOUT_S)
    assert not pausing.is_alive()
    time.sleep(PAUSE_S)  # more than three heartbeats without the consumer iterating
    worker.resume()
    wait_for(lambda: len(seen) == 10, TIMEOUT_S)
    broker.join(queue_name, timeout=int(TIMEOUT_S * 1000))
    worker.join(TIMEOUT_S)
    assert seen == Counter(range(10))


# -- Dramatiq interoperability ----------------------------------------------------------------------------


@pytest.fixture
def dramatiq_broker() -> Iterator[Callable[..., Any]]:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker as DramatiqRabbitmqBroker

    brokers: list[Any] = []

    def make(**kwargs: Any) -> Any:
        broker = DramatiqRabbitmqBroker(url=URL, **kwargs)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


def test_dramatiq_producer_greenroom_worker(
    make_broker: Callable[..., RabbitmqBroker],
    make_worker: Callable[..., Worker],
    dramatiq_broker: Callable[..., Any],
    queue_name: str,
) -> None:
    import dramatiq

    seen: list[Any] = []
    broker = make_broker()

    @greenroom.actor(broker=broker, queue_name=queue_name, actor_name="interop")
    def interop(x: int, name: str) -> None:
        seen.append((x, name))

    @dramatiq.actor(broker=dramatiq_broker(), queue_name=queue_name, actor_name="interop")
    def dramatiq_interop(x: int, name: str) -> None:
        raise AssertionError("runs in greenroom")

    dramatiq_interop.send(1, name="now")
    dramatiq_interop.send_with_options(args=(2,), kwargs={"name": "delayed"}, delay=200)
    make_worker(broker)
    wait_for(lambda: len(seen) == 2, TIMEOUT_S)
    assert sorted(seen) == [(1, "now"), (2, "delayed")]


def test_greenroom_producer_dramatiq_worker(
    make_broker: Callable[..., RabbitmqBroker], dramatiq_broker: Callable[..., Any], queue_name: str
) -> None:
    import dramatiq

    seen: list[Any] = []
    broker = make_broker(max_priority=10)
    other = dramatiq_broker(max_priority=10)

    @greenroom.actor(broker=broker, queue_name=queue_name, actor_name="interop")
    def interop(x: int, name: str) -> None:
        raise AssertionError("runs in Dramatiq")

    @dramatiq.actor(broker=other, queue_name=queue_name, actor_name="interop")
    def dramatiq_interop(x: int, name: str) -> None:
        seen.append((x, name))

    interop.send(1, name="now")
    interop.send_with_options(args=(2,), kwargs={"name": "delayed"}, delay=200, broker_priority=5)
    worker = dramatiq.Worker(other, worker_timeout=100, worker_threads=2)
    worker.start()
    try:
        wait_for(lambda: len(seen) == 2, TIMEOUT_S)
    finally:
        worker.stop()
    assert sorted(seen) == [(1, "now"), (2, "delayed")]
