"""Helpers shared by the side-by-side benchmarks (greenroom vs Dramatiq on the same server).

A benchmark script supplies two callables, ``make_broker(system, target, namespace)`` returning a
broker of ``system`` ("greenroom" or "dramatiq") and a way to clean up; this module provides the
worker subprocess, the enqueue rounds, the latency loop and the table.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

LATENCY_RATE = 100
LATENCY_COUNT = 500
#: The Redis that the "one round trip" tasks talk to (the shared local server).
IO_REDIS_URL = "redis://127.0.0.1:6379/0"
SYSTEMS = ("greenroom", "dramatiq")
QUEUE = "bench"

#: ``make_broker(system, target, namespace)``: a broker of ``system`` for ``target`` (a URL).
MakeBroker = Callable[[str, str, str], Any]


def peak_rss_mb() -> float:
    """This process's peak RSS. Not ``ru_maxrss``: Linux carries it over ``exec`` from the parent."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def declare_noop(system: str, broker: Any, noop: Callable[..., None], queue_name: str = QUEUE) -> Any:
    """Register ``noop`` as the actor ``noop`` on ``broker`` with the library of ``system``."""
    if system == "greenroom":
        import greenroom

        return greenroom.actor(broker=broker, actor_name="noop", queue_name=queue_name)(noop)
    import dramatiq

    dramatiq_actor: Any = dramatiq.actor
    return dramatiq_actor(noop, broker=broker, actor_name="noop", queue_name=queue_name)


def make_producer(
    make_broker: MakeBroker, system: str, target: str, namespace: str, queue_name: str = QUEUE
) -> tuple[Any, Any]:
    """A broker and its ``noop`` actor on ``queue_name``, for sending."""

    def noop(sent_at: float = 0.0) -> None:
        pass

    broker = make_broker(system, target, namespace)
    return broker, declare_noop(system, broker, noop, queue_name)


# -- the worker process -------------------------------------------------------------------------


def child(make_broker: MakeBroker, argv: Sequence[str], *, namespace_is_queue: bool = False) -> None:
    """Run one worker process (8 threads) until ``count`` messages started, then report as JSON.

    ``argv`` is ``[system, target, namespace, mode, count]`` as passed by :func:`spawn`. With
    ``namespace_is_queue`` the actor's queue is named after the namespace, else it is ``QUEUE``.
    """
    system, target, namespace, mode, count_text = argv
    count = int(count_text)
    io_client = io_key = None
    if mode == "drain-io":
        # A task like many real ones: one round trip to Redis through its own client.
        import redis

        io_client = redis.Redis.from_url(IO_REDIS_URL)
        io_key = f"{namespace}:io"
    done = threading.Event()
    lock = threading.Lock()
    state: dict[str, Any] = {"n": 0, "first": None, "last": None, "latencies": []}

    def noop(sent_at: float = 0.0) -> None:
        if io_client is not None:
            io_client.incr(io_key)
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

    broker = make_broker(system, target, namespace)
    broker.emit_after("process_boot")
    declare_noop(system, broker, noop, namespace if namespace_is_queue else QUEUE)
    if system == "greenroom":
        import greenroom

        worker: Any = greenroom.Worker(broker, worker_threads=8)
    else:
        import dramatiq

        worker = dramatiq.Worker(broker, worker_threads=8)
    worker.start()
    print("ready", flush=True)
    done.wait(600)
    # Drain: the last message has started; let its ack land before reporting.
    time.sleep(0.2)
    report: dict[str, Any] = {"rss_mb": peak_rss_mb()}
    if io_client is not None:
        io_client.delete(io_key)
    if mode in ("drain", "drain-io"):
        report["rate"] = count / max(1e-9, state["last"] - state["first"])
    else:
        latencies = sorted(state["latencies"])
        report["p50"] = statistics.median(latencies)
        report["p99"] = latencies[int(len(latencies) * 0.99) - 1]
    print(json.dumps(report), flush=True)
    worker.stop()
    os._exit(0)  # skip interpreter teardown: the numbers are out


def is_child() -> bool:
    """Whether this process was started by :func:`spawn`."""
    return len(sys.argv) > 1 and sys.argv[1] == "--child"


# -- the driver -----------------------------------------------------------------------------------


