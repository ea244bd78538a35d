"""Run under gevent (as a subprocess of test_interrupts_gevent.py): time limits and shutdown notifications.

Prints one JSON line with what each actor saw.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402 - after patching, as under greenroom-gevent
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

import greenroom  # noqa: E402
from greenroom import Worker  # noqa: E402
from greenroom.brokers.stub import StubBroker  # noqa: E402
from greenroom.middleware import Shutdown, TimeLimitExceeded  # noqa: E402

broker = StubBroker()
broker.emit_after("process_boot")
greenroom.set_broker(broker)
seen: dict[str, list[object]] = {"limited": [], "edge_ok": [], "edge_interrupted": [], "notified": [], "started": []}


@greenroom.actor(time_limit=200, max_retries=0)
def limited() -> None:
    try:
        while True:
            gevent.sleep(0.01)
    except TimeLimitExceeded:
        seen["limited"].append("interrupted")
        raise


@greenroom.actor(time_limit=100, max_retries=0)
def edge(n: int) -> None:
    try:
        gevent.sleep(0.1 + (n % 5 - 2) / 1000)
    except TimeLimitExceeded:
        seen["edge_interrupted"].append(n)
        raise
    seen["edge_ok"].append(n)


@greenroom.actor(notify_shutdown=True, max_retries=0)
def long_running() -> None:
    seen["started"].append(1)
    try:
        while True:
            gevent.sleep(0.01)
    except Shutdown:
        seen["notified"].append(1)


worker = Worker(broker, worker_threads=40, worker_timeout=100)
worker.start()
limited.send()
for n in range(30):
    edge.send(n)


def wait_until(condition: object) -> None:
    deadline = time.monotonic() + 20
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        gevent.sleep(0.01)


wait_until(lambda: len(seen["limited"]) == 1 and len(seen["edge_ok"]) + len(seen["edge_interrupted"]) >= 30)
worker.join(timeout_s=20)
for _ in range(3):
    long_running.send()
wait_until(lambda: len(seen["started"]) == 3)
worker.stop(timeout=10_000)
seen["dead"] = [len(broker.dead_letters)]
print(json.dumps(seen))
sys.stdout.flush()
