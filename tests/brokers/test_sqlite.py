"""SQLiteBroker: leases, dead letters, delays in the database, several processes on one file."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import greenroom
from greenroom import Worker
from greenroom.brokers.sqlite import QueueCounts, SQLiteBroker, SQLiteSettings
from greenroom.common import current_millis
from greenroom.errors import ConnectionClosed, QueueJoinTimeout, QueueNotFound
from greenroom.message import Message
from greenroom.testing import wait_for

APP = Path(__file__).with_name("_sqlite_app.py")
ROOT = Path(__file__).resolve().parents[2]
#: Generous: these tests share two cores with the rest of the suite.
TIMEOUT_S = 120.0


class Harness:
    """Builds brokers and in-process workers on files under tmp_path, and stops them all afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.brokers: list[SQLiteBroker] = []
        self.workers: list[Worker] = []

    def broker(self, path: Path | None = None, **settings: Any) -> SQLiteBroker:
        broker = SQLiteBroker(
            path or self.tmp_path / "greenroom.db", middleware=[], settings=SQLiteSettings(**settings)
        )
        self.brokers.append(broker)
        return broker

    def worker(self, broker: SQLiteBroker, **kwargs: Any) -> Worker:
        kwargs.setdefault("worker_timeout", 100)
        kwargs.setdefault("worker_threads", 2)
        worker = Worker(broker, **kwargs)
        worker.start()
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=10_000)
        for broker in self.brokers:
            broker.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.close()


def insert_raw(path: Path, rows: list[tuple[str, Any]]) -> None:
    """Insert rows the way a foreign producer would."""
    with sqlite3.connect(path) as conn:
        conn.executemany("INSERT INTO greenroom_messages (queue_name, payload) VALUES (?, ?)", rows)
    conn.close()


# -- single process ------------------------------------------------------------------------------


def test_constructor_opens_nothing_and_first_use_creates_a_versioned_schema(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "lazy.db"
    broker = SQLiteBroker(path)
    broker.declare_queue("default")
    assert not path.parent.exists()
    path.parent.mkdir()
    assert broker.get_queue_counts("default") == QueueCounts(0, 0, 0, 0)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    broker.close()


def test_newer_schema_is_refused(harness: Harness, tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    broker = harness.broker(path)
    broker.declare_queue("default")
    with pytest.raises(greenroom.BrokerError, match="schema version 99"):
        broker.get_queue_counts("default")


def test_counts_read_only_indexes_and_count_a_lapsed_lease_as_ready(harness: Harness, tmp_path: Path) -> None:
    from greenroom.brokers.sqlite._storage import _COUNTS

    broker = harness.broker()
    broker.declare_queue("q")
    for n in range(4):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(n,), kwargs={}, options={}))
    consumer = broker.consume("q", prefetch=2, timeout=1000)
    assert next(consumer) is not None
    assert next(consumer) is not None
    assert broker.get_queue_counts("q") == QueueCounts(ready=2, delayed=0, in_progress=2, dead=0)
    with sqlite3.connect(tmp_path / "greenroom.db") as conn:  # one holder's lease lapses (a frozen process)
        conn.execute(
            "UPDATE greenroom_messages SET lease_until_ms = 1 WHERE id = (SELECT MIN(id) FROM greenroom_messages)"
        )
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {_COUNTS}", ("q", "q.DQ", 0))]
    assert broker.get_queue_counts("q") == QueueCounts(ready=3, delayed=0, in_progress=1, dead=0)
    consumer.close()
    # A million messages must not be read row by row to count them: no scan, and the totals come
    # from the index alone.
    assert not [step for step in plan if step.startswith("SCAN") and "CONSTANT ROW" not in step], plan
    assert sum("COVERING INDEX greenroom_messages_by_due" in step for step in plan) == 2, plan
    assert sum("INDEX greenroom_messages_by_owner" in step for step in plan) == 2, plan


