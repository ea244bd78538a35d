"""The floor under any pika-based worker draining RabbitMQ, next to greenroom and Dramatiq (run by hand).

    .venv/bin/python benchmarks/floor_rabbitmq.py [--rounds 6] [--messages 10000] [--baseline DIR] [--only LABELS]

The scenario is the drain-io one of ``bench_rabbitmq.py``: a queue holding ``--messages`` messages is
drained by one worker process with 8 threads, and each task makes one Redis round trip (``INCR``)
through its own redis-py client. The rate is timed from the first task finished to the last.
Each round runs, one process at a time, in an order that rotates from round to round:

* ``dramatiq`` and ``greenroom``: the worker of ``bench_rabbitmq.py`` (its ``make_broker`` and
  ``_common.child``), with each library's default middleware and prefetch;
* ``floor``: no library at all. One thread drives a pika ``BlockingConnection`` (``basic_qos`` with
  the same prefetch of 2 × threads, ``basic_consume``) and hands each raw body with its delivery tag
  through a ``queue.SimpleQueue`` to 8 threads that only do the task's ``INCR``. They hand the tags
  back in a list and wake the connection thread with ``add_callback_threadsafe`` (one wake-up per
  batch), which acks the batch with one ``basic_ack(multiple=True)`` up to the first tag still
  running, and the rest one by one. No decoding, no middleware, no hooks;
* ``floor+json``: the same, with ``json.loads`` of the body in the worker thread (the envelope's
  cost);
* ``floor+consumer``: the floor's task threads, fed by greenroom's own RabbitMQ consumer
  (``RabbitmqBroker.consume``: decoding, message proxies, its ack requests and batching) instead of
  the bare pika loop: what ``greenroom/brokers/rabbitmq`` costs, without the worker, its work queue
  and the middleware;
* ``baseline`` (with ``--baseline DIR``): greenroom imported from DIR, a copy of the package
  (the code before a change).

For each: msg/s, the ratio to Dramatiq in the same round, and CPU µs per message of the worker
process (its user + system time from "ready" to its report, from ``/proc/<pid>/stat``; for the floors
also ``time.process_time`` between the first and the last task, voluntary context switches, and for
the bare floors their ack wake-ups and ``basic_ack`` frames) and, over the same time, of the RabbitMQ
and Redis servers when they run on this machine. At the end: the range and median of each over the
rounds, and the per-round ratios greenroom / floor, floor+consumer / floor and greenroom / baseline.
``uptime``'s load average is printed at the start of each round: the machine is shared.
``--floor-prefetch N`` gives the floors another prefetch count (to see how much the window limits
them). Every queue is a fresh one with a unique name, deleted at the end of its run.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import statistics
import sys
import threading
import time
from typing import Any

import pika
from _common import IO_REDIS_URL, is_child, make_producer, spawn, stop
from bench_rabbitmq import DEFAULT_URL, delete_queues, make_broker, new_queue_name

SCRIPT = os.path.abspath(__file__)
BENCH_SCRIPT = os.path.join(os.path.dirname(SCRIPT), "bench_rabbitmq.py")
THREADS = 8
#: greenroom's and Dramatiq's default queue prefetch: 2 × worker threads.
PREFETCH = 2 * THREADS
FLOORS = ("floor", "floor+json", "floor+consumer")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- the floor worker process --------------------------------------------------------------------


class Tally:
    """Counts finished tasks; times the first and the last, with the process's CPU time and switches."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.n = 0
        self.first = self.last = self.cpu_first = self.cpu_last = 0.0
        self.switches_first = self.switches_last = 0

    def finished_one(self) -> None:
        now = time.time()
        with self.lock:
            self.n += 1
            if self.n == 1:
                self.first, self.cpu_first = now, time.process_time()
                self.switches_first = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
            if self.n == self.count:
                self.last, self.cpu_last = now, time.process_time()
                self.switches_last = resource.getrusage(resource.RUSAGE_SELF).ru_nvcsw
                self.done.set()

    def report(self) -> dict[str, float]:
        messages = max(1, self.count - 1)
        return {
            "rate": self.count / max(1e-9, self.last - self.first),
            "cpu_us_inside": (self.cpu_last - self.cpu_first) / messages * 1e6,
            "switches": (self.switches_last - self.switches_first) / messages,
        }


