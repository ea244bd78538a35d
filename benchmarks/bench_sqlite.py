"""Enqueue and drain rates of the SQLite broker for no-op messages (run by hand, not a test).

    .venv/bin/python benchmarks/bench_sqlite.py [--count 10000] [--threads 8] [--no-dramatiq]

Measures, in one process:

* greenroom ``SQLiteBroker`` (a fresh database in a temporary directory), with enqueues committed
  ``synchronous=FULL`` (the default: each send is fsync'ed) and, for comparison, ``NORMAL``;
* Dramatiq 2.x ``RedisBroker`` on 127.0.0.1:6379 under a unique namespace (Dramatiq has no SQLite
  broker, so this is the nearest "no extra service besides Redis" comparison). Only that namespace's
  keys are deleted afterwards; skipped when Redis or Dramatiq is missing.

The enqueue rate is ``count / time`` of ``actor.send()`` in a loop (one message per commit). The
drain rate is ``count / time`` from ``Worker.start()`` until ``broker.join(queue)`` returns.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import greenroom
from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings


def _measure(broker: Any, worker_class: Any, send: Callable[[], Any], count: int, threads: int) -> tuple[float, float]:
    """Enqueue and drain rates of ``count`` sends on ``broker`` (greenroom and Dramatiq share this API)."""
    started = time.perf_counter()
    for _ in range(count):
        send()
    enqueue_s = time.perf_counter() - started
    started = time.perf_counter()
    worker = worker_class(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    broker.join("bench")
    drain_s = time.perf_counter() - started
    worker.stop()
    return count / enqueue_s, count / drain_s


def bench_greenroom(count: int, threads: int, synchronous: str) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as directory:
        broker = SQLiteBroker(Path(directory) / "bench.db", settings=SQLiteSettings(synchronous=synchronous))
        broker.emit_after("process_boot")
        greenroom.set_broker(broker)

        @greenroom.actor(broker=broker, queue_name="bench")
        def noop() -> None:
            pass

        try:
            return _measure(broker, greenroom.Worker, noop.send, count, threads)
        finally:
            broker.close()


def bench_dramatiq_redis(count: int, threads: int) -> tuple[float, float] | None:
    try:
        import dramatiq
        import redis
        from dramatiq.brokers.redis import RedisBroker
    except ImportError as exc:
        print(f"dramatiq on redis: skipped ({exc})")
        return None
    namespace = f"greenroom-bench-{uuid.uuid4().hex[:8]}"
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        client.ping()
    except redis.RedisError as exc:
        print(f"dramatiq on redis: skipped ({exc})")
        return None
    broker = RedisBroker(host="127.0.0.1", port=6379, namespace=namespace)  # type: ignore[no-untyped-call]
    dramatiq.set_broker(broker)

    @dramatiq.actor(broker=broker, queue_name="bench")
    def noop() -> None:
        pass

    try:
        return _measure(broker, dramatiq.Worker, noop.send, count, threads)
    finally:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
        broker.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--no-dramatiq", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rows: list[tuple[str, tuple[float, float] | None]] = [
        ("greenroom SQLiteBroker, synchronous=FULL (default)", bench_greenroom(args.count, args.threads, "FULL")),
        ("greenroom SQLiteBroker, synchronous=NORMAL", bench_greenroom(args.count, args.threads, "NORMAL")),
    ]
    if not args.no_dramatiq:
        rows.append(("Dramatiq 2 RedisBroker (127.0.0.1:6379)", bench_dramatiq_redis(args.count, args.threads)))
    print(f"\n{args.count} no-op messages, {args.threads} worker threads, one process")
    print(f"{'broker':<52} {'enqueue msg/s':>14} {'drain msg/s':>12}")
    for name, result in rows:
        if result is not None:
            print(f"{name:<52} {result[0]:>14,.0f} {result[1]:>12,.0f}")


if __name__ == "__main__":
    main()