def test_counts_ack_nack_requeue_and_flush(harness: Harness) -> None:
    broker = harness.broker()
    broker.declare_queue("q")
    for n in range(3):
        broker.enqueue(Message(queue_name="q", actor_name="a", args=(n,), kwargs={}, options={}))
    broker.enqueue(Message(queue_name="q", actor_name="a", args=(9,), kwargs={}, options={}), delay=60_000)
    assert broker.get_queue_counts("q") == QueueCounts(ready=3, delayed=1, in_progress=0, dead=0)

    consumer = broker.consume("q", prefetch=3, timeout=1000)
    first, second, third = next(consumer), next(consumer), next(consumer)
    assert [m.args for m in (first, second, third)] == [(0,), (1,), (2,)]  # type: ignore[union-attr]
    assert broker.get_queue_counts("q") == QueueCounts(0, 1, 3, 0)
    consumer.ack(first)  # type: ignore[arg-type]
    second.fail()  # type: ignore[union-attr]
    second.stuff_exception(ValueError("boom"))  # type: ignore[union-attr]
    consumer.nack(second)  # type: ignore[arg-type]
    consumer.requeue([third])  # type: ignore[list-item]
    assert broker.get_queue_counts("q") == QueueCounts(1, 1, 0, 1)
    [dead] = broker.get_dead_letters("q")
    assert dead.reason == "ValueError('boom')"
    assert dead.message_id == second.message_id  # type: ignore[union-attr]

    again = next(consumer)  # requeued rows are visible at once
    assert again is not None
    assert again.args == (2,)
    consumer.close()
    broker.flush("q")
    assert broker.get_queue_counts("q") == QueueCounts(0, 0, 0, 0)
    with pytest.raises(QueueNotFound):
        broker.enqueue(Message(queue_name="nope", actor_name="a", args=(), kwargs={}, options={}))


def test_expired_lease_is_delivered_again(harness: Harness, tmp_path: Path) -> None:
    # Two brokers on one file stand for two processes; closing the first stops its lease
    # renewal, as a SIGKILL would.
    first = harness.broker(lease_ms=1000, renew_interval_ms=200)
    second = harness.broker(lease_ms=1000, renew_interval_ms=200)
    for broker in (first, second):
        broker.declare_queue("q")
    first.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    taken = next(first.consume("q", timeout=1000))
    assert taken is not None
    other = second.consume("q", timeout=200)
    assert next(other) is None  # leased (and renewed while the first holds it)
    first.close()
    redelivered: list[Any] = []

    def poll() -> bool:
        redelivered.append(next(other))
        return redelivered[-1] is not None

    wait_for(poll, TIMEOUT_S)  # about lease_ms after the close
    assert redelivered[-1].message_id == taken.message_id
    other.ack(redelivered[-1])
    assert second.get_queue_counts("q") == QueueCounts(0, 0, 0, 0)


def test_long_task_keeps_its_lease(harness: Harness) -> None:
    """Must show (5): a task running almost three times as long as its lease is not handed to a second worker."""
    runs: list[str] = []
    for name in ("a", "b"):
        broker = harness.broker(lease_ms=1500, renew_interval_ms=250)

        @greenroom.actor(broker=broker, actor_name="slow")
        def slow(name: str = name) -> None:
            runs.append(name)
            time.sleep(4)

        harness.worker(broker)
    broker.enqueue(Message(queue_name="default", actor_name="slow", args=(), kwargs={}, options={}))

    def lease_until() -> int:
        query = "SELECT COALESCE(MAX(lease_until_ms), 0) FROM greenroom_messages"
        return int(broker._storage.db.read(lambda conn: conn.execute(query).fetchone()[0]))

    wait_for(lambda: runs, TIMEOUT_S)
    first_lease_until = lease_until()
    wait_for(lambda: lease_until() > first_lease_until, TIMEOUT_S)  # renewed while it runs
    broker.join("default", timeout=int(TIMEOUT_S * 1000))
    assert len(runs) == 1