class FloorWorker:
    """One pika consumer thread (the caller) feeding ``THREADS`` task threads, and acking for them."""

    def __init__(self, url: str, queue_name: str, count: int, *, decode: bool) -> None:
        import redis

        self.tally = Tally(count)
        self.decode = decode
        self.io_client = redis.Redis.from_url(IO_REDIS_URL)
        self.io_key = f"{queue_name}:io"
        self.work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.queue_name = queue_name
        self.url = url
        #: Tags finished by the task threads, not yet seen by the connection thread; guarded by lock.
        self.finished: list[int] = []
        self.wake_scheduled = False
        self.lock = threading.Lock()
        #: Connection thread only: tags delivered and not acked.
        self.unacked: set[int] = set()
        #: Connection thread wake-ups for acks, and ``basic_ack`` frames sent.
        self.wakes = self.frames = 0

    def on_delivery(self, _channel: Any, method: Any, _properties: Any, body: bytes) -> None:
        self.unacked.add(method.delivery_tag)
        self.work.put((method.delivery_tag, body))

    def task_thread(self) -> None:
        work, io_client, io_key, decode = self.work, self.io_client, self.io_key, self.decode
        while True:
            item = work.get()
            if item is None:
                return
            tag, body = item
            if decode:
                json.loads(body)
            io_client.incr(io_key)
            self.tally.finished_one()
            self.hand_back(tag)

    def hand_back(self, tag: int) -> None:
        with self.lock:
            self.finished.append(tag)
            wake = not self.wake_scheduled
            self.wake_scheduled = True
        if wake:
            self.connection.add_callback_threadsafe(self.ack_finished)

    def ack_finished(self) -> None:
        """Ack what the task threads finished: one multiple=True ack up to the first tag still out."""
        with self.lock:
            tags, self.finished = self.finished, []
            self.wake_scheduled = False
        self.wakes += 1
        unacked = self.unacked
        unacked.difference_update(tags)
        first_out = min(unacked, default=None)
        upto = max(tags) if first_out is None else max((tag for tag in tags if tag < first_out), default=0)
        if upto:
            self.channel.basic_ack(upto, multiple=True)
            self.frames += 1
        for tag in tags:
            if tag > upto:
                self.channel.basic_ack(tag)
                self.frames += 1

    def start_threads(self) -> None:
        for _ in range(THREADS):
            threading.Thread(target=self.task_thread, daemon=True).start()

    def run(self) -> dict[str, Any]:
        self.connection = pika.BlockingConnection(pika.URLParameters(self.url))
        self.channel = self.connection.channel()
        self.channel.basic_qos(prefetch_count=int(os.environ.get("FLOOR_PREFETCH", PREFETCH)))
        self.start_threads()
        self.channel.basic_consume(self.queue_name, self.on_delivery)
        print("ready", flush=True)
        deadline = time.monotonic() + 600
        while not self.tally.done.is_set() and time.monotonic() < deadline:
            self.connection.process_data_events(time_limit=1)
        self.connection.process_data_events(time_limit=0.2)  # let the last acks out
        self.io_client.delete(self.io_key)
        count = self.tally.count
        return self.tally.report() | {"wakes": self.wakes / count, "frames": self.frames / count}


