"""greenroom vs Dramatiq on the same RabbitMQ, side by side (run by hand, not in CI).

    .venv/bin/python benchmarks/bench_rabbitmq.py [--url amqp://guest:guest@127.0.0.1:5672/%2F] [--messages 10000]
    .venv/bin/python benchmarks/bench_rabbitmq.py --drains 5   # only the two drain rates, 5 alternating rounds

Measures, for each library with its default middleware (no publisher confirms, as both default)
and a queue of its own with a unique name:

* enqueue rate of ``send`` calls, one after the other, in this process (median of ten alternating
  rounds of the two libraries, so that both see the same load from whatever else runs on the machine);
* batch enqueue rate (greenroom ``enqueue_many``, best of three; Dramatiq has no batch API) and the
  rate of ``group([...10,000 messages]).run()``;
* drain rate of no-op messages by one worker process with 8 threads (a subprocess, so its peak RSS
  is its own), timed from the first message started to the last one finished;
* p50/p99 latency from ``send`` to the start of the actor at 100 messages/s (2,000 messages by
  default: with fewer, the p99 of a shared 2-core machine is a handful of samples and mostly noise);
* peak RSS of the worker process.

Every queue the benchmark declares (``q``, ``q.DQ`` and ``q.XQ``) is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import pika
from _common import (
    STANDARD_ROWS,
    SYSTEMS,
    child,
    compare_drains,
    is_child,
    make_producer,
    measure_enqueue,
    measure_system,
    print_table,
)

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def make_broker(system: str, url: str, namespace: str) -> Any:
    """A RabbitMQ broker of ``system`` with its default middleware (the queue is ``namespace``)."""
    if system == "greenroom":
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        return RabbitmqBroker(url=url)
    from dramatiq.brokers.rabbitmq import RabbitmqBroker as DramatiqRabbitmqBroker

    return DramatiqRabbitmqBroker(url=url)


def new_queue_name(system: str) -> str:
    return f"bench-{system}-{uuid.uuid4().hex[:8]}"


def measure(system: str, url: str, count: int, latency_count: int) -> dict[str, float]:
    queue = new_queue_name(system)
    try:
        return measure_system(
            __file__, make_broker, system, url, queue, count, queue_name=queue, latency_count=latency_count
        )
    finally:
        delete_queues(url, [queue])


class RawPublisher:
    """The floor under any pika-based ``send``: a bare publish of a ready-made message.

    ``BlockingChannel.basic_publish`` of a persistent message with the same envelope, and no
    library code around it.
    """

    def __init__(self, url: str, queue: str) -> None:
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        self.channel.queue_declare(queue, durable=True)
        self.queue = queue
        envelope: dict[str, Any] = {"queue_name": queue, "actor_name": "noop", "args": [], "kwargs": {}, "options": {}}
        envelope |= {"message_id": str(uuid.uuid4()), "message_timestamp": int(time.time() * 1000)}
        self.body = json.dumps(envelope, separators=(",", ":")).encode()
        self.properties = pika.BasicProperties(delivery_mode=2)

    def send(self) -> None:
        self.channel.basic_publish("", self.queue, self.body, self.properties)


def measure_send(url: str, count: int) -> dict[str, float]:
    """``send`` rates of greenroom, Dramatiq and a bare pika publish, each on a queue of its own."""
    queues = {system: new_queue_name(system) for system in (*SYSTEMS, "pika")}
    raw = None
    try:
        producers = {
            system: make_producer(make_broker, system, url, queues[system], queues[system]) for system in SYSTEMS
        }
        raw = RawPublisher(url, queues["pika"])
        senders = {system: noop for system, (_, noop) in producers.items()} | {"pika": raw}
        for sender in senders.values():
            sender.send()  # warm up: connection, channel and queue declaration
        rates = measure_enqueue(senders, count)
        for broker, _ in producers.values():
            broker.close()
    finally:
        if raw is not None:
            raw.connection.close()
        delete_queues(url, list(queues.values()))
    return rates


def print_send_floor(rates: dict[str, float]) -> None:
    """Put the ``send`` rates next to the bare pika publish rate (what 2x Dramatiq would need)."""
    floor, theirs = rates["pika"], rates["dramatiq"]
    print(
        f"bare pika basic_publish: {floor:.0f} msg/s = {floor / theirs:.2f}x Dramatiq's send "
        f"(greenroom's send is {rates['greenroom'] / floor:.0%} of it)"
    )


def delete_queues(url: str, queues: list[str]) -> None:
    """Delete ``q``, ``q.DQ`` and ``q.XQ`` of every queue in ``queues`` (missing ones are fine)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        for queue in queues:
            for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
                # A fresh channel each time: deleting a missing queue is fine, but an error closes the channel.
                channel = connection.channel()
                channel.queue_delete(name)
                channel.close()
    finally:
        connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument(
        "--latency-messages", type=int, default=2000, help="messages sent at 100/s for the latency percentiles"
    )
    parser.add_argument("--only-enqueue", action="store_true", help="measure only the send rates")
    parser.add_argument(
        "--drains", type=int, metavar="ROUNDS", help="only the drain rates: ROUNDS alternating side-by-side rounds"
    )
    parser.add_argument(
        "--baseline", metavar="DIR", help="with --drains: also run the greenroom package in DIR (an old copy)"
    )
    args = parser.parse_args()
    if args.drains:
        compare_drains(
            __file__,
            make_broker,
            args.url,
            new_queue_name,
            args.messages,
            args.drains,
            baseline=args.baseline,
            namespace_is_queue=True,
            cleanup=lambda queue: delete_queues(args.url, [queue]),
        )
        return
    if args.only_enqueue:
        rates = measure_send(args.url, args.messages)
        print(f"send: greenroom {rates['greenroom']:.0f}/s, Dramatiq {rates['dramatiq']:.0f}/s")
        print_send_floor(rates)
        return
    ours = measure("greenroom", args.url, args.messages, args.latency_messages)
    theirs = measure("dramatiq", args.url, args.messages, args.latency_messages)
    rates = measure_send(args.url, args.messages)
    ours["enqueue"], theirs["enqueue"] = rates["greenroom"], rates["dramatiq"]
    print_table(ours, theirs, STANDARD_ROWS)
    print_send_floor(rates)


if __name__ == "__main__":
    if is_child():
        child(make_broker, sys.argv[2:], namespace_is_queue=True)
    else:
        main()