def test_dead_letters_are_purged_after_their_ttl(harness: Harness) -> None:
    broker = harness.broker(dead_message_ttl=60_000)
    broker.declare_queue("q")
    broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    consumer = broker.consume("q", timeout=1000)
    message = next(consumer)
    assert message is not None
    consumer.nack(message)
    keeper = broker._process.get().keeper
    now_ms = current_millis()
    keeper.run_once(now_ms + 30_000)
    assert broker.get_queue_counts("q").dead == 1
    keeper.run_once(now_ms + 91_000)  # purges run at most once a minute
    assert broker.get_queue_counts("q").dead == 0


def test_malformed_rows_are_dead_lettered_with_the_reason(harness: Harness, tmp_path: Path) -> None:
    """Must show (3): invalid payloads are dead-lettered with the reason; their neighbours are processed."""
    broker = harness.broker(max_payload_bytes=4096)
    seen: list[int] = []

    @greenroom.actor(broker=broker)
    def record(n: int) -> None:
        seen.append(n)

    record.send(1)
    wrong_queue = Message(queue_name="other", actor_name="record", args=(5,), kwargs={}, options={}).encode()
    insert_raw(
        tmp_path / "greenroom.db",
        [
            ("default", b"\xff\xfe not utf-8"),
            ("default", "{not json"),
            ("default", 42),
            ("default", wrong_queue),
            ("default", b"[" + b" " * 5000 + b"]"),
        ],
    )
    record.send(2)
    harness.worker(broker)
    wait_for(lambda: sorted(seen) == [1, 2] and broker.get_queue_counts("default").dead == 5, TIMEOUT_S)
    reasons = [dead.reason for dead in broker.get_dead_letters("default")]
    assert all(reasons)
    assert "UTF-8" in reasons[0] or "utf-8" in reasons[0]
    assert "JSON" in reasons[1] or "Expecting" in reasons[1]
    assert "'other'" in reasons[3]
    assert "larger than the limit" in reasons[4]
    assert broker.get_dead_letters("default")[0].payload == b"\xff\xfe not utf-8"


def test_busy_database_is_waited_for_then_reported(harness: Harness, tmp_path: Path) -> None:
    broker = harness.broker(busy_timeout_ms=50, lock_retry_ms=30_000)
    broker.declare_queue("q")
    broker.get_queue_counts("q")
    blocker = sqlite3.connect(tmp_path / "greenroom.db", isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    timer = threading.Timer(0.5, lambda: blocker.execute("COMMIT"))
    timer.start()
    broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))  # waits, no error
    timer.join()
    assert broker.get_queue_counts("q").ready == 1

    impatient = harness.broker(busy_timeout_ms=50, lock_retry_ms=200)
    impatient.declare_queue("q")
    impatient.get_queue_counts("q")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(ConnectionClosed, match="stayed busy"):
            impatient.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


def test_join_times_out(harness: Harness) -> None:
    broker = harness.broker()
    broker.declare_queue("q")
    broker.enqueue(Message(queue_name="q", actor_name="a", args=(), kwargs={}, options={}), delay=60_000)
    with pytest.raises(QueueJoinTimeout):
        broker.join("q", timeout=100)


def _enqueue_in_child(broker: SQLiteBroker) -> None:
    broker.enqueue(Message(queue_name="q", actor_name="a", args=("child",), kwargs={}, options={}))
    broker.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # fork() in a threaded process warns on 3.12+
def test_connections_are_rebuilt_after_fork(harness: Harness) -> None:
    broker = harness.broker()
    broker.declare_queue("q")
    broker.enqueue(Message(queue_name="q", actor_name="a", args=("parent",), kwargs={}, options={}))
    child = multiprocessing.get_context("fork").Process(target=_enqueue_in_child, args=(broker,))
    child.start()
    child.join(TIMEOUT_S)
    assert child.exitcode == 0
    broker.enqueue(Message(queue_name="q", actor_name="a", args=("parent",), kwargs={}, options={}))
    assert broker.get_queue_counts("q").ready == 3