class ConsumerFloor(FloorWorker):
    """The floor with greenroom's RabbitMQ consumer in place of the bare pika loop.

    The connection thread iterates ``RabbitmqBroker.consume`` (decoding, proxies, its ack requests
    and batching) and the task threads call its ``ack``: what the broker package costs, without the
    worker, the work queue and the middleware.
    """

    def task_thread(self) -> None:
        work, io_client, io_key = self.work, self.io_client, self.io_key
        while True:
            message = work.get()
            io_client.incr(io_key)
            self.tally.finished_one()
            self.consumer.ack(message)

    def run(self) -> dict[str, Any]:
        from greenroom.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=self.url)
        self.consumer = broker.consume(self.queue_name, prefetch=PREFETCH, timeout=1000)
        self.start_threads()
        print("ready", flush=True)
        deadline = time.monotonic() + 600
        for message in self.consumer:
            if message is not None:
                self.work.put(message)
            if self.tally.done.is_set() or time.monotonic() > deadline:
                break
        self.consumer.keep_alive(0.2)  # let the last acks out
        self.io_client.delete(self.io_key)
        return self.tally.report()


def floor_child(argv: list[str]) -> None:
    """``--child LABEL URL QUEUE drain-io COUNT`` for a floor, as :func:`_common.spawn` passes it."""
    system, url, queue_name, _mode, count_text = argv
    kind = ConsumerFloor if system == "floor+consumer" else FloorWorker
    report = kind(url, queue_name, int(count_text), decode=system == "floor+json").run()
    print(json.dumps(report), flush=True)
    os._exit(0)


# -- the driver ----------------------------------------------------------------------------------


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads); NaN once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def server_pids() -> dict[str, int]:
    """The pids of the RabbitMQ node (``beam.smp`` running ``rabbit``) and of the Redis server on
    port 6379, when they run on this machine, to read their CPU time (other servers are ignored)."""
    pids: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                # Redis rewrites its title to "redis-server host:port" (spaces, not NULs).
                words = cmdline.read().replace(b"\0", b" ").split()
        except OSError:
            continue
        program = os.path.basename(words[0]).decode(errors="replace") if words else ""
        if program == "beam.smp" and b"rabbit" in words:
            pids["rabbitmq"] = int(entry)
        elif program == "redis-server" and any(word.endswith(b":6379") for word in words):
            pids["redis"] = int(entry)
    return pids


def load_average() -> str:
    with open("/proc/loadavg") as loadavg:
        return " ".join(loadavg.read().split()[:3])


def fill(url: str, queue_name: str, count: int) -> None:
    """Put ``count`` greenroom ``noop`` messages on ``queue_name`` (the floors' messages)."""
    broker, noop = make_producer(make_broker, "greenroom", url, queue_name, queue_name)
    for _ in range(count):
        noop.send()
    broker.close()


def run_one(label: str, url: str, count: int, baseline: str | None, servers: dict[str, int]) -> dict[str, float]:
    """Fill a fresh queue, drain it with one worker process of ``label``, and return its report.

    The report has the worker's ``rate`` and ``cpu_us`` per message, and the CPU µs per message of
    each server in ``servers`` (name → pid) over the same time."""
    system = "greenroom" if label in (*FLOORS, "baseline") else label
    queue_name = new_queue_name(system)
    try:
        if label in FLOORS:
            fill(url, queue_name, count)
            proc = spawn(SCRIPT, label, url, queue_name, "drain-io", count)
        else:
            broker, noop = make_producer(make_broker, system, url, queue_name, queue_name)
            for _ in range(count):
                noop.send()
            broker.close()
            import_first = baseline if label == "baseline" else None
            proc = spawn(BENCH_SCRIPT, system, url, queue_name, "drain-io", count, import_first=import_first)
        try:
            pids = {"cpu_us": proc.pid} | {f"{name}_us": pid for name, pid in servers.items()}
            before = {key: process_cpu_s(pid) for key, pid in pids.items()}
            assert proc.stdout is not None
            report: dict[str, float] = json.loads(proc.stdout.readline())
            report |= {key: (process_cpu_s(pid) - before[key]) / count * 1e6 for key, pid in pids.items()}
        finally:
            stop(proc)
    finally:
        delete_queues(url, [queue_name])
    return report


