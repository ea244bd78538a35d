"""How long the dashboard's overview takes with many queues and messages (run by hand, not in CI).

    .venv/bin/python benchmarks/bench_dashboard.py [--broker sqlite|redis] [--queues 100] [--messages 1000000]

Fills ``--queues`` queues with ``--messages`` messages in all (a tenth of them delayed, a
hundredth dead-lettered), with job tracking on the broker, then renders the overview page
(``GET /``, through the ASGI app in this process) 20 times and prints the median and the slowest
time. The issue's target: under 200 ms for 100 queues and 1,000,000 messages. The SQLite file
lives in a temporary directory; the Redis keys are in a namespace of their own, deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from typing import Any

import httpx

from greenroom.broker import Broker
from greenroom.dashboard import create_app
from greenroom.jobs import JobTracking
from greenroom.message import Message

BATCH = 10_000


def _broker(kind: str, workdir: str) -> tuple[Broker, Any]:
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker, SQLiteSettings

        return SQLiteBroker(f"{workdir}/bench.db", settings=SQLiteSettings(synchronous="NORMAL")), None
    import redis

    from greenroom.brokers.redis import RedisBroker

    namespace = f"gr-bench-dash-{uuid.uuid4().hex[:8]}"
    client = redis.Redis()

    def cleanup() -> None:
        for keys in _chunks(list(client.scan_iter(match=f"{namespace}:*", count=10_000)), 10_000):
            client.delete(*keys)
        client.close()

    return RedisBroker(url="redis://127.0.0.1:6379/0", namespace=namespace), cleanup


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _fill(broker: Broker, queues: list[str], messages: int) -> None:
    for name in queues:
        broker.declare_queue(name)
    per_queue = messages // len(queues)
    for name in queues:
        for start in range(0, per_queue, BATCH):
            count = min(BATCH, per_queue - start)
            batch = [Message(name, "noop", (n,), {}, {}) for n in range(count)]
            delayed, ready = batch[: count // 10], batch[count // 10 :]
            broker.enqueue_many(ready)
            broker.enqueue_many(delayed, delay=3_600_000)


def _dead_letters(broker: Broker, queues: list[str], per_queue: int) -> None:
    """Dead-letter ``per_queue`` messages of each queue the way a worker does: consume, then nack."""
    for name in queues:
        consumer = broker.consume(name, prefetch=per_queue, timeout=100)
        taken = 0
        for _ in range(per_queue * 10):  # bounded: idle ticks included
            proxy = next(consumer)
            if proxy is None:
                continue
            consumer.nack(proxy)
            taken += 1
            if taken == per_queue:
                break
        consumer.close()


async def _render(app: Any, rounds: int) -> list[float]:
    timings = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench") as client:
        for _ in range(rounds):
            started = time.perf_counter()
            response = await client.get("/")
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.status_code
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--queues", type=int, default=100)
    parser.add_argument("--messages", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        broker, cleanup = _broker(args.broker, workdir)
        broker.add_middleware(JobTracking())
        try:
            queues = [f"bench_{n:03d}" for n in range(args.queues)]
            started = time.perf_counter()
            _fill(broker, queues, args.messages)
            _dead_letters(broker, queues, max(1, args.messages // len(queues) // 100))
            fill_s = time.perf_counter() - started
            print(f"filled {args.queues} queues with {args.messages:,} messages in {fill_s:.1f} s")
            timings = asyncio.run(_render(create_app(broker), 20))
            print(
                f"{args.broker}: overview of {args.queues} queues, {args.messages:,} messages: "
                f"median {statistics.median(timings):.1f} ms, slowest {max(timings):.1f} ms"
            )
        finally:
            broker.close()
            if cleanup is not None:
                cleanup()


if __name__ == "__main__":
    main()
