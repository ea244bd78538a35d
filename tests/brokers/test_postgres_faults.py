"""PostgresBroker under faults: a worker killed with SIGKILL, and a server crashed and restarted mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.errors import ConnectionClosed
from greenroom.testing import wait_for
from tests._postgres import URL, private_schema
from tests.brokers._postgres_server import PostgresServer
from tests.conftest import service_unavailable

psycopg = pytest.importorskip("psycopg")

from greenroom.brokers.postgres import PostgresBroker, PostgresSettings, QueueCounts  # noqa: E402

TIMEOUT_S = 60.0
APP = Path(__file__).with_name("_postgres_app.py")


def processed(record_dir: Path) -> Counter[int]:
    """How many times each message number was run, over every worker process's records."""
    counts: Counter[int] = Counter()
    for path in record_dir.glob("*.txt"):
        counts.update(int(line) for line in path.read_text().split())
    return counts


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Any]:
    """Start worker processes of ``_postgres_app.py``; each is terminated and reaped at the end."""
    procs: list[subprocess.Popen[str]] = []

    def start(schema: str, *extra: str) -> subprocess.Popen[str]:
        command = [sys.executable, str(APP), URL, schema, str(tmp_path), *extra]
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


def test_a_killed_workers_messages_come_back_within_its_lease(spawn: Any, tmp_path: Path) -> None:
    lease_ms = 2000
    with private_schema() as schema:
        broker = PostgresBroker(url=URL, schema=schema)
        try:

            @greenroom.actor(broker=broker, queue_name="work", max_retries=0)
            def record(n: int) -> None:
                pass

            broker.enqueue_many([record.message(n) for n in range(300)])
            victim = spawn(schema, "--threads", "2", "--lease-ms", str(lease_ms), "--sleep-ms", "20")
            wait_for(lambda: sum(processed(tmp_path).values()) >= 20, TIMEOUT_S)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(30)
            killed_at = time.monotonic()
            held = broker.get_queue_counts("work").in_progress
            assert held > 0  # it died holding leases (its prefetched messages, at least)
            done_at_kill = len(processed(tmp_path))
            spawn(schema, "--threads", "4", "--lease-ms", str(lease_ms))
            # Empty once the survivor has run the rest and the rows the victim held, whose
            # leases had to run out first (some of them it had run without its ack reaching the table).
            wait_for(lambda: broker.get_queue_counts("work") == QueueCounts(0, 0, 0, 0), TIMEOUT_S, interval_s=0.02)
            recovered_s = time.monotonic() - killed_at
            counts = processed(tmp_path)
            duplicates = sum(counts.values()) - len(counts)
            print(
                f"killed after {done_at_kill} messages holding {held}; back in {recovered_s:.2f} s; {duplicates} twice"
            )
            assert set(counts) == set(range(300))
            assert duplicates <= held
            # The lease, then at most the survivor's fallback poll (1 s), with room for a slow machine.
            assert recovered_s < lease_ms / 1000 + 1 + 1.5
        finally:
            broker.close()


@pytest.fixture
def server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        server.init()
        server.start()
    except (FileNotFoundError, subprocess.CalledProcessError, TimeoutError) as exc:
        server.destroy()
        service_unavailable("initdb and postgres (PostgreSQL server binaries)", exc)
    yield server
    server.destroy()


@pytest.mark.slow
def test_a_server_crash_mid_run_loses_nothing(server: PostgresServer) -> None:
    """Must show: 5,000 messages, the server crashed and restarted mid-run; producers ride it out."""
    total = 5000
    settings = PostgresSettings(retry_timeout_ms=30_000, lease_ms=10_000, poll_interval_ms=500)
    broker = PostgresBroker(url=server.url, settings=settings)
    broker.emit_after("process_boot")
    greenroom.set_broker(broker)
    counts: Counter[int] = Counter()
    lock = threading.Lock()

    @greenroom.actor(broker=broker, queue_name="work", max_retries=0)
    def record(n: int) -> None:
        with lock:
            counts[n] += 1

    sent: list[int] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for n in range(total):
                record.send(n)
                sent.append(n)
        except BaseException as exc:
            errors.append(exc)

    worker = Worker(broker, worker_threads=8, worker_timeout=100)
    worker.start()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: len(counts) >= 1500, TIMEOUT_S, interval_s=0.01)
        server.stop(crash=True)
        sent_before = len(sent)
        time.sleep(0.5)  # the outage itself, not a wait for a condition
        server.start()
        producer.join(TIMEOUT_S * 2)
        assert not producer.is_alive()
        assert errors == []
        assert len(sent) == total
        assert sent_before < total
        wait_for(lambda: len(counts) == total, TIMEOUT_S * 2, interval_s=0.05)
        broker.join("work", timeout=int(TIMEOUT_S * 1000))
    finally:
        worker.stop(timeout=20_000)
    duplicates = sum(counts.values()) - len(counts)
    print(f"crash after {sent_before} sends; {duplicates} of {total} messages ran twice")
    assert set(counts) == set(range(total))

    # A server that stays away: a send gives up after retry_timeout with ConnectionClosed.
    impatient = PostgresBroker(url=server.url, settings=PostgresSettings(retry_timeout_ms=1500, connect_timeout_s=1))
    impatient.declare_actor(record)
    try:
        impatient.enqueue(record.message(-1))
        server.stop()
        started = time.monotonic()
        with pytest.raises(ConnectionClosed):
            impatient.enqueue(record.message(-2))
        waited_s = time.monotonic() - started
        assert 1.4 <= waited_s < 10, waited_s
    finally:
        impatient.close()
        broker.close()