def test_delayed_messages_wait_in_the_database(harness: Harness, tmp_path: Path) -> None:
    """Must show (6): 100,000 pending delayed messages; the worker holds at most its prefetch of them."""
    broker = harness.broker()
    started: dict[str, int] = {}

    @greenroom.actor(broker=broker)
    def stamp(name: str) -> None:
        started[name] = current_millis()

    broker.get_queue_counts("default")
    eta = current_millis() + 3_600_000
    pending: Message[Any] = Message(
        queue_name="default.DQ", actor_name="stamp", args=("later",), kwargs={}, options={"eta": eta}
    )
    payload = pending.encode()
    with sqlite3.connect(tmp_path / "greenroom.db") as conn:
        conn.executemany(
            "INSERT INTO greenroom_messages (queue_name, payload, due_ms) VALUES ('default.DQ', ?, ?)",
            ((payload, eta) for _ in range(100_000)),
        )
    conn.close()

    worker = harness.worker(broker, delay_prefetch=100)
    wait_for(lambda: "default.DQ" in worker.consumers and worker.consumers["default.DQ"].consumer, TIMEOUT_S)
    delay_thread = worker.consumers["default.DQ"]
    soon = stamp.send_with_options(args=("soon",), delay=1500)
    held: list[int] = []

    def sample() -> bool:
        consumer: Any = delay_thread.consumer
        held.append(delay_thread.delay_queue.qsize() + (consumer.held if consumer else 0) + worker.work_queue.qsize())
        return "soon" in started

    wait_for(sample, TIMEOUT_S, interval_s=0.05)
    late_ms = started["soon"] - soon.options["eta"]
    print(f"due message started {late_ms} ms after its eta; at most {max(held)} delayed messages in memory")
    assert 0 <= late_ms < 2000
    assert max(held) <= 100
    assert broker.get_queue_counts("default").delayed == 100_000


# -- several processes ---------------------------------------------------------------------------


