"""Where a worker's time per message goes while it drains a queue (run by hand, not in CI).

    .venv/bin/python benchmarks/profile_drain.py [--brokers redis,rabbitmq] [--mode drain-io]
                                                 [--messages 20000] [--warmup 2000] [--runs 2]

For each broker it drains ``--messages`` messages (after ``--warmup`` more that are not counted)
with one worker process of 8 threads, as ``bench_redis.py`` and ``bench_rabbitmq.py`` do, and
prints, per message:

* for greenroom, phase by phase: how often the phase ran, the CPU time its threads spent in it
  (``time.thread_time``, kernel time included), and the wall time (summed over the threads that
  were in it, so it can exceed the process's wall time per message). Phases are exclusive: time
  spent in a nested phase (the acknowledgement's hooks inside the acknowledgement, the task's
  ``INCR`` inside the actor call) counts only for the nested one. Whatever a thread did outside
  every timed phase is its "rest". The phases are timed by wrapping greenroom's functions in
  this process only; greenroom's code is not changed.
* for both libraries, uninstrumented: the process's wall and CPU time per message, its context
  switches per message (voluntary: a thread blocked, on a socket, a lock or the GIL; involuntary:
  the kernel preempted it), and its CPU time by thread role.
* GIL contention, two ways: the wall minus CPU time of the phases that never wait for anything
  but the GIL and short locks (hooks, decoding, hand-off puts, loop bookkeeping), and how late a
  probe thread that sleeps 1 ms wakes up while the worker drains, against the same probe with
  the worker idle (the delay every thread waking from a socket or a lock pays to get the GIL).

The instrumented run is slower than the plain one (two clock reads per phase boundary, about
1 µs); the plain run's rate is printed next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import bench_rabbitmq
import bench_redis
from _common import IO_REDIS_URL, QUEUE, declare_noop, make_producer

URLS = {"redis": "redis://127.0.0.1:6379/0", "rabbitmq": bench_rabbitmq.DEFAULT_URL}
MAKE_BROKER = {"redis": bench_redis.make_broker, "rabbitmq": bench_rabbitmq.make_broker}
#: Phases that wait for nothing but the GIL and short locks: their wall minus CPU time is GIL wait.
CPU_ONLY_PHASES = {
    "hooks: before_process_message",
    "hooks: after_process_message",
    "hooks: before_ack",
    "hooks: after_ack",
    "decode + proxy",
    "hand-off: work_queue.put",
    "rest",
}

# -- phase timers (in the worker process) ---------------------------------------------------------


class _ThreadTimes:
    """One thread's stack of open phases and its totals per phase: [calls, wall ns, CPU ns]."""

    def __init__(self) -> None:
        self.stack: list[list[Any]] = []  # [phase, wall at last resume, CPU at last resume]
        self.totals: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])


