"""greenroom vs Dramatiq on the same Redis, side by side (run by hand, not in CI).

    .venv/bin/python benchmarks/bench_redis.py [--url redis://127.0.0.1:6379/0] [--messages 10000]

Measures, for each library with its default middleware and a unique namespace:

* enqueue rate of ``send`` calls, one after the other, in this process (alternating rounds of the two
  libraries, so that both see the same load from whatever else runs on the machine);
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
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

import redis

LATENCY_RATE = 100
LATENCY_COUNT = 500
SYSTEMS = ("greenroom", "dramatiq")


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux carries it over ``exec`` from the parent."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- the worker process -------------------------------------------------------------------------


def child(system: str, url: str, namespace: str, mode: str, count: int) -> None:
    """Run one worker process (8 threads) until ``count`` messages started, then report as JSON."""
    done = threading.Event()
    lock = threading.Lock()
    state: dict[str, Any] = {"n": 0, "first": None, "last": None, "latencies": []}

    def noop(sent_at: float = 0.0) -> None:
        now = time.time()
        with lock:
            if state["first"] is None:
                state["first"] = now
            if mode == "latency":
                state["latencies"].append((now - sent_at) * 1000)
            state["n"] += 1
            state["last"] = now
            if state["n"] >= count:
                done.set()

    if system == "greenroom":
        import greenroom
        from greenroom.brokers.redis import RedisBroker

        broker: Any = RedisBroker(url=url, namespace=namespace)
        broker.emit_after("process_boot")
        greenroom.actor(broker=broker, actor_name="noop", queue_name="bench")(noop)
        worker: Any = greenroom.Worker(broker, worker_threads=8)
    else:
        import dramatiq
        from dramatiq.brokers.redis import RedisBroker as DramatiqRedisBroker

        broker = DramatiqRedisBroker(url=url, namespace=namespace)
        broker.emit_after("process_boot")
        dramatiq.actor(noop, broker=broker, actor_name="noop", queue_name="bench")
        worker = dramatiq.Worker(broker, worker_threads=8)
    worker.start()
    print("ready", flush=True)
    done.wait(600)
    # Drain: the last message has started; let its ack land before reporting.
    time.sleep(0.2)
    report: dict[str, Any] = {"rss_mb": peak_rss_mb()}
    if mode == "drain":
        report["rate"] = count / max(1e-9, state["last"] - state["first"])
    else:
        latencies = sorted(state["latencies"])
        report["p50"] = statistics.median(latencies)
        report["p99"] = latencies[int(len(latencies) * 0.99) - 1]
    print(json.dumps(report), flush=True)
    worker.stop()
    os._exit(0)  # skip interpreter teardown: the numbers are out


# -- the driver -----------------------------------------------------------------------------------


def make_producer(system: str, url: str, namespace: str) -> tuple[Any, Any]:
    def noop(sent_at: float = 0.0) -> None:
        pass

    if system == "greenroom":
        import greenroom
        from greenroom.brokers.redis import RedisBroker

        broker: Any = RedisBroker(url=url, namespace=namespace)
        return broker, greenroom.actor(broker=broker, actor_name="noop", queue_name="bench")(noop)
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker as DramatiqRedisBroker

    broker = DramatiqRedisBroker(url=url, namespace=namespace)
    return broker, dramatiq.actor(noop, broker=broker, actor_name="noop", queue_name="bench")


def spawn(system: str, url: str, namespace: str, mode: str, count: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--child", system, url, namespace, mode, str(count)],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        return dict(json.loads(line))
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "ready":
        raise RuntimeError(f"worker did not start: {line!r}")


def measure_enqueue(url: str, count: int, rounds: int = 5) -> tuple[float, float]:
    """``send`` rates of greenroom and Dramatiq, in alternating rounds so both see the same machine load."""
    namespaces = {system: f"bench-{system}-{uuid.uuid4().hex[:8]}" for system in SYSTEMS}
    producers = {system: make_producer(system, url, namespaces[system]) for system in SYSTEMS}
    elapsed = dict.fromkeys(SYSTEMS, 0.0)
    for _, noop in producers.values():
        noop.send()  # warm up: connection and script load
    per_round = count // rounds
    for _ in range(rounds):
        for system, (_, noop) in producers.items():
            started = time.perf_counter()
            for _ in range(per_round):
                noop.send()
            elapsed[system] += time.perf_counter() - started
    for namespace in namespaces.values():
        delete_namespace(url, namespace)
    ours, theirs = (per_round * rounds / elapsed[system] for system in SYSTEMS)
    return ours, theirs


def measure(system: str, url: str, count: int) -> dict[str, float]:
    namespace = f"bench-{system}-{uuid.uuid4().hex[:8]}"
    broker, noop = make_producer(system, url, namespace)
    results: dict[str, float] = {}

    def best_rate(send_all: Any) -> float:
        """Messages/s of the best of three runs (the machine is shared)."""
        best_s = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            send_all()
            best_s = min(best_s, time.perf_counter() - started)
            broker.flush("bench")
        return count / best_s

    group_class: Any
    if system == "greenroom":
        from greenroom import group as group_class

        results["batch"] = best_rate(lambda: broker.enqueue_many(noop.message() for _ in range(count)))
    else:
        from dramatiq import group as group_class

        results["batch"] = float("nan")  # Dramatiq has no batch API
    results["group"] = best_rate(lambda: group_class([noop.message() for _ in range(count)], broker=broker).run())

    # Drain exactly `count` messages: drop the extra ones sent above.
    broker.flush("bench")
    for _ in range(count):
        noop.send()
    proc = spawn(system, url, namespace, "drain", count)
    wait_ready(proc)
    drained = finish(proc)
    results["drain"] = drained["rate"]
    results["rss_drain"] = drained["rss_mb"]

    proc = spawn(system, url, namespace, "latency", LATENCY_COUNT)
    wait_ready(proc)
    time.sleep(0.5)
    interval = 1 / LATENCY_RATE
    next_at = time.perf_counter()
    for _ in range(LATENCY_COUNT):
        next_at += interval
        noop.send(time.time())
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    latency = finish(proc)
    results["p50"], results["p99"] = latency["p50"], latency["p99"]
    results["rss"] = max(results["rss_drain"], latency["rss_mb"])

    delete_namespace(url, namespace)
    return results


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
    args = parser.parse_args()
    ours = measure("greenroom", args.url, args.messages)
    theirs = measure("dramatiq", args.url, args.messages)
    ours["enqueue"], theirs["enqueue"] = measure_enqueue(args.url, args.messages)
    rows = [
        ("enqueue (send, msg/s)", "enqueue", True),
        ("batch enqueue (msg/s)", "batch", True),
        ("group(...).run() (msg/s)", "group", True),
        ("drain, 1 proc x 8 threads (msg/s)", "drain", True),
        (f"latency p50 @ {LATENCY_RATE}/s (ms)", "p50", False),
        (f"latency p99 @ {LATENCY_RATE}/s (ms)", "p99", False),
        ("worker peak RSS (MB)", "rss", False),
    ]
    print(f"{'':38}{'greenroom':>12}{'Dramatiq':>12}{'ratio':>9}")
    for label, key, higher_is_better in rows:
        ratio = ours[key] / theirs[key] if theirs[key] == theirs[key] else float("nan")
        note = "" if higher_is_better else " (lower is better)"
        print(f"{label:38}{ours[key]:12.2f}{theirs[key]:12.2f}{ratio:8.2f}x{note}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    else:
        main()