def span(values: list[float], fmt: str = ".0f") -> str:
    return f"{min(values):{fmt}}-{max(values):{fmt}}"


def compare(url: str, count: int, rounds: int, labels: list[str], baseline: str | None) -> None:
    results: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    servers = server_pids()
    for number in range(rounds):
        order = labels[number % len(labels) :] + labels[: number % len(labels)]
        print(f"round {number + 1}: load average {load_average()}", flush=True)
        for label in order:
            results[label].append(run_one(label, url, count, baseline, servers))
        theirs = results["dramatiq"][-1]["rate"]
        for label in labels:
            report = results[label][-1]
            extra = "".join(f", {name} {report[f'{name}_us']:3.0f}" for name in servers)
            if label in FLOORS:
                extra += f"; first-to-last {report['cpu_us_inside']:.0f} µs, {report['switches']:.1f} vol. switches"
                if "wakes" in report:
                    extra += f", {report['wakes']:.2f} ack wake-ups, {report['frames']:.2f} basic_acks /msg"
            print(
                f"  {label:14} {report['rate']:6.0f} msg/s  {report['rate'] / theirs:4.2f}x dramatiq  "
                f"CPU µs/msg: worker {report['cpu_us']:4.0f}{extra}",
                flush=True,
            )
    print(f"\n{count} messages, {rounds} rounds, 1 process x {THREADS} threads, task = 1 Redis INCR")
    dramatiq_rates = [report["rate"] for report in results["dramatiq"]]
    server_keys = [f"{name}_us" for name in servers]
    for label in labels:
        rates = [report["rate"] for report in results[label]]
        ratios = [rate / theirs for rate, theirs in zip(rates, dramatiq_rates, strict=True)]
        cpu = "  ".join(
            f"{key[:-3].replace('cpu', 'worker')} {span([report[key] for report in results[label]])}"
            for key in ("cpu_us", *server_keys)
        )
        print(
            f"{label:14} {span(rates)} msg/s (median {statistics.median(rates):.0f})  {span(ratios, '.2f')}x dramatiq "
            f"(median {statistics.median(ratios):.2f}x)  CPU µs/msg: {cpu}"
        )
    print_pairs(results, [("greenroom", "floor"), ("floor+consumer", "floor"), ("greenroom", "baseline")])


def print_pairs(results: dict[str, list[dict[str, float]]], pairs: list[tuple[str, str]]) -> None:
    """For each (a, b) present: the per-round rate ratio a / b, min-max and median."""
    for ours, theirs in pairs:
        if ours in results and theirs in results:
            ratios = [a["rate"] / b["rate"] for a, b in zip(results[ours], results[theirs], strict=True)]
            print(f"{ours} / {theirs}: {span(ratios, '.2f')}x per round (median {statistics.median(ratios):.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--messages", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=6, help="alternating rounds (default 6)")
    parser.add_argument("--baseline", metavar="DIR", help="also run the greenroom package in DIR (an old copy)")
    parser.add_argument(
        "--floor-prefetch", type=int, default=PREFETCH, help=f"the floors' prefetch count (default {PREFETCH})"
    )
    parser.add_argument(
        "--only",
        metavar="LABELS",
        help="comma-separated subset of dramatiq,greenroom,floor,floor+json,floor+consumer (and baseline)",
    )
    args = parser.parse_args()
    os.environ["FLOOR_PREFETCH"] = str(args.floor_prefetch)  # read by the floor worker processes
    labels = ["dramatiq", "greenroom", *FLOORS] + (["baseline"] if args.baseline else [])
    if args.only:
        wanted = set(args.only.split(",")) | {"dramatiq", "baseline"}  # every ratio is to Dramatiq
        labels = [label for label in labels if label in wanted]
    compare(args.url, args.messages, args.rounds, labels, args.baseline)


if __name__ == "__main__":
    if is_child() and sys.argv[2] in FLOORS:
        floor_child(sys.argv[2:])
    else:
        main()