def spawn(
    script: str, system: str, target: str, namespace: str, mode: str, count: int, *, import_first: str | None = None
) -> subprocess.Popen[str]:
    """Start ``script --child ...`` (which calls :func:`child`) and wait until its worker runs.

    ``import_first``: a directory put first on the child's ``PYTHONPATH`` (another copy of greenroom).
    """
    env = None
    if import_first is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [import_first, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, script, "--child", system, target, namespace, mode, str(count)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"worker did not start: {line!r}")
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    """Terminate and reap ``proc`` (kill it if it does not stop)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    """Read the worker's JSON report, then stop it."""
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        return dict(json.loads(line))
    finally:
        stop(proc)


def measure_enqueue(producers: dict[str, Any], count: int, rounds: int = 10) -> dict[str, float]:
    """``send`` rates per system: the median over alternating rounds of ``count / rounds`` sends.

    Alternating rounds let both systems see the same load from whatever else runs on the machine;
    the median (not the total) keeps one round hit by a burst of load from deciding the result.
    ``producers`` maps each system to its ``noop`` actor (already used once, to warm up).
    """
    rates: dict[str, list[float]] = {system: [] for system in producers}
    per_round = count // rounds
    for _ in range(rounds):
        for system, noop in producers.items():
            started = time.perf_counter()
            for _ in range(per_round):
                noop.send()
            rates[system].append(per_round / (time.perf_counter() - started))
    return {system: statistics.median(system_rates) for system, system_rates in rates.items()}


def best_rate(count: int, send_all: Callable[[], Any], reset: Callable[[], Any], runs: int = 3) -> float:
    """Messages/s of the best of ``runs`` runs of ``send_all`` (the machine is shared)."""
    best_s = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        send_all()
        best_s = min(best_s, time.perf_counter() - started)
        reset()
    return count / best_s


def send_paced(noop: Any, count: int = LATENCY_COUNT, rate: int = LATENCY_RATE) -> None:
    """Send ``count`` messages carrying their send time, ``rate`` per second."""
    interval = 1 / rate
    next_at = time.perf_counter()
    for _ in range(count):
        next_at += interval
        noop.send(time.time())
        pause = next_at - time.perf_counter()
        if pause > 0:
            time.sleep(pause)


def measure_system(
    script: str,
    make_broker: MakeBroker,
    system: str,
    target: str,
    namespace: str,
    count: int,
    *,
    queue_name: str = QUEUE,
    latency_count: int = LATENCY_COUNT,
) -> dict[str, float]:
    """Every number of ``system`` but the ``send`` rate (see :func:`measure_enqueue`).

    Batch and ``group`` enqueue rates in this process, then the drain rate and the latency of one
    worker process started from ``script`` (which calls :func:`child` with ``--child``), and that
    process's peak RSS. The caller deletes what was written under ``namespace`` afterwards.
    """
    broker, noop = make_producer(make_broker, system, target, namespace, queue_name)
    results: dict[str, float] = {}
    group_class: Any
    if system == "greenroom":
        from greenroom import group as group_class

        results["batch"] = best_rate(
            count, lambda: broker.enqueue_many(noop.message() for _ in range(count)), lambda: broker.flush(queue_name)
        )
    else:
        from dramatiq import group as group_class

        results["batch"] = float("nan")  # Dramatiq has no batch API
    results["group"] = best_rate(
        count,
        lambda: group_class([noop.message() for _ in range(count)], broker=broker).run(),
        lambda: broker.flush(queue_name),
    )

    # Drain exactly `count` messages: drop the extra ones sent above.
    broker.flush(queue_name)
    for _ in range(count):
        noop.send()
    drained = finish(spawn(script, system, target, namespace, "drain", count))
    results["drain"] = drained["rate"]
    for _ in range(count):
        noop.send()
    results["drain_io"] = finish(spawn(script, system, target, namespace, "drain-io", count))["rate"]

    proc = spawn(script, system, target, namespace, "latency", latency_count)
    time.sleep(0.5)
    send_paced(noop, latency_count)
    latency = finish(proc)
    results["p50"], results["p99"] = latency["p50"], latency["p99"]
    results["rss"] = max(drained["rss_mb"], latency["rss_mb"])
    broker.close()
    return results


