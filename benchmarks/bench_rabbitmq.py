"""greenroom vs Dramatiq on the same RabbitMQ, side by side (run by hand, not in CI).

    .venv/bin/python benchmarks/bench_rabbitmq.py [--url amqp://guest:guest@127.0.0.1:5672/%2F] [--messages 10000]

Measures, for each library with its default middleware (no publisher confirms, as both default)
and a queue of its own with a unique name:

* enqueue rate of ``send`` calls, one after the other, in this process (alternating rounds of the two
  libraries, so that both see the same load from whatever else runs on the machine);
* batch enqueue rate (greenroom ``enqueue_many``, best of three; Dramatiq has no batch API) and the
  rate of ``group([...10,000 messages]).run()``;
* drain rate of no-op messages by one worker process with 8 threads (a subprocess, so its peak RSS
  is its own), timed from the first message started to the last one finished;
* p50/p99 latency from ``send`` to the start of the actor at 100 messages/s;
* peak RSS of the worker process.

Every queue the benchmark declares (``q``, ``q.DQ`` and ``q.XQ``) is deleted at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import pika
from _common import (
    LATENCY_COUNT,
    STANDARD_ROWS,
    SYSTEMS,
    best_rate,
    child,
    finish,
    is_child,
    make_producer,
    measure_enqueue,
    print_table,
    send_paced,
    spawn,
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


def measure(system: str, url: str, count: int) -> dict[str, float]:
    queue = new_queue_name(system)
    results: dict[str, float] = {}
    try:
        broker, noop = make_producer(make_broker, system, url, queue, queue)
        group_class: Any
        if system == "greenroom":
            from greenroom import group as group_class

            results["batch"] = best_rate(
                count, lambda: broker.enqueue_many(noop.message() for _ in range(count)), lambda: broker.flush(queue)
            )
        else:
            from dramatiq import group as group_class

            results["batch"] = float("nan")  # Dramatiq has no batch API
        results["group"] = best_rate(
            count,
            lambda: group_class([noop.message() for _ in range(count)], broker=broker).run(),
            lambda: broker.flush(queue),
        )

        # Drain exactly `count` messages: drop the extra ones sent above.
        broker.flush(queue)
        for _ in range(count):
            noop.send()
        drained = finish(spawn(__file__, system, url, queue, "drain", count))
        results["drain"] = drained["rate"]
        results["rss_drain"] = drained["rss_mb"]

        proc = spawn(__file__, system, url, queue, "latency", LATENCY_COUNT)
        time.sleep(0.5)
        send_paced(noop)
        latency = finish(proc)
        results["p50"], results["p99"] = latency["p50"], latency["p99"]
        results["rss"] = max(results["rss_drain"], latency["rss_mb"])
        broker.close()
    finally:
        delete_queues(url, [queue])
    return results


def measure_send(url: str, count: int) -> tuple[float, float]:
    """``send`` rates of greenroom and Dramatiq, each on a queue of its own."""
    queues = {system: new_queue_name(system) for system in SYSTEMS}
    try:
        producers = {system: make_producer(make_broker, system, url, queue, queue) for system, queue in queues.items()}
        for _, noop in producers.values():
            noop.send()  # warm up: connection, channel and queue declaration
        rates = measure_enqueue({system: noop for system, (_, noop) in producers.items()}, count)
        for broker, _ in producers.values():
            broker.close()
    finally:
        delete_queues(url, list(queues.values()))
    return rates["greenroom"], rates["dramatiq"]


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
    parser.add_argument("--only-enqueue", action="store_true", help="measure only the send rates")
    args = parser.parse_args()
    if args.only_enqueue:
        ours, theirs = measure_send(args.url, args.messages)
        print(f"send: greenroom {ours:.0f}/s, Dramatiq {theirs:.0f}/s, ratio {ours / theirs:.2f}x")
        return
    ours = measure("greenroom", args.url, args.messages)
    theirs = measure("dramatiq", args.url, args.messages)
    ours["enqueue"], theirs["enqueue"] = measure_send(args.url, args.messages)
    print_table(ours, theirs, STANDARD_ROWS)


if __name__ == "__main__":
    if is_child():
        child(make_broker, sys.argv[2:], namespace_is_queue=True)
    else:
        main()