class _Process:
    """A run of ``_sqlite_app.py`` whose output lines are collected by reader threads."""

    def __init__(self, args: list[str]) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.popen = subprocess.Popen(
            [sys.executable, str(APP), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self.readers = [
            threading.Thread(target=self._read, args=(stream,), daemon=True)
            for stream in (self.popen.stdout, self.popen.stderr)
        ]
        for reader in self.readers:
            reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.append(line)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def said(self, word: str) -> bool:
        return f"{word}\n" in self.lines

    def stop(self) -> int:
        """Terminate (then kill) the process if it runs, reap it and close its pipes; its exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
        try:
            code = self.popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(timeout=30)
        for reader in self.readers:
            reader.join(timeout=10)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()
        return code


@pytest.fixture
def spawn() -> Iterator[Callable[..., _Process]]:
    processes: list[_Process] = []

    def start(*args: object) -> _Process:
        process = _Process([str(arg) for arg in args])
        processes.append(process)
        return process

    yield start
    for process in processes:
        process.stop()


def records(directory: Path) -> dict[int, Counter[int]]:
    """What each worker process recorded: pid → message number → times processed."""
    result: dict[int, Counter[int]] = {}
    for path in directory.glob("*.txt"):
        result[int(path.stem)] = Counter(int(line) for line in path.read_text().split())
    return result


def processed(directory: Path) -> Counter[int]:
    total: Counter[int] = Counter()
    for counts in records(directory).values():
        total.update(counts)
    return total


def declare_app(harness: Harness, path: Path) -> tuple[SQLiteBroker, Any]:
    broker = harness.broker(path)

    @greenroom.actor(broker=broker, queue_name="work")
    def record(n: int) -> None:
        pass

    return broker, record


@pytest.mark.slow
def test_sigkill_mid_run_loses_nothing(harness: Harness, spawn: Any, tmp_path: Path) -> None:
    """Must show (1): 5,000 messages, 2 worker processes, one killed with SIGKILL mid-run."""
    db, recorded = tmp_path / "app.db", tmp_path / "records"
    recorded.mkdir()
    broker, record = declare_app(harness, db)
    for n in range(5000):
        record.send(n)
    victim, survivor = (spawn("worker", db, recorded, "--lease-ms", 4000, "--sleep-ms", 5) for _ in range(2))
    wait_for(lambda: victim.said("ready") and survivor.said("ready"), TIMEOUT_S)
    wait_for(lambda: sum(records(recorded).get(victim.pid, Counter()).values()) >= 300, TIMEOUT_S, interval_s=0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.popen.wait(timeout=30)
    done_at_kill = len(processed(recorded))
    with sqlite3.connect(db) as conn:
        query = "SELECT COUNT(*) FROM greenroom_messages WHERE lease_owner LIKE ?"
        leased_by_victim = conn.execute(query, (f"%:{victim.pid}:%",)).fetchone()[0]
    conn.close()

    wait_for(lambda: len(processed(recorded)) == 5000, TIMEOUT_S, interval_s=0.2)
    broker.join("work", timeout=int(TIMEOUT_S * 1000))
    counts = processed(recorded)
    duplicates = sum(counts.values()) - len(counts)
    print(f"killed after {done_at_kill} messages holding {leased_by_victim} leases; {duplicates} ran twice")
    assert done_at_kill < 5000
    assert set(counts) == set(range(5000))
    assert duplicates <= leased_by_victim
    assert broker.get_queue_counts("work") == QueueCounts(0, 0, 0, 0)
    assert survivor.stop() == 0
    assert "database is locked" not in "".join(survivor.lines)


@pytest.mark.slow
def test_two_producers_and_two_workers_share_the_file(harness: Harness, spawn: Any, tmp_path: Path) -> None:
    """Must show (2): two producer and two worker processes at once, 20,000 messages, nothing lost."""
    db, recorded = tmp_path / "app.db", tmp_path / "records"
    recorded.mkdir()
    workers = [spawn("worker", db, recorded, "--lease-ms", 10_000) for _ in range(2)]
    producers = [spawn("produce", db, start, 10_000) for start in (0, 10_000)]
    wait_for(lambda: all(p.popen.poll() is not None for p in producers), TIMEOUT_S, interval_s=0.2)
    assert [p.popen.returncode for p in producers] == [0, 0]
    wait_for(lambda: len(processed(recorded)) == 20_000, TIMEOUT_S, interval_s=0.2)
    broker, _ = declare_app(harness, db)
    broker.join("work", timeout=int(TIMEOUT_S * 1000))
    assert set(processed(recorded)) == set(range(20_000))
    assert broker.get_queue_counts("work") == QueueCounts(0, 0, 0, 0)
    assert [w.stop() for w in workers] == [0, 0]
    output = "".join(line for p in [*workers, *producers] for line in p.lines)
    assert "locked" not in output.lower()
    assert "Traceback" not in output


@pytest.mark.slow
def test_database_survives_a_restart_of_every_process(harness: Harness, spawn: Any, tmp_path: Path) -> None:
    """Must show (4): producer gone, worker killed, test's broker closed: every unprocessed message is intact."""
    db, recorded = tmp_path / "app.db", tmp_path / "records"
    recorded.mkdir()
    producer = spawn("produce", db, 0, 300)
    wait_for(lambda: producer.popen.poll() is not None, TIMEOUT_S)
    assert producer.popen.returncode == 0
    first = spawn("worker", db, recorded, "--lease-ms", 2000, "--sleep-ms", 50, "--threads", 2)
    wait_for(lambda: len(processed(recorded)) >= 20, TIMEOUT_S)
    os.kill(first.pid, signal.SIGKILL)
    first.popen.wait(timeout=30)

    broker, _ = declare_app(harness, db)
    counts = broker.get_queue_counts("work")
    assert counts.ready + counts.in_progress >= 300 - len(processed(recorded))
    broker.close()

    second = spawn("worker", db, recorded, "--lease-ms", 2000)
    wait_for(lambda: len(processed(recorded)) == 300, TIMEOUT_S, interval_s=0.1)
    broker.join("work", timeout=int(TIMEOUT_S * 1000))
    assert set(processed(recorded)) == set(range(300))
    assert second.stop() == 0
