"""greenroom's PostgresBroker beside Dramatiq's RedisBroker, side by side in one run (by hand, not in CI).

    .venv/bin/python benchmarks/bench_postgres.py [--postgres postgresql://postgres@127.0.0.1:5432/test]
        [--redis redis://127.0.0.1:6379/0] [--messages 10000] [--soak 100000] [--peers]

Measures, for greenroom on PostgreSQL (a fresh schema, dropped at the end) and Dramatiq 2 on Redis
(a fresh namespace, deleted at the end), each with its default middleware:

* ``send`` rate, one call after the other in this process (median of ten alternating rounds), and
  greenroom's with ``durable_enqueue=False`` (commits that do not wait for the disk); in the same
  rounds, the broker's own ``INSERT`` run bare through psycopg, durable and not: the floor under
  ``send`` that no broker code can go below;
* batch enqueue (``enqueue_many``, best of three) and ``group([...]).run()``;
* drain rate of no-op messages by one worker process of 8 threads (first start to last);
* p50/p99 latency from ``send`` to the start of the actor at 100 messages/s, and the worker's RSS;
* with ``--soak N``: N messages sent in batches and drained, then the sizes of the messages table
  and its indexes after ``VACUUM``, against their sizes when empty.

With ``--peers``, pgqueuer and procrastinate (if installed) are measured on the same server too,
each in a scratch database of its own, and printed beside greenroom and Dramatiq: enqueue one call
at a time and in a batch, and the drains, by their own asyncio workers running 8 jobs at a time
(see ``_pg_peers.py`` for their settings). Both have their own worker model, schema and job
format: the numbers compare whole libraries, not brokers alone.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from typing import Any

import _pg_peers
from _common import (
    LATENCY_COUNT,
    STANDARD_ROWS,
    SYSTEMS,
    child,
    finish,
    is_child,
    make_producer,
    measure_enqueue,
    measure_system,
    print_table,
    send_paced,
    spawn,
)

import greenroom

#: ``target`` of the shared harness: the PostgreSQL URL and the Redis URL, separated by a space.
Target = str


def make_broker(system: str, target: Target, namespace: str) -> Any:
    """greenroom's Postgres broker on schema ``namespace``, or Dramatiq's Redis broker on that namespace."""
    postgres_url, redis_url = target.split(" ")
    if system == "greenroom":
        from greenroom.brokers.postgres import PostgresBroker

        return PostgresBroker(url=postgres_url, schema=namespace)
    if system == "greenroom-fast":
        from greenroom.brokers.postgres import PostgresBroker, PostgresSettings

        return PostgresBroker(url=postgres_url, schema=namespace, settings=PostgresSettings(durable_enqueue=False))
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(url=redis_url, namespace=namespace)


def drop(target: Target, namespace: str) -> None:
    """Drop the benchmark's schema and delete its Redis keys."""
    import psycopg
    import redis

    postgres_url, redis_url = target.split(" ")
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{namespace}" CASCADE')
    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class BareInsert:
    """The statement of a greenroom ``send``, run through psycopg with nothing around it (``send()``).

    Parameters:
      broker: A greenroom Postgres broker whose tables exist: its schema and its ``INSERT``.
      payload: The encoded message to insert every time.
      durable: Whether each commit waits for the disk, as greenroom's default ``send`` does.
    """

    def __init__(self, broker: Any, payload: bytes, *, durable: bool) -> None:
        import psycopg

        self.conn = psycopg.connect(broker.url, autocommit=True)
        self.conn.execute(f"SET synchronous_commit = {'on' if durable else 'off'}")
        # The broker's own statement (a private attribute: this measures the floor under it).
        self.statement = broker._storage.sql.insert
        self.payload = payload

    def send(self) -> None:
        self.conn.execute(self.statement, ("bench", self.payload, None, "bare"))


class BareRoundTrip:
    """A ``SELECT`` of one parameter through psycopg: the floor under any ``send`` that waits for the
    server's reply, whatever it writes."""

    def __init__(self, url: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, autocommit=True)

    def send(self) -> None:
        self.conn.execute("SELECT %s::int", (1,))


def measure_send(target: Target, count: int) -> dict[str, float]:
    """``send`` rates of greenroom (durable and not), Dramatiq, and the bare ``INSERT``, in alternating rounds."""
    names = {
        system: f"bench_{system.replace('-', '_')}_{uuid.uuid4().hex[:8]}" for system in (*SYSTEMS, "greenroom-fast")
    }
    bare: list[BareInsert] = []
    try:
        producers = {system: make_producer(make_broker, system, target, names[system]) for system in names}
        for _, noop in producers.values():
            noop.send()  # warm up: connections, schema, script load
        senders = {system: noop for system, (_, noop) in producers.items()}
        broker, noop = producers["greenroom"]
        for label, durable in (("insert", True), ("insert-fast", False)):
            bare.append(BareInsert(broker, noop.message().encode(), durable=durable))
            senders[label] = bare[-1]
        round_trip = BareRoundTrip(broker.url)
        senders["round-trip"] = round_trip
        rates = measure_enqueue(senders, count)
        for sender in (*bare, round_trip):
            sender.conn.close()
        for broker, _ in producers.values():
            broker.close()
    finally:
        for name in names.values():
            drop(target, name)
    return rates