def print_table(ours: dict[str, float], theirs: dict[str, float], rows: Sequence[tuple[str, str, bool]]) -> None:
    """Print ``rows`` of (label, key, higher is better) with greenroom/Dramatiq ratios."""
    print(f"{'':38}{'greenroom':>12}{'Dramatiq':>12}{'ratio':>9}")
    for label, key, higher_is_better in rows:
        ratio = ours[key] / theirs[key] if theirs[key] == theirs[key] else float("nan")
        note = "" if higher_is_better else " (lower is better)"
        print(f"{label:38}{ours[key]:12.2f}{theirs[key]:12.2f}{ratio:8.2f}x{note}", flush=True)


STANDARD_ROWS = [
    ("enqueue (send, msg/s)", "enqueue", True),
    ("batch enqueue (msg/s)", "batch", True),
    ("group(...).run() (msg/s)", "group", True),
    ("drain, 1 proc x 8 threads (msg/s)", "drain", True),
    ("drain, task = 1 Redis round trip (msg/s)", "drain_io", True),
    (f"latency p50 @ {LATENCY_RATE}/s (ms)", "p50", False),
    (f"latency p99 @ {LATENCY_RATE}/s (ms)", "p99", False),
    ("worker peak RSS (MB)", "rss", False),
]


# -- drain only, alternating ----------------------------------------------------------------------


def compare_drains(
    script: str,
    make_broker: MakeBroker,
    target: str,
    namespaces: Callable[[str], str],
    count: int,
    rounds: int,
    *,
    modes: Sequence[str] = ("drain", "drain-io"),
    namespace_is_queue: bool = False,
    cleanup: Callable[[str], None],
    baseline: str | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Drain rates of both systems, alternating, ``rounds`` times; also prints each round's ratios.

    A round runs every mode for both systems, one worker process at a time, the system that goes
    first changing every round, so that all see the same load from the rest of the machine.
    ``namespaces(system)`` gives a fresh namespace; ``cleanup(namespace)`` removes it afterwards.
    With ``baseline`` (a directory holding another copy of the ``greenroom`` package, such as the
    code before a change), that copy runs in each round too, as "baseline".

    Returns:
      mode → system → the rate (msg/s) of each round.
    """
    runs = [("greenroom", "greenroom", None), ("dramatiq", "dramatiq", None)]
    if baseline is not None:
        runs.append(("baseline", "greenroom", baseline))
    rates: dict[str, dict[str, list[float]]] = {mode: {label: [] for label, _, _ in runs} for mode in modes}
    for round_number in range(rounds):
        order = runs[round_number % len(runs) :] + runs[: round_number % len(runs)]
        for mode in modes:
            for label, system, import_first in order:
                namespace = namespaces(system)
                queue_name = namespace if namespace_is_queue else QUEUE
                try:
                    broker, noop = make_producer(make_broker, system, target, namespace, queue_name)
                    for _ in range(count):
                        noop.send()
                    broker.close()
                    proc = spawn(script, system, target, namespace, mode, count, import_first=import_first)
                    rate = finish(proc)["rate"]
                finally:
                    cleanup(namespace)
                rates[mode][label].append(rate)
            line = "  ".join(f"{label} {values[-1]:6.0f}" for label, values in rates[mode].items())
            theirs = rates[mode]["dramatiq"][-1]
            ratios = "  ".join(f"{label} {values[-1] / theirs:4.2f}x" for label, values in rates[mode].items())
            print(f"round {round_number + 1} {mode:9} {line}   vs dramatiq: {ratios}", flush=True)
    for mode in modes:
        theirs_rates = rates[mode]["dramatiq"]
        print(f"{mode:9} dramatiq {min(theirs_rates):.0f}-{max(theirs_rates):.0f} msg/s")
        for label, values in rates[mode].items():
            if label == "dramatiq":
                continue
            ratios = [a / b for a, b in zip(values, theirs_rates, strict=True)]
            print(
                f"{mode:9} {label} {min(values):.0f}-{max(values):.0f} msg/s, "
                f"{min(ratios):.2f}-{max(ratios):.2f}x dramatiq (median {statistics.median(ratios):.2f}x)"
            )
    return rates