class Phases:
    """Exclusive wall and CPU time per phase, per thread role, collected without locks."""

    def __init__(self) -> None:
        self._local = threading.local()
        #: (role, thread totals) of every thread that entered a phase; appended under the GIL.
        self.threads: list[tuple[str, _ThreadTimes]] = []

    def _mine(self) -> _ThreadTimes:
        mine = getattr(self._local, "times", None)
        if mine is None:
            mine = self._local.times = _ThreadTimes()
            self.threads.append((role_of(threading.current_thread()), mine))
        return mine

    def wrap(self, phase: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn``, timed as ``phase`` (and pausing the phase it is called from)."""
        perf, cpu = time.perf_counter_ns, time.thread_time_ns

        def timed(*args: Any, **kwargs: Any) -> Any:
            mine = self._mine()
            stack = mine.stack
            wall_now, cpu_now = perf(), cpu()
            if stack:
                outer = stack[-1]
                totals = mine.totals[outer[0]]
                totals[1] += wall_now - outer[1]
                totals[2] += cpu_now - outer[2]
            stack.append([phase, wall_now, cpu_now])
            try:
                return fn(*args, **kwargs)
            finally:
                wall_end, cpu_end = perf(), cpu()
                _, wall_start, cpu_start = stack.pop()
                totals = mine.totals[phase]
                totals[0] += 1
                totals[1] += wall_end - wall_start
                totals[2] += cpu_end - cpu_start
                if stack:
                    stack[-1][1], stack[-1][2] = wall_end, cpu_end

        return timed

    def patch(self, owner: Any, name: str, phase: str) -> None:
        """Time ``owner.name`` (a class's method, a module's function or an instance's method), if it exists
        (the script profiles older versions of greenroom too)."""
        if hasattr(owner, name):
            setattr(owner, name, self.wrap(phase, getattr(owner, name)))

    def snapshot(self) -> dict[str, dict[str, list[int]]]:
        """role → phase → [calls, wall ns, CPU ns], summed over the threads of each role."""
        result: dict[str, dict[str, list[int]]] = defaultdict(dict)
        for role, times in list(self.threads):
            for phase, (calls, wall, cpu) in list(times.totals.items()):
                summed = result[role].setdefault(phase, [0, 0, 0])
                summed[0] += calls
                summed[1] += wall
                summed[2] += cpu
        return dict(result)


def role_of(thread: threading.Thread) -> str:
    """A thread's role: its class for the libraries' own threads, else its name."""
    kind = type(thread).__name__.lstrip("_")
    if kind in ("WorkerThread", "ConsumerThread"):
        queue_name = getattr(thread, "queue_name", "")
        return f"{kind}({'delay' if queue_name.endswith('.DQ') else 'queue'})" if queue_name else kind
    return "main" if thread is threading.main_thread() else thread.name.split("-")[0]


def instrument_greenroom(phases: Phases, broker_kind: str) -> None:
    """Wrap the greenroom functions a message goes through (class attributes: every instance)."""
    import greenroom.worker as worker_module
    from greenroom._consumer_thread import ConsumerThread
    from greenroom._middleware_host import MiddlewareHost

    phases.patch(worker_module, "run_interruptible", "actor call (interrupt arming)")
    phases.patch(ConsumerThread, "post_process_message", "ack: worker side")
    _patch_hooks(phases, MiddlewareHost)
    if broker_kind == "redis":
        from greenroom.brokers.redis._consumer import RedisConsumer
        from greenroom.brokers.redis._storage import RedisStorage

        phases.patch(RedisStorage, "fetch", "fetch: round trip")
        phases.patch(RedisConsumer, "_to_proxy", "decode + proxy")
        phases.patch(RedisConsumer, "_settle_batched", "ack: group-commit wait")  # before the settler
        phases.patch(RedisConsumer, "ack", "ack: hand over")
        phases.patch(RedisConsumer, "_acked", "ack: settled, free the slot")
        phases.patch(RedisStorage, "settle", "ack: settle round trip")
    else:
        import pika

        import greenroom.brokers.rabbitmq._consumer as rabbit_consumer

        phases.patch(pika.BlockingConnection, "process_data_events", "fetch: pika I/O (deliveries, acks)")
        phases.patch(rabbit_consumer, "decode_message", "decode + proxy")
        phases.patch(rabbit_consumer._RabbitmqConsumer, "_run_requests", "ack: basic_ack on the consumer thread")
        phases.patch(pika.BlockingConnection, "add_callback_threadsafe", "ack: wake the consumer thread")
        phases.patch(pika.adapters.blocking_connection.BlockingChannel, "basic_ack", "ack: pika basic_ack (+ flush)")


def _patch_hooks(phases: Phases, host: type[Any]) -> None:
    """Time each signal's hook dispatch as its own phase."""
    for direction in ("before", "after"):
        emit = getattr(host, f"emit_{direction}")
        timed = {signal: phases.wrap(f"hooks: {direction}_{signal}", emit) for signal in ("process_message", "ack")}

        def dispatch(self: Any, signal: str, *args: Any, _emit: Any = emit, _timed: Any = timed, **kwargs: Any) -> None:
            (_timed.get(signal) or _emit)(self, signal, *args, **kwargs)

        setattr(host, f"emit_{direction}", dispatch)


def instrument_queue(phases: Phases, work_queue: Any) -> None:
    """Time the hand-off through greenroom's work queue (the instance's own methods)."""
    phases.patch(work_queue, "put", "hand-off: work_queue.put")
    phases.patch(work_queue, "get", "hand-off: work_queue.get (waits for work)")


# -- process counters -----------------------------------------------------------------------------


def thread_counters() -> dict[str, list[float]]:
    """role → [CPU s, voluntary switches, involuntary switches], summed over its live threads."""
    by_native = {t.native_id: t for t in threading.enumerate()}
    result: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])
    for tid in os.listdir("/proc/self/task"):
        thread = by_native.get(int(tid))
        role = role_of(thread) if thread is not None else "native"
        try:
            with open(f"/proc/self/task/{tid}/status") as status:
                fields = dict(line.split(":", 1) for line in status)
            with open(f"/proc/self/task/{tid}/stat") as stat:
                parts = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue  # the thread ended meanwhile
        counters = result[role]
        if thread is not None and thread.ident is not None:
            # Nanoseconds, where /proc counts in clock ticks (10 ms).
            counters[0] += time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
        else:
            counters[0] += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        counters[1] += int(fields["voluntary_ctxt_switches"])
        counters[2] += int(fields["nonvoluntary_ctxt_switches"])
    return dict(result)