def soak(target: Target, count: int) -> None:
    """Send and drain ``count`` messages at a bounded backlog; print table and index sizes after VACUUM.

    Sizes are read when the table is empty, after the first tenth of the messages, right after the
    drain, and once the worker (left running) has rebuilt the indexes of the emptied table.
    """
    import psycopg

    postgres_url = target.split(" ")[0]
    schema = f"bench_soak_{uuid.uuid4().hex[:8]}"
    broker, noop = make_producer(make_broker, "greenroom", target, schema)
    broker.emit_after("process_boot")
    table = f"'\"{schema}\".messages'"
    sizes = f"SELECT pg_relation_size({table}), pg_indexes_size({table}), pg_total_relation_size({table})"

    def measure() -> tuple[int, int, int]:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'VACUUM "{schema}".messages')
            row = conn.execute(sizes).fetchone()
            assert row is not None
            return int(row[0]), int(row[1]), int(row[2])

    try:
        broker.get_queue_counts("bench")
        rows = [("empty", measure())]
        worker = greenroom.Worker(broker, worker_threads=8)
        worker.start()
        started = time.perf_counter()
        for start in range(0, count, 1000):
            broker.enqueue_many(noop.message() for _ in range(min(1000, count - start)))
            while broker.get_queue_counts("bench").ready > 5000:  # a bounded backlog, as under steady load
                time.sleep(0.05)
            if start + 1000 == count // 10:
                broker.join("bench")
                rows.append((f"after {count // 10:,}", measure()))
        broker.join("bench")
        elapsed = time.perf_counter() - started
        rows.append((f"after {count:,}", measure()))
        # The worker stays up: after a vacuum that finds the table empty, it rebuilds the indexes.
        drained = time.perf_counter()
        while measure()[1] > 2 * rows[0][1][1] and time.perf_counter() - drained < 120:
            time.sleep(1)
        rebuilt_after = time.perf_counter() - drained
        worker.stop()
        rows.append(("at the end", measure()))
        print(f"\nsoak: {count:,} messages through in {elapsed:.1f} s ({count / elapsed:,.0f} msg/s), backlog <= 6,000")
        print(f"indexes back to at most twice their empty size {rebuilt_after:.1f} s after the drain (limit 120 s)")
        print(f"{'after VACUUM':20}{'heap':>12}{'indexes':>12}{'total':>12}")
        for label, (heap, indexes, total) in rows:
            print(f"{label:20}{heap:12,}{indexes:12,}{total:12,}")
        empty, end = rows[0][1], rows[-1][1]
        print(f"{'end / empty':20}" + "".join(f"{_ratio(a, b):>12}" for a, b in zip(end, empty, strict=True)))
    finally:
        broker.close()
        drop(target, schema)


def _ratio(after: int, empty: int) -> str:
    return f"{after / empty:.2f}x" if empty else "n/a"


def latency_fast(target: Target) -> tuple[float, float]:
    """p50/p99 latency (ms) from ``send`` to start when the producer's commits do not wait for the disk."""
    namespace = f"bench_fast_{uuid.uuid4().hex[:8]}"
    try:
        broker, noop = make_producer(make_broker, "greenroom-fast", target, namespace)
        broker.get_queue_counts("bench")  # creates the tables
        # The worker only consumes: its broker may be the durable one.
        proc = spawn(__file__, "greenroom", target, namespace, "latency", LATENCY_COUNT)
        time.sleep(0.5)
        send_paced(noop, LATENCY_COUNT)
        report = finish(proc)
        broker.close()
    finally:
        drop(target, namespace)
    return report["p50"], report["p99"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--soak", type=int, default=0, help="messages of the table-size soak (0: none)")
    parser.add_argument("--peers", action="store_true", help="also measure pgqueuer and procrastinate, if installed")
    args = parser.parse_args()
    target = f"{args.postgres} {args.redis}"
    sends = measure_send(target, args.messages)
    results: dict[str, dict[str, float]] = {}
    for system in SYSTEMS:
        namespace = f"bench_{system}_{uuid.uuid4().hex[:8]}"
        try:
            results[system] = measure_system(__file__, make_broker, system, target, namespace, args.messages)
        finally:
            drop(target, namespace)
        results[system]["enqueue"] = sends[system]
    print(f"\n{args.messages:,} no-op messages; greenroom on PostgreSQL, Dramatiq on Redis")
    print_table(results["greenroom"], results["dramatiq"], STANDARD_ROWS)
    print(f"{'send, durable_enqueue=False (msg/s)':38}{sends['greenroom-fast']:12.2f}")
    print(f"{'bare psycopg INSERT, durable / not':38}{sends['insert']:12.2f}{sends['insert-fast']:12.2f}")
    floor = sends["round-trip"]
    print(f"{'bare round trip (SELECT), vs Dramatiq':38}{floor:12.2f}{floor / sends['dramatiq']:11.2f}x")
    p50, p99 = latency_fast(target)
    print(f"{'latency p50 / p99, durable_enqueue=False':38}{p50:12.2f}{p99:12.2f}")
    if args.peers:
        _pg_peers.report(args.postgres, args.redis, args.messages, results)
    if args.soak:
        soak(target, args.soak)


if __name__ == "__main__":
    if is_child():
        child(make_broker, sys.argv[2:])
    else:
        main()
