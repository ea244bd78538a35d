"""``max_concurrency=N``: at most N messages of an actor run at once, and other actors are not held back."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import greenroom
from greenroom import Worker
from greenroom._concurrency import slots_directory
from greenroom.brokers.stub import StubBroker
from greenroom.testing import wait_for
from tests.cli._trees import Tree, app_env

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 60.0


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) spans that overlap at one instant."""
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    broker = StubBroker()
    broker.emit_after("process_boot")
    yield broker
    broker.close()


def test_a_limited_actor_runs_two_at_a_time_and_others_are_not_held_back(broker: StubBroker) -> None:
    lock = threading.Lock()
    running = {"limited": 0, "free": 0}
    most = {"limited": 0, "free": 0}
    done: list[str] = []

    def run(kind: str) -> None:
        with lock:
            running[kind] += 1
            most[kind] = max(most[kind], running[kind])
        time.sleep(0.2)
        with lock:
            running[kind] -= 1
            done.append(kind)

    @greenroom.actor(broker=broker, max_concurrency=2)
    def limited() -> None:
        run("limited")

    @greenroom.actor(broker=broker)
    def free() -> None:
        run("free")

    for _ in range(10):
        limited.send()
    for _ in range(10):
        free.send()
    worker = Worker(broker, worker_threads=8, worker_timeout=50)
    worker.start()
    try:
        # The free actor's ten finish while the limited one is still working through its queue.
        wait_for(lambda: done.count("free") == 10, TIMEOUT_S)
        assert done.count("limited") < 10
        wait_for(lambda: done.count("limited") == 10, TIMEOUT_S)
    finally:
        worker.stop(timeout=10000)
    assert most["limited"] == 2
    assert most["free"] > 2


def test_max_concurrency_must_be_a_positive_integer(broker: StubBroker) -> None:
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="max_concurrency must be a positive integer"):
            greenroom.actor(broker=broker, actor_name=f"bad{bad!r}", max_concurrency=bad)(lambda: None)


TREE_APP = """
import os, time, pathlib
import greenroom
from greenroom.brokers.sqlite import SQLiteBroker

greenroom.set_broker(SQLiteBroker(os.environ["GR_TEST_DB"]))
ledger = pathlib.Path(os.environ["GR_TEST_RESULTS"])

@greenroom.actor(max_concurrency=2)
def limited(n):
    started = time.time()
    time.sleep(0.3)
    with ledger.open("a") as file:
        file.write(f"limited {started:.4f} {time.time():.4f}\\n")

@greenroom.actor
def free(n):
    started = time.time()
    time.sleep(0.3)
    with ledger.open("a") as file:
        file.write(f"free {started:.4f} {time.time():.4f}\\n")
"""


def test_the_limit_holds_across_the_processes_of_a_tree(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(TREE_APP)
    ledger = tmp_path / "results.txt"
    env = {**app_env(tmp_path), "PYTHONPATH": str(ROOT)}
    producer = "import app\nfor n in range(10): app.limited.send(n)\nfor n in range(10): app.free.send(n)\n"
    subprocess.run([sys.executable, "-c", producer], cwd=tmp_path, env=env, check=True, timeout=60)
    tree = Tree(tmp_path, ["-p", "2", "-t", "4"], env=env)
    slots = Path(slots_directory(str(tree.pid)))
    try:
        wait_for(lambda: ledger.exists() and ledger.read_text().count("\n") == 20, TIMEOUT_S)
        assert slots.is_dir()
    finally:
        tree.cleanup()
    assert tree.proc.returncode == 0
    assert not slots.exists()  # removed by the tree when it ended
    spans: dict[str, list[tuple[float, float]]] = {"limited": [], "free": []}
    for line in ledger.read_text().splitlines():
        kind, start, end = line.split()
        spans[kind].append((float(start), float(end)))
    assert most_at_once(spans["limited"]) <= 2
    assert most_at_once(spans["free"]) > 2