class GilProbe(threading.Thread):
    """Sleeps 1 ms in a loop and records how late it wakes (the wait for the GIL, mostly)."""

    SLEEP_S = 0.001

    def __init__(self) -> None:
        super().__init__(name="probe", daemon=True)
        self.late_s: list[float] = []
        self.recording = threading.Event()
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.perf_counter()
            time.sleep(self.SLEEP_S)
            late = time.perf_counter() - started - self.SLEEP_S
            if self.recording.is_set():
                self.late_s.append(late)

    def measure(self, seconds: float) -> float:
        """Mean lateness (s) over ``seconds`` from now."""
        self.late_s.clear()
        self.recording.set()
        time.sleep(seconds)
        self.recording.clear()
        return statistics.fmean(self.late_s) if self.late_s else 0.0


def child(argv: list[str]) -> None:
    """One worker process: drain, then print a JSON report."""
    system, broker_kind, namespace, mode, count_text, warmup_text, instrumented_text = argv
    count, warmup, instrumented = int(count_text), int(warmup_text), instrumented_text == "1"
    phases = Phases()
    if instrumented:
        instrument_greenroom(phases, broker_kind)
    import redis

    io_client = redis.Redis.from_url(IO_REDIS_URL)
    io_key = f"{namespace}:io"
    incr = phases.wrap("task: Redis INCR (the task's own I/O)", io_client.incr) if instrumented else io_client.incr
    marks: dict[str, Any] = {}
    lock = threading.Lock()
    done = threading.Event()
    state = {"n": 0}

    def noop(sent_at: float = 0.0) -> None:
        if mode == "drain-io":
            incr(io_key)
        with lock:
            state["n"] += 1
            n = state["n"]
        if n in (warmup, warmup + count):
            mark = "start" if n == warmup else "end"
            marks[mark] = (time.perf_counter(), os.times(), thread_counters(), phases.snapshot())
            if mark == "end":
                done.set()

    broker = MAKE_BROKER[broker_kind](system, URLS[broker_kind], namespace)
    broker.emit_after("process_boot")
    declare_noop(system, broker, noop, namespace if broker_kind == "rabbitmq" else QUEUE)
    probe = GilProbe()
    probe.start()
    idle_late_s = probe.measure(0.3)
    if system == "greenroom":
        import greenroom

        worker: Any = greenroom.Worker(broker, worker_threads=8)
        if instrumented:
            instrument_queue(phases, worker.work_queue)
    else:
        import dramatiq

        worker = dramatiq.Worker(broker, worker_threads=8)
    worker.start()
    busy_late_s = 0.0
    while not done.wait(0.05):
        if "start" in marks and not busy_late_s:
            busy_late_s = probe.measure(0.5)
    probe.stopped.set()
    print(json.dumps(_report(marks, count, idle_late_s, busy_late_s)), flush=True)
    io_client.delete(io_key)
    worker.stop()
    os._exit(0)


def _report(marks: dict[str, Any], count: int, idle_late_s: float, busy_late_s: float) -> dict[str, Any]:
    (wall0, times0, threads0, phases0), (wall1, times1, threads1, phases1) = marks["start"], marks["end"]
    threads = {
        role: [value - threads0.get(role, [0, 0, 0])[i] for i, value in enumerate(values)]
        for role, values in threads1.items()
    }
    phases: dict[str, dict[str, list[int]]] = {}
    for role, by_phase in phases1.items():
        for phase, values in by_phase.items():
            before = phases0.get(role, {}).get(phase, [0, 0, 0])
            phases.setdefault(role, {})[phase] = [value - before[i] for i, value in enumerate(values)]
    return {
        "count": count,
        "wall_s": wall1 - wall0,
        "cpu_s": (times1.user + times1.system) - (times0.user + times0.system),
        "threads": threads,
        "phases": phases,
        "idle_late_s": idle_late_s,
        "busy_late_s": busy_late_s,
    }


# -- the driver -----------------------------------------------------------------------------------


