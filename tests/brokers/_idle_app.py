"""A worker process with many idle queues whose CPU time the idle tests measure (not a test module).

    python tests/brokers/_idle_app.py sqlite DB_PATH QUEUES SECONDS
    python tests/brokers/_idle_app.py redis URL NAMESPACE QUEUES SECONDS

Declares ``QUEUES`` queues (each with its delay queue, so twice as many consumers), starts a
``greenroom.Worker`` with its default settings, waits until every consumer runs and has had time to
settle into idling, then measures the CPU time of the whole process (every thread, user and
system) over ``SECONDS`` and prints it as one JSON line: ``{"cpu": <fraction of one core>, ...}``.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

from greenroom import Worker
from greenroom.broker import Broker

#: How long consumers get to settle once they run: a Redis consumer blocks on its own wake-up
#: list for about a second after its last message before it leaves that to the idle waiter.
SETTLE_S = 2.0
#: How long the consumers may take to start.
START_TIMEOUT_S = 60.0


def build(argv: list[str]) -> tuple[Broker, int, float]:
    kind = argv[0]
    if kind == "sqlite":
        from greenroom.brokers.sqlite import SQLiteBroker

        return SQLiteBroker(argv[1], middleware=[]), int(argv[2]), float(argv[3])
    from greenroom.brokers.redis import RedisBroker

    return RedisBroker(url=argv[1], namespace=argv[2], middleware=[]), int(argv[3]), float(argv[4])


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def all_consuming(worker: Worker, count: int) -> bool:
    threads = list(worker.consumers.values())
    return len(threads) == count and all(thread.consumer is not None for thread in threads)


def main() -> int:
    broker, queues, seconds = build(sys.argv[1:])
    broker.emit_after("process_boot")
    for n in range(queues):
        broker.declare_queue(f"idle{n}")
    worker = Worker(broker, worker_threads=8)
    worker.start()
    report: dict[str, Any] = {}
    try:
        deadline_s = time.monotonic() + START_TIMEOUT_S
        while not all_consuming(worker, 2 * queues):
            if time.monotonic() >= deadline_s:
                print(json.dumps({"error": "the consumers did not start in time"}), flush=True)
                return 1
            time.sleep(0.05)
        time.sleep(SETTLE_S)
        started_cpu_s, started_s = cpu_s(), time.monotonic()
        time.sleep(seconds)
        report["cpu"] = (cpu_s() - started_cpu_s) / (time.monotonic() - started_s)
        report["consumers"] = len(worker.consumers)
    finally:
        worker.stop(timeout=10_000)
        broker.close()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
