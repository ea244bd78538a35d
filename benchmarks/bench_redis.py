"""greenroom vs Dramatiq on the same Redis, side by side (run by hand, not in CI).

    .venv/bin/python benchmarks/bench_redis.py [--url redis://127.0.0.1:6379/0] [--messages 10000] [--track]
    .venv/bin/python benchmarks/bench_redis.py --drains 5   # only the two drain rates, 5 alternating rounds

Measures, for each library with its default middleware and a unique namespace:

* enqueue rate of ``send`` calls, one after the other, in this process (median of ten alternating
  rounds of the two libraries, so that both see the same load from whatever else runs on the machine);
* batch enqueue rate (greenroom ``enqueue_many``, best of three; Dramatiq has no batch API) and the
  rate of ``group([...10,000 messages]).run()``;
* drain rate of no-op messages by one worker process with 8 threads (a subprocess, so its peak RSS
  is its own), timed from the first message started to the last one finished;
* p50/p99 latency from ``send`` to the start of the actor at 100 messages/s;
* peak RSS of the worker process.

Every key the benchmark writes is deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from typing import Any

import redis
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

#: Set to "1" (by ``--track``) to measure greenroom with job tracking on.
TRACK_ENV = "GREENROOM_BENCH_TRACK"


def make_broker(system: str, url: str, namespace: str) -> Any:
    """A Redis broker of ``system`` with its default middleware."""
    if system == "greenroom":
        from greenroom.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace=namespace)
        if os.environ.get(TRACK_ENV) == "1":
            from greenroom.jobs import JobTracking

            broker.add_middleware(JobTracking())
        return broker
    from dramatiq.brokers.redis import RedisBroker as DramatiqRedisBroker

    return DramatiqRedisBroker(url=url, namespace=namespace)


def measure(system: str, url: str, count: int) -> dict[str, float]:
    namespace = f"bench-{system}-{uuid.uuid4().hex[:8]}"
    try:
        return measure_system(__file__, make_broker, system, url, namespace, count)
    finally:
        delete_namespace(url, namespace)


def measure_send(url: str, count: int) -> tuple[float, float]:
    """``send`` rates of greenroom and Dramatiq, each on a namespace of its own."""
    namespaces = {system: f"bench-{system}-{uuid.uuid4().hex[:8]}" for system in SYSTEMS}
    try:
        producers = {system: make_producer(make_broker, system, url, namespaces[system])[1] for system in SYSTEMS}
        for noop in producers.values():
            noop.send()  # warm up: connection and script load
        rates = measure_enqueue(producers, count)
    finally:
        for namespace in namespaces.values():
            delete_namespace(url, namespace)
    return rates["greenroom"], rates["dramatiq"]


def delete_namespace(url: str, namespace: str) -> None:
    """Delete every key the benchmark wrote under ``namespace``."""
    client = redis.Redis.from_url(url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--track", action="store_true", help="greenroom with JobTracking (job status) installed")
    parser.add_argument(
        "--drains", type=int, metavar="ROUNDS", help="only the drain rates: ROUNDS alternating side-by-side rounds"
    )
    parser.add_argument(
        "--baseline", metavar="DIR", help="with --drains: also run the greenroom package in DIR (an old copy)"
    )
    args = parser.parse_args()
    if args.track:
        os.environ[TRACK_ENV] = "1"  # read by make_broker here and in the worker subprocesses
    if args.drains:
        compare_drains(
            __file__,
            make_broker,
            args.url,
            lambda system: f"bench-{system}-{uuid.uuid4().hex[:8]}",
            args.messages,
            args.drains,
            baseline=args.baseline,
            cleanup=lambda namespace: delete_namespace(args.url, namespace),
        )
        return
    ours = measure("greenroom", args.url, args.messages)
    theirs = measure("dramatiq", args.url, args.messages)
    ours["enqueue"], theirs["enqueue"] = measure_send(args.url, args.messages)
    print_table(ours, theirs, STANDARD_ROWS)


if __name__ == "__main__":
    if is_child():
        child(make_broker, sys.argv[2:])
    else:
        main()