def run_one(
    broker_kind: str, system: str, mode: str, count: int, warmup: int, instrumented: bool, import_first: str | None
) -> dict[str, Any]:
    """Fill a fresh queue, drain it with a worker process, and return that process's report.

    ``import_first``: a directory put first on the worker's ``PYTHONPATH`` (another copy of greenroom).
    """
    url = URLS[broker_kind]
    namespace = f"profile-{system}-{uuid.uuid4().hex[:8]}"
    queue_name = namespace if broker_kind == "rabbitmq" else QUEUE
    try:
        broker, noop = make_producer(MAKE_BROKER[broker_kind], system, url, namespace, queue_name)
        for _ in range(count + warmup):
            noop.send()
        broker.close()
        args = [system, broker_kind, namespace, mode, str(count), str(warmup), "1" if instrumented else "0"]
        env = None
        if import_first is not None:
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join(filter(None, [import_first, os.environ.get("PYTHONPATH")])),
            }
        proc = subprocess.run(
            [sys.executable, __file__, "--child", *args],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
            env=env,
        )
        return dict(json.loads(proc.stdout.strip().splitlines()[-1]))
    finally:
        if broker_kind == "rabbitmq":
            bench_rabbitmq.delete_queues(url, [namespace])
        else:
            bench_redis.delete_namespace(url, namespace)


def us_per_message(seconds: float, count: int) -> float:
    return seconds * 1e6 / count


def print_phases(report: dict[str, Any]) -> None:
    """The instrumented run's phases, by thread role, in µs per message."""
    count = report["count"]
    print(f"  {'thread / phase':58}{'calls/msg':>10}{'CPU µs':>9}{'wall µs':>9}{'wall-CPU':>9}")
    gil_wait_ns = 0
    for role, by_phase in sorted(report["phases"].items()):
        thread_cpu_s = report["threads"].get(role, [0.0])[0]
        timed_cpu_ns = sum(values[2] for values in by_phase.values())
        rows = sorted(by_phase.items(), key=lambda item: -item[1][2])
        for phase, (calls, wall_ns, cpu_ns) in rows:
            if phase in CPU_ONLY_PHASES:
                gil_wait_ns += wall_ns - cpu_ns
            print(
                f"  {role + ': ' + phase:58}{calls / count:10.2f}{cpu_ns / 1e3 / count:9.1f}"
                f"{wall_ns / 1e3 / count:9.1f}{(wall_ns - cpu_ns) / 1e3 / count:9.1f}"
            )
        rest_cpu_s = thread_cpu_s - timed_cpu_ns / 1e9
        rest = f"{role}: rest (outside the timed phases, CPU from /proc)"
        print(f"  {rest:58}{'':10}{rest_cpu_s * 1e6 / count:9.1f}")
    print(f"  GIL wait inside the CPU-only phases: {gil_wait_ns / 1e3 / count:.1f} µs per message (thread-summed)")


def print_totals(label: str, report: dict[str, Any]) -> None:
    count = report["count"]
    switches = sum(values[1] for values in report["threads"].values())
    preempted = sum(values[2] for values in report["threads"].values())
    by_role_switches = ", ".join(
        f"{role} {values[1] / count:.2f}"
        for role, values in sorted(report["threads"].items())
        if values[1] > count / 100
    )
    wall_us = us_per_message(report["wall_s"], count)
    print(
        f"  {label:28} {count / report['wall_s']:8.0f} msg/s  wall {wall_us:6.1f} µs/msg"
        f"  CPU {us_per_message(report['cpu_s'], count):6.1f} µs/msg"
        f"  switches/msg {switches / count:5.1f} voluntary, {preempted / count:4.2f} involuntary"
        f"  probe late {report['idle_late_s'] * 1e6:4.0f} → {report['busy_late_s'] * 1e6:4.0f} µs"
    )
    by_role = ", ".join(
        f"{role} {values[0] * 1e6 / count:.0f}" for role, values in sorted(report["threads"].items()) if values[0]
    )
    print(f"  {'':28} CPU µs/msg by thread: {by_role}")
    print(f"  {'':28} voluntary switches/msg by thread: {by_role_switches}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", default="redis,rabbitmq")
    parser.add_argument("--mode", default="drain-io", choices=("drain", "drain-io"))
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--warmup", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=2, help="plain runs of each library, alternating")
    parser.add_argument("--baseline", metavar="DIR", help="profile the greenroom package in DIR (an old copy) too")
    args = parser.parse_args()
    variants = [("greenroom", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    for broker_kind in args.brokers.split(","):
        print(f"{broker_kind}, {args.mode}, {args.messages} messages after {args.warmup} of warm-up, 8 threads")
        runs = [("dramatiq", "dramatiq", None)] + [(label, "greenroom", path) for label, path in variants]
        for run in range(args.runs):
            for label, system, path in runs[run % len(runs) :] + runs[: run % len(runs)]:
                report = run_one(broker_kind, system, args.mode, args.messages, args.warmup, False, path)
                print_totals(f"{label} (plain, run {run + 1})", report)
        for label, path in variants:
            report = run_one(broker_kind, "greenroom", args.mode, args.messages, args.warmup, True, path)
            print_totals(f"{label} (instrumented)", report)
            print_phases(report)
        print()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
    else:
        main()
